// stats(), lifecycle events, the slow-query event and the logger, against the shared
// server: the figures must agree with what PostgreSQL itself reports.
import { classifyError, createDb, DatabaseTransactionError, type Db, type DbLogger } from '../src/index';
import { PrismaClient } from '../src/generated/prisma/client';
import { countConnections, createTestDatabase, terminateConnections, type TestDatabase } from './support/db';
import { holdConnection, waitFor } from './support/async';

let testDb: TestDatabase;
beforeAll(async () => {
  testDb = await createTestDatabase();
});
afterAll(async () => {
  await testDb.drop();
});

let seq = 0;
const appName = (label: string): string => `stats-${label}-${process.pid}-${++seq}`;


/** A pino-style logger that keeps every call. */
function recordingLogger(): DbLogger & { calls: { level: string; obj: Record<string, unknown>; msg: string }[] } {
  const calls: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  return {
    calls,
    warn: (obj, msg) => void calls.push({ level: 'warn', obj, msg }),
    error: (obj, msg) => void calls.push({ level: 'error', obj, msg }),
    info: (obj, msg) => void calls.push({ level: 'info', obj, msg }),
  };
}

describe('stats()', () => {
  let db: Db<PrismaClient>;
  let name: string;
  beforeAll(() => {
    name = appName('pool');
    db = createDb({ PrismaClient, url: testDb.url, applicationName: name, pool: { size: 2, maxOverflow: 2, overflowIdleMs: 300 } });
  });
  afterAll(() => db.close());

  it('pool figures match pg_stat_activity for the application name', async () => {
    expect(db.stats().pool).toEqual({ open: 0, idle: 0, inUse: 0, waiting: 0, max: 4 });
    // Four statements at once: two kept connections plus the two overflow ones.
    const busy = Promise.all([1, 2, 3, 4].map(() => db.$executeRawUnsafe('SELECT pg_sleep(0.8)')));
    await waitFor(() => db.stats().pool.inUse === 4);
    // A backend shows its application_name only once its startup packet is processed.
    await waitFor(async () => (await countConnections(name, testDb.name)) === 4);
    expect(db.stats().pool).toMatchObject({ open: 4, inUse: 4, idle: 0 });
    await busy;
    expect(db.stats().pool).toMatchObject({ open: 4, inUse: 0, idle: 4 });
    // The overflow closes once idle; the server must see the same number as the pool.
    await waitFor(() => db.stats().pool.open === 2);
    await waitFor(async () => (await countConnections(name, testDb.name)) === 2);
    const { counters } = db.stats();
    expect(counters.connectionsOpened).toBe(4);
    expect(counters.connectionsClosed).toBe(2);
    expect(counters.queries).toBe(4);
  });

  it('counts statements, units of work, rollbacks and errors, and keeps the last error without values', async () => {
    const before = db.stats().counters;
    await db.user.count();
    await db.transaction(async (tx) => {
      await tx.user.count();
    });
    await expect(
      db.transaction(async (tx) => {
        await tx.user.count();
        throw new Error('business rule');
      }),
    ).rejects.toThrow('business rule');
    // The value travels as a parameter; the server quotes it back in its message.
    await expect(db.$queryRaw`SELECT ${'SECRET-VALUE-42'}::int AS n`).rejects.toThrow();
    const after = db.stats().counters;
    expect(after.transactions - before.transactions).toBe(2);
    expect(after.commits - before.commits).toBe(1);
    expect(after.rollbacks - before.rollbacks).toBe(1);
    expect(after.queryErrors - before.queryErrors).toBe(1);
    // count, (count + COMMIT), (count + ROLLBACK), the failing SELECT: BEGIN is the adapter's own.
    expect(after.queries - before.queries).toBe(6);
    const last = db.stats().lastError;
    expect(last).toMatchObject({ kind: 'query', sqlState: '22P02' });
    expect(last?.message).toMatch(/invalid input syntax for type integer/);
    expect(last?.message).not.toContain('SECRET-VALUE-42');
    expect(Date.parse(last?.at ?? '')).toBeGreaterThan(Date.now() - 10_000);
    expect(db.stats().state).toBe('open');
  });
});

