// The pool's first connection, opened when Prisma connects (src/pool.ts `warm`): it serves
// the first checkout instead of a second connection, an unclaimed one is given back, close
// leaves nothing open, and a failed attempt reaches the first caller once, as its own would.
import net from 'node:net';
import { createDb as openDb, DatabaseConnectionError, DeadlineExceededError, type DbOptions } from '../src/index';
import { PrismaClient } from '../src/generated/prisma/client';
import { SPARE_MS } from '../src/pool';
import { countConnections, createTestDatabase, type TestDatabase } from './support/db';
import { driverCase, type DriverCase } from './support/drivers';
import { latch, rejectionOf, waitFor } from './support/async';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy';

let testDb: TestDatabase;
beforeAll(async () => {
  testDb = await createTestDatabase({ prefix: 'pool' });
});
afterAll(async () => {
  await testDb.drop();
});

let appSeq = 0;
const appName = (label: string): string => `pool-${label}-${process.pid}-${++appSeq}`;

const opened: { close(o?: { deadlineMs?: number }): Promise<void> }[] = [];
const createDb = (options: DbOptions & { PrismaClient: typeof PrismaClient }) => {
  const db = openDb(options);
  opened.push(db);
  return db;
};
afterEach(async () => {
  await Promise.all(opened.splice(0).map((db) => db.close({ deadlineMs: 1000 }).catch(() => undefined)));
});

describe.each(['pg', 'neon'] as const)('%s driver: the first connection', (driverName) => {
  let driver: DriverCase;
  beforeAll(async () => {
    driver = await driverCase(driverName, testDb);
  });
  afterAll(() => driver.close());

  // Neon's serverless mode sends single statements over HTTP: they need no connection, so none is opened ahead.
  const make = (label: string, mode: 'pooled' | 'serverless') =>
    createDb({ PrismaClient, ...driver.options(testDb), applicationName: appName(label), mode, neon: { ...driver.options(testDb).neon, httpQueries: false } });

  it.each(['pooled', 'serverless'] as const)('%s: opens when Prisma connects, and the first statement uses it', async (mode) => {
    const db = make(`first-${mode}`, mode);
    const name = db.config.applicationName;
    await db.$connect();
    // No statement yet: the connection is open on the server, idle in the figures.
    await waitFor(async () => (await countConnections(name)) === 1);
    await waitFor(() => db.stats().pool.idle === 1);
    expect(db.stats().pool.inUse).toBe(0);
    expect(db.stats().counters.connectionsOpened).toBe(1);

    expect(await db.user.count()).toBe(0);
    await db.transaction((tx) => tx.user.count());
    // Pooled: the same connection served both; serverless: the statement took the warmed
    // one and the unit opened its own, each closed on release.
    expect(db.stats().counters.connectionsOpened).toBe(mode === 'pooled' ? 1 : 2);
    await waitFor(async () => (await countConnections(name)) === (mode === 'pooled' ? 1 : 0));
  });

  it('serverless: an unclaimed connection is closed after SPARE_MS; pooled: it stays, idle', async () => {
    const serverless = make('unclaimed-sl', 'serverless');
    const pooled = make('unclaimed-p', 'pooled');
    await Promise.all([serverless.$connect(), pooled.$connect()]);
    await waitFor(async () => (await countConnections(serverless.config.applicationName)) === 1);
    await waitFor(async () => (await countConnections(serverless.config.applicationName)) === 0, SPARE_MS + 5_000);
    expect(serverless.stats().counters.connectionsClosed).toBe(1);
    expect(serverless.stats().pool.open).toBe(0);
    expect(await countConnections(pooled.config.applicationName)).toBe(1);
    expect(pooled.stats().pool).toMatchObject({ open: 1, idle: 1, inUse: 0 });
    // And a statement after that opens a connection as usual.
    expect(await serverless.user.count()).toBe(0);
    expect(serverless.stats().counters.connectionsOpened).toBe(2);
  });

  it.each(['pooled', 'serverless'] as const)('%s: close() right after connecting leaves nothing open, without waiting for SPARE_MS', async (mode) => {
    const db = make(`close-${mode}`, mode);
    await db.$connect();
    const started = performance.now();
    await db.close();
    expect(performance.now() - started).toBeLessThan(SPARE_MS);
    await waitFor(async () => (await countConnections(db.config.applicationName)) === 0);
    expect(db.stats().counters.connectionsClosed).toBe(db.stats().counters.connectionsOpened);
  });
});

