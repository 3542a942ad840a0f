/**
 * Units of work (issue 4) against the real PostgreSQL of the harness: commit and
 * rollback, retries on serialization failures and deadlocks, the ambient client,
 * savepoints, read-only units, reserved sessions, correlation ids and timeouts.
 */
import { Prisma, PrismaClient } from '../src/generated/prisma/client';
import {
  ConfigError,
  createDb,
  DatabaseQueryError,
  classifyError,
  DatabaseTransactionError,
  DatalayerError,
  PoolTimeoutError,
  StatementTimeoutError,
  type Db,
} from '../src/index';
import { createTestDatabase, testServer, type TestDatabase } from './support/db';
import { barrier, eventually, holdConnection, latch, rejectionOf, sleep } from './support/async';
import { startPgBouncer } from './support/pgbouncer';
import { startTcpProxy } from './support/tcp-proxy';

let testDb: TestDatabase;
let db: Db<PrismaClient>;
/** Dbs created by individual tests, closed in afterAll even when a test fails. */
const extra: Array<{ close(): Promise<void> }> = [];

function newDb(applicationName: string, options: Partial<Parameters<typeof createDb<PrismaClient>>[0]> = {}): Db<PrismaClient> {
  const d = createDb({ PrismaClient, url: testDb.url, applicationName, ...options });
  extra.push(d);
  return d;
}

beforeAll(async () => {
  testDb = await createTestDatabase({ prefix: 'session' });
  db = createDb({
    PrismaClient,
    url: testDb.url,
    applicationName: 'session-test-main',
    pool: { size: 3, maxOverflow: 2 },
    transaction: { retries: 3 },
  });
});

afterAll(async () => {
  await db?.close();
  for (const d of extra) await d.close();
  await testDb?.drop();
});

beforeEach(async () => {
  await testDb.query('TRUNCATE users, transfers, accounts RESTART IDENTITY CASCADE');
});

const emails = async (): Promise<string[]> =>
  (await testDb.query<{ email: string }>('SELECT email FROM users ORDER BY email')).map((r) => r.email);

describe('commit and rollback', () => {
  test('a unit that resolves commits every write and returns its value', async () => {
    const before = db.stats().counters;
    const result = await db.transaction(async (tx) => {
      const a = await tx.user.create({ data: { email: 'a@example.com' } });
      const b = await tx.user.create({ data: { email: 'b@example.com' } });
      await tx.user.update({ where: { id: a.id }, data: { name: 'Ann' } });
      return { ids: [a.id, b.id], marker: 'done' };
    });
    expect(result).toEqual({ ids: [1, 2], marker: 'done' });
    expect(await testDb.query('SELECT email, name FROM users ORDER BY id')).toEqual([
      { email: 'a@example.com', name: 'Ann' },
      { email: 'b@example.com', name: null },
    ]);
    const after = db.stats().counters;
    expect(after.transactions - before.transactions).toBe(1);
    expect(after.commits - before.commits).toBe(1);
    expect(after.rollbacks - before.rollbacks).toBe(0);
  });

  test('an Error thrown after several writes rolls all of them back', async () => {
    await db.user.create({ data: { email: 'existing@example.com' } });
    const thrown = new Error('business rule violated');
    const before = db.stats().counters;
    const err = await rejectionOf(
      db.transaction(async (tx) => {
        await tx.user.create({ data: { email: 'x1@example.com' } });
        await tx.user.create({ data: { email: 'x2@example.com' } });
        await tx.user.update({ where: { email: 'existing@example.com' }, data: { name: 'changed' } });
        await tx.user.deleteMany({ where: { email: 'existing@example.com' } });
        throw thrown;
      }),
    );
    // The caller's own error comes back unchanged, after the rollback (as Prisma's $transaction does).
    expect(err).toBe(thrown);
    expect(await testDb.query('SELECT email, name FROM users')).toEqual([{ email: 'existing@example.com', name: null }]);
    const after = db.stats().counters;
    expect(after.rollbacks - before.rollbacks).toBe(1);
    expect(after.commits - before.commits).toBe(0);
    // The user's own failure is not a conflict: it is not re-run.
    expect(after.retries - before.retries).toBe(0);
  });

  test.each<[string, unknown]>([
    ['a string', 'plain string failure'],
    ['a plain object', { reason: 'object failure', code: 17 }],
    ['undefined', undefined],
    ['a number', 42],
  ])('throwing %s rolls back and re-throws that very value', async (_what, value) => {
    let runs = 0;
    const err = await rejectionOf(
      db.transaction(async (tx) => {
        runs++;
        await tx.user.create({ data: { email: 'nonerror1@example.com' } });
        await tx.user.create({ data: { email: 'nonerror2@example.com' } });
        throw value;
      }),
    );
    expect(err).toBe(value);
    expect(runs).toBe(1);
    expect(await emails()).toEqual([]);
  });

  test('a failing statement rolls the unit back and surfaces as a typed DatabaseQueryError', async () => {
    await db.user.create({ data: { email: 'taken@example.com' } });
    const err = await rejectionOf(
      db.transaction(async (tx) => {
        await tx.user.create({ data: { email: 'first@example.com' } });
        await tx.user.create({ data: { email: 'taken@example.com' } });
      }),
    );
    expect(classifyError(err)).toBeInstanceOf(DatabaseQueryError);
    expect(classifyError(err)).toMatchObject({ sqlState: '23505', retryable: false });
    expect(await emails()).toEqual(['taken@example.com']);
  });

  test('the configured isolation level is the one the unit runs at', async () => {
    const level = await db.transaction(
      async (tx) => (await tx.$queryRaw<{ l: string }[]>`SELECT current_setting('transaction_isolation') AS l`)[0]?.l,
      { isolationLevel: 'Serializable' },
    );
    expect(level).toBe('serializable');
    const dflt = await db.transaction(
      async (tx) => (await tx.$queryRaw<{ l: string }[]>`SELECT current_setting('transaction_isolation') AS l`)[0]?.l,
    );
    expect(dflt).toBe('read committed');
  });
});

