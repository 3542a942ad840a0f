/**
 * What src/driver/neon.ts relies on in @prisma/adapter-neon and @neondatabase/serverless:
 * the adapter builds its pool itself, the pool's constructor replaces any `Client` option
 * with its own (which is why the layer sets it on the fresh pool), the adapter sends single
 * statements through `pool.query` and transactions through `pool.connect`, and a connection
 * takes per-connection WebSocket settings on `client.neonConfig`. Fails when they change.
 */
import { PrismaNeon } from '@prisma/adapter-neon';
import { neonConfig, Pool } from '@neondatabase/serverless';
import ws from 'ws';
import { loadConfig } from '../../src/config';
import { socketSettings } from '../../src/driver/neon';
import { Prisma, PrismaClient } from '../../src/generated/prisma/client';
import { createDb } from '../../src/index';
import { rejectionOf } from '../support/async';
import { createTestDatabase, testServer } from '../support/db';
import { NEON_TEST_HOST, startNeonProxy } from '../support/neon-proxy';

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

describe("the layer's Neon connections use ws, also where the runtime has a WebSocket of its own", () => {
  const config = loadConfig({ url: 'postgresql://u:p@ep-x-1.us-east-2.aws.neon.tech/db' }, {});
  const g = globalThis as { WebSocket?: unknown };
  const own = g.WebSocket;
  // Node 20 has none: a stand-in for undici's (Node 22+), whose close waits for good for an
  // unanswered closing handshake and which has no terminate() (test/neon-proxy.test.ts's
  // silent-network tests fail under Node 22/24 without ws).
  beforeAll(() => void (g.WebSocket ??= class RuntimeWebSocket {}));
  afterAll(() => void (own === undefined ? delete g.WebSocket : (g.WebSocket = own)));

  test('ws (with terminate()) is the constructor, not the runtime WebSocket', () => {
    expect(typeof g.WebSocket).toBe('function');
    expect(socketSettings(config).webSocketConstructor).toBe(ws);
  });

  test("a constructor the application set on the driver's global neonConfig is left in place", () => {
    class Mine {}
    neonConfig.webSocketConstructor = Mine as never;
    try {
      expect(socketSettings(config)).not.toHaveProperty('webSocketConstructor');
    } finally {
      neonConfig.webSocketConstructor = undefined as never;
    }
  });
});

/** What an app's error handler reads of a Prisma error. */
function prismaView(err: unknown): { known: boolean; code: unknown; meta: unknown } {
  return { known: err instanceof Prisma.PrismaClientKnownRequestError, code: (err as { code?: unknown }).code, meta: (err as { meta?: unknown }).meta };
}

test("serverless mode's HTTP statements fail with Prisma's codes and meta (P2002, P2003, P2010), as the same statements over WebSocket", async () => {
  const testDb = await createTestDatabase({ prefix: 'neon-http-errors' });
  const proxy = await startNeonProxy({ upstream: testServer().info() });
  const db = createDb({
    PrismaClient,
    mode: 'serverless',
    url: testDb.urlWith(undefined, { host: NEON_TEST_HOST, port: 5432 }),
    neon: { wsProxy: proxy.wsProxy, useSecureWebSocket: false, fetchEndpoint: proxy.fetchEndpoint },
  });
  try {
    await db.user.create({ data: { email: 'taken@neon.test' } });
    // The same failing statements outside a unit (HTTP) and inside one (WebSocket).
    const statements: Record<string, (c: Prisma.TransactionClient) => Promise<unknown>> = {
      P2002: (c) => c.user.create({ data: { email: 'taken@neon.test' } }),
      P2003: (c) => c.transfer.create({ data: { fromId: 999_999, toId: 999_998, amount: 1, reference: 'no-such-accounts' } }),
      P2010: (c) => c.$executeRaw`INSERT INTO users (email) VALUES (${'taken@neon.test'})`,
    };
    for (const [code, statement] of Object.entries(statements)) {
      const httpBefore = proxy.received().http;
      const overHttp = prismaView(await rejectionOf(statement(db)));
      expect(proxy.received().http).toBeGreaterThan(httpBefore);
      const overWebSocket = prismaView(await rejectionOf(db.transaction((tx) => statement(tx))));
      expect(overWebSocket).toMatchObject({ known: true, code });
      expect(overHttp).toEqual(overWebSocket);
    }
  } finally {
    await db.close();
    await proxy.close();
    await testDb.drop();
  }
});
