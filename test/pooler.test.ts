// Through a real PgBouncer in transaction mode (Debian's 1.18: no prepared-statement
// support): many concurrent units with a repeated parameterised query, and the unit of
// work's timeouts still in force although startup parameters cannot carry them, sent with
// BEGIN and the unit's first statement in one round trip.
import { createDb, StatementTimeoutError } from '../src/index';
import { PrismaClient } from '../src/generated/prisma/client';
import { createTestDatabase, testServer, type TestDatabase } from './support/db';
import { startPgBouncer, type PgBouncer } from './support/pgbouncer';
import { startTcpProxy } from './support/tcp-proxy';

let testDb: TestDatabase;
let bouncer: PgBouncer;

beforeAll(async () => {
  testDb = await createTestDatabase();
  // No ignored startup parameters: PgBouncer refuses any it does not know, so this also
  // proves the layer sends none in pooler mode.
  bouncer = await startPgBouncer(testServer().info(), { poolMode: 'transaction', defaultPoolSize: 5, ignoreStartupParameters: [] });
}, 60_000);
afterAll(async () => {
  await bouncer?.stop();
  await testDb?.drop();
});

const viaBouncer = (extra: Record<string, string> = {}): string => bouncer.url(testDb.name, { pgbouncer: 'true', sslmode: 'disable', ...extra });

it('runs 200 concurrent units with a repeated parameterised query, with no prepared-statement conflict', async () => {
  const db = createDb({ PrismaClient, url: viaBouncer(), pool: { size: 10, maxOverflow: 10 } });
  expect(db.config.pooler).toBe(true);
  const account = await db.account.create({ data: { owner: 'pooled', balance: 0 } });
  const results = await Promise.all(
    Array.from({ length: 200 }, (_, i) =>
      db.transaction(async (tx) => {
        const found = await tx.account.findUnique({ where: { id: account.id } });
        await tx.account.update({ where: { id: account.id }, data: { balance: { increment: 1 } } });
        return (await tx.$queryRaw<{ n: number }[]>`SELECT ${i}::int AS n`)[0]!.n + (found ? 0 : 1e6);
      }),
    ),
  );
  expect(results.sort((a, b) => a - b)).toEqual(Array.from({ length: 200 }, (_, i) => i));
  expect((await db.account.findUniqueOrThrow({ where: { id: account.id } })).balance).toBe(200);
  // Single statements too, many times over the same server connections.
  for (let i = 0; i < 50; i++) await db.account.findUnique({ where: { id: account.id } });
  await db.close();
});

it('keeps the statement timeout in force inside a unit of work', async () => {
  const db = createDb({ PrismaClient, url: viaBouncer(), timeouts: { statementMs: 300 } });
  const started = Date.now();
  // Cancelled by the server at 300 ms, long before the sleep would end.
  const err = await db.transaction((tx) => tx.$queryRaw`SELECT pg_sleep(30)::text`).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(StatementTimeoutError);
  expect(Date.now() - started).toBeLessThan(10_000);
  // The setting was local to that transaction: it did not leak onto the shared server connection.
  const [row] = await db.$queryRaw<{ st: string }[]>`SELECT current_setting('statement_timeout') AS st`;
  expect(row!.st).not.toBe('300ms');
  await db.close();
});

it("sends BEGIN and the unit's settings with its first statement through PgBouncer: 4 round trips for 3 statements, the timeout in force from the first", async () => {
  // A plaintext proxy in front of PgBouncer counts the round trips the client asks for.
  const proxy = await startTcpProxy({ host: bouncer.host, port: bouncer.port });
  const db = createDb({
    PrismaClient,
    url: bouncer.url(testDb.name, { pgbouncer: 'true', sslmode: 'disable' }, { port: proxy.port }),
    timeouts: { statementMs: 4321 },
    pool: { size: 1, maxOverflow: 0 },
  });
  try {
    await db.$queryRaw`SELECT 1`;
    const before = proxy.roundTrips;
    const owner = `pooled-rt-${Date.now()}`;
    const seen = await db.transaction(async (tx) => {
      const [row] = await tx.$queryRaw<{ st: string }[]>`SELECT current_setting('statement_timeout') AS st, ${owner}::text AS owner`;
      await tx.account.create({ data: { owner } });
      await tx.account.count({ where: { owner } });
      return row!.st;
    });
    // BEGIN + the settings + the first statement, two more statements, COMMIT.
    expect(proxy.roundTrips - before).toBe(4);
    expect(seen).toBe('4321ms');
    expect(await db.account.count({ where: { owner } })).toBe(1);
  } finally {
    await db.close();
    await proxy.close();
  }
});