describe('retries', () => {
  async function seedAccounts(...balances: number[]): Promise<void> {
    for (const [i, balance] of balances.entries()) {
      await testDb.query('INSERT INTO accounts (id, owner, balance) VALUES ($1, $2, $3)', [i + 1, `owner${i + 1}`, balance]);
    }
  }
  const balances = async (): Promise<number[]> =>
    (await testDb.query<{ balance: number }>('SELECT balance FROM accounts ORDER BY id')).map((r) => r.balance);

  test('a real serialization conflict is retried and both units commit', async () => {
    await seedAccounts(100);
    const meet = barrier(2);
    const runs: [number, number] = [0, 0];
    const before = db.stats().counters.retries;
    // Read-modify-write of the same row by two overlapping Serializable units: without
    // the conflict being detected and retried, one deposit would be lost.
    const deposit = (who: 0 | 1, amount: number): Promise<number> =>
      db.transaction(
        async (tx) => {
          const attempt = runs[who]++;
          const acc = await tx.account.findUniqueOrThrow({ where: { id: 1 } });
          if (attempt === 0) await meet.arrive(); // both have read before either writes
          await tx.account.update({ where: { id: 1 }, data: { balance: acc.balance + amount } });
          return acc.balance + amount;
        },
        { isolationLevel: 'Serializable' },
      );
    const results = await Promise.all([deposit(0, 10), deposit(1, 1)]);
    expect(await balances()).toEqual([111]);
    expect(results.sort((x, y) => x - y)).toEqual(expect.arrayContaining([111]));
    expect(db.stats().counters.retries - before).toBeGreaterThanOrEqual(1);
    // Exactly one of them had to run again.
    expect(runs.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(3);
  });

  test('a serialization failure raised at COMMIT is retried too', async () => {
    await seedAccounts(0, 0);
    const meet = barrier(2);
    const runs: [number, number] = [0, 0];
    const before = db.stats().counters.retries;
    // Write skew: each reads both rows and writes its own. Both writes succeed; the
    // second COMMIT is the one PostgreSQL refuses (read/write dependencies, 40001).
    const unit = (who: 0 | 1): Promise<number> =>
      db.transaction(
        async (tx) => {
          const attempt = runs[who]++;
          const all = await tx.account.findMany({ orderBy: { id: 'asc' } });
          const total = all.reduce((s, a) => s + a.balance, 0);
          await tx.account.update({ where: { id: who + 1 }, data: { balance: total + 1 } });
          if (attempt === 0) await meet.arrive(); // both bodies done before either commits
          return total;
        },
        { isolationLevel: 'Serializable' },
      );
    const seen = await Promise.all([unit(0), unit(1)]);
    // Serial order: the second saw the first's write.
    expect(seen.sort()).toEqual([0, 1]);
    expect((await balances()).sort()).toEqual([1, 2]);
    expect(runs[0] + runs[1]).toBe(3);
    expect(db.stats().counters.retries - before).toBe(1);
  });

  test('a COMMIT-time serialization failure that persists ends as a retryable, typed error', async () => {
    await seedAccounts(0, 0);
    const meet = barrier(2);
    const results = await Promise.allSettled(
      ([0, 1] as const).map((who) =>
        db.transaction(
          async (tx) => {
            await tx.account.findMany();
            await tx.account.update({ where: { id: who + 1 }, data: { balance: { increment: 1 } } });
            await meet.arrive();
          },
          { isolationLevel: 'Serializable', retries: 0 },
        ),
      ),
    );
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(failed).toHaveLength(1);
    expect(failed[0]!.reason).toBeInstanceOf(DatabaseTransactionError);
    expect(failed[0]!.reason).toMatchObject({ retryable: true, sqlState: '40001', attempts: 1, outcome: 'rolled-back' });
  });

  test("a statement's serialization failure, retries exhausted, is Prisma's P2034 as bare Prisma raises it", async () => {
    await seedAccounts(0, 0);
    const meet = barrier(2);
    const results = await Promise.allSettled(
      ([0, 1] as const).map(() =>
        db.transaction(
          async (tx) => {
            await tx.account.findUnique({ where: { id: 1 } });
            await meet.arrive();
            // The second UPDATE waits for the first unit's row lock, then fails with 40001 once it commits.
            await tx.account.update({ where: { id: 1 }, data: { balance: { increment: 1 } } });
          },
          { isolationLevel: 'RepeatableRead', retries: 0, correlationId: 'p2034' },
        ),
      ),
    );
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(failed).toHaveLength(1);
    // Prisma's retry habit (`e.code === 'P2034'`) keeps working; before, it was the layer's own error, without a code.
    expect(failed[0]!.reason).toBeInstanceOf(Prisma.PrismaClientKnownRequestError);
    expect(failed[0]!.reason).toMatchObject({ code: 'P2034', attempts: 1, outcome: 'rolled-back', retryable: true, correlationId: 'p2034' });
    expect(classifyError(failed[0]!.reason)).toBeInstanceOf(DatabaseTransactionError);
    expect(classifyError(failed[0]!.reason)).toMatchObject({ sqlState: '40001', prismaCode: 'P2034', attempts: 1, outcome: 'rolled-back', retryable: true });
  });

  test('a unit that keeps failing with 40001 stops after the retry limit with a retryable error', async () => {
    const retries = 2;
    let runs = 0;
    const before = db.stats().counters;
    const err = await rejectionOf(
      db.transaction(
        async (tx) => {
          runs++;
          await tx.user.create({ data: { email: `attempt${runs}@example.com` } });
          await tx.$executeRawUnsafe(`DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40001'; END $$`);
        },
        { retries, correlationId: 'retry-corr' },
      ),
    );
    expect(classifyError(err)).toBeInstanceOf(DatabaseTransactionError);
    expect(classifyError(err)).toMatchObject({
      retryable: true,
      attempts: retries + 1,
      outcome: 'rolled-back',
      sqlState: '40001',
      correlationId: 'retry-corr',
    });
    expect(runs).toBe(retries + 1);
    expect(db.stats().counters.retries - before.retries).toBe(retries);
    expect(db.stats().counters.transactions - before.transactions).toBe(1);
    expect(await emails()).toEqual([]);
  });

  test('retries: 0 means one attempt', async () => {
    let runs = 0;
    const err = await rejectionOf(
      db.transaction(
        async (tx) => {
          runs++;
          await tx.$executeRawUnsafe(`DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40001'; END $$`);
        },
        { retries: 0 },
      ),
    );
    expect(err).toMatchObject({ retryable: true, attempts: 1 });
    expect(runs).toBe(1);
  });

  test('a transient 40001 is retried and the successful attempt is the only one that commits', async () => {
    let runs = 0;
    const value = await db.transaction(async (tx) => {
      runs++;
      await tx.user.create({ data: { email: `try${runs}@example.com` } });
      if (runs < 3) await tx.$executeRawUnsafe(`DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40001'; END $$`);
      return `ok after ${runs}`;
    });
    expect(value).toBe('ok after 3');
    expect(await emails()).toEqual(['try3@example.com']);
  });

  test('a real deadlock (40P01) is retried and both units commit', async () => {
    await seedAccounts(0, 0);
    const meet = barrier(2);
    const runs: [number, number] = [0, 0];
    const before = db.stats().counters.retries;
    const deadlocksBefore = await deadlockCount();
    // Opposite lock order, synchronised so that each holds its first row when it asks
    // for the other's: PostgreSQL's deadlock detector kills one (after deadlock_timeout).
    const unit = (who: 0 | 1): Promise<void> =>
      db.transaction(async (tx) => {
        const attempt = runs[who]++;
        const [first, second] = who === 0 ? [1, 2] : [2, 1];
        await tx.account.update({ where: { id: first }, data: { balance: { increment: 1 } } });
        if (attempt === 0) await meet.arrive();
        await tx.account.update({ where: { id: second }, data: { balance: { increment: 1 } } });
      });
    await Promise.all([unit(0), unit(1)]);
    expect(await balances()).toEqual([2, 2]);
    expect(db.stats().counters.retries - before).toBeGreaterThanOrEqual(1);
    expect(runs[0] + runs[1]).toBe(3);
    // The server really saw a deadlock (statistics are flushed asynchronously).
    expect(await eventually(async () => (await deadlockCount()) > deadlocksBefore, 5_000, 200)).toBe(true);
  });

  test('an injected 40P01 is retried like a deadlock', async () => {
    let runs = 0;
    await db.transaction(async (tx) => {
      runs++;
      if (runs === 1) await tx.$executeRawUnsafe(`DO $$ BEGIN RAISE EXCEPTION 'd' USING ERRCODE = '40P01'; END $$`);
      await tx.user.create({ data: { email: 'after-deadlock@example.com' } });
    });
    expect(runs).toBe(2);
    expect(await emails()).toEqual(['after-deadlock@example.com']);
  });

  test("a re-run whose COMMIT answer is lost says how often the unit ran: outcome unknown, attempts 2, not re-run again", async () => {
    const proxy = await startTcpProxy({ host: testDb.host, port: testDb.port });
    extra.push(proxy);
    const viaProxy = newDb('session-test-retry-commit-lost', { url: testDb.urlWith({ sslmode: 'disable' }, { port: proxy.port }) });
    let runs = 0;
    proxy.dropAfterCommit('rst');
    const err = await rejectionOf(
      viaProxy.transaction(async (tx) => {
        runs++;
        await tx.user.create({ data: { email: `retry-commit-lost-${runs}@example.com` } });
        if (runs === 1) await tx.$executeRawUnsafe(`DO $$ BEGIN RAISE EXCEPTION 'd' USING ERRCODE = '40P01'; END $$`);
      }),
    );
    expect(proxy.fired).toEqual([{ kind: 'after-commit', mode: 'rst', result: 'committed' }]);
    expect(err).toBeInstanceOf(DatabaseTransactionError);
    expect(err).toMatchObject({ outcome: 'unknown', retryable: false, attempts: 2 });
    expect(runs).toBe(2);
    expect(await emails()).toEqual(['retry-commit-lost-2@example.com']);
  });

  async function deadlockCount(): Promise<number> {
    const rows = await testDb.query<{ n: string }>('SELECT deadlocks AS n FROM pg_stat_database WHERE datname = current_database()');
    return Number(rows[0]?.n ?? 0);
  }
});

describe('the ambient client', () => {
  // Repository code: no transaction parameter, it asks the layer for the current client.
  const createUser = (email: string) => db.current().user.create({ data: { email } });

  test('inside a unit, db.current() writes in that transaction', async () => {
    const err = await rejectionOf(
      db.transaction(async (tx) => {
        await createUser('ambient1@example.com');
        // Not committed yet: invisible to another connection, visible to the unit.
        expect(await emails()).toEqual([]);
        expect(await tx.user.count()).toBe(1);
        expect(await db.current().user.count()).toBe(1);
        await createUser('ambient2@example.com');
        throw new Error('roll it all back');
      }),
    );
    expect((err as Error).message).toBe('roll it all back');
    expect(await emails()).toEqual([]);

    await db.transaction(async () => {
      await createUser('ambient3@example.com');
    });
    expect(await emails()).toEqual(['ambient3@example.com']);
  });

  test('the ambient client survives awaits, timers and concurrent units', async () => {
    await Promise.all(
      [1, 2, 3].map((i) =>
        rejectionOf(
          db.transaction(async () => {
            await sleep(5 * i);
            await createUser(`conc${i}@example.com`);
            await new Promise<void>((resolve) => setTimeout(resolve, 5));
            await createUser(`conc${i}b@example.com`);
            if (i === 2) throw new Error('only unit 2 fails');
          }),
        ).catch(() => undefined),
      ),
    );
    expect(await emails()).toEqual(['conc1@example.com', 'conc1b@example.com', 'conc3@example.com', 'conc3b@example.com']);
  });

  test('outside a unit, db.current() writes directly (autocommit)', async () => {
    await createUser('direct@example.com');
    expect(await emails()).toEqual(['direct@example.com']);
    // After a unit has finished, current() is the plain client again.
    await db.transaction(async () => undefined);
    await createUser('direct2@example.com');
    expect(await emails()).toEqual(['direct2@example.com', 'direct@example.com']);
  });
});

describe('units of two Dbs (found by probes)', () => {
  // An app with two databases (its own and, say, an audit store) nests one's unit in the
  // other's: each must run on its own database, and commit or roll back on its own.
  let other: TestDatabase;
  let audit: Db<PrismaClient>;
  beforeAll(async () => {
    other = await createTestDatabase({ prefix: 'session_other' });
    audit = createDb({ PrismaClient, url: other.url, applicationName: 'session-test-audit' });
  });
  afterAll(async () => {
    await audit?.close();
    await other?.drop();
  });
  beforeEach(async () => {
    await other.query('TRUNCATE users, transfers, accounts RESTART IDENTITY CASCADE');
  });
  const auditEmails = async (): Promise<string[]> => (await other.query<{ email: string }>('SELECT email FROM users ORDER BY email')).map((r) => r.email);

  test("another Db's unit inside a unit runs on its own database and commits on its own", async () => {
    const err = await rejectionOf(
      db.transaction(async (tx) => {
        await tx.user.create({ data: { email: 'main@example.com' } });
        await audit.transaction((atx) => atx.user.create({ data: { email: 'audit@example.com' } }));
        // Committed already (its own transaction), while the outer unit is still open.
        expect(await auditEmails()).toEqual(['audit@example.com']);
        await audit.current().user.create({ data: { email: 'audit-direct@example.com' } });
        await audit.session((s) => s.user.create({ data: { email: 'audit-session@example.com' } }));
        throw new Error('the outer unit fails');
      }),
    );
    expect((err as Error).message).toBe('the outer unit fails');
    expect(await emails()).toEqual([]);
    expect(await auditEmails()).toEqual(['audit-direct@example.com', 'audit-session@example.com', 'audit@example.com']);
  });

  test("a session inside another Db's unit inside its own Db's unit: what it leaves on its own unit's connection is discarded", async () => {
    const app = newDb('session-test-two-discard', { pool: { size: 1, maxOverflow: 0 } });
    await app.transaction(async (tx) => {
      await tx.user.count();
      await audit.transaction(async () => {
        // The session is the app unit's connection: its setting outlives the unit's COMMIT.
        await app.session((s) => s.$queryRawUnsafe("SELECT set_config('app.leak', 'yes', false)"));
      });
    });
    // The app pool's one connection, next user: the session's setting was discarded (it was
    // the audit Db's connection that got marked, and this one kept 'yes').
    const rows = await app.$queryRawUnsafe<{ v: string | null }[]>("SELECT current_setting('app.leak', true) AS v");
    expect(rows[0]!.v ?? '').toBe('');
  });

  test("another Db's write whose answer was lost fails the unit with that write's outcome, 'unknown', not the unit's 'rolled-back'", async () => {
    const proxy = await startTcpProxy({ host: other.host, port: other.port });
    extra.push(proxy);
    const auditViaProxy = newDb('session-test-two-outcome', {
      url: other.urlWith({ sslmode: 'disable' }, { user: other.appUser, port: proxy.port }),
      pool: { size: 1, maxOverflow: 0, validateAfterIdleMs: 3_600_000 },
    });
    const account = await auditViaProxy.account.create({ data: { owner: 'two-outcome', balance: 0 } });
    // The audit database runs the increment and commits it; its answer is lost.
    proxy.dropAfterStatement(/^UPDATE/i, 'rst');
    const err = await rejectionOf(
      db.transaction(
        async (tx) => {
          await tx.user.create({ data: { email: 'two-outcome@example.com' } });
          await auditViaProxy.account.update({ where: { id: account.id }, data: { balance: { increment: 1 } } });
        },
        { correlationId: 'req-two-outcome' },
      ),
    );
    expect(proxy.fired.at(-1)).toEqual({ kind: 'after-statement', mode: 'rst', result: 'answered' });
    // The unit's own write rolled back; the audit write happened. 'rolled-back' told the
    // caller it could run the unit again, and the increment was applied twice.
    expect(await emails()).toEqual([]);
    expect((await other.query<{ balance: number }>('SELECT balance FROM accounts WHERE id = $1', [account.id]))[0]!.balance).toBe(1);
    expect(err).toBeInstanceOf(DatalayerError);
    expect(err).toMatchObject({ outcome: 'unknown', retryable: false, correlationId: 'req-two-outcome' });
  });

  test("another Db's Prisma $transaction beside a savepoint unit does not wait for that savepoint", async () => {
    let auditDone = false;
    let sawAudit: boolean | undefined;
    await db.transaction(async (tx) => {
      await tx.user.count();
      await Promise.all([
        db.transaction(
          async (sp) => {
            await sp.user.create({ data: { email: 'savepoint@example.com' } });
            // Waits (at most 3 s) for the audit transaction beside it.
            for (let waited = 0; !auditDone && waited < 3_000; waited += 20) await sleep(20);
            sawAudit = auditDone;
          },
          { nested: 'savepoint' },
        ),
        audit.$transaction(async (atx) => {
          await atx.user.create({ data: { email: 'beside-savepoint@example.com' } });
          auditDone = true;
        }),
      ]);
    });
    // Its statements waited for the app Db's savepoint to be released: a wait on each other, ended only by the bound.
    expect(sawAudit).toBe(true);
    expect(await auditEmails()).toEqual(['beside-savepoint@example.com']);
    expect(await emails()).toEqual(['savepoint@example.com']);
  });

  test("inside another Db's unit, the first Db's current() is still its own unit's transaction", async () => {
    await rejectionOf(
      db.transaction(async () => {
        await audit.transaction(async () => {
          await db.current().user.create({ data: { email: 'inner-main@example.com' } });
          await audit.current().user.create({ data: { email: 'inner-audit@example.com' } });
        });
        throw new Error('roll back the first Db only');
      }),
    );
    expect(await emails()).toEqual([]);
    expect(await auditEmails()).toContain('inner-audit@example.com');
  });
});

describe('nesting', () => {
  test('a savepoint unit that fails rolls back only its own writes', async () => {
    const innerFailure = new Error('inner failed');
    let caught: unknown;
    await db.transaction(async (tx) => {
      await tx.user.create({ data: { email: 'outer1@example.com' } });
      try {
        await db.transaction(
          async (inner) => {
            await inner.user.create({ data: { email: 'inner1@example.com' } });
            await inner.user.create({ data: { email: 'inner2@example.com' } });
            throw innerFailure;
          },
          { nested: 'savepoint' },
        );
      } catch (e) {
        caught = e;
      }
      await tx.user.create({ data: { email: 'outer2@example.com' } });
    });
    expect(caught).toBe(innerFailure);
    expect(await emails()).toEqual(['outer1@example.com', 'outer2@example.com']);
  });

  test('a savepoint unit whose statement fails leaves the outer unit usable', async () => {
    // Without a savepoint, PostgreSQL aborts the whole transaction after an error (25P02).
    let caught: unknown;
    await db.transaction(async (tx) => {
      await tx.user.create({ data: { email: 'dup@example.com' } });
      caught = await rejectionOf(
        db.transaction(async () => db.current().user.create({ data: { email: 'dup@example.com' } }), { nested: 'savepoint' }),
      );
      await tx.user.create({ data: { email: 'after@example.com' } });
    });
    expect(classifyError(caught)).toBeInstanceOf(DatabaseQueryError);
    expect(classifyError(caught)).toMatchObject({ sqlState: '23505' });
    expect(await emails()).toEqual(['after@example.com', 'dup@example.com']);
  });

  test('a successful savepoint unit returns its value and its writes commit with the outer unit', async () => {
    const value = await db.transaction(async (tx) => {
      const inner = await db.transaction(async (itx) => (await itx.user.create({ data: { email: 'sp-ok@example.com' } })).email, {
        nested: 'savepoint',
      });
      // Two savepoints in a row, and a nested one inside a savepoint.
      await db.transaction(
        async () => {
          await db.current().user.create({ data: { email: 'sp-ok2@example.com' } });
          await rejectionOf(
            db.transaction(
              async () => {
                await db.current().user.create({ data: { email: 'sp-deep@example.com' } });
                throw new Error('deep');
              },
              { nested: 'savepoint' },
            ),
          );
        },
        { nested: 'savepoint' },
      );
      await tx.user.create({ data: { email: 'sp-outer@example.com' } });
      return inner;
    });
    expect(value).toBe('sp-ok@example.com');
    expect(await emails()).toEqual(['sp-ok2@example.com', 'sp-ok@example.com', 'sp-outer@example.com']);
  });

  test('when the outer unit fails, writes of a released savepoint roll back too', async () => {
    await rejectionOf(
      db.transaction(async () => {
        await db.transaction(async (itx) => itx.user.create({ data: { email: 'released@example.com' } }), { nested: 'savepoint' });
        throw new Error('outer fails');
      }),
    );
    expect(await emails()).toEqual([]);
  });

  test('by default a nested unit joins the outer one: an uncaught inner throw rolls back everything', async () => {
    const err = await rejectionOf(
      db.transaction(async (tx) => {
        await tx.user.create({ data: { email: 'join-outer@example.com' } });
        await db.transaction(async (inner) => {
          await inner.user.create({ data: { email: 'join-inner@example.com' } });
          throw new Error('inner throws');
        });
      }),
    );
    expect((err as Error).message).toBe('inner throws');
    expect(await emails()).toEqual([]);
  });

  test('a joined inner unit shares the outer transaction (same backend, same snapshot)', async () => {
    const counters = db.stats().counters;
    await db.transaction(async (tx) => {
      const [outerPid] = await tx.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid, txid_current() AS x`;
      const inner = await db.transaction(async (itx) => {
        await itx.user.create({ data: { email: 'joined@example.com' } });
        return (await itx.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`)[0];
      });
      expect(inner?.pid).toBe(outerPid?.pid);
      // Rows the inner unit wrote are visible to the outer one before commit.
      expect(await tx.user.count()).toBe(1);
    });
    // A joined unit is not a transaction of its own.
    expect(db.stats().counters.transactions - counters.transactions).toBe(1);
    expect(await emails()).toEqual(['joined@example.com']);
  });
});

