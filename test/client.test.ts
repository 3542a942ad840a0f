// The client factory against the real server, through both drivers: laziness, pool
// bounds, acquire timeout, stale-connection recovery, server-side timeouts.
import net from 'node:net';
import { ConfigError, createDb as openDb, DatabaseClosedError, DatabaseConnectionError, getDb, PoolTimeoutError, resetDb, StatementTimeoutError } from '../src/index';
import { PrismaClient } from '../src/generated/prisma/client';
import { countConnections, createTestDatabase, terminateConnections, type TestDatabase } from './support/db';
import { driverCase, type DriverCase } from './support/drivers';
import { startTcpProxy } from './support/tcp-proxy';
import { holdConnection, latch, sleep, sockets, waitFor } from './support/async';

let testDb: TestDatabase;
beforeAll(async () => {
  testDb = await createTestDatabase();
});
afterAll(async () => {
  await testDb.drop();
});

let appSeq = 0;
const appName = (label: string): string => `client-${label}-${process.pid}-${++appSeq}`;

// Every client a test creates is closed after it, also when the test failed half way:
// a pool left running past the end of this file keeps connecting from a torn-down Jest
// environment and fails whichever file the worker runs next.
const opened: { close(o?: { deadlineMs?: number }): Promise<void> }[] = [];
const createDb: typeof openDb = (options) => {
  const db = openDb(options);
  opened.push(db);
  return db;
};
afterEach(async () => {
  await Promise.all(opened.splice(0).map((db) => db.close({ deadlineMs: 1000 }).catch(() => undefined)));
});

/**
 * Samples countConnections(name) every 20 ms until stop() (the peak seen). stop() must
 * run whatever happens (finally): a sampler left behind would keep opening TLS
 * connections after this file's Jest environment is gone, whose lazy `require('net')` in
 * node-postgres then returns undefined and fails the next file in this worker.
 */
function samplePeak(name: string): { stop(): Promise<number> } {
  let peak = 0;
  let sampling = true;
  const loop = (async () => {
    while (sampling) {
      peak = Math.max(peak, await countConnections(name));
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    async stop() {
      sampling = false;
      await loop;
      return peak;
    },
  };
}

describe('createDb is lazy', () => {
  it('opens no socket, starts no timer and sends no query on creation', async () => {
    const before = process.getActiveResourcesInfo();
    const name = appName('lazy');
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: name });
    expect(process.getActiveResourcesInfo()).toEqual(before);
    expect(await countConnections(name)).toBe(0);
    expect(db.stats().pool.open).toBe(0);
    // The first query connects.
    await db.$queryRaw`SELECT 1`;
    expect(await countConnections(name)).toBe(1);
    await db.close();
  });

  it('fails fast on an unreachable host: no error on creation, a typed error on first use, nothing left open', async () => {
    const before = sockets();
    // A port nothing listens on.
    const closed = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const port = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(port));
      });
    });
    const db = createDb({ PrismaClient, url: `postgresql://app:pw@127.0.0.1:${closed}/x`, timeouts: { connectMs: 1000 } });
    await expect(db.user.count()).rejects.toBeInstanceOf(DatabaseConnectionError);
    await db.close();
    await waitFor(async () => sockets() === before);
  });

  it('bounds a connect to a server that never answers by the connect timeout', async () => {
    // Accepts TCP but never speaks: a blackholed database.
    const held: net.Socket[] = [];
    const silent = net.createServer((s) => void held.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as net.AddressInfo).port;
    const db = createDb({ PrismaClient, url: `postgresql://app:pw@127.0.0.1:${port}/x`, ssl: { mode: 'disable' }, timeouts: { connectMs: 500 } });
    const started = Date.now();
    const err = await db.$queryRaw`SELECT 1`.catch((e: unknown) => e);
    const elapsed = Date.now() - started;
    expect(err).toBeInstanceOf(DatabaseConnectionError);
    expect((err as Error).message).toMatch(/timeout|deadline/i);
    expect(elapsed).toBeGreaterThanOrEqual(450);
    expect(elapsed).toBeLessThan(5000);
    // A unit of work waits one connect timeout too, not one per pooled connection.
    const unitStarted = Date.now();
    await expect(db.transaction(async (tx) => tx.user.count())).rejects.toBeInstanceOf(DatabaseConnectionError);
    // One connect timeout (500 ms observed), not one per pooled connection (15 x 500 ms).
    expect(Date.now() - unitStarted).toBeLessThan(5000);
    await db.close();
    held.forEach((s) => s.destroy());
    await new Promise((r) => silent.close(r));
  });
});