it("Neon's serverless mode with HTTP statements opens nothing ahead: a statement needs no connection", async () => {
  const neon = await driverCase('neon', testDb);
  try {
    const db = createDb({ PrismaClient, ...neon.options(testDb), applicationName: appName('neon-http'), mode: 'serverless' });
    await db.$connect();
    expect(await db.user.count()).toBe(0);
    expect(db.stats().counters.connectionsOpened).toBe(0);
    expect(await countConnections(db.config.applicationName)).toBe(0);
  } finally {
    await neon.close();
  }
});

it('a warmed connection that fails is reported to the first statement, once, as its own failure would be', async () => {
  // A port nothing listens on.
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const db = createDb({ PrismaClient, url: `postgresql://app:pw@127.0.0.1:${port}/x`, timeouts: { connectMs: 1000 } });
  const errors: unknown[] = [];
  db.on('error', (err) => errors.push(err));
  await db.$connect();
  // The attempt fails in the background; nothing is raised until a statement needs it.
  await new Promise((r) => setTimeout(r, 200));
  expect(errors).toEqual([]);
  expect(await rejectionOf(db.user.count())).toBeInstanceOf(DatabaseConnectionError);
  expect(errors).toHaveLength(1);
  expect(db.stats().counters.errors).toBe(1);
  // The next statement tries again: a new attempt, not the old failure.
  expect(await rejectionOf(db.user.count())).toBeInstanceOf(DatabaseConnectionError);
  expect(errors).toHaveLength(2);
});

// A statement outside a unit of work commits as it runs: when its connection goes after the
// server ran it, running it again on another connection would apply it twice (src/retry.ts).
describe('re-running a statement whose pooled connection was lost (pg)', () => {
  let proxy: TcpProxy;
  beforeAll(async () => {
    proxy = await startTcpProxy({ host: testDb.host, port: testDb.port });
  });
  afterAll(() => proxy.close());
  const viaProxy = (label: string) =>
    createDb({
      PrismaClient,
      url: testDb.urlWith({ sslmode: 'disable' }, { user: testDb.appUser, port: proxy.port }),
      applicationName: appName(label),
      // One reused connection, not validated at checkout: the statement itself finds the loss.
      pool: { size: 1, maxOverflow: 0, validateAfterIdleMs: 3_600_000 },
    });

  it.each(['rst', 'fin'] as const)('%s after the server ran an increment: not re-run, applied once, the caller told the connection was lost', async (mode) => {
    const db = viaProxy(`answer-lost-${mode}`);
    const account = await db.account.create({ data: { owner: `answer-lost-${mode}`, balance: 0 } });
    proxy.dropAfterStatement(/^UPDATE/i, mode);
    const failure = await rejectionOf(db.account.update({ where: { id: account.id }, data: { balance: { increment: 1 } } }));
    expect(proxy.fired.at(-1)).toEqual({ kind: 'after-statement', mode, result: 'answered' });
    expect(failure).toBeInstanceOf(DatabaseConnectionError);
    // Once: the server ran it; the layer did not run it again.
    expect((await testDb.query<{ balance: number }>('SELECT balance FROM accounts WHERE id = $1', [account.id]))[0]!.balance).toBe(1);
    expect(db.stats().counters.connectionsRecovered).toBe(0);
    // The pool carries on with a new connection.
    expect((await db.account.findUniqueOrThrow({ where: { id: account.id } })).balance).toBe(1);
  });

  it.each(['statement', 'session statement'] as const)('a %s whose answer was lost tells the caller it may have run: outcome unknown, not retryable', async (where) => {
    const db = viaProxy(`unknown-${where.replace(' ', '-')}`);
    const account = await db.account.create({ data: { owner: `unknown-${where}`, balance: 0 } });
    proxy.dropAfterStatement(/^UPDATE/i, 'rst');
    const increment = () => db.account.update({ where: { id: account.id }, data: { balance: { increment: 1 } } });
    const failure = await rejectionOf(where === 'statement' ? increment() : db.session(() => increment()));
    expect(proxy.fired.at(-1)).toEqual({ kind: 'after-statement', mode: 'rst', result: 'answered' });
    // Before: retryable true and no outcome, and a caller retrying on `retryable` applied the increment twice.
    expect(failure).toBeInstanceOf(DatabaseConnectionError);
    expect(failure).toMatchObject({ outcome: 'unknown', retryable: false });
    expect((await testDb.query<{ balance: number }>('SELECT balance FROM accounts WHERE id = $1', [account.id]))[0]!.balance).toBe(1);
  });
});

