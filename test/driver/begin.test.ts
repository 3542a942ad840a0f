/**
 * src/driver/begin.ts: a unit's BEGIN goes out with its first statement. Checked on the
 * wire (the fault proxy counts the round trips clients ask for: Sync and simple Query
 * messages) against bare Prisma on the same proxy, and on node-postgres alone, so that a
 * change in the driver's Query class fails here.
 */
import { PrismaPg } from '@prisma/adapter-pg';
import { Client as NeonClient } from '@neondatabase/serverless';
import pg from 'pg';
import WebSocket from 'ws';
import { carrying, queryClassOf } from '../../src/driver/begin';
import { guardedClientClass } from '../../src/driver/client';
import { createDb, DatabaseConnectionError, DatabaseTransactionError, type Db } from '../../src/index';
import { PrismaClient } from '../../src/generated/prisma/client';
import { createTestDatabase, type TestDatabase } from '../support/db';
import { driverCase } from '../support/drivers';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy';

let testDb: TestDatabase;
let proxy: TcpProxy;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  testDb = await createTestDatabase({ prefix: 'begin' });
  proxy = await startTcpProxy({ host: testDb.host, port: testDb.port });
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(async () => {
  await proxy?.close();
  await testDb?.drop();
});

/** Plaintext through the proxy, so it can read the messages. */
const proxiedUrl = (): string => testDb.urlWith({ sslmode: 'disable' }, { user: testDb.appUser, port: proxy.port });

function layer(options: { pool?: { size: number; maxOverflow: number; validateAfterIdleMs?: number } } = {}): Db<PrismaClient> {
  const db = createDb({ PrismaClient, url: proxiedUrl(), applicationName: 'begin-test', pool: { size: 1, maxOverflow: 0 }, ...options });
  cleanups.push(() => db.close());
  return db;
}

function barePrisma(): PrismaClient {
  const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: proxiedUrl(), max: 1 }) });
  cleanups.push(() => prisma.$disconnect());
  return prisma;
}

/** Round trips and statements `work` asked the server for, through the proxy. */
async function onTheWire(work: () => Promise<unknown>): Promise<{ roundTrips: number; statements: string[] }> {
  const trips = proxy.roundTrips;
  const seen = proxy.statementsSeen.length;
  await work();
  return { roundTrips: proxy.roundTrips - trips, statements: proxy.statementsSeen.slice(seen) };
}

let ref = 0;
type Tx = Parameters<Parameters<Db<PrismaClient>['transaction']>[0]>[0];
/** Three statements: an account, a transfer to itself, a read. */
async function threeStatements(tx: Tx): Promise<number> {
  const account = await tx.account.create({ data: { owner: `begin ${++ref}`, balance: 10 } });
  await tx.transfer.create({ data: { fromId: account.id, toId: account.id, amount: 1, reference: `begin-${ref}-${Date.now()}` } });
  return tx.transfer.count({ where: { fromId: account.id } });
}

