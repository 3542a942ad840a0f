/**
 * Network faults while a connection is in use (issue 12), through the fault-injecting
 * proxy in test/support/tcp-proxy.ts: black holes (bytes dropped both ways, no FIN/RST),
 * resets and FINs around COMMIT, a backend terminated during COMMIT, durations beyond
 * what timers and PostgreSQL can honour, and which connection failures are retryable.
 *
 * Every timed check is an upper bound taken from the specification (a caller settles
 * by its deadline + 1 s; reads work within 2 s of healing; close by deadline + 1 s),
 * never a measured value, and every wait in the test itself is bounded.
 *
 * The money invariant holds across everything: after each test the books balance,
 * no balance is negative, every balance is explained by exactly the transfer rows, a
 * transfer whose caller saw success is recorded, and one whose caller was told
 * "rolled back" is not.
 */
import { PrismaClient } from '../src/generated/prisma/client';
import {
  ConfigError,
  createDb,
  DatabaseConnectionError,
  DatabaseQueryError,
  DatabaseTransactionError,
  DatalayerError,
  DeadlineExceededError,
  type Db,
  type DbLogger,
  type DbOptions,
} from '../src/index';
import { eventually, rejectionOf, sleep } from './support/async';
import { startCluster, type Cluster } from './support/cluster';
import { adminQuery, countConnections, createTestDatabase, type TestDatabase } from './support/db';
import { startTcpProxy, type CutMode, type TcpProxy } from './support/tcp-proxy';
import { loadConfig } from '../src/config';
import { createDriver } from '../src/driver';
import { EventHub } from '../src/events';
import { newCounters } from '../src/stats';

// The issue's black-hole setup.
const POOL_TIMEOUT_MS = 3000;
const STATEMENT_MS = 2000;
const CONNECT_MS = 2000;
const UNIT_TIMEOUT_MS = 2000;
/**
 * The client-side deadline of a statement outside a unit (and of a unit) is its timeout plus a
 * grace (the server should cancel first and say so). The issue does not fix the grace;
 * this suite allows up to 1 s of it.
 */
const STATEMENT_GRACE_MS = 1000;
/** "Every pending caller settles within its deadline plus 1 s." */
const SLACK_MS = 1000;

const ACCOUNTS = 6;
const INITIAL = 1_000_000; // cents: transfers of a few cents never run an account dry

let testDb: TestDatabase;
let accountIds: number[] = [];
/** What each transfer's caller was told, by reference. */
const ledger = new Map<string, 'ok' | 'rolled-back' | 'unknown' | 'other'>();

/** Everything a test opens, closed after it whatever happened (bounded: today's close can hang). */
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  testDb = await createTestDatabase({ prefix: 'faults' });
  const rows = await testDb.query<{ id: number }>(
    `INSERT INTO accounts (owner, balance) SELECT 'faults-' || g, $1 FROM generate_series(1, ${ACCOUNTS}) g RETURNING id`,
    [INITIAL],
  );
  accountIds = rows.map((r) => r.id).sort((a, b) => a - b);
});

afterEach(async () => {
  while (cleanups.length > 0) await within(cleanups.pop()!(), 5000).catch(() => undefined);
});

afterAll(async () => {
  await testDb?.drop();
});

// ---- helpers -----------------------------------------------------------------------------

let seq = 0;
const appName = (label: string): string => `faults-${label}-${process.pid}-${++seq}`;

/** Resolves with `p`'s outcome, or rejects once `ms` have passed (the timer is cleared either way). */
async function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A caller's promise, with when it settled and how. */
interface Tracked<T> {
  label: string;
  started: number;
  settledAfterMs: number | undefined;
  value?: T;
  error?: unknown;
  done: Promise<void>;
}

function track<T>(label: string, p: Promise<T>): Tracked<T> {
  const t: Tracked<T> = { label, started: Date.now(), settledAfterMs: undefined, done: Promise.resolve() };
  t.done = p.then(
    (value) => {
      t.value = value;
      t.settledAfterMs = Date.now() - t.started;
    },
    (error: unknown) => {
      t.error = error;
      t.settledAfterMs = Date.now() - t.started;
    },
  );
  return t;
}

/** Waits until `t` settled or `boundMs` after its start passed; says which. */
async function settledWithin(t: Tracked<unknown>, boundMs: number): Promise<{ label: string; settledWithinBound: boolean }> {
  const left = t.started + boundMs - Date.now();
  if (left > 0) await within(t.done, left).catch(() => undefined);
  return { label: t.label, settledWithinBound: t.settledAfterMs !== undefined && t.settledAfterMs <= boundMs };
}

/**
 * `t` settled by `boundMs` after its start. When it did not, the failure says what it
 * did later (observed for up to 8 s more), so a failing run shows the actual behaviour.
 */
async function expectSettledWithin(t: Tracked<unknown>, boundMs: number): Promise<void> {
  const result = await settledWithin(t, boundMs);
  if (result.settledWithinBound) return;
  await within(t.done, 8000).catch(() => undefined);
  const later =
    t.settledAfterMs === undefined
      ? `still pending ${boundMs + 8000} ms after it started`
      : `settled after ${t.settledAfterMs} ms: ${t.error === undefined ? 'resolved' : JSON.stringify(view(t.error))}`;
  expect({ ...result, later }).toEqual({ label: t.label, settledWithinBound: true, later });
}