describe("the layer's own statements on a silent connection (pg)", () => {
  let proxy: TcpProxy;
  beforeAll(async () => {
    proxy = await startTcpProxy({ host: testDb.host, port: testDb.port });
  });
  afterAll(() => proxy.close());

  it("statementMs 0: a session whose network goes silent before its DISCARD ALL settles by the connect deadline, frees its slot, and the pool heals", async () => {
    const db = createDb({
      PrismaClient,
      url: testDb.urlWith({ sslmode: 'disable' }, { user: testDb.appUser, port: proxy.port }),
      applicationName: appName('session-silent-end'),
      pool: { size: 1, maxOverflow: 0, timeoutMs: 2_000 },
      // No statement timeout (the caller's statements may run unbounded). 3 s to connect: the
      // first connect overlaps Prisma's load of its query compiler, which blocks a loaded machine.
      timeouts: { statementMs: 0, connectMs: 3_000 },
    });
    await db.account.count();
    const started = Date.now();
    const session = db.session(async (c) => {
      await c.account.count();
      proxy.blackhole(); // after the caller's last statement: only the layer's DISCARD ALL is left
      return 'done';
    });
    // Before: still pending (forever), holding the only connection.
    const settled = await Promise.race([session.then((v) => ({ v })), new Promise((r) => setTimeout(() => r('pending'), 12_000))]);
    expect(settled).toEqual({ v: 'done' });
    expect(Date.now() - started).toBeLessThan(12_000);
    expect(db.stats().pool.inUse).toBe(0);
    proxy.heal();
    // The pool heals with the network (a connect caught in the hole fails by its own deadline).
    await waitFor(() => db.account.count().then(() => true, () => false), 10_000, 100);
  }, 30_000);

  it('idle connections gone silent together (a failover, a NAT that dropped every flow): one validation waits out the connect deadline, not one per connection', async () => {
    const connectMs = 2_000;
    const db = createDb({
      PrismaClient,
      url: testDb.urlWith({ sslmode: 'disable' }, { user: testDb.appUser, port: proxy.port }),
      applicationName: appName('silent-idle'),
      pool: { size: 6, maxOverflow: 0, timeoutMs: 3_000, validateAfterIdleMs: 0 },
      timeouts: { statementMs: 5_000, connectMs },
    });
    const name = db.config.applicationName;
    await Promise.all(Array.from({ length: 6 }, () => db.$executeRaw`SELECT pg_sleep(0.3)`));
    expect(db.stats().pool.idle).toBe(6);
    proxy.blackholeExisting();
    const started = Date.now();
    // Before: each idle connection was pinged in turn, connectMs each (6 × 2 s here; 50 s with
    // the defaults), far past the pool timeout and any unit's deadline.
    expect(await db.account.count()).toBeGreaterThanOrEqual(0);
    expect(Date.now() - started).toBeLessThan(2 * connectMs + 1_000);
    // The silent ones are gone, from the pool and from the server; the new one serves.
    expect(db.stats().pool.open).toBe(1);
    expect(db.stats().counters.connectionsRecovered).toBe(6);
    await waitFor(async () => (await countConnections(name)) === 1);
  }, 60_000);

  it("a statement unanswered within its deadline (a server gone without FIN) takes the connections idle since before it with it: the next callers don't each wait out a statement deadline", async () => {
    const statementMs = 2_000;
    const db = createDb({
      PrismaClient,
      url: testDb.urlWith({ sslmode: 'disable' }, { user: testDb.appUser, port: proxy.port }),
      applicationName: appName('silent-statement'),
      // validateAfterIdleMs is the default (30 s): connections used a moment ago are not pinged.
      pool: { size: 4, maxOverflow: 0 },
      timeouts: { statementMs, connectMs: 3_000 },
    });
    try {
      await Promise.all([1, 2, 3, 4].map(() => db.$executeRaw`SELECT pg_sleep(0.2)`));
      expect(db.stats().pool.idle).toBe(4);
      proxy.blackholeExisting(); // new connections get through
      const first = await rejectionOf(db.account.count());
      expect(first).toMatchObject({ name: 'DeadlineExceededError', deadline: 'statement' });
      // Before: each of the three other idle connections cost its caller statementMs + 750 ms and a DeadlineExceededError.
      for (let i = 0; i < 3; i++) {
        const started = Date.now();
        expect(await db.account.count()).toBeGreaterThanOrEqual(0);
        expect(Date.now() - started).toBeLessThan(statementMs);
      }
      expect(db.stats().counters.connectionsRecovered).toBe(3);
      expect(db.stats().pool.open).toBe(1);
      await waitFor(() => db.stats().counters.connectionsClosed === db.stats().counters.connectionsOpened - 1);
    } finally {
      proxy.heal();
    }
  }, 30_000);

  it('a statement gone silent alone keeps the connections heard since it was sent, and a server-side statement timeout is no silence', async () => {
    const db = createDb({
      PrismaClient,
      url: testDb.urlWith({ sslmode: 'disable' }, { user: testDb.appUser, port: proxy.port }),
      applicationName: appName('silent-one'),
      pool: { size: 2, maxOverflow: 0 },
      timeouts: { statementMs: 1_000, connectMs: 3_000 },
    });
    // A statement the server cancels (57014) at its statement_timeout: answered, not silent.
    await expect(db.$executeRaw`SELECT pg_sleep(3)`).rejects.toMatchObject({ name: 'StatementTimeoutError' });
    await Promise.all([1, 2].map(() => db.$executeRaw`SELECT pg_sleep(0.2)`));
    expect(db.stats().counters.connectionsRecovered).toBe(0);
    proxy.silenceOnStatement(/datalayer_silent/);
    const silent = rejectionOf(db.$queryRawUnsafe('SELECT 1 AS datalayer_silent'));
    // Used while the other waits for its answer: heard after that statement was sent.
    expect(await db.account.count()).toBeGreaterThanOrEqual(0);
    expect(await silent).toMatchObject({ name: 'DeadlineExceededError', deadline: 'statement' });
    expect(await db.account.count()).toBeGreaterThanOrEqual(0);
    expect(db.stats().counters.connectionsRecovered).toBe(0);
    expect(db.stats().counters.connectionsOpened).toBe(2);
  }, 30_000);

  it('callers that gave up waiting (pool timeout) while the only connection was being opened into a silent network leave no connection opened for nobody', async () => {
    const connectMs = 2_000;
    const db = createDb({
      PrismaClient,
      url: testDb.urlWith({ sslmode: 'disable' }, { user: testDb.appUser, port: proxy.port }),
      applicationName: appName('abandoned-queue'),
      pool: { size: 1, maxOverflow: 0, timeoutMs: 500 },
      timeouts: { connectMs },
    });
    try {
      proxy.blackhole();
      const acceptedBefore = proxy.accepted;
      const results = await Promise.all([1, 2, 3].map(() => rejectionOf(db.$executeRaw`SELECT 1`)));
      expect(results.map((e) => `${(e as Error).name} ${(e as { deadline?: string }).deadline ?? ''}`).sort()).toEqual(['DeadlineExceededError connect', 'PoolTimeoutError ', 'PoolTimeoutError ']);
      // Before: pg-pool served the two given-up requests later, each with a new connection into
      // the silence, one after the other (the pool counting it in use for connectMs each).
      await new Promise((r) => setTimeout(r, connectMs + 1_000));
      expect(db.stats().pool).toMatchObject({ open: 0, inUse: 0, waiting: 0 });
      expect(proxy.accepted - acceptedBefore).toBeLessThanOrEqual(1);
    } finally {
      proxy.heal();
    }
  }, 30_000);

  it.each(['validating its idle connection', 'opening its connection'] as const)("a unit's timeoutMs bounds its checkout when that is shorter than the connect deadline: %s on a silent network", async (step) => {
    const connectMs = 6_000;
    const timeoutMs = 2_000;
    const db = createDb({
      PrismaClient,
      url: testDb.urlWith({ sslmode: 'disable' }, { user: testDb.appUser, port: proxy.port }),
      applicationName: appName('unit-checkout'),
      pool: { size: 1, maxOverflow: 0, validateAfterIdleMs: 0 },
      timeouts: { connectMs },
    });
    try {
      if (step === 'validating its idle connection') {
        await db.account.count();
        proxy.blackholeExisting();
      } else proxy.blackhole();
      const started = Date.now();
      const failure = await rejectionOf(db.transaction((tx) => tx.account.count(), { timeoutMs }));
      // Before: the validation waited until the unit's statement deadline (timeoutMs + 750 ms), then
      // the unit ran on a new connection and succeeded past its timeoutMs; a connect waited connectMs.
      expect(failure).toBeInstanceOf(DeadlineExceededError);
      expect(failure).toMatchObject({ deadline: 'unit', timeoutMs, outcome: 'rolled-back' });
      expect(Date.now() - started).toBeLessThan(timeoutMs + 1_500);
    } finally {
      proxy.heal();
    }
  }, 30_000);
});