describe('lastError', () => {
  it('is the pool timeout a unit of work failed with, as for a statement', async () => {
    const own = createDb({ PrismaClient, url: testDb.url, applicationName: appName('timeout'), pool: { size: 1, maxOverflow: 0, timeoutMs: 200 } });
    try {
      // A statement's failure first, then every connection busy.
      await expect(own.$queryRaw`SELECT ${'x'}::int AS n`).rejects.toThrow();
      expect(own.stats().lastError).toMatchObject({ kind: 'query' });
      const release = await holdConnection(own);
      try {
        const err = await own.transaction(async () => 1).catch((e: unknown) => e);
        expect(classifyError(err).kind).toBe('pool-timeout');
        // Before: still the query error: a status page showed no sign of units failing for want of a connection.
        expect(own.stats().lastError).toMatchObject({ kind: 'pool-timeout' });
        // A statement that waits in vain is one already (the adapter records it).
        await expect(own.$queryRaw`SELECT ${'x'}::int AS n`).rejects.toThrow();
        expect(own.stats().lastError).toMatchObject({ kind: 'pool-timeout' });
      } finally {
        await release();
      }
    } finally {
      await own.close();
    }
  });
});

describe('events', () => {
  it('fire connect → acquire → release for a query, then acquire → release on a reused connection', async () => {
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: appName('events') });
    const seen: string[] = [];
    const pids = new Set<number | undefined>();
    for (const event of ['connect', 'acquire', 'release', 'remove'] as const) {
      db.on(event, (info) => {
        seen.push(event);
        pids.add(info.pid);
      });
    }
    await db.$queryRaw`SELECT 1`;
    expect(seen).toEqual(['connect', 'acquire', 'release']);
    await db.$queryRaw`SELECT 1`;
    expect(seen).toEqual(['connect', 'acquire', 'release', 'acquire', 'release']);
    // One backend, named by its pid only.
    expect(pids.size).toBe(1);
    expect([...pids][0]).toEqual(expect.any(Number));
    await db.close();
    expect(seen.at(-1)).toBe('remove');
  });

  it('report a connection the server terminated as an error event, and the unsubscribe works', async () => {
    const name = appName('error');
    const logger = recordingLogger();
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: name, logger });
    const errors: Error[] = [];
    const off = db.on('error', (err) => errors.push(err));
    await db.$queryRaw`SELECT 1`;
    expect(await terminateConnections({ applicationName: name })).toBe(1);
    await waitFor(() => errors.length >= 1);
    await new Promise((r) => setTimeout(r, 100));
    // Once per failure.
    expect(errors).toHaveLength(1);
    expect(db.stats().lastError?.kind).not.toBeUndefined();
    expect(logger.calls.some((c) => c.level === 'error' && c.obj.event === 'error')).toBe(true);
    off();
    await db.$queryRaw`SELECT 1`;
    expect(await terminateConnections({ applicationName: name })).toBe(1);
    await new Promise((r) => setTimeout(r, 200));
    expect(errors).toHaveLength(1);
    await db.close();
  });
});