/** The parts of an error a caller acts on: for readable diffs when an expectation fails. */
function view(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { thrown: String(err) };
  const e = err as Error & { deadline?: unknown; outcome?: unknown; retryable?: unknown; sqlState?: unknown };
  return {
    class: e.constructor.name,
    datalayer: err instanceof DatalayerError,
    deadline: e.deadline,
    outcome: e.outcome,
    retryable: e.retryable,
    sqlState: e.sqlState,
    message: e.message.split('\n')[0],
  };
}

/** A typed error of the layer (the whole view shows in the diff when it is not). */
function expectDatalayerError(err: unknown): void {
  const v = view(err);
  expect(v).toEqual({ ...v, datalayer: true });
}

function expectDeadline(err: unknown, deadline: 'connect' | 'statement' | 'unit' | 'health'): void {
  const v = view(err);
  expect({ class: v.class, deadline: v.deadline }).toEqual({ class: 'DeadlineExceededError', deadline });
  expect(err).toBeInstanceOf(DeadlineExceededError);
  expect(err).toBeInstanceOf(DatabaseConnectionError);
}

function expectRolledBack(err: unknown): void {
  const v = view(err);
  const typed = err instanceof DatabaseConnectionError || err instanceof DatabaseTransactionError;
  expect({ typed, outcome: v.outcome, retryable: v.retryable, ...v }).toEqual({ ...v, typed: true, outcome: 'rolled-back', retryable: true });
  expect(err).not.toBeInstanceOf(DatabaseQueryError);
}

function expectUnknownOutcome(err: unknown): void {
  const v = view(err);
  expect({ ...v, isTx: err instanceof DatabaseTransactionError }).toEqual({ ...v, isTx: true, outcome: 'unknown', retryable: false });
}

type Options = Omit<DbOptions, 'url'> & { logger?: DbLogger };

/** A Db reaching the test database through `proxy` (plaintext unless `tls`), closed after the test. */
function openDb(proxy: TcpProxy, label: string, options: Options, tls = false): { db: Db<PrismaClient>; name: string } {
  const name = appName(label);
  const params: Record<string, string> = tls ? { sslmode: 'require', sslrootcert: testDb.caFile } : { sslmode: 'disable' };
  const db = createDb({
    PrismaClient,
    url: testDb.urlWith(params, { user: testDb.appUser, port: proxy.port }),
    applicationName: name,
    ...options,
  });
  cleanups.push(() => db.close({ deadlineMs: 1000 }));
  return { db, name };
}

async function openProxy(): Promise<TcpProxy> {
  const proxy = await startTcpProxy({ host: testDb.host, port: testDb.port });
  // Registered before any Db, so it closes after them (cleanups run last-in first-out).
  cleanups.push(() => proxy.close());
  return proxy;
}

const blackHoleOptions: Options = {
  pool: { size: 1, maxOverflow: 0, timeoutMs: POOL_TIMEOUT_MS },
  timeouts: { statementMs: STATEMENT_MS, connectMs: CONNECT_MS },
};

let refSeq = 0;
/**
 * One transfer of `amount` cents as a unit of work, like README's example: debit, credit
 * (rows locked in id order, so concurrent transfers cannot deadlock), then the transfer
 * row with its unique reference — the unit's last statement before COMMIT.
 * `midway` runs between the credit and the row (for faults inside the unit).
 */
function transfer(
  db: Db<PrismaClient>,
  label: string,
  opts: { amount?: number; timeoutMs?: number; midway?: () => void | Promise<void> } = {},
): { reference: string; done: Promise<string> } {
  const reference = `${label}-${++refSeq}`;
  const i = refSeq % ACCOUNTS;
  const fromId = accountIds[i]!;
  const toId = accountIds[(i + 1) % ACCOUNTS]!;
  const amount = opts.amount ?? 1 + (refSeq % 7);
  const done = db
    .transaction(
      async (tx) => {
        for (const id of [fromId, toId].sort((a, b) => a - b)) {
          const change = id === fromId ? { decrement: amount } : { increment: amount };
          await tx.account.update({ where: { id }, data: { balance: change } });
        }
        await opts.midway?.();
        await tx.transfer.create({ data: { fromId, toId, amount, reference } });
        return reference;
      },
      { correlationId: reference, ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }) },
    )
    .then(
      (r) => {
        ledger.set(reference, 'ok');
        return r;
      },
      (err: unknown) => {
        const outcome = (err as { outcome?: unknown }).outcome;
        ledger.set(reference, outcome === 'unknown' ? 'unknown' : outcome === 'rolled-back' || err instanceof DatabaseConnectionError ? 'rolled-back' : 'other');
        throw err;
      },
    );
  return { reference, done };
}

async function transferRow(reference: string): Promise<boolean> {
  return (await testDb.query('SELECT 1 FROM transfers WHERE reference = $1', [reference])).length === 1;
}