describe('a unit of work on the wire', () => {
  it('sends BEGIN with its first statement: one round trip fewer than bare Prisma, the same statements', async () => {
    const db = layer();
    const prisma = barePrisma();
    // Connected and the query compiler loaded first: only the units are counted.
    await db.$queryRaw`SELECT 1`;
    await prisma.$queryRaw`SELECT 1`;
    const bare = await onTheWire(() => prisma.$transaction((tx) => threeStatements(tx as unknown as Tx)));
    const ours = await onTheWire(() => db.transaction(threeStatements));
    expect(bare.roundTrips).toBe(5); // BEGIN, three statements, COMMIT
    expect(ours.roundTrips).toBe(bare.roundTrips - 1);
    expect(ours.statements).toEqual(bare.statements);
    expect(ours.statements[0]).toBe('BEGIN');
  });

  it('holds the isolation level with BEGIN: the first statement already runs at that level, in the same round trip', async () => {
    const db = layer();
    const prisma = barePrisma();
    await db.$queryRaw`SELECT 1`;
    await prisma.$queryRaw`SELECT 1`;
    const level = (tx: { $queryRaw: PrismaClient['$queryRaw'] }) => tx.$queryRaw<{ level: string }[]>`SELECT current_setting('transaction_isolation') AS level`;
    const bare = await onTheWire(() => prisma.$transaction((tx) => level(tx), { isolationLevel: 'Serializable' }));
    let seen: { level: string }[] = [];
    const ours = await onTheWire(async () => (seen = await db.transaction((tx) => level(tx), { isolationLevel: 'Serializable' })));
    expect(seen).toEqual([{ level: 'serializable' }]);
    const read = bare.statements[2]!;
    expect(bare.statements).toEqual(['BEGIN', 'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', read, 'COMMIT']);
    expect(bare.roundTrips).toBe(4);
    // A statement without parameters goes in the simple protocol: what is held joins its text.
    expect(ours.statements).toEqual([`BEGIN;SET TRANSACTION ISOLATION LEVEL SERIALIZABLE;${read}`, 'COMMIT']);
    expect(ours.roundTrips).toBe(2);
  });

  it("carries the unit's settings (read-only, its timeout) with BEGIN: the first statement already runs under them", async () => {
    const db = layer();
    await db.$queryRaw`SELECT 1`;
    const settings = (tx: { $queryRaw: PrismaClient['$queryRaw'] }, one: number) =>
      tx.$queryRaw<{ ro: string; st: string }[]>`SELECT current_setting('transaction_read_only') AS ro, current_setting('statement_timeout') AS st, ${one}::int AS one`;
    let seen: unknown;
    const wire = await onTheWire(async () => (seen = await db.transaction((tx) => settings(tx, 1), { readOnly: true, timeoutMs: 1234 })));
    expect(seen).toEqual([{ ro: 'on', st: '1234ms', one: 1 }]);
    // BEGIN, the settings and the read in one round trip; COMMIT.
    expect(wire.roundTrips).toBe(2);
    expect(wire.statements).toEqual(['BEGIN', expect.stringContaining('set_config'), expect.stringContaining('transaction_read_only'), 'COMMIT']);
    // A write as the first statement of a read-only unit is refused: the settings came first.
    await expect(db.transaction((tx) => tx.user.create({ data: { email: `ro-${Date.now()}@example.com` } }), { readOnly: true })).rejects.toThrow(/read-only transaction/);
  });

  it('settings ahead of a statement without parameters: they carry BEGIN in one round trip, the statement follows', async () => {
    const db = layer();
    await db.$queryRaw`SELECT 1`;
    let seen: unknown;
    const wire = await onTheWire(async () => (seen = await db.transaction((tx) => tx.$queryRaw`SELECT current_setting('transaction_read_only') AS ro`, { readOnly: true })));
    expect(seen).toEqual([{ ro: 'on' }]);
    expect(wire.roundTrips).toBe(3);
    expect(wire.statements).toEqual(['BEGIN', expect.stringContaining('set_config'), expect.stringContaining('transaction_read_only'), 'COMMIT']);
  });

  it('an isolation level and settings together: in order after BEGIN, ahead of either kind of first statement', async () => {
    const db = layer();
    await db.$queryRaw`SELECT 1`;
    const options = { readOnly: true, isolationLevel: 'Serializable' } as const;
    type Seen = { level: string; ro: string }[];
    let extended: Seen = [];
    const one = await onTheWire(async () => {
      extended = await db.transaction((tx) => tx.$queryRaw<Seen>`SELECT current_setting('transaction_isolation') AS level, current_setting('transaction_read_only') AS ro, ${1}::int AS n`, options);
    });
    expect(extended).toEqual([{ level: 'serializable', ro: 'on', n: 1 }]);
    expect(one.statements.slice(0, 3)).toEqual(['BEGIN', 'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', expect.stringContaining('set_config')]);
    expect(one.roundTrips).toBe(2);
    let simple: Seen = [];
    const two = await onTheWire(async () => {
      simple = await db.transaction((tx) => tx.$queryRaw<Seen>`SELECT current_setting('transaction_isolation') AS level, current_setting('transaction_read_only') AS ro`, options);
    });
    expect(simple).toEqual([{ level: 'serializable', ro: 'on' }]);
    // The settings (bind parameters) carry BEGIN and the isolation level; the statement follows.
    expect(two.roundTrips).toBe(3);
  });

  it('a unit that sends no statement costs no round trip, whether it returns or throws', async () => {
    const db = layer();
    await db.$queryRaw`SELECT 1`;
    let value: unknown;
    const returned = await onTheWire(async () => (value = await db.transaction(async () => 42)));
    expect(value).toBe(42);
    expect(returned).toEqual({ roundTrips: 0, statements: [] });
    const mine = new Error('before any statement');
    let thrown: unknown;
    const threw = await onTheWire(() => db.transaction(async () => Promise.reject(mine)).catch((err: unknown) => (thrown = err)));
    expect(thrown).toBe(mine);
    expect(threw).toEqual({ roundTrips: 0, statements: [] });
    // The connection is clean for what follows: a statement outside a unit is not held in a transaction.
    await db.user.create({ data: { email: `after-empty-${Date.now()}@example.com` } });
    const rows = await testDb.query<{ open: string }>(
      `SELECT count(*) AS open FROM pg_stat_activity WHERE application_name = 'begin-test' AND state LIKE 'idle in transaction%'`,
    );
    expect(rows).toEqual([{ open: '0' }]);
  });

  it('the first statement is inside the transaction: a later failure rolls it back', async () => {
    const db = layer();
    const email = `rolled-back-${Date.now()}@example.com`;
    const failure = db.transaction(async (tx) => {
      await tx.user.create({ data: { email } });
      await tx.user.create({ data: { email } }); // unique violation
    });
    await expect(failure).rejects.toMatchObject({ code: 'P2002' });
    expect(await db.user.count({ where: { email } })).toBe(0);
  });

  it('a first statement the parser refuses (no parameters: BEGIN joined its text, so it did not run either): what follows fails in the transaction, as in bare Prisma', async () => {
    const db = layer();
    const prisma = barePrisma();
    await db.$queryRaw`SELECT 1`;
    await prisma.$queryRaw`SELECT 1`;
    // The caller tries a statement, catches its failure, writes, and fails the unit.
    const attempt = async (tx: Tx, email: string): Promise<never> => {
      await tx.$executeRawUnsafe('SELEC 1').catch(() => undefined);
      const level = await tx.$queryRaw<{ l: string }[]>`SELECT current_setting('transaction_isolation') AS l`.then((r) => r[0]!.l, () => 'failed');
      const write = await tx.user.create({ data: { email } }).then(() => 'written', (err: { code?: string }) => String(err.code));
      throw Object.assign(new Error('the unit fails'), { level, write });
    };
    const run = async (unit: (fn: (tx: Tx) => Promise<never>) => Promise<unknown>, email: string) => {
      const failure = (await unit((tx) => attempt(tx, email)).catch((err: unknown) => err)) as { level: string; write: string };
      return { level: failure.level, write: failure.write, committed: await db.user.count({ where: { email } }) };
    };
    const serializable = { isolationLevel: 'Serializable' } as const;
    const bare = await run((fn) => prisma.$transaction((tx) => fn(tx as unknown as Tx), serializable), `bare-parse-${Date.now()}@example.com`);
    let ours: Awaited<ReturnType<typeof run>> | undefined;
    const wire = await onTheWire(async () => (ours = await run((fn) => db.transaction(fn, serializable), `ours-parse-${Date.now()}@example.com`)));
    // Nothing after the refused statement ran: the read and the write failed (25P02), nothing committed.
    expect(bare).toEqual({ level: 'failed', write: expect.stringMatching(/^P\d{4}$/), committed: 0 });
    expect(ours).toEqual(bare);
    // Refused whole, then BEGIN and the isolation level in a round trip of their own, then the statement again.
    expect(wire.statements.slice(0, 4)).toEqual(['BEGIN;SET TRANSACTION ISOLATION LEVEL SERIALIZABLE;SELEC 1', 'BEGIN;SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', 'SELEC 1', expect.stringContaining('transaction_isolation')]);
  });

  it('statements sent side by side with a first statement the parser refuses wait for BEGIN: none runs outside the transaction', async () => {
    const db = layer();
    await db.$queryRaw`SELECT 1`;
    const email = `side-by-side-${Date.now()}@example.com`;
    const failure = await db
      .transaction(async (tx) => {
        const [refused, write] = await Promise.allSettled([tx.$executeRawUnsafe('SELEC 1'), tx.user.create({ data: { email } })]);
        throw Object.assign(new Error('the unit fails'), { refused: refused.status, write: write.status });
      })
      .catch((err: { refused?: string }) => err);
    expect(failure.refused).toBe('rejected');
    // Whatever became of the write, it was inside the transaction: nothing committed.
    expect(await db.user.count({ where: { email } })).toBe(0);
  });

  it('a COMMIT the server answers with ROLLBACK (fn caught a failed statement and returned) fails as rolled-back; bare Prisma reports success', async () => {
    const db = layer();
    const prisma = barePrisma();
    const writeThenCatch = async (tx: Tx, email: string): Promise<string> => {
      await tx.user.create({ data: { email } });
      await tx.user.create({ data: { email } }).catch(() => undefined); // unique violation, caught
      return 'returned';
    };
    const bareEmail = `bare-silent-${Date.now()}@example.com`;
    await expect(prisma.$transaction((tx) => writeThenCatch(tx as unknown as Tx, bareEmail))).resolves.toBe('returned');
    const email = `ours-silent-${Date.now()}@example.com`;
    const failure = db.transaction((tx) => writeThenCatch(tx, email));
    await expect(failure).rejects.toBeInstanceOf(DatabaseTransactionError);
    await expect(failure).rejects.toMatchObject({ outcome: 'rolled-back', sqlState: '25P02', message: expect.stringContaining('COMMIT was answered with ROLLBACK') });
    // Neither committed anything: bare Prisma's success was not one.
    expect(await db.user.count({ where: { email: { in: [bareEmail, email] } } })).toBe(0);
    expect(db.stats().counters.rollbacks).toBe(1);
    // The connection is fine afterwards.
    await expect(db.transaction((tx) => tx.user.create({ data: { email } }))).resolves.toMatchObject({ email });
  });

  it('the connection lost with BEGIN unconfirmed and fn swallowing the error: COMMIT cannot have committed, so the outcome is rolled-back, not unknown', async () => {
    const db = layer();
    // A fresh connection (no re-run): the unit's first statement is cut on its way to the server.
    proxy.dropOnStatement(/INSERT INTO "public"."users"/, 'rst');
    const failure = await db
      .transaction(async (tx) => {
        await tx.user.create({ data: { email: `cut-${Date.now()}@example.com` } }).catch(() => undefined);
        return 'swallowed';
      })
      .catch((err: unknown) => err);
    expect(failure).toMatchObject({ outcome: 'rolled-back' });
  });

  it('a pooled connection the network forgot while idle: the unit runs again on a new one, its writes land once', async () => {
    // No validation at checkout: the dead connection is found by the unit's first statement.
    const db = layer({ pool: { size: 1, maxOverflow: 0, validateAfterIdleMs: 3_600_000 } });
    await db.$queryRaw`SELECT 1`;
    proxy.forgetExisting();
    const owner = `forgotten ${Date.now()}`;
    let runs = 0;
    const id = await db.transaction(async (tx) => {
      runs++;
      const account = await tx.account.create({ data: { owner } });
      return account.id;
    });
    expect(runs).toBe(2);
    expect(await db.account.findMany({ where: { owner }, select: { id: true } })).toEqual([{ id }]);
    expect(db.stats().counters.connectionsRecovered).toBe(1);
  });

  it('the same, but fn catches its first statement\'s failure and goes on: it is not run again (it went past its first statement)', async () => {
    const db = layer({ pool: { size: 1, maxOverflow: 0, validateAfterIdleMs: 3_600_000 } });
    await db.$queryRaw`SELECT 1`;
    proxy.forgetExisting();
    let runs = 0;
    let sideEffects = 0;
    const failure = await db
      .transaction(async (tx) => {
        runs++;
        await tx.account.create({ data: { owner: `swallowed ${Date.now()}` } }).catch(() => undefined);
        sideEffects++; // an email sent, say
        return tx.account.count();
      })
      .catch((err: unknown) => err);
    expect({ runs, sideEffects }).toEqual({ runs: 1, sideEffects: 1 });
    // Nothing was open on the server: rolled back, not unknown.
    expect(failure).toBeInstanceOf(DatabaseConnectionError);
    expect(failure).toMatchObject({ outcome: 'rolled-back' });
  });
});

