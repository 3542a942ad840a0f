/**
 * Every error class of the taxonomy, produced for real against the harness database
 * (issue 4): the right class, SQLSTATE and `retryable` flag, and a message that never
 * carries a password, a URL with credentials or a query parameter's value.
 */
import net from 'node:net';
import { Prisma, PrismaClient } from '../src/generated/prisma/client';
import {
  ConfigError,
  createDb,
  DatabaseConnectionError,
  DatabaseQueryError,
  classifyError,
  DatabaseTransactionError,
  DatalayerError,
  PoolTimeoutError,
  StatementTimeoutError,
  type Db,
} from '../src/index';
import { createTestDatabase, testServer, type TestDatabase } from './support/db';
import { holdConnection, rejectionOf } from './support/async';
import { startPgBouncer } from './support/pgbouncer';

/** A value that must never show up in an error message. */
const PARAM = 'secret-param-value-42';

let testDb: TestDatabase;
let db: Db<PrismaClient>;
const extra: Array<{ close(): Promise<void> }> = [];

function newDb(options: Omit<Parameters<typeof createDb<PrismaClient>>[0], 'PrismaClient'>): Db<PrismaClient> {
  const d = createDb({ PrismaClient, ...options });
  extra.push(d);
  return d;
}

beforeAll(async () => {
  testDb = await createTestDatabase({ prefix: 'errors' });
  db = createDb({ PrismaClient, url: testDb.url, applicationName: 'errors-test' });
});

afterAll(async () => {
  await db?.close();
  for (const d of extra) await d.close();
  await testDb?.drop();
});

/** The message and its string form reveal nothing secret. */
function expectClean(err: unknown, ...secrets: string[]): void {
  expect(err).toBeInstanceOf(DatalayerError);
  const texts = [(err as Error).message, String(err)];
  for (const text of texts) {
    for (const secret of [PARAM, testDb.password, encodeURIComponent(testDb.password), ...secrets]) {
      expect(text).not.toContain(secret);
    }
    // No URL with credentials in any form.
    expect(text).not.toMatch(/postgres(?:ql)?:\/\/[^\s/]*:[^\s/]*@/i);
    expect(text).not.toContain(testDb.url);
  }
}