/** The money invariant, read back from the server. */
async function expectBooksBalanced(): Promise<void> {
  const accounts = await testDb.query<{ id: number; balance: number }>(
    `SELECT id, balance FROM accounts WHERE id = ANY($1::int[]) ORDER BY id`,
    [accountIds],
  );
  const transfers = await testDb.query<{ reference: string; from_id: number; to_id: number; amount: number }>(
    'SELECT reference, from_id, to_id, amount FROM transfers',
  );
  const total = accounts.reduce((s, a) => s + a.balance, 0);
  expect(total).toBe(ACCOUNTS * INITIAL);
  expect(accounts.filter((a) => a.balance < 0)).toEqual([]);
  // Each balance is exactly the initial amount plus the transfer rows: no unit applied
  // its debit and credit without its row, or twice.
  const expected = new Map(accountIds.map((id) => [id, INITIAL]));
  for (const t of transfers) {
    expected.set(t.from_id, expected.get(t.from_id)! - t.amount);
    expected.set(t.to_id, expected.get(t.to_id)! + t.amount);
  }
  expect(accounts.map((a) => [a.id, a.balance])).toEqual([...expected]);
  // What callers were told agrees with the server: success → recorded; rolled back → not.
  const recorded = new Set(transfers.map((t) => t.reference));
  const wrong = [...ledger].filter(([ref, told]) => (told === 'ok' && !recorded.has(ref)) || (told === 'rolled-back' && recorded.has(ref)));
  expect(wrong).toEqual([]);
  // And no row belongs to a transfer nobody started.
  expect([...recorded].filter((ref) => !ledger.has(ref))).toEqual([]);
}

/** The server shows no backend with this application_name (it may take a moment to notice a close). */
async function expectNoBackend(name: string): Promise<void> {
  await eventually(async () => (await countConnections(name)) === 0, 3000);
  expect(await countConnections(name)).toBe(0);
}

/** close({ deadlineMs: 2000 }) resolves in under 3 s and no backend of the app remains. */
async function expectPromptClose(db: Db<PrismaClient>, name: string): Promise<void> {
  const closing = track('close', db.close({ deadlineMs: 2000 }));
  await expectSettledWithin(closing, 3000);
  expect(closing.error).toBeUndefined();
  await expectNoBackend(name);
}

/** The first read after healing succeeds (bounded, so a poisoned pool fails instead of hanging). */
async function expectFirstReadSucceeds(db: Db<PrismaClient>): Promise<void> {
  const read = track('first read after healing', db.account.count());
  const bound = POOL_TIMEOUT_MS + CONNECT_MS + STATEMENT_MS + STATEMENT_GRACE_MS + SLACK_MS;
  await settledWithin(read, bound);
  expect({ settled: read.settledAfterMs !== undefined, error: read.error === undefined ? undefined : view(read.error) }).toEqual({
    settled: true,
    error: undefined,
  });
  expect(read.value).toBeGreaterThanOrEqual(ACCOUNTS);
}

/**
 * Waits (bounded) until the server shows a statement of `name` running. The statements
 * waited for sleep 1.8 s (under the 2 s statement timeout), so the black hole starts
 * while they are certainly in flight even if this poll is slow.
 */