it('acquire and release events pair up when a connection is recycled (pool.recycleMs) while idle or in use', async () => {
  const db = createDb({ PrismaClient, url: testDb.url, applicationName: appName('recycle-pairs'), pool: { size: 1, maxOverflow: 0, recycleMs: 1_000 } });
  let inUse = 0;
  db.on('acquire', () => void inUse++);
  db.on('release', () => void inUse--);
  // In use past its lifetime: closed on release.
  await db.transaction(async (tx) => {
    await tx.user.count();
    await new Promise((r) => setTimeout(r, 1_300));
  });
  await db.user.count();
  // Idle past its lifetime: pg-pool takes it from its idle list and releases it to close it.
  await waitFor(() => db.stats().pool.open === 0, 5_000);
  // Before: that release, which no checkout had acquired, reached the listeners: inUse ended at -1.
  expect(inUse).toBe(0);
  const { connectionsOpened, connectionsClosed } = db.stats().counters;
  expect(connectionsOpened).toBe(2);
  await waitFor(() => db.stats().counters.connectionsClosed === 2);
  expect(connectionsClosed).toBeLessThanOrEqual(2);
});

it('acquire and release events pair up: a checkout that gave up (pool timeout) and the warmed connection are no release', async () => {
  // A listener keeping the number of connections in use from the pair, as a dashboard would.
  const db = createDb({
    PrismaClient,
    url: testDb.url,
    applicationName: appName('pairs'),
    pool: { size: 1, maxOverflow: 0, timeoutMs: 200 },
  });
  let inUse = 0;
  const seen: string[] = [];
  db.on('acquire', () => void (inUse++, seen.push('acquire')));
  db.on('release', () => void (inUse--, seen.push('release')));
  // Opens the warmed connection, which pg-pool's release hands back idle before any checkout.
  await db.$connect();
  await waitFor(() => db.stats().pool.open === 1);
  const held = latch();
  const holding = db.transaction(() => held.promise);
  await waitFor(() => inUse === 1);
  // Three callers give up waiting; each one's queued request is served later, and goes straight back.
  const timedOut = await Promise.all([1, 2, 3].map(() => rejectionOf(db.user.count())));
  expect(timedOut.map((e) => (e as Error).name)).toEqual(['PoolTimeoutError', 'PoolTimeoutError', 'PoolTimeoutError']);
  held.open();
  await holding;
  // The late handovers have happened: the connection is idle again.
  await waitFor(() => db.stats().pool.idle === 1);
  await db.user.count();
  // Before: a release event for each late handover to a checkout that had given up: inUse ended at -3.
  expect(inUse).toBe(0);
  expect(seen.filter((e) => e === 'acquire').length).toBe(seen.filter((e) => e === 'release').length);
  expect(db.stats().counters.poolTimeouts).toBe(3);
});

