/**
 * No-pool serverless mode (issue 4): after a burst of units of work and single
 * queries, nothing of the application stays connected — on the server, in the
 * process, behind PgBouncer, and on the Neon driver (HTTP for single statements, a
 * short-lived WebSocket for transactions) — without calling db.close().
 */
import { PrismaClient } from '../src/generated/prisma/client';
import { createDb, DatabaseConnectionError, type Db } from '../src/index';
import { adminQuery, countConnections, createTestDatabase, testServer, type TestDatabase } from './support/db';
import { NEON_TEST_HOST, startNeonProxy, type NeonProxy } from './support/neon-proxy';
import { startPgBouncer, type PgBouncer } from './support/pgbouncer';
import { eventually, rejectionOf, sockets } from './support/async';

let testDb: TestDatabase;
/** Closed in afterAll only, after every assertion about what they left open. */
const dbs: Array<Db<PrismaClient>> = [];

function serverlessDb(options: Omit<Parameters<typeof createDb<PrismaClient>>[0], 'PrismaClient' | 'mode'>): Db<PrismaClient> {
  const d = createDb({ PrismaClient, mode: 'serverless', ...options });
  dbs.push(d);
  return d;
}

beforeAll(async () => {
  testDb = await createTestDatabase({ prefix: 'serverless' });
});

afterAll(async () => {
  for (const d of dbs) await d.close();
  await testDb?.drop();
});

/**
 * 100 units: 50 transactions (two writes and a read each) and 50 single queries, in
 * waves of 10 concurrent ones. `during` runs inside one of the transactions.
 */
async function burst(db: Db<PrismaClient>, tag: string, during?: () => Promise<void>): Promise<void> {
  for (let wave = 0; wave < 10; wave++) {
    await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const n = wave * 10 + i;
        if (n % 2 === 0) {
          await db.transaction(async (tx) => {
            const u = await tx.user.create({ data: { email: `${tag}-${n}@example.com` } });
            await tx.user.update({ where: { id: u.id }, data: { name: `n${n}` } });
            expect(await tx.user.count({ where: { email: `${tag}-${n}@example.com` } })).toBe(1);
            if (n === 42 && during) await during();
          });
        } else if (n % 4 === 1) {
          await db.user.findMany({ where: { email: { startsWith: `${tag}-` } }, take: 5 });
        } else {
          expect(await db.$queryRaw<{ n: number }[]>`SELECT ${n}::int AS n`).toEqual([{ n }]);
        }
      }),
    );
  }
  expect(await db.user.count({ where: { email: { startsWith: `${tag}-` } } })).toBe(50);
}

describe('pg driver', () => {
  test('after 100 units of work nothing stays connected, without close()', async () => {
    const app = 'srv-pg';
    const socketsBefore = sockets();
    const db = serverlessDb({ url: testDb.url, applicationName: app });
    let connectedDuring = 0;
    await burst(db, 'pg', async () => {
      connectedDuring = await countConnections(app, testDb.name);
    });
    // The server did see our connections while the work ran.
    expect(connectedDuring).toBeGreaterThanOrEqual(1);

    // On the server: no backend of ours left (a closing backend takes a few ms).
    expect(await eventually(async () => (await countConnections(app, testDb.name)) === 0, 5_000)).toBe(true);
    // In the process: no socket left open.
    expect(await eventually(() => sockets() <= socketsBefore, 5_000)).toBe(true);
    // In the layer: every connection opened was closed again, none is idle in a pool.
    const { pool, counters } = db.stats();
    expect(pool).toMatchObject({ open: 0, idle: 0, inUse: 0 });
    expect(counters.connectionsOpened).toBeGreaterThanOrEqual(100);
    expect(counters.connectionsClosed).toBe(counters.connectionsOpened);
  });

  test('a failing unit and a failing query leave nothing connected either', async () => {
    const app = 'srv-pg-fail';
    const db = serverlessDb({ url: testDb.url, applicationName: app });
    await db.user.create({ data: { email: 'srv-dup@example.com' } });
    const failures = await Promise.allSettled([
      db.user.create({ data: { email: 'srv-dup@example.com' } }),
      db.transaction(async (tx) => {
        await tx.user.create({ data: { email: 'srv-tx@example.com' } });
        throw new Error('rolled back');
      }),
      db.transaction(async (tx) => tx.$executeRawUnsafe('SELECT * FROM no_such_table')),
      db.session(async (c) => c.$queryRawUnsafe('SELECT 1/0')),
    ]);
    expect(failures.map((f) => f.status)).toEqual(['rejected', 'rejected', 'rejected', 'rejected']);
    expect(await eventually(async () => (await countConnections(app, testDb.name)) === 0, 5_000)).toBe(true);
    expect(db.stats().pool).toMatchObject({ open: 0, inUse: 0 });
    expect(await db.user.count({ where: { email: 'srv-tx@example.com' } })).toBe(0);
  });
});