describe('the layer API on the client', () => {
  it('is also under $datalayer, and a model of the same name keeps its accessor', async () => {
    // As if the schema had a `Session` model: Prisma would expose it as `db.session`.
    class WithSessionModel extends PrismaClient {
      get session(): string {
        return 'the Session model';
      }
    }
    const db = createDb({ PrismaClient: WithSessionModel, url: testDb.url, applicationName: appName('names') });
    expect(db.session as unknown).toBe('the Session model');
    const pid = await db.$datalayer.session(async (c) => (await c.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`)[0]!.pid);
    expect(pid).toEqual(expect.any(Number));
    // Members without a clash are on the client itself, and they are the same functions.
    expect(db.transaction).toBe(db.$datalayer.transaction);
    await db.close();
  });
});

describe('getDb', () => {
  afterEach(() => resetDb());

  it('returns one shared instance per process, kept on globalThis across module reloads', async () => {
    const a = getDb({ PrismaClient, url: testDb.url, applicationName: appName('global') });
    let reloaded: typeof import('../src/index') | undefined;
    jest.isolateModules(() => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      reloaded = require('../src/index');
    });
    const b = reloaded!.getDb({ PrismaClient, url: testDb.url });
    expect(b).toBe(a);
  });

  it('refuses options naming another database rather than hand back the first one (found by probes)', () => {
    // An app database and an audit one, both through getDb: the audit writes went to the app database.
    const app = getDb({ PrismaClient, url: testDb.url, applicationName: appName('global-app') });
    const auditUrl = testDb.url.replace(`/${testDb.name}?`, `/${testDb.name}_audit?`);
    expect(auditUrl).not.toBe(testDb.url);
    const err = (() => {
      try {
        getDb({ PrismaClient, url: auditUrl, applicationName: appName('global-audit') });
        return undefined;
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toContain(`${testDb.name}_audit`);
    expect((err as Error).message).not.toContain(testDb.password);
    // The same database, however the options are written, is still the one Db.
    expect(getDb({ PrismaClient, host: testDb.host, port: testDb.port, user: testDb.user, password: testDb.password, database: testDb.name, ssl: { mode: 'require', rootCert: testDb.caFile } })).toBe(app);
    expect(getDb({ PrismaClient, url: testDb.url, pool: { size: 2 } })).toBe(app);
  });
});

describe.each(['pg', 'neon'] as const)('%s driver', (driverName) => {
  let driver: DriverCase;
  beforeAll(async () => {
    driver = await driverCase(driverName, testDb);
  });
  afterAll(() => driver.close());

  it('never opens more than size + overflow connections, and closes the overflow once idle', async () => {
    const name = appName(`bound-${driverName}`);
    const db = createDb({
      PrismaClient,
      ...driver.options(testDb),
      applicationName: name,
      pool: { size: 5, maxOverflow: 10, overflowIdleMs: 300 },
    });
    const sampler = samplePeak(name);
    let results: { n: number }[][];
    let peak: number;
    try {
      results = await Promise.all(Array.from({ length: 200 }, (_, i) => db.$queryRawUnsafe<{ n: number }[]>('SELECT $1::int AS n, pg_sleep(0.01)::text', i)));
    } finally {
      peak = await sampler.stop();
    }
    expect(results.map((r) => r[0]?.n)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    expect(peak).toBeGreaterThan(5); // the load really used the overflow
    expect(peak).toBeLessThanOrEqual(15);
    expect(db.stats().pool.open).toBeLessThanOrEqual(15);
    // The overflow goes away once idle; `size` connections stay.
    await waitFor(async () => (await countConnections(name)) === 5);
    expect(db.stats().pool.open).toBe(5);
    await db.close();
    await waitFor(async () => (await countConnections(name)) === 0);
  });

  it("reads and writes the models in the URL's ?schema= (where `prisma migrate` puts them), not in public", async () => {
    const schema = `app_${driverName}`;
    await testDb.query(`CREATE SCHEMA ${schema} AUTHORIZATION ${testDb.appUser}`);
    await testDb.query(`CREATE TABLE ${schema}.users (LIKE public.users INCLUDING ALL)`);
    const options = driver.options(testDb);
    const url = new URL(options.url!);
    url.searchParams.set('schema', schema);
    const db = createDb({ PrismaClient, ...options, url: url.toString(), applicationName: appName(`schema-${driverName}`) });
    await db.user.create({ data: { email: `one@${schema}` } });
    await db.transaction(async (tx) => void (await tx.user.create({ data: { email: `two@${schema}` } })));
    expect((await db.user.findMany({ orderBy: { id: 'asc' } })).map((u) => u.email)).toEqual([`one@${schema}`, `two@${schema}`]);
    expect(await testDb.query(`SELECT email FROM ${schema}.users ORDER BY id`)).toEqual([{ email: `one@${schema}` }, { email: `two@${schema}` }]);
    expect(await testDb.query(`SELECT email FROM public.users WHERE email LIKE '%@${schema}'`)).toEqual([]);
    await db.close();
  });

  it('raises PoolTimeoutError (never hangs) when no connection frees up within the pool timeout', async () => {
    const db = createDb({
      PrismaClient,
      ...driver.options(testDb),
      applicationName: appName(`timeout-${driverName}`),
      pool: { size: 1, maxOverflow: 0, timeoutMs: 400 },
      transaction: { maxWaitMs: 5000, timeoutMs: 5000 },
    });
    // Holds the only connection (connecting alone may take a while on a loaded machine;
    // the pool timeout below must not race it).
    const release = await holdConnection(db);
    const started = Date.now();
    const errs = await Promise.all([1, 2, 3].map(() => db.user.count().catch((e: unknown) => e)));
    expect(Date.now() - started).toBeGreaterThanOrEqual(350);
    expect(Date.now() - started).toBeLessThan(5000);
    for (const err of errs) {
      expect(err).toBeInstanceOf(PoolTimeoutError);
      expect((err as PoolTimeoutError).retryable).toBe(true);
    }
    expect(db.stats().counters.poolTimeouts).toBe(3);
    // Callers that gave up wait no more (their requests stay in pg-pool's queue: they are not counted).
    expect(db.stats().pool.waiting).toBe(0);
    await release();
    // The pool is fine afterwards.
    expect(await db.user.count()).toBeGreaterThanOrEqual(0);
    await db.close();
  });

  it('recovers transparently after every pooled connection was terminated on the server', async () => {
    const name = appName(`terminated-${driverName}`);
    const db = createDb({ PrismaClient, ...driver.options(testDb), applicationName: name, pool: { size: 3, maxOverflow: 0 } });
    await Promise.all([1, 2, 3].map(() => db.$queryRaw`SELECT pg_sleep(0.05)::text`));
    expect(await countConnections(name)).toBe(3);
    expect(await terminateConnections({ applicationName: name })).toBe(3);
    // The next statements and units of work succeed without the caller seeing an error.
    expect(await db.user.count()).toBeGreaterThanOrEqual(0);
    await expect(db.transaction(async (tx) => tx.user.count())).resolves.toBeGreaterThanOrEqual(0);
    await Promise.all([1, 2, 3].map(() => db.$queryRaw`SELECT 1`));
    await db.close();
  });

  it('does not validate connections reused within the idle threshold', async () => {
    const db = createDb({ PrismaClient, ...driver.options(testDb), applicationName: appName(`noval-${driverName}`), pool: { size: 1, maxOverflow: 0, validateAfterIdleMs: 60_000 } });
    for (let i = 0; i < 20; i++) await db.$queryRaw`SELECT 1`;
    expect(db.stats().counters.validations).toBe(0);
    await db.close();
  });

  it('cancels a statement past statement_timeout with a typed error and keeps the client usable', async () => {
    const db = createDb({ PrismaClient, ...driver.options(testDb), applicationName: appName(`stmt-${driverName}`), timeouts: { statementMs: 200 } });
    const started = Date.now();
    // Cancelled by the server (57014) at 200 ms, long before the sleep would end.
    const err = await db.$queryRaw`SELECT pg_sleep(30)::text`.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StatementTimeoutError);
    expect((err as StatementTimeoutError).sqlState).toBe('57014');
    expect(Date.now() - started).toBeLessThan(10_000);
    const rows = await db.$queryRaw<{ ok: number }[]>`SELECT 1 AS ok`;
    expect(rows[0]?.ok).toBe(1);
    await db.close();
  });

  it('applies the configured timeouts and application_name on the server', async () => {
    const name = appName(`settings-${driverName}`);
    const db = createDb({
      PrismaClient,
      ...driver.options(testDb),
      applicationName: name,
      timeouts: { statementMs: 1234, lockMs: 567, idleInTransactionMs: 8900 },
    });
    const [row] = await db.$queryRaw<Record<string, string>[]>`
      SELECT current_setting('statement_timeout') AS st, current_setting('lock_timeout') AS lt,
             current_setting('idle_in_transaction_session_timeout') AS it, current_setting('application_name') AS app`;
    expect(row).toEqual({ st: '1234ms', lt: '567ms', it: '8900ms', app: name });
    await db.close();
  });

  describe("$disconnect(): Prisma's, the Db staying usable (the next query connects again)", () => {
    it.each(['pooled', 'serverless'] as const)('%s: closes every connection now, the Db stays open: the next query connects again, counters and events carry on, nothing keeps the process alive', async (mode) => {
      const name = appName(`disc-${mode}-${driverName}`);
      // What keeps a process alive (an Immediate is gone by the next turn).
      const holding = (): string[] => process.getActiveResourcesInfo().filter((r) => r !== 'Immediate');
      const before = holding();
      // Held now and not before: what earlier tests left may close meanwhile, this Db's may not stay.
      const added = (): string[] => {
        const left = [...before];
        return holding().filter((r) => {
          const at = left.indexOf(r);
          if (at !== -1) left.splice(at, 1);
          return at === -1;
        });
      };
      const db = createDb({ PrismaClient, ...driver.options(testDb), applicationName: name, mode, pool: { size: 3 } });
      const removed: string[] = [];
      db.on('remove', (info) => removed.push(info.pool));
      const broken: boolean[] = [];
      db.on('release', (info) => broken.push(info.broken));
      for (let invocation = 1; invocation <= 2; invocation++) {
        try {
          // Two statements and a unit at once: connections of their own (idle afterwards in pooled mode).
          await Promise.all([db.user.count(), db.$queryRaw`SELECT 1`, db.transaction((tx) => tx.user.count())]);
        } finally {
          await db.$disconnect();
        }
        expect(db.stats().state).toBe('open');
        expect(await countConnections(name)).toBe(0);
        expect(db.stats().pool).toMatchObject({ open: 0, idle: 0, inUse: 0 });
        const { connectionsOpened, connectionsClosed, transactions, commits } = db.stats().counters;
        // Not reset: each invocation's connections and unit add to the previous ones'.
        expect(connectionsClosed).toBe(connectionsOpened);
        expect(connectionsOpened).toBeGreaterThanOrEqual(invocation);
        expect([transactions, commits]).toEqual([invocation, invocation]);
        expect(removed).toHaveLength(connectionsClosed);
      }
      // Closed as $disconnect asked, not as failures.
      expect(broken).not.toContain(true);
      expect((await db.health()).status).toBe('healthy');
      await db.$disconnect();
      // No socket, no timer holding the process (the layer's and Prisma's): as before the Db was used.
      // (fetch's keep-alive sockets to the Neon fixture's HTTP endpoint close after undici's 4 s.)
      await waitFor(() => added().length === 0, 15_000);
    });

    it('waits for the work in flight, which completes (a unit is not rolled back); work sent meanwhile runs at once, and a full pool serves it once a slot frees', async () => {
      const name = appName(`disc-flight-${driverName}`);
      const db = createDb({ PrismaClient, ...driver.options(testDb), applicationName: name, pool: { size: 2, maxOverflow: 0 } });
      const order: string[] = [];
      const email = `disc-flight-${driverName}@example.com`;
      const started = latch();
      const statement = db.$executeRaw`SELECT pg_sleep(1)`.then(() => order.push('statement'));
      const unit = db
        .transaction(async (tx) => {
          await tx.user.create({ data: { email } });
          started.open();
          await sleep(500);
          return tx.user.count({ where: { email } });
        })
        .then((n) => order.push(`unit ${n}`));
      await started.promise;
      // Both connections are busy: the pool is full.
      const disconnected = db.$disconnect().then(() => order.push('disconnected'));
      const meanwhile = db.user.count({ where: { email } }).then(() => order.push('meanwhile'));
      await Promise.all([statement, unit, disconnected, meanwhile]);
      expect(order.indexOf('disconnected')).toBeGreaterThan(order.indexOf('statement'));
      expect(order.indexOf('disconnected')).toBeGreaterThan(order.indexOf('unit 1'));
      expect(order).toContain('meanwhile');
      expect(await db.user.count({ where: { email } })).toBe(1);
      // The connection opened for the work sent meanwhile may stay (pooled): a second $disconnect closes it.
      expect(await countConnections(name)).toBeLessThanOrEqual(1);
      await db.$disconnect();
      expect(await countConnections(name)).toBe(0);
      expect(db.stats().counters.poolTimeouts).toBe(0);
    });

    it('a statement already waiting for a connection when $disconnect is called is served, then its connection closes too: none is left open', async () => {
      const name = appName(`disc-queued-${driverName}`);
      const db = createDb({ PrismaClient, ...driver.options(testDb), applicationName: name, pool: { size: 1, maxOverflow: 0 } });
      const release = await holdConnection(db);
      // A Prisma query runs once awaited: then() sends it.
      const queued = db.user.count().then((n) => n);
      await waitFor(() => db.stats().pool.waiting === 1);
      let disconnected = false;
      const disconnecting = db.$disconnect().then(() => (disconnected = true));
      await sleep(100);
      // Waiting for the work in flight: the unit, and the statement it holds up.
      expect(disconnected).toBe(false);
      await release();
      await expect(queued).resolves.toEqual(expect.any(Number));
      await disconnecting;
      expect(await countConnections(name)).toBe(0);
      expect(db.stats().counters.connectionsClosed).toBe(db.stats().counters.connectionsOpened);
    });

    it("called inside a unit, a session or a handler's scope: does not wait for the caller's own connection (no deadlock), which closes once released", async () => {
      const name = appName(`disc-own-${driverName}`);
      const db = createDb({ PrismaClient, ...driver.options(testDb), applicationName: name, mode: 'serverless' });
      const t0 = Date.now();
      await expect(
        db.transaction(async (tx) => {
          await tx.user.count();
          await db.$disconnect();
          return tx.user.count();
        }),
      ).resolves.toEqual(expect.any(Number));
      await expect(
        db.session(async (s) => {
          await s.$executeRaw`SET application_name = 'still-the-session'`;
          await db.$disconnect();
          return (await s.$queryRaw<{ a: string }[]>`SELECT current_setting('application_name') AS a`)[0]!.a;
        }),
      ).resolves.toBe('still-the-session');
      // The serverless habit inside db.handler: the scope's kept connection closes at the $disconnect.
      const handler = db.handler(async () => {
        try {
          return await db.transaction((tx) => tx.user.count());
        } finally {
          await db.$disconnect();
          order.push(await countConnections(name));
        }
      });
      const order: number[] = [];
      await handler();
      await handler();
      expect(order).toEqual([0, 0]);
      // Far below $disconnect's 10 s bound, which a wait for the caller's own connection would reach.
      expect(Date.now() - t0).toBeLessThan(8_000);
      expect(await countConnections(name)).toBe(0);
    });

    it('close() stays the end: after $disconnect it closes for good; a close during $disconnect ends both; $disconnect after close resolves', async () => {
      const db = createDb({ PrismaClient, ...driver.options(testDb), applicationName: appName(`disc-close-${driverName}`) });
      await db.user.count();
      await db.$disconnect();
      await db.user.count();
      const slow = db.$executeRaw`SELECT pg_sleep(1)`.catch((e: unknown) => e);
      await sleep(100);
      const disconnected = db.$disconnect();
      await db.close({ deadlineMs: 5_000 });
      await disconnected;
      expect(await slow).toBe(1);
      expect(db.stats().state).toBe('closed');
      await expect(db.user.count()).rejects.toBeInstanceOf(DatabaseClosedError);
      await expect(db.$disconnect()).resolves.toBeUndefined();
      await expect(db.user.count()).rejects.toBeInstanceOf(DatabaseClosedError);
    });
  });
});

// pg only: the Neon proxy fixture's blackhole() silences new connections, not established ones.
describe('silently dropped connections (pg)', () => {
  it('replaces a connection that went silent while idle (NAT drop, suspended compute), without the caller seeing it', async () => {
    const proxy = await startTcpProxy({ host: testDb.host, port: testDb.port });
    try {
      const name = appName('silent');
      const db = createDb({
        PrismaClient,
        url: testDb.url.replace(`:${testDb.port}/`, `:${proxy.port}/`),
        applicationName: name,
        pool: { size: 1, maxOverflow: 0, validateAfterIdleMs: 100 },
        // Also bounds the validation on the dead socket. Far above a loaded machine's TLS +
        // SCRAM handshake, which the replacement connection needs (300 ms was too close).
        timeouts: { connectMs: 3000 },
      });
      await db.$queryRaw`SELECT 1`;
      proxy.blackholeExisting();
      await new Promise((r) => setTimeout(r, 150));
      // Without the idle check this statement would wait on a dead socket indefinitely.
      const started = Date.now();
      await expect(db.transaction(async (tx) => tx.user.count())).resolves.toBeGreaterThanOrEqual(0);
      // The counters below are the proof; the bound only says it did not wait on the dead socket.
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(db.stats().counters.validations).toBe(1);
      expect(db.stats().counters.connectionsRecovered).toBe(1);
      await db.close();
    } finally {
      await proxy.close();
    }
  });

});

describe('hot pool cost', () => {
  async function xacts(): Promise<number> {
    const rows = await testDb.query<{ n: string }>(
      `SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = current_database()`,
    );
    return Number(rows[0]?.n);
  }

  // Every statement on the server is one transaction in pg_stat_database. The counts
  // are flushed when a backend exits, so each run closes its pool before reading.
  async function statementsFor(queries: number, validateAfterIdleMs: number): Promise<number> {
    const name = appName('hot');
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: name, pool: { size: 1, maxOverflow: 0, validateAfterIdleMs } });
    const before = await xacts();
    for (let i = 0; i < queries; i++) await db.user.findUnique({ where: { id: i + 1 } });
    await db.close();
    await waitFor(async () => (await countConnections(name)) === 0);
    // The admin connection that reads the figure is itself one transaction.
    let after = 0;
    await waitFor(async () => {
      after = await xacts();
      return after - before >= queries;
    });
    return after - before - 1;
  }

  it('1,000 sequential queries cost 1,000 statements on the server: no ping per checkout', async () => {
    const counted = await statementsFor(1000, 30_000);
    expect(counted).toBeGreaterThanOrEqual(1000);
    expect(counted).toBeLessThanOrEqual(1002);
    // The measure can see a per-checkout ping: with validation forced on every reuse
    // the same loop costs one extra statement per query.
    const withPing = await statementsFor(200, 0);
    expect(withPing).toBeGreaterThanOrEqual(390);
  });
});

describe("Prisma's own client options (createDb's `prisma`)", () => {
  test('reach the client: query events, global omit, on every statement', async () => {
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: appName('prisma-opts'), prisma: { log: [{ emit: 'event', level: 'query' }], omit: { user: { createdAt: true } } } });
    const queries: string[] = [];
    // Typed as on a PrismaClient built with these options: no cast (`npm run typecheck` checks this file).
    db.$on('query', (e) => queries.push(`${e.query} (${e.duration} ms)`));
    const user = await db.user.create({ data: { email: `${appName('omit')}@example.com` } });
    expect(queries.some((q) => q.includes('INSERT INTO'))).toBe(true);
    expect(user).not.toHaveProperty('createdAt');
  });

  test('db.$on is typed by the log levels passed, as on a PrismaClient built with them', async () => {
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: appName('prisma-on'), prisma: { log: [{ emit: 'event', level: 'query' }, { emit: 'event', level: 'info' }] } });
    const seen: string[] = [];
    // Chained, as Prisma's $on returns the client.
    db.$on('query', (e) => seen.push(`query ${typeof e.params} ${typeof e.duration}`)).$on('info', (e) => seen.push(`info ${typeof e.message}`));
    // @ts-expect-error -- 'warn' is not among the levels logged as events (Prisma types it so too).
    db.$on('warn', () => undefined);
    // @ts-expect-error -- a query event has no `message`.
    db.$on('query', (e) => e.message);
    const plain = createDb({ PrismaClient, url: testDb.url });
    // @ts-expect-error -- no `log` option: no event, as on a PrismaClient without one.
    plain.$on('query', () => undefined);
    await db.user.count();
    expect(seen).toContain('query string number');
  });

  test('the layer keeps the adapter and transactionOptions, and a misplaced or misspelt option is a ConfigError naming it', () => {
    const make = (options: object): unknown => {
      try {
        createDb({ PrismaClient, url: testDb.url, ...options } as Parameters<typeof openDb>[0]);
      } catch (err) {
        return err;
      }
      return undefined;
    };
    const settings = (err: unknown): string[] => ((err as { issues?: { setting: string }[] }).issues ?? []).map((i) => i.setting);
    const misplaced = make({ log: ['query'] });
    expect(settings(misplaced)).toEqual(['log']);
    expect((misplaced as Error).message).toContain('prisma: { log }');
    expect(settings(make({ pol: { size: 2 } }))).toEqual(['pol']);
    expect(settings(make({ prisma: { adapter: {} } }))).toEqual(['prisma.adapter']);
    expect(settings(make({ prisma: { transactionOptions: { timeout: 1 } } }))).toEqual(['prisma.transactionOptions']);
    expect(make({ prisma: { errorFormat: 'minimal' } })).toBeUndefined();
  });
});