describe('sessions of two Dbs (found by probes)', () => {
  // An app database and an audit one on the same server, each its own Db.
  it("a statement of the outer session's Db sent inside another Db's session goes to its own session's connection", async () => {
    const app = createDb({ PrismaClient, url: testDb.url, applicationName: appName('two-sessions-app') });
    const audit = createDb({ PrismaClient, url: testDb.url, applicationName: appName('two-sessions-audit') });
    const setting = (rows: { v: string | null }[]): string => rows[0]!.v ?? '';
    const seen = await app.session(async (s) => {
      await s.$queryRawUnsafe("SELECT set_config('app.tenant', 'acme', false)");
      const inAudit = await audit.session(async (a) => {
        await a.$queryRawUnsafe("SELECT set_config('app.tenant', 'audit', false)");
        return setting(await app.$queryRawUnsafe<{ v: string | null }[]>("SELECT current_setting('app.tenant', true) AS v"));
      });
      const inAuditUnit = await audit.transaction(async () => setting(await app.$queryRawUnsafe<{ v: string | null }[]>("SELECT current_setting('app.tenant', true) AS v")));
      return [inAudit, inAuditUnit];
    });
    // Inside the audit session the app's statement went to another app connection, without the session's setting.
    expect(seen).toEqual(['acme', 'acme']);
  });
});