describe('through PgBouncer in transaction mode', () => {
  let bouncer: PgBouncer;
  beforeAll(async () => {
    bouncer = await startPgBouncer(testServer().info(), { name: 'srv-bouncer' });
  });
  afterAll(async () => {
    for (const d of dbs.splice(0)) await d.close();
    await bouncer?.stop();
  });

  const ourClients = async (): Promise<Array<Record<string, unknown>>> =>
    (await bouncer.console('SHOW CLIENTS')).filter((c) => c.database === testDb.name);

  test('after 100 units of work PgBouncer has no client of ours, without close()', async () => {
    const app = 'srv-bouncer';
    const socketsBefore = sockets();
    const url = bouncer.url(testDb.name, { sslmode: 'require', sslrootcert: bouncer.caFile, pgbouncer: 'true' });
    const db = serverlessDb({ url, applicationName: app, timeouts: { statementMs: 4_321 } });
    expect(db.config.pooler).toBe(true);
    let clientsDuring = 0;
    let timeoutInUnit = '';
    await burst(db, 'bouncer', async () => {
      clientsDuring = (await ourClients()).length;
      const [row] = await db.current().$queryRaw<{ st: string }[]>`SELECT current_setting('statement_timeout') AS st`;
      timeoutInUnit = row!.st;
    });
    // The traffic really went through PgBouncer...
    expect(clientsDuring).toBeGreaterThanOrEqual(1);
    const stats = (await bouncer.console('SHOW STATS')).find((s) => s.database === testDb.name);
    expect(Number(stats?.total_xact_count)).toBeGreaterThanOrEqual(100);
    // ...with the unit's timeouts set inside the transaction, as startup parameters are dropped.
    expect(timeoutInUnit).toBe('4321ms');

    // PgBouncer holds no client connection of ours (its own server pool may stay).
    expect(await eventually(async () => (await ourClients()).length === 0, 5_000)).toBe(true);
    expect(await eventually(() => sockets() <= socketsBefore, 5_000)).toBe(true);
    expect(db.stats().pool).toMatchObject({ open: 0, inUse: 0 });
  });
});