describe('options of a nested unit', () => {
  // It runs in the outer unit's transaction, whose level and read-only mode BEGIN fixed.
  test('a nested unit asking for another isolation level is refused before it runs', async () => {
    const ran: string[] = [];
    const asked = async (options: Parameters<Db<PrismaClient>['transaction']>[1]) =>
      rejectionOf(db.transaction(async () => db.transaction(async (itx) => ran.push(String(await itx.user.count())), options), { isolationLevel: 'RepeatableRead' }));
    const level = await asked({ isolationLevel: 'Serializable' });
    expect(level).toBeInstanceOf(ConfigError);
    expect((level as ConfigError).message).toMatch(/isolationLevel.*RepeatableRead.*Serializable/s);
    expect(await asked({ isolationLevel: 'ReadCommitted', nested: 'savepoint' })).toBeInstanceOf(ConfigError);
    expect(ran).toEqual([]);
    // What the outer unit provides is accepted; under the server's default level (READ COMMITTED), READ UNCOMMITTED is it too.
    await db.transaction(async () => db.transaction(async () => ran.push('same level'), { isolationLevel: 'RepeatableRead', nested: 'savepoint' }), { isolationLevel: 'RepeatableRead' });
    // A read inside a unit joins it, and sees the unit's own writes.
    await db.transaction(async (tx) => {
      await tx.user.create({ data: { email: 'nested-read@example.com' } });
      ran.push(`read ${await db.read((rtx) => rtx.user.count())}`);
    });
    await db.transaction(async () => db.transaction(async () => ran.push('uncommitted'), { isolationLevel: 'ReadUncommitted' }));
    expect(ran).toEqual(['same level', 'read 1', 'uncommitted']);
  });
});