describe('listeners and loggers that throw', () => {
  // They run inside the layer's work (a checkout, a release, a COMMIT): what they throw is reported, and changes nothing.
  const slowCommit = `CREATE OR REPLACE FUNCTION stats_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(1.2); RETURN NULL; END $$;
    DROP TRIGGER IF EXISTS stats_slow_commit ON users;
    CREATE CONSTRAINT TRIGGER stats_slow_commit AFTER INSERT ON users DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
      WHEN (NEW.email LIKE 'slow-commit-%') EXECUTE FUNCTION stats_slow_commit()`;

  it('a slowQuery listener and a logger that throw at COMMIT leave a committed unit committed', async () => {
    await testDb.query(slowCommit);
    const logger = { ...recordingLogger(), warn: () => { throw new Error('logger bug'); } };
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: appName('slow-commit'), slowQueryMs: 1000, logger });
    try {
      db.on('slowQuery', (info) => {
        if (/COMMIT/.test(info.sql)) throw new Error('listener bug at COMMIT');
      });
      const email = `slow-commit-${process.pid}@example.com`;
      // Before: the caller got the listener's error, and a retry would have written twice.
      await expect(db.transaction((tx) => tx.user.create({ data: { email } }))).resolves.toMatchObject({ email });
      expect(await testDb.query('SELECT 1 FROM users WHERE email = $1', [email])).toHaveLength(1);
      expect(db.stats().counters).toMatchObject({ commits: 1, rollbacks: 0 });
      const reported = logger.calls.filter((c) => c.obj.event === 'listener-error').map((c) => c.msg);
      expect(reported).toEqual([expect.stringContaining("db.on('slowQuery') listener threw"), expect.stringContaining('the logger threw')]);
    } finally {
      await db.close();
      await testDb.query('DROP TRIGGER IF EXISTS stats_slow_commit ON users');
    }
  });

  it.each(['connect', 'acquire', 'release'] as const)('a %s listener that throws neither fails the statement nor keeps its connection', async (event) => {
    const logger = recordingLogger();
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: appName(event), logger, pool: { size: 1, maxOverflow: 0, timeoutMs: 2000 } });
    try {
      db.on(event, () => {
        throw new Error(`${event} listener bug`);
      });
      // Before: the connection stayed checked out (or the exception escaped a socket handler): the next ones timed out.
      for (const n of [1, 2, 3]) expect(await db.$queryRawUnsafe<{ n: number }[]>('SELECT $1::int AS n', n)).toEqual([{ n }]);
      expect(db.stats().pool).toMatchObject({ inUse: 0, waiting: 0 });
      // What the listener threw is reported (without a logger: a process warning).
      expect(logger.calls).toContainEqual(expect.objectContaining({ level: 'error', msg: expect.stringContaining(`${event} listener bug`) }));
    } finally {
      await db.close();
    }
  });

  it('an error listener that throws does not replace the typed error the caller gets', async () => {
    const db = createDb({ PrismaClient, url: `postgresql://app:pw@127.0.0.1:1/none?sslmode=disable`, applicationName: appName('error-listener'), logger: recordingLogger() });
    try {
      db.on('error', () => {
        throw new Error('error listener bug');
      });
      await expect(db.$queryRaw`SELECT 1`).rejects.toMatchObject({ name: 'DatabaseConnectionError', kind: 'connection' });
    } finally {
      await db.close();
    }
  });
});

