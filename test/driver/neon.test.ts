/**
 * What src/driver/neon.ts relies on in @prisma/adapter-neon and @neondatabase/serverless:
 * the adapter builds its pool itself, the pool's constructor replaces any `Client` option
 * with its own (which is why the layer sets it on the fresh pool), the adapter sends single
 * statements through `pool.query` and transactions through `pool.connect`, and a connection
 * takes per-connection WebSocket settings on `client.neonConfig`. Fails when they change.
 */
import { PrismaNeon } from '@prisma/adapter-neon';
import { neonConfig, Pool } from '@neondatabase/serverless';

test("NeonPool's constructor replaces a Client option with the driver's own", () => {
  class Mine {}
  const pool = new Pool({ connectionString: 'postgresql://u:p@ep-x-1.us-east-2.aws.neon.tech/db', Client: Mine } as never) as unknown as { Client: unknown };
  expect(pool.Client).not.toBe(Mine);
});

test('the Neon adapter exposes the pool it queries (underlyingDriver), and uses its query and connect', async () => {
  const factory = new PrismaNeon({ connectionString: 'postgresql://u:p@ep-x-1.us-east-2.aws.neon.tech/db' });
  const adapter = await factory.connect();
  const pool = adapter.underlyingDriver() as unknown as {
    Client: unknown;
    query: (...a: unknown[]) => Promise<unknown>;
    connect: () => Promise<unknown>;
    end: () => Promise<void>;
  };
  expect(pool).toBeInstanceOf(Pool);
  const calls: string[] = [];
  const fail = (what: string) => async (): Promise<never> => {
    calls.push(what);
    throw new Error(`stub ${what}`);
  };
  pool.query = fail('query');
  pool.connect = fail('connect');
  await expect(adapter.queryRaw({ sql: 'SELECT 1', args: [], argTypes: [] })).rejects.toThrow('stub query');
  await expect(adapter.startTransaction()).rejects.toThrow('stub connect');
  expect(calls).toEqual(['query', 'connect']);
  await adapter.dispose();
});

test('a Neon connection takes WebSocket settings per connection, leaving the global ones alone', () => {
  const { Client } = require('@neondatabase/serverless') as typeof import('@neondatabase/serverless');
  const client = new Client({ connectionString: 'postgresql://u:p@ep-x-1.us-east-2.aws.neon.tech/db' }) as unknown as { neonConfig: Record<string, unknown> };
  const before = neonConfig.pipelineConnect;
  client.neonConfig.pipelineConnect = false;
  expect(client.neonConfig.pipelineConnect).toBe(false);
  expect(neonConfig.pipelineConnect).toBe(before);
});