describe("Prisma's own $transaction inside a unit", () => {
  test("is a transaction of its own: not read-only, not under the unit's timeouts", async () => {
    const seen = await db.transaction(
      async (tx) => {
        await tx.user.count();
        // Independent work (an outbox row, an audit record) opened with Prisma's API inside the unit.
        const inner = await db.$transaction(async (t2) => {
          await t2.user.create({ data: { email: 'independent@example.com' } });
          return (await t2.$queryRaw<{ ro: string; st: string }[]>`SELECT current_setting('transaction_read_only') AS ro, current_setting('statement_timeout') AS st`)[0];
        });
        const outer = (await tx.$queryRaw<{ ro: string; st: string }[]>`SELECT current_setting('transaction_read_only') AS ro, current_setting('statement_timeout') AS st`)[0];
        return { inner, outer };
      },
      { readOnly: true, timeoutMs: 4000 },
    );
    // Before: the inner BEGIN carried the unit's settings: its INSERT failed with 25006, and its statement_timeout was the unit's 4 s.
    expect(seen.outer).toEqual({ ro: 'on', st: '4s' });
    expect(seen.inner).toEqual({ ro: 'off', st: '30s' });
    expect(await emails()).toEqual(['independent@example.com']);
  });
});

describe('read-only units', () => {
  test('a write inside a read-only unit fails with a typed 25006 error and nothing is written', async () => {
    const err = await rejectionOf(
      db.transaction(async (tx) => tx.user.create({ data: { email: 'ro@example.com' } }), { readOnly: true }),
    );
    expect(classifyError(err)).toBeInstanceOf(DatabaseQueryError);
    expect(classifyError(err)).toMatchObject({ sqlState: '25006', retryable: false });
    expect(await emails()).toEqual([]);
  });

  test('reads work in a read-only unit, and read-only does not stick to the connection', async () => {
    await db.user.create({ data: { email: 'seen@example.com' } });
    const seen = await db.transaction(
      async (tx) => {
        const [ro] = await tx.$queryRaw<{ ro: string }[]>`SELECT current_setting('transaction_read_only') AS ro`;
        return { ro: ro?.ro, n: await tx.user.count() };
      },
      { readOnly: true, isolationLevel: 'RepeatableRead' },
    );
    expect(seen).toEqual({ ro: 'on', n: 1 });
    // Every connection of the pool is writable again afterwards.
    await Promise.all(
      [1, 2, 3, 4, 5].map((i) => db.transaction(async (tx) => tx.user.create({ data: { email: `rw${i}@example.com` } }))),
    );
    expect(await emails()).toHaveLength(6);
  });
});