describe('Neon driver', () => {
  let proxy: NeonProxy;
  beforeAll(async () => {
    proxy = await startNeonProxy({ upstream: testServer().info() });
  });
  afterAll(async () => {
    for (const d of dbs.splice(0)) await d.close();
    await proxy?.close();
  });

  test('single queries go over HTTP, transactions over a short-lived WebSocket; nothing stays open', async () => {
    const app = 'srv-neon';
    const socketsBefore = sockets();
    const db = serverlessDb({
      url: testDb.urlWith(undefined, { host: NEON_TEST_HOST, port: 5432 }),
      applicationName: app,
      neon: { wsProxy: proxy.wsProxy, useSecureWebSocket: false, fetchEndpoint: proxy.fetchEndpoint },
    });

    // A single query: one HTTP request, no WebSocket, no connection of ours on the server.
    const requestsBefore = proxy.received().http;
    expect(await db.$queryRaw<{ n: number }[]>`SELECT ${5}::int AS n`).toEqual([{ n: 5 }]);
    expect(proxy.received().http).toBeGreaterThan(requestsBefore);
    expect(proxy.computeConnections()).toBe(0);
    expect(db.stats().counters.connectionsOpened).toBe(0);

    // A transaction: a WebSocket tunnel while it runs, none afterwards.
    let tunnelsDuring = 0;
    let connectedDuring = 0;
    const requestsBeforeTx = proxy.received().http;
    await db.transaction(async (tx) => {
      await tx.user.create({ data: { email: 'neontx@example.com' } });
      tunnelsDuring = proxy.computeConnections();
      connectedDuring = await countConnections(app, testDb.name);
    });
    expect(tunnelsDuring).toBe(1);
    expect(connectedDuring).toBe(1);
    expect(proxy.received().http).toBe(requestsBeforeTx);
    expect(await eventually(() => proxy.computeConnections() === 0, 5_000)).toBe(true);

    // The burst: 50 transactions over WebSockets, 50 single queries over HTTP.
    const httpBefore = proxy.received().http;
    const opened = db.stats().counters.connectionsOpened;
    await burst(db, 'neon');
    expect(proxy.received().http - httpBefore).toBeGreaterThanOrEqual(50);
    expect(db.stats().counters.connectionsOpened - opened).toBeGreaterThanOrEqual(50);

    expect(await eventually(() => proxy.computeConnections() === 0, 5_000)).toBe(true);
    expect(await eventually(async () => (await countConnections(app, testDb.name)) === 0, 5_000)).toBe(true);
    const { pool, counters } = db.stats();
    expect(pool).toMatchObject({ open: 0, inUse: 0 });
    expect(counters.connectionsClosed).toBe(counters.connectionsOpened);
    // No socket left in the process (idle HTTP keep-alive sockets of fetch close within seconds).
    expect(await eventually(() => sockets() <= socketsBefore, 10_000, 100)).toBe(true);
  });

  function neonDb(options: Omit<Parameters<typeof serverlessDb>[0], 'url' | 'neon'> = {}): Db<PrismaClient> {
    return serverlessDb({
      url: testDb.urlWith(undefined, { host: NEON_TEST_HOST, port: 5432 }),
      neon: { wsProxy: proxy.wsProxy, useSecureWebSocket: false, fetchEndpoint: proxy.fetchEndpoint },
      ...options,
    });
  }

  const running = async (marker: string): Promise<number> =>
    (
      await adminQuery<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND query LIKE $2 AND state = 'active' AND pid <> pg_backend_pid()",
        [testDb.name, `%${marker}%`],
      )
    )[0]?.n ?? -1;

  test('a db.session keeps one connection: the same backend, its settings and its advisory lock, statement after statement', async () => {
    const db = neonDb();
    const seen = await db.session(async (c) => {
      const [first] = await c.$queryRawUnsafe<{ pid: number }[]>('SELECT pg_backend_pid() AS pid');
      await c.$executeRawUnsafe("SELECT set_config('application_name', 'srv-session-state', false)");
      await c.$executeRawUnsafe('SELECT pg_advisory_lock(4242)');
      const [after] = await c.$queryRawUnsafe<{ pid: number; app: string; locks: number }[]>(
        "SELECT pg_backend_pid() AS pid, current_setting('application_name') AS app, (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND pid = pg_backend_pid()) AS locks",
      );
      await c.$executeRawUnsafe('SELECT pg_advisory_unlock(4242)');
      return { first: first!.pid, ...after! };
    });
    expect(seen).toEqual({ first: seen.pid, pid: seen.pid, app: 'srv-session-state', locks: 1 });
    // Outside the session single statements still go over HTTP.
    const before = proxy.received().http;
    await db.$queryRawUnsafe('SELECT 1');
    expect(proxy.received().http).toBe(before + 1);
  });

  test("close()'s deadline ends an HTTP statement still running: it fails before close() resolves, outcome unknown, and the query is cancelled", async () => {
    const db = neonDb({ timeouts: { statementMs: 60_000 } });
    let settled: unknown;
    const statement = rejectionOf(db.$executeRawUnsafe('SELECT pg_sleep(20) /*srv-close-http*/')).then((err) => (settled = err));
    expect(await eventually(async () => (await running('srv-close-http')) === 1, 10_000, 50)).toBe(true);
    await db.close({ deadlineMs: 500 });
    expect(settled).toBeInstanceOf(DatabaseConnectionError);
    expect(settled).toMatchObject({ retryable: false, outcome: 'unknown' });
    expect((settled as Error).message).toMatch(/closed by db\.close\(\) after its deadline/);
    await statement;
    // The request was aborted: Neon cancels the query when its client goes (sql_over_http.rs).
    expect(await eventually(async () => (await running('srv-close-http')) === 0, 10_000, 100)).toBe(true);
  });

  test('statementMs: 0 (no statement bound): a single statement against a silent endpoint still fails, at the connect deadline', async () => {
    const db = neonDb({ timeouts: { connectMs: 1_000, statementMs: 0 } });
    proxy.blackhole();
    try {
      const err = await Promise.race([
        rejectionOf(db.$queryRawUnsafe('SELECT 1')),
        new Promise((resolve) => setTimeout(() => resolve('still pending after 30 s'), 30_000).unref()),
      ]);
      expect(err).toBeInstanceOf(DatabaseConnectionError);
    } finally {
      proxy.reset();
    }
  });

  test('an HTTP error that quotes the connection string reaches the caller without the password', async () => {
    const password = 'Echoed-Secret-9f3k';
    const url = testDb.urlWith(undefined, { host: NEON_TEST_HOST, port: 5432 });
    const echoing = serverlessDb({
      url: url.replace(/:\/\/([^:@]+)(:[^@]*)?@/, `://$1:${password}@`),
      neon: { wsProxy: proxy.wsProxy, useSecureWebSocket: false, fetchEndpoint: proxy.fetchEndpoint },
    });
    // A peer that quotes the request back, as a driver or a proxy may in an error.
    const realFetch = globalThis.fetch;
    globalThis.fetch = (async (input: string, init?: RequestInit) => {
      const quoted = new Headers(init?.headers).get('Neon-Connection-String') ?? '';
      return new Response(JSON.stringify({ message: `cannot use connection string ${quoted}`, code: 'XX000' }), { status: 400, headers: { 'content-type': 'application/json' } });
    }) as typeof fetch;
    try {
      const err = (await rejectionOf(echoing.$queryRawUnsafe('SELECT 1'))) as Error & { cause?: Error };
      const seen = `${err.message} ${err.stack} ${JSON.stringify(err)} ${String(err.cause?.message)} ${String(err.cause?.stack)}`;
      expect(seen).toContain('cannot use connection string');
      expect(seen).not.toContain(password);
    } finally {
      globalThis.fetch = realFetch;
    }
  });
});