describe('slow queries', () => {
  it('emit slowQuery past the threshold, not below it, with SQL text and never the parameters', async () => {
    const logger = recordingLogger();
    // The threshold comes from the environment, as a deployment would set it.
    const db = createDb({
      PrismaClient,
      url: testDb.url,
      applicationName: appName('slow'),
      logger,
      // 1 s: far above what a fast statement takes on a loaded machine (the first one
      // includes the TLS handshake: ~100 ms observed, which crossed a 100 ms threshold).
      env: { DB_SLOW_QUERY_MS: '1000' },
    });
    const slow: { sql: string; durationMs: number; thresholdMs: number; inTransaction: boolean }[] = [];
    db.on('slowQuery', (info) => slow.push(info));
    // Connect first: a new connection's TLS handshake counts towards the first statement.
    await db.$queryRaw`SELECT 1`;
    expect(slow).toHaveLength(0);

    await db.$queryRaw`SELECT pg_sleep(0.01)::text AS s, ${'FAST-PARAM'}::text AS v`;
    expect(slow).toHaveLength(0);

    // A sleep past the threshold is slow however fast the machine (a lower bound is safe).
    await db.$queryRaw`SELECT pg_sleep(1.2)::text AS s, ${'SECRET-PARAM'}::text AS v`;
    expect(slow).toHaveLength(1);
    expect(slow[0]).toMatchObject({ thresholdMs: 1000, inTransaction: false });
    expect(slow[0]!.durationMs).toBeGreaterThanOrEqual(1190);
    expect(slow[0]!.sql).toMatch(/pg_sleep\(1\.2\).*\$1/s);

    await db.transaction(async (tx) => {
      await tx.$executeRawUnsafe('SELECT pg_sleep(1.1)');
    });
    expect(slow).toHaveLength(2);
    expect(slow[1]).toMatchObject({ inTransaction: true });

    // Values written into the text (SQL's PASSWORD '…', an interpolated literal) go as pg_stat_statements' constants do.
    await db.$executeRawUnsafe(`DO $body$ BEGIN PERFORM pg_sleep(1.1); END $body$; SELECT 'LITERAL-VALUE' AS v, E'it\\'s' AS w, 'Hunter2-PASSWORD' AS password`);
    expect(slow).toHaveLength(3);
    expect(slow[2]!.sql).toBe(`DO '…'; SELECT '…' AS v, '…' AS w, '…' AS password`);
    expect(db.stats().counters.slowQueries).toBe(3);

    const warnings = logger.calls.filter((c) => c.level === 'warn' && c.obj.event === 'slowQuery');
    expect(warnings).toHaveLength(3);
    expect(warnings[0]!.msg).toMatch(/slow query: \d+ ms \(threshold 1000 ms\)/);
    const everything = JSON.stringify(logger.calls);
    expect(everything).not.toContain('SECRET-PARAM');
    expect(everything).not.toMatch(/LITERAL-VALUE|Hunter2|it.s/);
    expect(everything).not.toContain(testDb.password);
    await db.close();
  });

  it("emit slowQuery without the constants after an apostrophe in a comment or a quoted identifier", async () => {
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: appName('slow-quotes'), slowQueryMs: 1000 });
    const slow: string[] = [];
    db.on('slowQuery', (info) => slow.push(info.sql));
    await db.$queryRaw`SELECT 1`;
    // Before: the apostrophe opened a "constant" that ended at the opening quote of the real one, whose value was left in clear.
    await db.$executeRawUnsafe(`SELECT pg_sleep(1.1)::text AS "it's", 'Hunter2-PASSWORD' AS pw -- don't log this\n, 'LITERAL-AFTER-COMMENT' AS v /* it's */, 'LITERAL-3' AS w`);
    expect(slow).toEqual([`SELECT pg_sleep(1.1)::text AS "it's", '…' AS pw -- don't log this\n, '…' AS v /* it's */, '…' AS w`]);
    await db.close();
  });

  it('emit nothing when no threshold is set', async () => {
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: appName('noslow'), env: {} });
    const slow: unknown[] = [];
    db.on('slowQuery', (info) => slow.push(info));
    await db.$executeRawUnsafe('SELECT pg_sleep(0.2)');
    expect(slow).toHaveLength(0);
    expect(db.stats().counters.slowQueries).toBe(0);
    await db.close();
  });

  it('accept a console logger', async () => {
    const lines: unknown[][] = [];
    const infos: unknown[][] = [];
    // info is captured too: the close messages would otherwise be printed into the test output.
    const fakeConsole = { ...console, warn: (...data: unknown[]) => void lines.push(data), info: (...data: unknown[]) => void infos.push(data) };
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: appName('console'), slowQueryMs: 50, logger: fakeConsole });
    await db.$executeRawUnsafe('SELECT pg_sleep(0.1)');
    expect(lines).toHaveLength(1);
    expect(lines[0]![0]).toMatchObject({ event: 'slowQuery', thresholdMs: 50 });
    await db.close();
    expect(infos.some((i) => (i[0] as { event?: string }).event === 'close')).toBe(true);
  });
});