describe('db.session', () => {
  test('every statement of a session runs on one connection and sees its session settings', async () => {
    await testDb.query('CREATE SCHEMA IF NOT EXISTS session_schema');
    await testDb.query('CREATE TABLE IF NOT EXISTS session_schema.marker (v text)');
    await testDb.query("INSERT INTO session_schema.marker VALUES ('from session_schema')");
    const result = await db.session(async (c) => {
      const pids: number[] = [];
      const pid = async (): Promise<number> => (await c.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`)[0]!.pid;
      pids.push(await pid());
      await c.$executeRawUnsafe('SET search_path TO session_schema, public');
      pids.push(await pid());
      const marker = await c.$queryRawUnsafe<{ v: string }[]>('SELECT v FROM marker');
      await c.user.create({ data: { email: 'in-session@example.com' } });
      // Concurrent statements inside the session still share its connection.
      pids.push(...(await Promise.all([pid(), pid(), pid()])));
      pids.push(await db.current().$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`.then((r) => r[0]!.pid));
      return { pids, marker };
    });
    expect(new Set(result.pids).size).toBe(1);
    expect(result.pids).toHaveLength(6);
    expect(result.marker).toEqual([{ v: 'from session_schema' }]);
    // Writes in a session are not in a transaction: they commit as they go.
    expect(await emails()).toEqual(['in-session@example.com']);
    expect(db.stats().pool.inUse).toBe(0);
  });

  test('a query returned straight from the session function runs on the session connection', async () => {
    // The session holds the pool's only connection: a query that escaped it would queue for one and time out.
    const d = newDb('session-direct', { pool: { size: 1, maxOverflow: 0, timeoutMs: 1_000 } });
    const rows = await d.session((c) => c.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`);
    expect(rows[0]!.pid).toEqual(expect.any(Number));
    expect(d.stats().counters).toMatchObject({ connectionsOpened: 1, poolTimeouts: 0 });
  });

  test('the connection is released when the session function throws (Error and non-Error)', async () => {
    const failure = new Error('session body failed');
    await expect(
      db.session(async (c) => {
        await c.$queryRaw`SELECT 1`;
        throw failure;
      }),
    ).rejects.toBe(failure);
    expect(db.stats().pool.inUse).toBe(0);

    await expect(
      db.session(async () => {
        throw 'a string';
      }),
    ).rejects.toBe('a string');
    expect(db.stats().pool.inUse).toBe(0);

    const qerr = await rejectionOf(db.session(async (c) => c.$queryRawUnsafe('SELECT * FROM no_such_table')));
    expect(classifyError(qerr)).toBeInstanceOf(DatabaseQueryError);
    expect(classifyError(qerr)).toMatchObject({ sqlState: '42P01' });
    expect(db.stats().pool.inUse).toBe(0);
  });

  test('session state does not leak to the next user of that connection', async () => {
    const one = newDb('session-test-one', { pool: { size: 1, maxOverflow: 0 }, timeouts: { statementMs: 12_345 } });
    const settings = `SELECT pg_backend_pid() AS pid, current_setting('search_path') AS sp,
                             current_setting('myapp.tenant', true) AS tenant, current_setting('statement_timeout') AS st,
                             current_setting('TimeZone') AS tz`;
    type Row = { pid: number; sp: string; tenant: string | null; st: string; tz: string };
    const [fresh] = await one.$queryRawUnsafe<Row[]>(settings);
    const inside = await one.session(async (c) => {
      await c.$executeRawUnsafe('SET search_path TO pg_catalog');
      await c.$executeRawUnsafe("SET myapp.tenant = 'tenant-42'");
      await c.$executeRawUnsafe('SET statement_timeout = 777');
      await c.$executeRawUnsafe("SET TimeZone = 'Asia/Kathmandu'");
      await c.$executeRawUnsafe('CREATE TEMP TABLE session_tmp (x int)');
      return (await c.$queryRawUnsafe<Row[]>(settings))[0];
    });
    expect(inside).toMatchObject({ pid: fresh!.pid, sp: 'pg_catalog', tenant: 'tenant-42', st: '777ms', tz: 'Asia/Kathmandu' });

    // Same (only) connection, next user: every setting is back to what it was, the
    // configured statement timeout included, and the temp table is gone.
    const [after] = await one.$queryRawUnsafe<Row[]>(settings);
    expect(after!.pid).toBe(fresh!.pid);
    // (A custom setting, once defined on a backend, reads as '' after RESET instead of NULL.)
    expect({ ...after, tenant: after!.tenant ?? '' }).toEqual({ ...fresh, tenant: fresh!.tenant ?? '' });
    expect(after!.st).toBe('12345ms');
    expect(after!.tenant ?? '').toBe('');
    const tmp = await one.$queryRawUnsafe<{ n: number }[]>(`SELECT count(*)::int AS n FROM pg_tables WHERE tablename = 'session_tmp'`);
    expect(tmp).toEqual([{ n: 0 }]);
    // Ordinary model queries keep working on that connection (no stale prepared statements).
    await one.user.create({ data: { email: 'after-session@example.com' } });
    expect(await one.user.findMany({ select: { email: true } })).toEqual([{ email: 'after-session@example.com' }]);
    // And so does a unit of work.
    const inTx = await one.transaction(async (tx) => (await tx.$queryRawUnsafe<Row[]>(settings))[0]);
    expect({ ...inTx, tenant: inTx!.tenant ?? '' }).toEqual({ ...fresh, tenant: fresh!.tenant ?? '' });
  });

  test('a unit of work inside a session runs on the session connection', async () => {
    const pids = await db.session(async (c) => {
      const [outer] = await c.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
      const inner = await db.transaction(async (tx) => (await tx.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`)[0]);
      return [outer?.pid, inner?.pid];
    });
    expect(pids[0]).toBe(pids[1]);
    expect(db.stats().pool.inUse).toBe(0);
  });
});