describe.each(['pg', 'neon'] as const)('%s', (driverName) => {
  it('a caught first statement the parser refuses: the write after it fails in the transaction and nothing commits', async () => {
    const driver = await driverCase(driverName, testDb);
    cleanups.push(() => driver.close());
    const db = createDb({ PrismaClient, ...driver.options(testDb), applicationName: `begin-refused-${driverName}`, pool: { size: 1, maxOverflow: 0 } });
    cleanups.push(() => db.close());
    await db.$queryRaw`SELECT 1`;
    const email = `refused-${driverName}-${Date.now()}@example.com`;
    const failure = await db
      .transaction(async (tx) => {
        await tx.$executeRawUnsafe('SELEC 1').catch(() => undefined);
        const write = await tx.user.create({ data: { email } }).then(() => 'written', (err: { code?: string }) => String(err.code));
        throw Object.assign(new Error('the unit fails'), { write });
      })
      .catch((err: { write?: string }) => err);
    expect(failure.write).toMatch(/^P\d{4}$/); // Prisma's code for 25P02 (the transaction is aborted)
    expect(await db.user.count({ where: { email } })).toBe(0);
  });

  it('until its first statement, a unit holds no transaction open on the server', async () => {
    const driver = await driverCase(driverName, testDb);
    cleanups.push(() => driver.close());
    const name = `begin-idle-${driverName}`;
    const db = createDb({ PrismaClient, ...driver.options(testDb), applicationName: name, pool: { size: 1, maxOverflow: 0 } });
    cleanups.push(() => db.close());
    await db.$queryRaw`SELECT 1`;
    let entered!: () => void;
    const inside = new Promise<void>((resolve) => (entered = resolve));
    let go!: () => void;
    const gate = new Promise<void>((resolve) => (go = resolve));
    // The unit waits on something else (an HTTP call, say) before its first statement.
    const unit = db.transaction(async (tx) => {
      entered();
      await gate;
      return tx.user.count();
    });
    await inside;
    const backends = await testDb.query<{ state: string }>('SELECT state FROM pg_stat_activity WHERE application_name = $1', [name]);
    go();
    expect(backends).toEqual([{ state: 'idle' }]);
    await expect(unit).resolves.toBeGreaterThanOrEqual(0);
  });
});