async function waitForActive(name: string, pattern: string): Promise<void> {
  const seen = await eventually(async () => {
    const rows = await adminQuery<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND query LIKE $2`,
      [name, pattern],
    );
    return rows[0]!.n > 0;
  }, 10_000);
  expect(seen).toBe(true);
}

// ---- black hole with pool size 1 ---------------------------------------------------------

describe('black hole (bytes dropped both ways, no FIN/RST), pool size 1', () => {
  it('a unit cut mid-work rejects with DeadlineExceededError(unit) by its timeoutMs + 1 s; callers queued behind it settle by theirs; after healing the first read succeeds; close is prompt', async () => {
    const proxy = await openProxy();
    const { db, name } = openDb(proxy, 'bh-unit', blackHoleOptions, true);
    await db.account.count(); // one warm connection

    let midway = false;
    const unit = transfer(db, 'bh-unit', {
      timeoutMs: UNIT_TIMEOUT_MS,
      midway: () => {
        midway = true;
        proxy.blackhole();
      },
    });
    const u = track('unit', unit.done);
    expect(await eventually(() => midway, 10_000)).toBe(true);
    // Callers queued for the only slot: their deadline is the pool wait, then a connect.
    const queued = [1, 2, 3].map((i) => track(`queued read ${i}`, db.account.count()));

    await expectSettledWithin(u, UNIT_TIMEOUT_MS + STATEMENT_GRACE_MS + SLACK_MS);
    expectDeadline(u.error, 'unit');
    expect((u.error as DatabaseConnectionError).retryable).toBe(true);
    for (const q of queued) {
      await expectSettledWithin(q, POOL_TIMEOUT_MS + CONNECT_MS + SLACK_MS);
      expectDatalayerError(q.error);
    }

    proxy.heal();
    await expectFirstReadSucceeds(db);
    await expectPromptClose(db, name);
    expect(await transferRow(unit.reference)).toBe(false);
    await expectBooksBalanced();
  }, 60_000);

  it('a statement in flight rejects with DeadlineExceededError(statement) by statementMs + grace + 1 s, frees the slot at once, and the pool heals with the network', async () => {
    const proxy = await openProxy();
    const { db, name } = openDb(proxy, 'bh-read', blackHoleOptions, true);
    await db.account.count();

    const read = track('read in flight', db.$queryRawUnsafe('SELECT pg_sleep(1.8), 1 AS one'));
    await waitForActive(name, '%pg_sleep%');
    proxy.blackhole();
    await expectSettledWithin(read, STATEMENT_MS + STATEMENT_GRACE_MS + SLACK_MS);
    expectDeadline(read.error, 'statement');
    // The slot was freed at once: the dead socket is not counted as in use any more.
    expect(db.stats().pool.inUse).toBe(0);

    proxy.heal();
    await expectFirstReadSucceeds(db);
    await expectPromptClose(db, name);
  }, 60_000);

  it("a statement sent in node-postgres' callback form on one of the pool's connections gets the same deadline", async () => {
    const proxy = await openProxy();
    const name = appName('bh-callback');
    const url = testDb.urlWith({ sslmode: 'disable' }, { user: testDb.appUser, port: proxy.port });
    const driver = createDriver(loadConfig({ url, applicationName: name, ...blackHoleOptions }, {}), newCounters(), new EventHub());
    cleanups.push(() => driver.close());
    const { client } = await driver.pool()!.checkout();
    const send = client.query as unknown as (text: string, callback: (err: unknown, result?: unknown) => void) => void;
    const read = track(
      'callback-form read in flight',
      new Promise((resolve, reject) => send.call(client, 'SELECT pg_sleep(1.8), 1 AS one', (err, result) => (err ? reject(err) : resolve(result)))),
    );
    await waitForActive(name, '%pg_sleep%');
    proxy.blackhole();
    await expectSettledWithin(read, STATEMENT_MS + STATEMENT_GRACE_MS + SLACK_MS);
    expectDeadline(read.error, 'statement');
    client.release(read.error as Error);
  }, 60_000);

  it('a connect into the black hole rejects with DeadlineExceededError(connect) by connectMs + 1 s', async () => {
    const proxy = await openProxy();
    const { db, name } = openDb(proxy, 'bh-connect', blackHoleOptions, true);
    proxy.blackhole();
    const read = track('first read, connecting', db.account.count());
    await expectSettledWithin(read, CONNECT_MS + SLACK_MS);
    expectDeadline(read.error, 'connect');
    expect((read.error as DatabaseConnectionError).retryable).toBe(true);

    proxy.heal();
    await expectFirstReadSucceeds(db);
    await expectPromptClose(db, name);
  }, 60_000);

  it('health answers unhealthy within its timeoutMs and leaves no stuck connection behind', async () => {
    const proxy = await openProxy();
    const { db, name } = openDb(proxy, 'bh-health', blackHoleOptions, true);
    await db.account.count();
    proxy.blackhole();
    const health = track('health', db.health({ timeoutMs: 1000 }));
    await expectSettledWithin(health, 1000 + SLACK_MS);
    expect(health.value?.status).toBe('unhealthy');

    proxy.heal();
    // The health check's connection did not keep the only slot.
    await expectFirstReadSucceeds(db);
    await expectPromptClose(db, name);
  }, 60_000);

  it('COMMIT lost in the black hole: the unit settles by its timeoutMs + 1 s with outcome unknown, never re-run', async () => {
    const proxy = await openProxy();
    const { db, name } = openDb(proxy, 'bh-commit', blackHoleOptions);
    await db.account.count();
    proxy.onNextCommit(async () => proxy.blackhole()); // the COMMIT itself goes into the hole
    const unit = transfer(db, 'bh-commit', { timeoutMs: UNIT_TIMEOUT_MS });
    const u = track('unit', unit.done);
    await expectSettledWithin(u, UNIT_TIMEOUT_MS + STATEMENT_GRACE_MS + SLACK_MS);
    expectUnknownOutcome(u.error);
    expect(proxy.commitsSeen).toBe(1); // not re-run

    proxy.heal();
    await expectFirstReadSucceeds(db);
    await expectPromptClose(db, name);
    await expectBooksBalanced();
  }, 60_000);

  it('a stall shorter than every deadline (bytes held 1 s, then delivered) is not a failure', async () => {
    const proxy = await openProxy();
    const { db, name } = openDb(proxy, 'hold', blackHoleOptions, true);
    await db.account.count();
    proxy.hold();
    const read = track('held read', db.account.count());
    const unit = transfer(db, 'hold', { timeoutMs: 10_000 });
    const u = track('held unit', unit.done);
    await sleep(1000);
    // Nothing can have arrived while the bytes were held.
    expect([read.settledAfterMs, u.settledAfterMs]).toEqual([undefined, undefined]);
    proxy.release();
    await expectSettledWithin(read, 10_000);
    await expectSettledWithin(u, 20_000);
    expect(read.error === undefined ? read.value : view(read.error)).toBeGreaterThanOrEqual(ACCOUNTS);
    expect(u.error === undefined ? u.value : view(u.error)).toBe(unit.reference);
    await expectPromptClose(db, name);
    await expectBooksBalanced();
  }, 60_000);

  it('close({ deadlineMs: 2000 }) with a statement stuck in the black hole resolves in under 3 s, settles the caller, and leaves no backend', async () => {
    const proxy = await openProxy();
    const { db, name } = openDb(proxy, 'bh-close', blackHoleOptions, true);
    await db.account.count();
    const read = track('stuck read', db.$queryRawUnsafe('SELECT pg_sleep(1.8), 1 AS one'));
    await waitForActive(name, '%pg_sleep%');
    proxy.blackhole();
    await expectPromptClose(db, name);
    // The caller was not left pending by the close.
    await expectSettledWithin(read, STATEMENT_MS + STATEMENT_GRACE_MS + SLACK_MS);
    expectDatalayerError(read.error);
  }, 60_000);

  it('close({ deadlineMs: 2000 }) with a unit stuck mid-work in the black hole (unit timeout 15 s) resolves in under 3 s, the unit settles rolled back, and no backend remains', async () => {
    const proxy = await openProxy();
    const { db, name } = openDb(proxy, 'bh-close-unit', blackHoleOptions, true);
    await db.account.count();
    let midway = false;
    const unit = transfer(db, 'bh-close-unit', {
      timeoutMs: 15_000,
      midway: () => {
        midway = true;
        proxy.blackhole();
      },
    });
    const u = track('unit stuck at close', unit.done);
    expect(await eventually(() => midway, 10_000)).toBe(true);
    await expectPromptClose(db, name);
    // The unit was cut by the close, not left to its own 15 s.
    await expectSettledWithin(u, Date.now() - u.started + SLACK_MS);
    expectDatalayerError(u.error);
    expect(await transferRow(unit.reference)).toBe(false);
    await expectBooksBalanced();
  }, 60_000);
});

// ---- 30 workers through a 20 s black hole --------------------------------------------------

describe('a unit cut by its deadline says which deadline', () => {
  it("DeadlineExceededError(unit) reports the unit's timeoutMs, not the time a statement had left plus the grace", async () => {
    const proxy = await openProxy();
    const { db } = openDb(proxy, 'bh-unit-ms', blackHoleOptions);
    await db.account.count();
    const err = await rejectionOf(
      db.transaction(
        async (tx) => {
          await tx.account.count();
          await sleep(300);
          proxy.blackholeExisting();
          await tx.account.count();
        },
        { timeoutMs: UNIT_TIMEOUT_MS },
      ),
    );
    expectDeadline(err, 'unit');
    // Was e.g. "within the unit deadline (2449.0734 ms)": the time left when the last statement went out.
    expect((err as DeadlineExceededError).timeoutMs).toBe(UNIT_TIMEOUT_MS);
    expect((err as Error).message).toContain(`within the unit deadline (${UNIT_TIMEOUT_MS} ms)`);
  });
});

describe('30 concurrent workers through a 20 s black hole', () => {
  it('every call settles by its deadline + 1 s, reads succeed again within 2 s of healing, nothing stays pending', async () => {
    const proxy = await openProxy();
    // The issue's pool (size 1, no overflow). connectMs 0.5 s: a connect attempt caught
    // in the hole at the moment it heals occupies the only slot until its deadline, so
    // the 2 s bound holds only if that deadline is well inside it (plaintext loopback
    // connects take tens of ms; 0.5 s leaves room for a loaded machine).
    const connectMs = 500;
    const { db, name } = openDb(proxy, 'bh-30', {
      pool: { size: 1, maxOverflow: 0, timeoutMs: POOL_TIMEOUT_MS },
      timeouts: { statementMs: STATEMENT_MS, connectMs },
    });
    const unitBound = POOL_TIMEOUT_MS + connectMs + UNIT_TIMEOUT_MS + STATEMENT_GRACE_MS + SLACK_MS;
    const readBound = POOL_TIMEOUT_MS + connectMs + STATEMENT_MS + STATEMENT_GRACE_MS + SLACK_MS;

    const pending = new Set<Tracked<unknown>>();
    const overdue: string[] = [];
    const readsOk: number[] = [];
    const errors = new Map<string, number>();
    let stop = false;
    let calls = 0;
    async function worker(w: number): Promise<void> {
      while (!stop) {
        const isUnit = w % 2 === 0;
        const op: Promise<unknown> = isUnit ? transfer(db, 'bh-30', { timeoutMs: UNIT_TIMEOUT_MS }).done : db.account.count();
        const t = track(`worker ${w} ${isUnit ? 'unit' : 'read'} #${++calls}`, op);
        pending.add(t);
        await t.done;
        pending.delete(t);
        const bound = isUnit ? unitBound : readBound;
        if (t.settledAfterMs! > bound) overdue.push(`${t.label}: ${t.settledAfterMs} ms > ${bound} ms`);
        if (!isUnit && t.error === undefined) readsOk.push(Date.now());
        if (t.error !== undefined) {
          const key = `${isUnit ? 'unit' : 'read'}: ${String(view(t.error).class)}${view(t.error).deadline ? `(${String(view(t.error).deadline)})` : ''}`;
          errors.set(key, (errors.get(key) ?? 0) + 1);
          await sleep(50); // a failing worker does not spin
        }
      }
    }
    const workers = Array.from({ length: 30 }, (_, w) => worker(w));
    // Cleanups run last-in first-out: this one first, so the loops stop starting calls
    // before the Db closes, whatever failed.
    cleanups.push(async () => {
      stop = true;
    });

    await sleep(1000);
    expect(readsOk.length).toBeGreaterThan(0); // working before the fault
    proxy.blackhole();
    await sleep(20_000);
    const healedAt = Date.now();
    proxy.heal();
    await eventually(() => readsOk.some((t) => t >= healedAt), 5000);
    const firstOk = readsOk.find((t) => t >= healedAt);
    await sleep(1000);

    stop = true;
    const finished = await within(Promise.all(workers), Math.max(unitBound, readBound)).then(
      () => true,
      () => false,
    );
    const outcome = {
      firstReadAfterHealingMs: firstOk === undefined ? undefined : firstOk - healedAt,
      readSucceededWithin2sOfHealing: firstOk !== undefined && firstOk - healedAt <= 2000,
      readsOkAfterHealing: readsOk.filter((t) => t >= healedAt).length,
      errors: Object.fromEntries([...errors].sort()),
      finished,
      pending: [...pending].map((t) => t.label).slice(0, 5),
      overdue: overdue.slice(0, 5),
    };
    // FAULTS_VERBOSE=1 prints the picture of a passing run too.
    // eslint-disable-next-line no-console
    if (process.env.FAULTS_VERBOSE) console.log(outcome);
    // One assertion for everything, so a failing run shows the whole picture.
    expect(outcome).toEqual({
      ...outcome,
      readSucceededWithin2sOfHealing: true,
      finished: true,
      pending: [],
      overdue: [],
    });
    await expectPromptClose(db, name);
    await expectBooksBalanced();
  }, 120_000);
});