describe('correlation id', () => {
  test('errors raised inside a unit carry its correlation id', async () => {
    await db.user.create({ data: { email: 'corr@example.com' } });
    let insideErr: unknown;
    const err = await rejectionOf(
      db.transaction(
        async (tx) => {
          insideErr = await rejectionOf(tx.user.create({ data: { email: 'corr@example.com' } }));
          throw insideErr;
        },
        { correlationId: 'req-123' },
      ),
    );
    // The query error, as the unit's code caught it and as the caller receives it.
    expect(classifyError(insideErr)).toBeInstanceOf(DatabaseQueryError);
    expect(insideErr).toMatchObject({ correlationId: 'req-123' });
    expect(err).toBe(insideErr);
    expect(classifyError(err)).toMatchObject({ correlationId: 'req-123', sqlState: '23505' });

    // The caller's own error comes back unchanged.
    const wrapped = await rejectionOf(
      db.transaction(
        async () => {
          throw new Error('app error');
        },
        { correlationId: 'req-123' },
      ),
    );
    expect(wrapped).toEqual(new Error('app error'));

    // Through the ambient client in repository code, and in a nested unit.
    const nested = await rejectionOf(
      db.transaction(
        async () => db.transaction(async () => db.current().user.create({ data: { email: 'corr@example.com' } }), { nested: 'savepoint' }),
        { correlationId: 'req-123' },
      ),
    );
    expect(classifyError(nested)).toMatchObject({ correlationId: 'req-123', sqlState: '23505' });
  });

  test('a session carries its correlation id; units do not leak it to later work', async () => {
    const err = await rejectionOf(db.session(async (c) => c.$queryRawUnsafe('SELECT 1/0'), { correlationId: 'sess-9' }));
    expect(classifyError(err)).toMatchObject({ correlationId: 'sess-9', sqlState: '22012' });

    const later = await rejectionOf(db.$queryRawUnsafe('SELECT 1/0'));
    expect(classifyError(later)).toBeInstanceOf(DatabaseQueryError);
    expect((later as DatalayerError).correlationId).toBeUndefined();
  });
});

describe('unit timeouts', () => {
  test('a unit that runs past timeoutMs fails with a typed error and is rolled back', async () => {
    const err = await rejectionOf(
      db.transaction(
        async (tx) => {
          await tx.user.create({ data: { email: 'slow@example.com' } });
          await sleep(600);
          await tx.user.create({ data: { email: 'slow2@example.com' } });
        },
        { timeoutMs: 250 },
      ),
    );
    expect(err).toBeInstanceOf(DatabaseTransactionError);
    expect(err).toMatchObject({ outcome: 'rolled-back', prismaCode: 'P2028', retryable: false });
    expect((err as Error).message).toMatch(/timeout/i);
    expect(await emails()).toEqual([]);
    // The connection went back to the pool and the pool still works.
    expect(await eventually(() => db.stats().pool.inUse === 0)).toBe(true);
    await db.transaction(async (tx) => tx.user.create({ data: { email: 'next@example.com' } }));
    expect(await emails()).toEqual(['next@example.com']);
  });

  test('a statement still running at the unit\'s timeoutMs is cancelled by the server, and the unit rolled back', async () => {
    let finished = false;
    const started = Date.now();
    const err = await rejectionOf(
      db.transaction(
        async (tx) => {
          await tx.user.create({ data: { email: 'sleeper@example.com' } });
          await tx.$executeRawUnsafe('SELECT pg_sleep(30)');
          finished = true;
        },
        { timeoutMs: 300 },
      ),
    );
    // The deadline holds: the server cancels the statement, it does not run to its end.
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(err).toBeInstanceOf(StatementTimeoutError);
    expect(err).toMatchObject({ outcome: 'rolled-back' });
    expect(finished).toBe(false);
    expect(await emails()).toEqual([]);
    expect(await eventually(() => db.stats().pool.inUse === 0, 5_000)).toBe(true);
    // The shorter limit was local to that unit.
    const [row] = await db.$queryRaw<{ st: string }[]>`SELECT current_setting('statement_timeout') AS st`;
    expect(row!.st).not.toBe('300ms');
  });

  test('maxWaitMs with an exhausted pool gives PoolTimeoutError, and the pool recovers', async () => {
    const one = newDb('session-test-maxwait', { pool: { size: 1, maxOverflow: 0 } });
    const release = await holdConnection(one);
    const started = Date.now();
    const err = await rejectionOf(one.transaction(async (tx) => tx.user.create({ data: { email: 'never@example.com' } }), { maxWaitMs: 300, correlationId: 'req-wait' }));
    const waited = Date.now() - started;
    expect(err).toBeInstanceOf(PoolTimeoutError);
    expect(err).toMatchObject({ retryable: true, correlationId: 'req-wait' });
    expect(waited).toBeGreaterThanOrEqual(250);
    expect(waited).toBeLessThan(5_000);
    expect((err as PoolTimeoutError).waitedMs).toBeGreaterThanOrEqual(290);
    expect((err as PoolTimeoutError).waitedMs).toBeLessThan(10_000);
    expect((err as Error).message).toMatch(/Timed out after \d+ ms/);

    await release();
    // The waiter that gave up must not keep (or later grab and strand) the only connection.
    await sleep(200);
    expect(await eventually(() => one.stats().pool.inUse === 0, 3_000)).toBe(true);
    await one.transaction(async (tx) => tx.user.create({ data: { email: 'after-timeout@example.com' } }), { maxWaitMs: 2_000 });
    expect(await emails()).toEqual(['after-timeout@example.com']);
  });
});