describe("node-postgres' Query, as begin.ts uses it", () => {
  async function client(): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: testDb.url, ssl: testDb.ssl });
    await c.connect();
    cleanups.push(() => c.end());
    await c.query('CREATE TEMP TABLE carried (n int)');
    return c;
  }

  /** Sends `config` carrying `begin`; resolves with what node-postgres answers and whether BEGIN was confirmed. */
  function sendCarried(c: pg.Client, begin: string, config: object): Promise<{ err?: unknown; result?: unknown; confirmed: boolean }> {
    const Query = queryClassOf(pg.Client);
    if (Query === undefined) throw new Error("pg.Client.Query is gone: begin.ts can no longer carry BEGIN");
    let confirmed = false;
    return new Promise((resolve) => {
      const query = carrying(Query, [{ text: begin }], config, undefined, (err, result) => resolve({ err: err ?? undefined, result, confirmed }), () => (confirmed = true));
      if (query === undefined) throw new Error('the statement cannot carry BEGIN');
      void c.query(query as never);
    });
  }

  it('one round trip: BEGIN opens the transaction, the statement runs in it, its own result comes back', async () => {
    const c = await client();
    const sent = await sendCarried(c, 'BEGIN', { text: 'INSERT INTO carried VALUES ($1) RETURNING n', values: [7], rowMode: 'array' });
    expect(sent.err).toBeUndefined();
    expect(sent.confirmed).toBe(true);
    expect(sent.result).toMatchObject({ command: 'INSERT', rowCount: 1, rows: [[7]] });
    await c.query('ROLLBACK');
    expect((await c.query('SELECT count(*)::int AS n FROM carried')).rows).toEqual([{ n: 0 }]);
  });

  it("settings ahead too: their rows and completion are not the statement's; the statement runs under them", async () => {
    const c = await client();
    const Query = queryClassOf(pg.Client)!;
    const ahead = [{ text: 'BEGIN' }, { text: 'SELECT set_config($1, $2, true)', values: ['statement_timeout', '4321'] }];
    let confirmed = false;
    const sent = await new Promise<{ err: unknown; result: unknown }>((resolve) => {
      const query = carrying(Query, ahead, { text: "SELECT current_setting('statement_timeout') AS st, $1::int AS n", values: [5] }, undefined, (err, result) => resolve({ err, result }), () => (confirmed = true));
      void c.query(query as never);
    });
    expect(sent.err ?? undefined).toBeUndefined();
    expect(confirmed).toBe(true);
    expect(sent.result).toMatchObject({ command: 'SELECT', rowCount: 1, rows: [{ st: '4321ms', n: 5 }] });
    await c.query('ROLLBACK');
  });

  it('a BEGIN the server refuses: the statement does not run at all (one Sync for both), the connection stays usable', async () => {
    const c = await client();
    const sent = await sendCarried(c, 'BEGIN ISOLATION LEVEL NONSENSE', { text: 'INSERT INTO carried VALUES ($1)', values: [1] });
    expect(sent.err).toMatchObject({ code: '42601' });
    expect(sent.confirmed).toBe(false);
    expect((await c.query('SELECT count(*)::int AS n FROM carried')).rows).toEqual([{ n: 0 }]);
  });

  it("simple protocol (no parameters): `BEGIN;` joins the text, the text's own results come back, several statements too", async () => {
    const c = await client();
    const sent = await sendCarried(c, 'BEGIN', { text: 'INSERT INTO carried VALUES (1); SELECT count(*)::int AS n FROM carried', values: [] });
    expect(sent.err).toBeUndefined();
    expect(sent.confirmed).toBe(true);
    expect(sent.result).toMatchObject([{ command: 'INSERT', rowCount: 1 }, { command: 'SELECT', rows: [{ n: 1 }] }]);
    await c.query('ROLLBACK');
    expect((await c.query('SELECT count(*)::int AS n FROM carried')).rows).toEqual([{ n: 0 }]);
  });

  it('simple protocol: a BEGIN the server refuses stops the text before it runs', async () => {
    const c = await client();
    const sent = await sendCarried(c, 'BEGIN ISOLATION LEVEL NONSENSE', { text: 'INSERT INTO carried VALUES (1)', values: [] });
    expect(sent.err).toMatchObject({ code: '42601' });
    expect((await c.query('SELECT count(*)::int AS n FROM carried')).rows).toEqual([{ n: 0 }]);
  });

  it('a cursor or a stream (a Submittable) as the first statement: what is held goes ahead of it, so it runs in the transaction', async () => {
    const Guarded = guardedClientClass(pg.Client, { connectMs: 10_000, keepAliveDelayMs: 10_000, statementDeadline: () => undefined });
    const c = new Guarded({ connectionString: testDb.url, ssl: testDb.ssl }) as unknown as pg.Client;
    await c.connect();
    cleanups.push(() => c.end());
    // Held, as the adapters send them.
    await c.query({ text: 'BEGIN', values: [] });
    await c.query({ text: 'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', values: [] });
    const rows: unknown[] = [];
    const submitted = c.query(new pg.Query("SELECT current_setting('transaction_isolation') AS level"));
    await new Promise<void>((resolve, reject) => {
      submitted.on('row', (row: unknown) => rows.push(row));
      submitted.on('end', () => resolve());
      submitted.on('error', reject);
    });
    expect(rows).toEqual([{ level: 'serializable' }]);
    await c.query({ text: 'ROLLBACK', values: [] });
  });

  it('a named statement or a portal read in pages does not carry BEGIN (it goes on its own first)', () => {
    const Query = queryClassOf(pg.Client)!;
    const carry = (config: object) => carrying(Query, [{ text: 'BEGIN' }], config, undefined, () => {}, () => {});
    expect(carry({ text: 'SELECT $1::int', values: [1], name: 'named' })).toBeUndefined();
    expect(carry({ text: 'SELECT $1::int', values: [1], rows: 10 })).toBeUndefined();
    expect(carry({ text: 'SELECT $1::int', values: [1] })).toBeDefined();
  });

  it("@neondatabase/serverless' Client, through the Neon proxy fixture: the same one round trip, in the transaction", async () => {
    const Query = queryClassOf(NeonClient);
    if (Query === undefined) throw new Error("@neondatabase/serverless' Client.Query is gone: begin.ts can no longer carry BEGIN on Neon");
    const neon = await driverCase('neon', testDb);
    cleanups.push(() => neon.close());
    const { url, neon: ws } = neon.options(testDb);
    const c = new NeonClient({ connectionString: url! });
    Object.assign((c as unknown as { neonConfig: object }).neonConfig, { webSocketConstructor: WebSocket, ...ws });
    await c.connect();
    cleanups.push(() => c.end());
    await c.query('CREATE TEMP TABLE carried (n int)');
    let confirmed = false;
    const sent = await new Promise<{ err: unknown; result: unknown }>((resolve) => {
      // As adapter-neon sends it: the values beside the config.
      const query = carrying(Query, [{ text: 'BEGIN' }], { text: 'INSERT INTO carried VALUES ($1) RETURNING n', rowMode: 'array' }, [9], (err, result) => resolve({ err, result }), () => (confirmed = true));
      void c.query(query as never);
    });
    expect(sent.err ?? undefined).toBeUndefined();
    expect(confirmed).toBe(true);
    expect(sent.result).toMatchObject({ command: 'INSERT', rowCount: 1, rows: [[9]] });
    await c.query('ROLLBACK');
    expect((await c.query('SELECT count(*)::int AS n FROM carried')).rows).toEqual([{ n: 0 }]);
  });
});