// ---- connection lost around COMMIT -----------------------------------------------------------

const TRANSFER_INSERT = /INSERT INTO\s+("public"\.)?"transfers"/i;

describe.each(['rst', 'fin'] as CutMode[])('connection lost around COMMIT (%s)', (mode) => {
  it(`lost before COMMIT is sent (the unit's last statement cut), 10×: nothing committed, each caller gets a retryable rolled-back error`, async () => {
    const proxy = await openProxy();
    const { db } = openDb(proxy, `before-${mode}`, { pool: { size: 2, maxOverflow: 0 } });
    for (let i = 0; i < 10; i++) {
      proxy.dropOnStatement(TRANSFER_INSERT, mode);
      const { reference, done } = transfer(db, `before-${mode}`);
      const err = await within(done, 30_000).catch((e: unknown) => e);
      expect(proxy.fired).toHaveLength(i + 1); // the fault really fired on this unit
      expectRolledBack(err);
      expect(await transferRow(reference)).toBe(false);
    }
    expect(proxy.commitsSeen).toBe(0); // no COMMIT was ever sent
    // And the pool carries on normally.
    await expect(within(transfer(db, `before-${mode}-after`).done, 30_000)).resolves.toMatch(/after/);
    await expectBooksBalanced();
  }, 120_000);

  it(`${mode === 'rst' ? 'reset' : 'FIN'} of every connection mid-unit, 5×: a retryable rolled-back connection error, not a query error; nothing committed`, async () => {
    const proxy = await openProxy();
    const { db } = openDb(proxy, `mid-${mode}`, { pool: { size: 2, maxOverflow: 0 } });
    for (let i = 0; i < 5; i++) {
      const { reference, done } = transfer(db, `mid-${mode}`, {
        midway: async () => {
          if (mode === 'rst') proxy.resetAll();
          else proxy.finAll();
          // Let the client see the loss before its next statement, so the cut is
          // certainly before COMMIT was sent.
          await sleep(100);
        },
      });
      const err = await within(done, 30_000).catch((e: unknown) => e);
      expectRolledBack(err);
      expect(await transferRow(reference)).toBe(false);
    }
    expect(proxy.commitsSeen).toBe(0);
    await expectBooksBalanced();
  }, 60_000);

  it(`COMMIT sent but dropped before it reached the server, 10×: nothing committed; the client cannot tell, so outcome unknown, never re-run`, async () => {
    // From the client's side this is byte for byte the same as the next test (COMMIT
    // sent, then the connection went without an answer), so the only true report is
    // 'unknown'; the server shows what really happened.
    const proxy = await openProxy();
    const logged: unknown[] = [];
    const log = (entry: unknown): void => void logged.push(entry);
    const { db } = openDb(proxy, `lost-${mode}`, { pool: { size: 2, maxOverflow: 0 }, logger: { info: log, warn: log } });
    for (let i = 0; i < 10; i++) {
      proxy.dropBeforeCommit(mode);
      const { reference, done } = transfer(db, `lost-${mode}`);
      const err = await within(done, 30_000).catch((e: unknown) => e);
      expect(proxy.fired[i]).toEqual({ kind: 'before-commit', mode, result: 'dropped' });
      expectUnknownOutcome(err);
      expect(await transferRow(reference)).toBe(false);
    }
    expect(proxy.commitsSeen).toBe(10); // never re-run
    await expectBooksBalanced();
    // Prisma rolls back (releases) each transaction whose COMMIT was lost: close() finds nothing in flight.
    await db.close({ deadlineMs: 30_000 });
    expect(logged).toContainEqual(expect.objectContaining({ event: 'close', inFlight: 0 }));
  }, 120_000);

  it(`dropped after the server committed, 10×: each caller gets outcome unknown (not a plain query error), the row is there, never re-run`, async () => {
    const proxy = await openProxy();
    const { db } = openDb(proxy, `after-${mode}`, { pool: { size: 2, maxOverflow: 0 } });
    for (let i = 0; i < 10; i++) {
      proxy.dropAfterCommit(mode);
      const { reference, done } = transfer(db, `after-${mode}`);
      const err = await within(done, 30_000).catch((e: unknown) => e);
      expect(proxy.fired[i]).toEqual({ kind: 'after-commit', mode, result: 'committed' });
      expectUnknownOutcome(err);
      expect(await transferRow(reference)).toBe(true);
    }
    expect(proxy.commitsSeen).toBe(10);
    await expectBooksBalanced();
  }, 120_000);
});