describe('concurrency inside units and sessions (found by probes)', () => {
  const insert = (email: string): string => `INSERT INTO users (email) VALUES ('${email}')`;
  const outcome = (p: Promise<unknown>): Promise<string> =>
    p.then(
      () => 'ok',
      (err: unknown) => (err instanceof Error ? err.message : String(err)),
    );

  test('two units in a Promise.all inside a session take turns on its connection: one failing never undoes the other', async () => {
    const d = newDb('conc-units-in-session', { pool: { size: 2, maxOverflow: 0 } });
    const results = await d.session(async () =>
      Promise.all([
        outcome(
          d.transaction(async (tx) => {
            await tx.$executeRawUnsafe(insert('a@x'));
            await sleep(200);
          }),
        ),
        outcome(
          d.transaction(async (tx) => {
            await tx.$executeRawUnsafe(insert('b@x'));
            throw new Error('b fails');
          }),
        ),
        // A plain statement of the session, meanwhile: its own, not inside either unit.
        sleep(50).then(() => outcome(d.$executeRawUnsafe(insert('plain@x')))),
      ]),
    );
    expect(results).toEqual(['ok', 'b fails', 'ok']);
    expect(await emails()).toEqual(['a@x', 'plain@x']);
  });

  test('a statement a session left behind (a timer) never runs on the connection after the session gave it back', async () => {
    const d = newDb('session-left-behind', { pool: { size: 2, maxOverflow: 0 } });
    let late: Promise<string> | undefined;
    const fired = latch();
    await d.session(async () => {
      await d.$queryRawUnsafe('SELECT 1');
      setTimeout(() => {
        late = outcome(d.$executeRawUnsafe(insert('late@x')));
        fired.open();
      }, 100);
    });
    // The next caller's unit holds a connection and rolls back meanwhile.
    const unit = outcome(
      d.transaction(async (tx) => {
        await tx.$executeRawUnsafe(insert('unit@x'));
        await fired.promise;
        await sleep(200);
        throw new Error('the unit rolls back');
      }),
    );
    expect(await unit).toBe('the unit rolls back');
    // It ran on its own, as any statement outside a session: not inside that unit.
    expect(await late!).toBe('ok');
    expect(await emails()).toEqual(['late@x']);
  });

  test('a session inside a session is the outer one: its connection and its state', async () => {
    const d = newDb('session-in-session', { pool: { size: 1, maxOverflow: 0, timeoutMs: 1_000 } });
    const seen = await d.session(async (outer) => {
      await outer.$executeRawUnsafe(`SET datalayer.probe = 'outer'`);
      return d.session(async (inner) => inner.$queryRawUnsafe<{ v: string }[]>(`SELECT current_setting('datalayer.probe') AS v`));
    });
    expect(seen).toEqual([{ v: 'outer' }]);
  });

  /** A session inside `unit` sets a variable and takes an advisory lock; afterwards the connection has neither. */
  async function nothingLeftBehind(d: Db<PrismaClient>, unit: (work: () => Promise<void>) => Promise<unknown>, lockId: number): Promise<void> {
    await unit(async () => {
      await d.session(async (c) => {
        await c.$executeRawUnsafe(`SET datalayer.probe = 'left behind'`);
        await c.$executeRawUnsafe(`SELECT pg_advisory_lock(${lockId})`);
      });
    });
    const [row] = await d.$queryRawUnsafe<{ v: string | null }[]>(`SELECT current_setting('datalayer.probe', true) AS v`);
    expect(row!.v ?? '').toBe('');
    const [locks] = await testDb.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = $1`, [lockId]);
    expect(locks!.n).toBe(0);
  }

  test('a session inside a unit: what it left on the connection (SET, an advisory lock) is discarded before the connection is used again', async () => {
    const d = newDb('session-in-unit', { pool: { size: 1, maxOverflow: 0 } });
    await nothingLeftBehind(d, (work) => d.transaction(work), 4242);
  });

  test('the same inside a db.scope() in pooled mode (the scope hands the unit a wrapper of the pooled connection)', async () => {
    const d = newDb('session-in-unit-in-scope', { pool: { size: 1, maxOverflow: 0 } });
    await nothingLeftBehind(d, (work) => d.scope(async () => d.transaction(work)), 4243);
  });

  test('savepoint units in a Promise.all take turns: one rolling back never undoes a sibling that resolved', async () => {
    const d = newDb('savepoints-side-by-side');
    const results = await d.transaction(async () =>
      Promise.all([
        outcome(
          d.transaction(
            async (tx) => {
              await tx.$executeRawUnsafe(insert('first@x'));
              await sleep(100);
              throw new Error('first fails');
            },
            { nested: 'savepoint' },
          ),
        ),
        outcome(d.transaction(async (tx) => tx.$executeRawUnsafe(insert('second@x')), { nested: 'savepoint' })),
      ]),
    );
    expect(results).toEqual(['first fails', 'ok']);
    expect(await emails()).toEqual(['second@x']);
  });

  test("a plain statement of the unit beside a savepoint unit (a Promise.all) runs after it: the savepoint's rollback never undoes it", async () => {
    const d = newDb('statement-beside-savepoint');
    // Through a client extended from the unit's too: the same transaction, another client over it.
    const stamped = d.$extends({ query: { user: { create: ({ args, query }) => query({ ...args, data: { ...args.data, name: 'stamped' } }) } } });
    const order: string[] = [];
    const results = await d.transaction(async (tx) =>
      Promise.all([
        outcome(
          d.transaction(
            async (t) => {
              await t.$executeRawUnsafe(insert('child@x'));
              await sleep(300);
              order.push('savepoint unit ends');
              throw new Error('child fails');
            },
            { nested: 'savepoint' },
          ),
        ),
        // Sent while the savepoint is open: before, each resolved and was then rolled back with it.
        sleep(50).then(() => outcome(tx.user.create({ data: { email: 'plain@x' } }).then(() => order.push('plain')))),
        sleep(50).then(() => outcome(stamped.current().user.create({ data: { email: 'extended@x' } }).then(() => order.push('extended')))),
        sleep(50).then(() => outcome(d.current().$executeRawUnsafe(insert('raw@x')).then(() => order.push('raw')))),
      ]),
    );
    expect(results).toEqual(['child fails', 'ok', 'ok', 'ok']);
    expect(order[0]).toBe('savepoint unit ends');
    expect(await emails()).toEqual(['extended@x', 'plain@x', 'raw@x']);
    expect(await testDb.query('SELECT name FROM users WHERE email = $1', ['extended@x'])).toEqual([{ name: 'stamped' }]);
  });

  test('a statement the outer unit started beside a savepoint unit that awaits it waits no longer than the unit, and never runs outside its transaction', async () => {
    const d = newDb('statement-awaited-by-savepoint');
    const started = performance.now();
    const err = await rejectionOf(
      d.transaction(
        async (tx) => {
          const early = tx.user.create({ data: { email: 'early@x' } }).then((u) => u);
          await d.transaction(async () => early, { nested: 'savepoint' });
        },
        { timeoutMs: 1_000 },
      ),
    );
    expect(err).toMatchObject({ outcome: 'rolled-back' });
    expect(performance.now() - started).toBeLessThan(15_000);
    // Nothing committed, nothing autocommitted on the connection after the unit ended.
    await sleep(200);
    expect(await emails()).toEqual([]);
    expect(d.stats().pool.inUse).toBe(0);
  });

  test('the same one level down: a statement of a savepoint unit beside a savepoint nested in it', async () => {
    const d = newDb('statement-beside-inner-savepoint');
    await d.transaction(async () =>
      d.transaction(
        async (t) =>
          Promise.all([
            outcome(
              d.transaction(
                async (inner) => {
                  await inner.$executeRawUnsafe(insert('inner@x'));
                  await sleep(200);
                  throw new Error('inner fails');
                },
                { nested: 'savepoint' },
              ),
            ),
            sleep(50).then(() => t.user.create({ data: { email: 'middle@x' } })),
          ]),
        { nested: 'savepoint' },
      ),
    );
    expect(await emails()).toEqual(['middle@x']);
  });

  test('work a rolled-back savepoint unit left behind is refused, as a settled unit\'s is: it never commits with the outer unit', async () => {
    const d = newDb('savepoint-left-behind');
    let late: Promise<unknown> | undefined;
    const results = await d.transaction(async () => {
      const child = await outcome(
        d.transaction(
          async () => {
            await Promise.all([
              sleep(50).then(() => Promise.reject(new Error('fast failure'))),
              // Still running when Promise.all rejects and the savepoint unit rolls back.
              (late = sleep(300).then(() => d.current().user.create({ data: { email: 'left-behind@x' } }))),
            ]);
          },
          { nested: 'savepoint' },
        ),
      );
      const leftover = await outcome(late!);
      await d.current().user.create({ data: { email: 'outer@x' } });
      return [child, leftover];
    });
    expect(results[0]).toBe('fast failure');
    // Before: it resolved, and was committed with the outer unit although its savepoint unit had rolled back.
    expect(results[1]).toMatch(/savepoint unit .* left behind/);
    expect(await emails()).toEqual(['outer@x']);
  });

  test('db.transaction() from a timer a committed unit left behind is a unit of its own', async () => {
    const d = newDb('unit-left-behind');
    const fired = latch();
    let later: Promise<string> | undefined;
    await d.transaction(async (tx) => {
      await tx.$executeRawUnsafe(insert('first@x'));
      setTimeout(() => {
        later = outcome(d.transaction(async (t) => t.$executeRawUnsafe(insert('later@x'))));
        fired.open();
      }, 100);
    });
    await fired.promise;
    expect(await later!).toBe('ok');
    expect(await emails()).toEqual(['first@x', 'later@x']);
  });

  test("db.current() in work a rolled-back unit left behind refuses: the write never lands outside the unit", async () => {
    const d = newDb('current-left-behind');
    const fired = latch();
    let later: Promise<string> | undefined;
    await rejectionOf(
      d.transaction(async (tx) => {
        await tx.$executeRawUnsafe(insert('first@x'));
        setTimeout(() => {
          later = outcome(d.current().user.create({ data: { email: 'stray@x' } }));
          fired.open();
        }, 100);
        throw new Error('roll back');
      }),
    );
    await fired.promise;
    expect(await later!).not.toBe('ok');
    expect(await emails()).toEqual([]);
  });

  test('a unit whose fn outlives its timeoutMs and then returns: rolled back, and the error says so', async () => {
    const d = newDb('unit-outlived');
    const err = await rejectionOf(
      d.transaction(
        async (tx) => {
          await tx.$executeRawUnsafe(insert('outlived@x'));
          await sleep(500);
        },
        { timeoutMs: 200 },
      ),
    );
    expect(err).toMatchObject({ outcome: 'rolled-back', prismaCode: 'P2028' });
    expect(await emails()).toEqual([]);
  });
});

describe('db.session behind a transaction-mode pooler', () => {
  test("is refused before fn runs (its SET would reach other clients' statements); inside a unit it is the unit's, as elsewhere", async () => {
    const bouncer = await startPgBouncer(testServer().info(), { poolMode: 'transaction', defaultPoolSize: 2, ignoreStartupParameters: [] });
    try {
      const pooled = newDb('session-pooler', { url: bouncer.url(testDb.name, { pgbouncer: 'true', sslmode: 'disable' }, { user: testDb.appUser, password: testDb.appPassword }) });
      let ran = false;
      const err = await rejectionOf(
        pooled.session(async (s) => {
          ran = true;
          // Before: this SET stayed on a PgBouncer server connection, and the next client
          // handed that connection ran under statement_timeout = 4321ms.
          await s.$executeRawUnsafe("SET statement_timeout = '4321ms'");
        }),
      );
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues[0]).toMatchObject({ setting: 'db.session()' });
      expect((err as Error).message).toMatch(/transaction-mode pooler/);
      expect(ran).toBe(false);
      // Inside a unit of work the session runs on the unit's transaction, which keeps one server connection.
      const inUnit = await pooled.transaction(() =>
        pooled.session(async (s) => {
          await s.$executeRawUnsafe("SET LOCAL statement_timeout = '4321ms'");
          return (await s.$queryRawUnsafe<{ st: string }[]>("SELECT current_setting('statement_timeout') AS st"))[0]?.st;
        }),
      );
      expect(inUnit).toBe('4321ms');
    } finally {
      await bouncer.stop();
    }
  });
});

describe("a session's options", () => {
  test("an option a session does not have (a unit's timeoutMs, a misspelling) or a correlationId that is no string is a ConfigError naming it before fn runs, not ignored", async () => {
    let ran = 0;
    // Before: { timeoutMs: 100 } was dropped, and the session ran unbounded with its connection held.
    const err = await rejectionOf(db.session(async () => void ran++, { timeoutMs: 100, corelationId: 'x' } as never));
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues).toEqual([
      { setting: 'session option timeoutMs', problem: expect.stringContaining('db.scope') },
      { setting: 'session option corelationId', problem: expect.stringContaining('is not an option') },
    ]);
    await expect(db.session(async () => void ran++, { correlationId: 42 } as never)).rejects.toThrow(/session option correlationId: must be a string/);
    await expect(db.session(async () => void ran++, null as never)).rejects.toThrow(/session options/);
    expect(ran).toBe(0);
    await expect(db.session(async (c) => c.user.count(), { correlationId: 'req-1' })).resolves.toEqual(expect.any(Number));
  });
});
