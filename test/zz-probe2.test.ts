import { PrismaClient } from '../src/generated/prisma/client';
import { createDb, type Db } from '../src/index';
import { createTestDatabase, testServer, type TestDatabase } from './support/db';
import { startNeonProxy, type NeonProxy } from './support/neon-proxy';

let testDb: TestDatabase;
let proxy: NeonProxy;
beforeAll(async () => {
  testDb = await createTestDatabase({ prefix: 'probe2' });
  proxy = await startNeonProxy({ upstream: testServer().info(), wakeDelayMs: 500 });
});
afterAll(async () => {
  await proxy?.close();
  await testDb?.drop();
});
const HOST = 'ep-quiet-sun-123456.us-east-2.aws.neon.tech';
for (const mode of ['pooled', 'serverless'] as const) {
  test(`values round trip (${mode})`, async () => {
    const db: Db<PrismaClient> = createDb({
      PrismaClient,
      url: testDb.urlWith({}, { user: testDb.appUser, password: testDb.appPassword, host: HOST, port: 5432 }),
      mode,
      neon: { wsProxy: proxy.wsProxy, useSecureWebSocket: false, fetchEndpoint: proxy.fetchEndpoint },
    });
    try {
      const arr = ['a\nb', 'c"d', 'e\\f', 'NULL', '', 'x,y', 'tab\there', 'ü\u0001'];
      const r1 = await db.$queryRawUnsafe<{ a: string[] }[]>('SELECT $1::text[] AS a', arr).catch((e) => e);
      console.log(mode, 'text[]', JSON.stringify(r1), JSON.stringify(r1?.[0]?.a) === JSON.stringify(arr));
      const r2 = await db.$queryRawUnsafe<{ a: unknown }[]>('SELECT $1::jsonb AS a', JSON.stringify({ k: 'a\nb' })).catch((e) => e);
      console.log(mode, 'jsonb', JSON.stringify(r2));
      const r3 = await db.$queryRawUnsafe<{ a: unknown }[]>('SELECT $1::int8 AS a, $2::numeric AS b, $3::bytea AS c, $4::timestamptz AS d', 9007199254740993n, '1.10', Buffer.from([0, 1, 255]), new Date('2020-01-02T03:04:05.678Z')).catch((e) => e);
      console.log(mode, 'scalars', r3 instanceof Error ? r3.message : JSON.stringify(r3, (_k, v) => typeof v === 'bigint' ? `${v}n` : v));
      const r4 = await db.$queryRawUnsafe<{ a: unknown }[]>("SELECT 'a\nb'::text AS a, ARRAY['a\nb','c\"d']::text[] AS b").catch((e) => e);
      console.log(mode, 'out', JSON.stringify(r4));
    } finally {
      await db.close();
    }
  }, 60_000);
}