describe.each(['rst', 'fin'] as CutMode[])("Prisma's own $transaction on the Db, COMMIT's answer lost (%s)", (mode) => {
  it.each(['batch', 'interactive'] as const)('%s: committed on the server; the caller gets outcome unknown, not retryable (it was a retryable connection error)', async (kind) => {
    const proxy = await openProxy();
    const { db } = openDb(proxy, `prisma-tx-${kind}-${mode}`, { pool: { size: 2, maxOverflow: 0 } });
    const [fromId, toId] = [accountIds[0]!, accountIds[1]!];
    const reference = `prisma-tx-${kind}-${mode}-${++refSeq}`;
    const amount = 3;
    proxy.dropAfterCommit(mode);
    const writes = () => [
      db.account.update({ where: { id: fromId }, data: { balance: { decrement: amount } } }),
      db.account.update({ where: { id: toId }, data: { balance: { increment: amount } } }),
      db.transfer.create({ data: { fromId, toId, amount, reference } }),
    ];
    const run: Promise<unknown> =
      kind === 'batch'
        ? db.$transaction(writes())
        : db.$transaction(async (tx) => {
            await tx.account.update({ where: { id: fromId }, data: { balance: { decrement: amount } } });
            await tx.account.update({ where: { id: toId }, data: { balance: { increment: amount } } });
            return tx.transfer.create({ data: { fromId, toId, amount, reference } });
          });
    const err = await within(run, 30_000).catch((e: unknown) => e);
    ledger.set(reference, 'unknown');
    expect(proxy.fired.at(-1)).toEqual({ kind: 'after-commit', mode, result: 'committed' });
    expect(err).toBeInstanceOf(DatabaseConnectionError);
    expect(view(err)).toMatchObject({ outcome: 'unknown', retryable: false });
    expect(await transferRow(reference)).toBe(true);
    await expectBooksBalanced();
  }, 60_000);
});