/** A 127.0.0.1 port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('query errors', () => {
  test('unique violation: DatabaseQueryError 23505 naming the constraint, not the value', async () => {
    await db.user.create({ data: { email: `${PARAM}@example.com` } });
    const err = await rejectionOf(db.user.create({ data: { email: `${PARAM}@example.com`, name: PARAM } }));
    // Prisma's own error, untouched: the documented `instanceof` + `code` idiom keeps working.
    expect(err).toBeInstanceOf(Prisma.PrismaClientKnownRequestError);
    expect(err).toMatchObject({ code: 'P2002' });
    expect((err as Prisma.PrismaClientKnownRequestError).meta).toBeDefined();
    expect(classifyError(err)).toBeInstanceOf(DatabaseQueryError);
    expect(classifyError(err)).toMatchObject({ kind: 'query', sqlState: '23505', retryable: false, constraint: 'users_email_key' });
    expectClean(classifyError(err));

    // The same inside a unit of work: the unit rolls back and surfaces the query error.
    const inUnit = await rejectionOf(
      db.transaction(async (tx) => {
        await tx.user.create({ data: { email: 'other@example.com' } });
        await tx.user.create({ data: { email: `${PARAM}@example.com` } });
      }),
    );
    expect(classifyError(inUnit)).toBeInstanceOf(DatabaseQueryError);
    expect(classifyError(inUnit)).toMatchObject({ sqlState: '23505', constraint: 'users_email_key' });
    expectClean(classifyError(inUnit));
    expect(await db.user.count({ where: { email: 'other@example.com' } })).toBe(0);
  });

  test('raw query with a bad parameter: the quoted value is removed from the server message', async () => {
    const err = await rejectionOf(db.$queryRawUnsafe('SELECT $1::int AS n', PARAM));
    expect(classifyError(err)).toBeInstanceOf(DatabaseQueryError);
    expect(classifyError(err)).toMatchObject({ sqlState: '22P02', retryable: false });
    expect(classifyError(err).message).toMatch(/invalid input syntax for type integer/);
    // The server's own text quoted the value (kept only in `cause`); the message does not.
    expect(JSON.stringify(classifyError(err).cause)).toContain(PARAM);
    expectClean(classifyError(err));
  });

  test('a syntax error is a DatabaseQueryError with its SQLSTATE', async () => {
    const err = await rejectionOf(db.$queryRawUnsafe('SELEC $1::text', PARAM));
    expect(classifyError(err)).toBeInstanceOf(DatabaseQueryError);
    expect(classifyError(err)).toMatchObject({ sqlState: '42601', retryable: false });
    expectClean(classifyError(err));
  });

  test('invalid query arguments (Prisma validation) keep the arguments out of the message', async () => {
    const err = await rejectionOf(
      db.user.create({ data: { email: PARAM, name: PARAM, notAField: PARAM } as unknown as { email: string } }),
    );
    expect(classifyError(err)).toBeInstanceOf(DatabaseQueryError);
    expect(classifyError(err)).toMatchObject({ retryable: false });
    // Prisma's own text quotes the call's arguments (kept only in `cause`).
    expect(String((classifyError(err).cause as Error).message)).toContain(PARAM);
    expectClean(classifyError(err));
  });

  test('record not found: a Prisma code is a prismaCode, never a sqlState', async () => {
    const err = await rejectionOf(db.user.update({ where: { email: PARAM }, data: { name: 'x' } }));
    expect(classifyError(err)).toBeInstanceOf(DatabaseQueryError);
    expect(classifyError(err)).toMatchObject({ prismaCode: 'P2025', retryable: false });
    expect(classifyError(err).sqlState).toBeUndefined();
    expectClean(classifyError(err));
  });

  test("PL/pgSQL's own SQLSTATEs (class P0) are SQLSTATEs, not Prisma codes", async () => {
    const err = await rejectionOf(db.$executeRawUnsafe(`DO $$ BEGIN RAISE EXCEPTION 'custom failure'; END $$`));
    expect(classifyError(err)).toBeInstanceOf(DatabaseQueryError);
    expect(classifyError(err)).toMatchObject({ sqlState: 'P0001', prismaCode: 'P2010', retryable: false });
    expect(classifyError(err).message).toContain('custom failure');
  });

  test('statement timeout: StatementTimeoutError 57014, not retryable', async () => {
    const short = newDb({ url: testDb.url, applicationName: 'errors-stmt', timeouts: { statementMs: 200 } });
    const started = Date.now();
    // Cancelled by the server at 200 ms, long before the sleep would end.
    const err = await rejectionOf(short.$queryRawUnsafe('SELECT pg_sleep(30), $1::text AS p', PARAM));
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(err).toBeInstanceOf(StatementTimeoutError);
    expect(err).toMatchObject({ kind: 'statement-timeout', sqlState: '57014', retryable: false });
    expect((err as Error).message).toMatch(/statement_timeout/);
    expectClean(classifyError(err));

    // Inside a unit: the same typed error, and the unit rolled back.
    const inUnit = await rejectionOf(
      short.transaction(async (tx) => {
        await tx.user.create({ data: { email: 'timeout-unit@example.com' } });
        await tx.$queryRawUnsafe('SELECT pg_sleep(30), $1::text AS p', PARAM);
      }),
    );
    expect(inUnit).toBeInstanceOf(StatementTimeoutError);
    expect(inUnit).toMatchObject({ outcome: 'rolled-back' });
    expectClean(classifyError(inUnit));
    expect(await db.user.count({ where: { email: 'timeout-unit@example.com' } })).toBe(0);
  });
});

describe('pool and connection errors', () => {
  test('pool timeout: PoolTimeoutError, retryable, after pool.timeoutMs', async () => {
    const one = newDb({ url: testDb.url, applicationName: 'errors-pool', pool: { size: 1, maxOverflow: 0, timeoutMs: 300 } });
    const release = await holdConnection(one);
    const started = Date.now();
    const err = await rejectionOf(one.$queryRawUnsafe('SELECT $1::text AS p', PARAM));
    const waited = Date.now() - started;
    await release();
    expect(err).toBeInstanceOf(PoolTimeoutError);
    expect(err).toMatchObject({ kind: 'pool-timeout', retryable: true });
    expect((err as PoolTimeoutError).waitedMs).toBeGreaterThanOrEqual(250);
    expect(waited).toBeGreaterThanOrEqual(250);
    expect(waited).toBeLessThan(5_000);
    expectClean(err);
    expect(one.stats().counters.poolTimeouts).toBe(1);
    // The pool works again once the connection is back.
    expect(await one.$queryRawUnsafe('SELECT 1 AS one')).toEqual([{ one: 1 }]);
  });

  test('refused connection: DatabaseConnectionError, retryable, no credentials in the message', async () => {
    const port = await closedPort();
    const password = 'refused-pass-Zq9!';
    const url = `postgresql://someone:${encodeURIComponent(password)}@127.0.0.1:${port}/nodb?sslmode=disable`;
    const refused = newDb({ url, applicationName: 'errors-refused', timeouts: { connectMs: 2_000 } });
    const err = await rejectionOf(refused.$queryRawUnsafe('SELECT $1::text AS p', PARAM));
    expect(err).toBeInstanceOf(DatabaseConnectionError);
    expect(err).toMatchObject({ kind: 'connection', retryable: true });
    expect((err as Error).message).toMatch(/ECONNREFUSED/);
    expectClean(err, password, encodeURIComponent(password), url);

    // A unit of work against it fails the same way.
    const inUnit = await rejectionOf(refused.transaction(async (tx) => tx.$queryRawUnsafe('SELECT $1::text', PARAM), { maxWaitMs: 3_000 }));
    expect(inUnit).toBeInstanceOf(DatabaseConnectionError);
    expect(inUnit).toMatchObject({ retryable: true });
    expectClean(inUnit, password, encodeURIComponent(password), url);
  });

  test('wrong password: DatabaseConnectionError 28P01, not retryable, no password in the message', async () => {
    const wrong = 'wrong-pass-Xy7#';
    const url = testDb.urlWith({ sslmode: 'require', sslrootcert: testDb.caFile }, { password: wrong });
    expect(url).toContain(encodeURIComponent(wrong));
    const bad = newDb({ url, applicationName: 'errors-badpass' });
    const err = await rejectionOf(bad.$queryRawUnsafe('SELECT $1::text AS p', PARAM));
    expect(err).toBeInstanceOf(DatabaseConnectionError);
    expect(err).toMatchObject({ kind: 'connection', sqlState: '28P01', retryable: false });
    expect((err as Error).message).toMatch(/password authentication failed/);
    expectClean(err, wrong, encodeURIComponent(wrong), url);

    const inUnit = await rejectionOf(bad.transaction(async (tx) => tx.$queryRawUnsafe('SELECT 1')));
    expect(inUnit).toBeInstanceOf(DatabaseConnectionError);
    expect(classifyError(inUnit)).toMatchObject({ sqlState: '28P01', retryable: false });
    expectClean(inUnit, wrong, encodeURIComponent(wrong), url);
  });
});

describe('errors of a transaction-mode pooler', () => {
  test("PgBouncer's query_wait_timeout (no server connection free): the statement never reached the server, so it is retryable, not 'may have run'", async () => {
    const bouncer = await startPgBouncer(testServer().info(), { poolMode: 'transaction', defaultPoolSize: 1, extraConf: { query_wait_timeout: '1' } });
    extra.push({ close: () => bouncer.stop() });
    const url = bouncer.url(testDb.name, { pgbouncer: 'true', sslmode: 'disable' });
    const holder = newDb({ url, applicationName: 'errors-pooler-holder' });
    const app = newDb({ url, applicationName: 'errors-pooler-app', timeouts: { statementMs: 10_000 } });
    // Both connections to PgBouncer open and pooled.
    await app.account.count();
    await holder.account.count();
    // PgBouncer's only server connection is busy for 4 s: the app's write waits in PgBouncer's queue.
    const busy = holder.$executeRaw`SELECT pg_sleep(4)`.then(() => undefined); // a Prisma query starts when first awaited
    await new Promise((resolve) => setTimeout(resolve, 300));
    const err = await rejectionOf(app.account.create({ data: { owner: 'pooler-wait-timeout', balance: 1 } }));
    await busy;
    expect(err).toBeInstanceOf(DatabaseConnectionError);
    expect((err as Error).message).toMatch(/query_wait_timeout/);
    // Before: outcome 'unknown' and retryable false, "it may have run", for a write PgBouncer never forwarded.
    expect(err).toMatchObject({ kind: 'connection', sqlState: '08P01', retryable: true });
    expect((err as DatabaseConnectionError).outcome).not.toBe('unknown');
    expect(await testDb.query("SELECT 1 FROM accounts WHERE owner = 'pooler-wait-timeout'")).toEqual([]);
    expectClean(err);
    // Not re-run by the layer either (PgBouncer's queue is full, not a dead connection): once, then the caller's call.
    expect(app.stats().counters.connectionsRecovered).toBe(0);
  }, 30_000);
});

describe("Prisma's own connection errors (P1000, P1001, P1003) through classifyError", () => {
  // What a bare PrismaClient on its driver adapter raises (an app moving to the layer still has
  // some, a script, another service): Prisma maps the adapter's error kinds to its P1xxx codes.
  async function prismaError(url: string): Promise<unknown> {
    const { PrismaPg } = await import('@prisma/adapter-pg');
    const bare = new PrismaClient({ adapter: new PrismaPg({ connectionString: url, connectionTimeoutMillis: 5_000 }) });
    try {
      return await rejectionOf(bare.user.findFirst({ where: { email: PARAM } }));
    } finally {
      await bare.$disconnect();
    }
  }

  test.each([
    ['P1001', 'a server nobody listens on', true],
    ['P1000', 'a wrong password', false],
    ['P1003', 'a database that does not exist', false],
  ] as const)('%s (%s): a connection error that could not connect, retryable %s, with its code and without Prisma\'s call site', async (code, _what, retryable) => {
    const url =
      code === 'P1001'
        ? `postgresql://someone:pw@127.0.0.1:${await closedPort()}/nodb?sslmode=disable`
        : code === 'P1000'
          ? testDb.urlWith({ sslmode: 'require', sslrootcert: testDb.caFile }, { password: 'wrong-pass-P1000' })
          : testDb.urlWith({ sslmode: 'require', sslrootcert: testDb.caFile }, {}).replace(`/${testDb.name}?`, '/no_such_db_p1003?');
    const err = await prismaError(url);
    expect(err).toBeInstanceOf(Prisma.PrismaClientKnownRequestError);
    expect((err as { code?: string }).code).toBe(code);
    const typed = classifyError(err);
    // Before: P1001 was 'The database connection was lost: Invalid `prisma.user.findFirst()`
    // invocation: ...' without its code; P1000 and P1003 were DatabaseQueryErrors (kind 'query').
    expect(typed).toBeInstanceOf(DatabaseConnectionError);
    expect(typed).toMatchObject({ kind: 'connection', prismaCode: code, retryable });
    expect(typed.message).toMatch(/^Could not connect to the database: /);
    expect(typed.message).not.toContain('Invalid `prisma');
    expectClean(typed, 'wrong-pass-P1000');
  });
});

describe('configuration and unit-of-work errors', () => {
  test('ConfigError: not retryable, names the settings, never the password', () => {
    const password = 'config-pass-Pw3$';
    const url = `postgresql://app:${encodeURIComponent(password)}@db.example.com:5432/shop?sslmode=sometimes`;
    let err: unknown;
    try {
      createDb({ PrismaClient, url, pool: { size: 0 }, env: {} });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toMatchObject({ kind: 'config', retryable: false });
    const settings = (err as ConfigError).issues.map((i) => i.setting);
    expect(settings).toEqual(expect.arrayContaining(['pool.size']));
    expect(settings.some((s) => /sslmode/.test(s))).toBe(true);
    expectClean(err, password, encodeURIComponent(password), url);
    for (const issue of (err as ConfigError).issues) {
      expect(issue.problem).not.toContain(password);
      expect(issue.problem).not.toContain(encodeURIComponent(password));
    }
  });

  test('DatabaseTransactionError: rolled back, retryable only for exhausted conflicts', async () => {
    const own = await rejectionOf(
      db.transaction(async () => {
        throw new Error('application failure');
      }),
    );
    // The caller's own error comes back unchanged after the rollback.
    expect(own).toEqual(new Error('application failure'));

    const exhausted = await rejectionOf(
      db.transaction(
        async (tx) => {
          await tx.$executeRawUnsafe(`SELECT $1::text, (SELECT 1 FROM pg_class LIMIT 1)`, PARAM);
          await tx.$executeRawUnsafe(`DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$`);
        },
        { retries: 1 },
      ),
    );
    // Prisma's own error, as bare Prisma raises it (P2010 for a raw statement), with what the unit adds.
    expect(exhausted).toMatchObject({ name: 'PrismaClientKnownRequestError', code: 'P2010', outcome: 'rolled-back', retryable: true, attempts: 2 });
    const typed = classifyError(exhausted);
    expect(typed).toBeInstanceOf(DatabaseTransactionError);
    expect(typed).toMatchObject({ outcome: 'rolled-back', retryable: true, sqlState: '40001', attempts: 2 });
    expectClean(typed);
  });
});