describe('backend terminated during COMMIT (57P01)', () => {
  it('3×: outcome unknown, retryable false, never re-run; nothing committed', async () => {
    const proxy = await openProxy();
    const { db } = openDb(proxy, 'terminated', { pool: { size: 2, maxOverflow: 0 } });
    for (let i = 0; i < 3; i++) {
      proxy.onNextCommit(async (pid) => {
        // Terminate the backend and wait until it is gone, then let the COMMIT go on.
        await adminQuery('SELECT pg_terminate_backend($1)', [pid]);
        await eventually(async () => (await adminQuery('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).length === 0, 5000);
      });
      const { reference, done } = transfer(db, 'terminated');
      const err = await within(done, 30_000).catch((e: unknown) => e);
      expectUnknownOutcome(err);
      expect(await transferRow(reference)).toBe(false);
    }
    expect(proxy.commitsSeen).toBe(3);
    await expectBooksBalanced();
  }, 60_000);
});

// ---- durations beyond what the code can honour -------------------------------------------------

const INT_MAX = 2 ** 31 - 1;
/** The problem text names the maximum (in ms or in the setting's own unit: s). */
const namesMaximum = (problem: string): boolean => /2147483/.test(problem.replace(/[,_\s]/g, ''));

function configErrorOf(options: Options & { env?: Record<string, string> }): unknown {
  try {
    const db = createDb({ PrismaClient, url: testDb.urlWith({ sslmode: 'disable' }), ...options });
    cleanups.push(() => db.close());
    return undefined;
  } catch (err) {
    return err;
  }
}

describe('durations beyond timers (2^31-1 ms) and PostgreSQL maxima (INT_MAX ms)', () => {
  it.each([
    ['DB_POOL_TIMEOUT', '2592000'], // 30 days in seconds
    ['DB_POOL_RECYCLE', '2592000'],
    ['DB_CONNECT_TIMEOUT', '2592000'],
    ['DB_TX_TIMEOUT', '2592000000'], // 30 days in ms
    ['DB_TX_MAX_WAIT', '2592000000'],
    ['DB_STATEMENT_TIMEOUT', '3000000000'],
    ['DB_LOCK_TIMEOUT', '3000000000'],
    ['DB_IDLE_TX_TIMEOUT', '3000000000'],
  ])('%s=%s → ConfigError naming the setting and the maximum', (setting, value) => {
    const err = configErrorOf({ env: { [setting]: value } });
    expect(err).toBeInstanceOf(ConfigError);
    const issue = (err as ConfigError).issues.find((i) => i.setting === setting);
    expect(issue).toBeDefined();
    expect({ setting, problem: issue!.problem, namesMaximum: namesMaximum(issue!.problem) }).toMatchObject({ namesMaximum: true });
  });

  it.each([
    ['pool.timeoutMs', { pool: { timeoutMs: INT_MAX + 1 } }],
    ['pool.recycleMs', { pool: { recycleMs: INT_MAX + 1 } }],
    ['timeouts.connectMs', { timeouts: { connectMs: INT_MAX + 1 } }],
    ['timeouts.statementMs', { timeouts: { statementMs: INT_MAX + 1 } }],
    ['transaction.timeoutMs', { transaction: { timeoutMs: INT_MAX + 1 } }],
  ] as [string, Options][])('option %s beyond 2^31-1 ms → ConfigError naming it', (setting, options) => {
    const err = configErrorOf(options);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues.map((i) => i.setting)).toContain(setting);
  });

  it('a statement_timeout beyond INT_MAX in the URL options → ConfigError before any connection', () => {
    const url = testDb.urlWith({ sslmode: 'disable', options: '-c statement_timeout=3000000000' });
    let err: unknown;
    try {
      createDb({ PrismaClient, url });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect(JSON.stringify((err as ConfigError).issues)).toMatch(/statement_timeout/);
  });

  it('large durations inside the limits are accepted and work (23 days; 2·10⁹ ms server-side)', async () => {
    const name = appName('large-ok');
    const db = createDb({
      PrismaClient,
      url: testDb.urlWith({ sslmode: 'disable' }),
      applicationName: name,
      env: {
        DB_POOL_TIMEOUT: '2000000',
        DB_POOL_RECYCLE: '2000000',
        DB_CONNECT_TIMEOUT: '2000000',
        DB_TX_TIMEOUT: '2000000000',
        DB_STATEMENT_TIMEOUT: '2000000000',
      },
    });
    cleanups.push(() => db.close());
    // A unit first, on a fresh pool: its wait covers a connect (sums of valid durations must not overflow either).
    const unit = await db.transaction(async (tx) => tx.account.count()).catch((e: unknown) => view(e));
    expect(unit).toBeGreaterThanOrEqual(ACCOUNTS);
    const [row] = await db.$queryRaw<{ st: string }[]>`SELECT current_setting('statement_timeout') AS st`;
    expect(row!.st).toBe('2000000s');
  });

  it('DB_POOL_RECYCLE of 30 days: a ConfigError, or 30 sequential statements on one connection', async () => {
    const name = appName('recycle-30d');
    let db: Db<PrismaClient>;
    try {
      db = createDb({ PrismaClient, url: testDb.urlWith({ sslmode: 'disable' }), applicationName: name, env: { DB_POOL_RECYCLE: '2592000' } });
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      const issue = (err as ConfigError).issues.find((i) => i.setting === 'DB_POOL_RECYCLE');
      expect(issue && namesMaximum(issue.problem)).toBe(true);
      return;
    }
    cleanups.push(() => db.close());
    for (let i = 0; i < 30; i++) await db.account.count();
    expect(db.stats().counters.connectionsOpened).toBe(1);
  });
});

// ---- retryable only where a retry can succeed ---------------------------------------------------

describe('connection failures a retry cannot fix are not retryable', () => {
  let plain: Cluster;
  beforeAll(async () => {
    plain = await startCluster({ ssl: false, name: 'faults-nossl', maxConnections: 10 });
  });
  afterAll(async () => {
    await plain?.destroy();
  });

  async function failureOf(url: string): Promise<unknown> {
    const db = createDb({ PrismaClient, url, applicationName: appName('refused'), timeouts: { connectMs: 5000 } });
    cleanups.push(() => db.close());
    return within(db.account.count(), 20_000).then(
      () => new Error('expected the connection to be refused'),
      (e: unknown) => e,
    );
  }

  function expectNotRetryable(err: unknown, message?: RegExp): void {
    expect(err).toBeInstanceOf(DatabaseConnectionError);
    expect({ ...view(err) }).toMatchObject({ retryable: false });
    if (message) expect((err as Error).message).toMatch(message);
  }

  it('certificate verification failure (wrong CA, verify-full)', async () => {
    expectNotRetryable(await failureOf(testDb.urlWith({ sslmode: 'verify-full', sslrootcert: testDb.wrongCaFile }, { user: testDb.appUser })));
  });

  it('host name mismatch (verify-full to 127.0.0.2, which the certificate does not name)', async () => {
    // As in ssl.test.ts: a proxy on another loopback address reaches the same server
    // under a name the certificate (localhost, 127.0.0.1, ::1) does not carry.
    const proxy = await startTcpProxy({ host: testDb.host, port: testDb.port }, '127.0.0.2');
    cleanups.push(() => proxy.close());
    const err = await failureOf(testDb.urlWith({ sslmode: 'verify-full', sslrootcert: testDb.caFile }, { user: testDb.appUser, host: '127.0.0.2', port: proxy.port }));
    expectNotRetryable(err, /altname|host ?name|IP: 127\.0\.0\.2/i);
  });

  it('sslmode=require against a server without SSL', async () => {
    expectNotRetryable(await failureOf(plain.url('postgres', { sslmode: 'require' })), /does not support SSL/i);
  });

  it('wrong password', async () => {
    const err = await failureOf(testDb.urlWith({ sslmode: 'disable' }, { user: testDb.appUser, password: 'not-the-password' }));
    expectNotRetryable(err);
    expect((err as DatabaseConnectionError).sqlState).toBe('28P01');
  });
});
