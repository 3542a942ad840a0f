// Units of work: "provide a connection to a consumer, then dispose". A unit commits when
// its function resolves and rolls back when it throws anything; it re-runs on
// serialization failures and deadlocks; its client is ambient (AsyncLocalStorage) so
// repository code needs no parameter threading. Its `timeoutMs` is a deadline on
// everything it waits for — BEGIN, every statement, COMMIT — enforced on the server
// (local statement_timeout) and, when the server cannot be heard, on the client.
//
// What the caller learns on failure follows the unit's state when it failed:
//   starting  — BEGIN never got through: nothing happened (re-run on a dead pooled connection).
//               BEGIN goes out with the unit's first statement (driver/begin.ts), so this
//               includes a connection lost before the server confirmed it: `fn` may have
//               begun, up to its first statement, and runs again as on a conflict (not if
//               `fn` caught that failure and sent another statement: it went further);
//   running   — the transaction is rolled back: the error says so (`outcome: 'rolled-back'`);
//   committing — COMMIT was sent and the connection went: it may have committed
//               (DatabaseTransactionError, `outcome: 'unknown'`), never re-run.
// The caller's own errors are re-thrown unchanged after the rollback.

import type { ITXClientDenyList } from '@prisma/client/runtime/client';
import { ContextSlot } from './context.ts';
import type { DbConfig, IsolationLevel } from './config.ts';
import { DEADLINE_GRACE_MS, MAX_TIMER_MS, ReusedTimers, sleep, unitLimits, UnitLimits, type TransactionSettings } from './deadline.ts';
import { ConfigError, DatabaseConnectionError, DatabaseTransactionError, DatalayerError, PoolTimeoutError, StatementTimeoutError } from './errors.ts';
import { classifyError, isBeforeBegin, isConnectionLoss, isDatabaseFailure, isLostWithFirstStatement, isRetryableConflict, wasNeverSent } from './failures.ts';
import { connectionLost, lossOf } from './driver/client.ts';
import { discardBeforeReuse, type GuardedPool } from './pool.ts';
import { rawConnectionOf } from './scope.ts';
import { backoffMs, diedWhileIdle, recoveryBudget } from './retry.ts';
import type { DbCounters } from './stats.ts';
import type { Telemetry, UnitInfo, UnitSpan } from './telemetry.ts';
import { checkNested, checkSessionOptions, checkUnitOptions, SERVER_DEFAULT_ISOLATION, type SessionOptions, type TransactionOptions } from './unit-options.ts';

export type { SessionOptions, TransactionOptions } from './unit-options.ts';

/**
 * The client of a unit of work: Prisma's own transaction client type
 * (`Prisma.TransactionClient`), which omits Prisma's deny list and keeps `$transaction`
 * (Prisma 7 nests it as a savepoint). Taken from Prisma, not restated, so a repository
 * function typed `(tx: Prisma.TransactionClient)` takes what db.transaction gives.
 */
export type TxClient<C> = Omit<C, ITXClientDenyList>;

type UnitState = 'starting' | 'running' | 'committing';

interface UnitContext {
  /** Prisma's transaction client; undefined until BEGIN has gone through (the unit is still starting). */
  tx: unknown;
  /** The Db the unit belongs to (UnitsHome.db): only that Db's clients join it. */
  readonly db: object;
  /** Who started the unit (or joined it with a client of its own): opaque here, extensions.ts's record. */
  readonly origin: unknown;
  /** A unit of another Db the caller was in when this one started: it still joins there. */
  readonly enclosing: UnitContext | undefined;
  correlationId: string | undefined;
  /** This level of savepoint nesting (the unit's, or a savepoint unit's): shared by a joined view of it. */
  readonly savepoints: SavepointLevel;
  /** What the unit's transaction runs at: the level a nested unit may ask for (checkNested). */
  readonly isolationLevel: IsolationLevel;
  /** The unit's limits, shared with its nested contexts: `ended` once the unit settled. */
  readonly limits: UnitLimits;
}

/** One level of savepoint nesting: the unit itself, or a savepoint unit inside it. */
interface SavepointLevel {
  count: number;
  /** The savepoint unit nested here that runs now: siblings wait for it (savepoints are a stack). */
  turn?: Promise<void>;
  /**
   * Set while a savepoint unit nested here holds its savepoint (SAVEPOINT to RELEASE or
   * ROLLBACK TO); resolves when it no longer does. This context's own statements wait for
   * it (savepointInTheWay): sent meanwhile, they would run inside the savepoint, and its
   * ROLLBACK TO would undo them after they had succeeded.
   */
  held?: Promise<void>;
  /**
   * Set on a savepoint unit's level once its function settled: what its work left behind (a
   * detached promise, a timer) sends afterwards is refused, as a settled unit's is by
   * Prisma. Sent, it would land in the outer transaction and commit with it, though the
   * savepoint unit had rolled back.
   */
  over?: boolean;
}

/** What this module needs from the Prisma client. */
export interface TransactionalClient {
  $transaction<T>(fn: (tx: never) => Promise<T>, options?: { isolationLevel?: IsolationLevel; maxWait?: number; timeout?: number }): Promise<T>;
  $executeRawUnsafe(query: string, ...values: unknown[]): Promise<number>;
  $connect(): Promise<void>;
}

const units = new ContextSlot<UnitContext>();
const correlations = new ContextSlot<string>();

/**
 * The unit of work of `db` the caller runs in, once its BEGIN has gone through (until then
 * it has no `tx`). A unit of another Db started inside it is not it: that Db's transaction
 * is on another database (or another pool's server), never this Db's connection.
 */
function startedUnit(db: object): UnitContext | undefined {
  const unit = unitOf(db);
  // Work a settled unit left behind (a timer, a detached promise) runs outside it: a new unit, the root client.
  return unit?.tx === undefined || unit.limits.ended ? undefined : unit;
}

/**
 * What a statement of a unit's transaction waits for before it is sent (adapter.ts asks,
 * for every statement of a transaction): a savepoint unit nested in the caller's unit
 * (or savepoint unit) that holds its savepoint now. A plain `tx` statement beside a
 * savepoint unit (a Promise.all) then runs after it, not inside it. Undefined, nearly
 * always: nothing to wait for, no promise made.
 */
export function savepointInTheWay(db: object): Promise<void> | undefined {
  // The unit of the transaction's own Db: another Db's transaction (Prisma's $transaction on
  // an audit Db, beside a savepoint unit of the app's) has nothing to wait for.
  const level = unitOf(db)?.savepoints;
  if (level === undefined) return undefined;
  return level.over === true ? Promise.reject(leftBehind()) : level.held;
}

function leftBehind(): DatabaseTransactionError {
  return new DatabaseTransactionError(
    "This statement was sent by work a savepoint unit (nested: 'savepoint') left behind, after that unit had ended (released or rolled back): it was not sent. Await a savepoint unit's work inside it",
    { outcome: 'rolled-back', retryable: false },
  );
}

/** The caller's unit of `db`, started or not, settled or not. */
function unitOf(db: object): UnitContext | undefined {
  let unit = units.get();
  while (unit !== undefined && unit.db !== db) unit = unit.enclosing;
  return unit;
}

/**
 * The running unit of another Db the caller is in, for a unit of `db` starting there: that
 * unit stays reachable from inside the new one. Settled units and `db`'s own (a settled one
 * whose leftover work starts this unit) are skipped, so the chain holds only running units.
 */
function otherDbsUnit(unit: UnitContext | undefined, db: object): UnitContext | undefined {
  while (unit !== undefined && (unit.db === db || unit.limits.ended)) unit = unit.enclosing;
  return unit;
}

/** Is the caller inside a unit of work of `db` (any of its clients and pools)? */
export function inUnitOf(db: object): boolean {
  return startedUnit(db) !== undefined;
}

/** The correlation id of the unit of work or session the caller is running in. */
export function currentCorrelationId(): string | undefined {
  return units.get()?.correlationId ?? correlations.get();
}

export interface UnitsOfWork<C> {
  transaction<T>(fn: (tx: TxClient<C>) => Promise<T>, options?: TransactionOptions): Promise<T>;
  session<T>(fn: (client: TxClient<C>) => Promise<T>, options?: SessionOptions): Promise<T>;
  current(): TxClient<C>;
}

/** The unit spans of one pool (createDb's `telemetry` option with a tracer). */
export interface UnitTelemetry {
  telemetry: Telemetry;
  /** The pool's name and server; isolation level and read-only are added per unit. */
  info: UnitInfo;
}

/** Thrown when BEGIN failed on a pooled connection that was already dead: nothing reached the server. */
class NotStarted extends Error {}

/** What the units of work of one pool share, whichever client (extended or not) they run on. */
export interface UnitsHome {
  /** The Db's identity, the same for all its pools and clients: its units join one another, never another Db's. */
  readonly db: object;
  readonly config: DbConfig;
  readonly counters: DbCounters;
  readonly pool: () => GuardedPool | undefined;
  readonly telemetry?: UnitTelemetry | undefined;
  /** The units' deadline timers, reused by units that run one after another. */
  readonly timers: ReusedTimers;
}

/** The unit of work a caller runs in, as extensions.ts sees it. */
export interface RunningUnit {
  readonly origin: unknown;
  readonly tx: unknown;
}

export class UnitOfWork<C> implements UnitsOfWork<C> {
  private readonly db: object;
  private readonly config: DbConfig;
  private readonly counters: DbCounters;
  private readonly pool: () => GuardedPool | undefined;
  private readonly telemetry: UnitTelemetry | undefined;
  private readonly timers: ReusedTimers;

  constructor(
    private readonly client: C & TransactionalClient,
    home: UnitsHome,
  ) {
    ({ db: this.db, config: this.config, counters: this.counters, pool: this.pool, telemetry: this.telemetry, timers: this.timers } = home);
  }

  /**
   * A unit of work; `origin` is recorded in its context for whoever asks who started it
   * (extensions.ts), at no cost of a context run of its own.
   * Not an async function: the unit's promise is its attempts' own, one hop fewer.
   */
  transaction = <T>(fn: (tx: TxClient<C>) => Promise<T>, options: TransactionOptions = {}, origin?: unknown): Promise<T> => {
    let opts: TransactionOptions;
    try {
      opts = checkUnitOptions(options);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const outer = startedUnit(this.db);
    if (outer) return this.nested(outer, fn, opts);
    const correlationId = opts.correlationId ?? currentCorrelationId();
    this.counters.transactions++;
    const telemetry = this.telemetry;
    if (telemetry === undefined) return this.attempts(fn, opts, correlationId, undefined, origin);
    const info: UnitInfo = { ...telemetry.info, isolationLevel: opts.isolationLevel ?? this.config.transaction.isolationLevel, readOnly: opts.readOnly };
    return telemetry.telemetry.unit(info, (span) => this.attempts(fn, opts, correlationId, span, origin));
  };

  /** The unit of this Db the caller runs in (started: BEGIN went through), if any. */
  running(): RunningUnit | undefined {
    return startedUnit(this.db);
  }

  /**
   * Runs `fn` in the caller's unit seen as `origin`'s, with `tx` as its transaction client
   * (the same transaction, through a client with other extensions: extensions.ts).
   */
  joinAs<R>(origin: unknown, tx: unknown, fn: () => R): R {
    const unit = startedUnit(this.db);
    if (unit === undefined) throw new Error('joinAs outside a unit of work');
    return units.run({ ...unit, origin, tx }, fn);
  }

  /** The unit's runs: re-run after a dead pooled connection or a retryable conflict. */
  private async attempts<T>(fn: (tx: TxClient<C>) => Promise<T>, opts: TransactionOptions, correlationId: string | undefined, span: UnitSpan | undefined, origin: unknown): Promise<T> {
    const retries = opts.retries ?? this.config.transaction.retries;
    for (let attempt = 0, recovered = 0; ; attempt++) {
      try {
        return await this.runOnce(fn, opts, correlationId, origin, attempt + 1);
      } catch (err) {
        if (err instanceof NotStarted && recovered < recoveryBudget(this.config)) {
          // The connection died before BEGIN got through: run it again on another one.
          recovered++;
          this.counters.connectionsRecovered++;
          attempt--;
          continue;
        }
        const cause = err instanceof NotStarted ? err.cause : err;
        if (isDatabaseFailure(cause) && isRetryableConflict(cause) && attempt < retries) {
          this.counters.retries++;
          const delay = backoffMs(attempt);
          span?.retry(cause, delay);
          await sleep(delay);
          continue;
        }
        throw this.failure(cause, attempt + 1, correlationId);
      }
    }
  }

  /** What the caller gets: its own error unchanged, the database's typed. */
  private failure(err: unknown, attempts: number, correlationId: string | undefined): unknown {
    if (!isDatabaseFailure(err)) return err;
    if (isRetryableConflict(err) && (err as Error).name === 'PrismaClientKnownRequestError') {
      // Prisma's own P2034 (or P2010 with 40001/40P01) as Prisma raised it, so that Prisma's
      // retry habit (`e.code === 'P2034'`) keeps working; what the unit adds rides along,
      // and classifyError() gives the layer's DatabaseTransactionError for it (failures.ts).
      // A driver's error (a conflict at COMMIT) has no Prisma code to keep: typed below.
      return Object.assign(err as object, { attempts, outcome: 'rolled-back', retryable: true, ...(correlationId === undefined ? {} : { correlationId }) });
    }
    if (isRetryableConflict(err)) {
      const last = classifyError(err, correlationId);
      return new DatabaseTransactionError(`Unit of work failed after ${attempts} attempts: ${last.message}`, {
        cause: err,
        outcome: 'rolled-back',
        retryable: true,
        attempts,
        ...(last.sqlState ? { sqlState: last.sqlState } : {}),
        ...(last.prismaCode ? { prismaCode: last.prismaCode } : {}),
        ...(correlationId === undefined ? {} : { correlationId }),
      });
    }
    if (err instanceof DatalayerError) {
      if (correlationId !== undefined) err.correlationId ??= correlationId;
      return err;
    }
    // Prisma's own errors keep their identity (instanceof, code, meta); the correlation id rides along.
    if (correlationId !== undefined && typeof err === 'object' && err !== null) Object.assign(err, { correlationId });
    return err;
  }

  /**
   * One run: BEGIN, the unit's settings, `fn`, COMMIT. A plain promise chain: no async
   * frame of its own. The unit's limits and its context are set in one run around the
   * whole transaction (the context gets Prisma's client once BEGIN has gone through), so
   * `fn` is called straight from the body, with no context switch of its own.
   */
  private runOnce<T>(fn: (tx: TxClient<C>) => Promise<T>, opts: TransactionOptions, correlationId: string | undefined, origin: unknown, attempts: number): Promise<T> {
    const unit = { state: 'starting' as UnitState };
    const enclosing = otherDbsUnit(units.get(), this.db);
    const limits = this.limits(opts, enclosing?.limits);
    const prelude = this.prelude(opts);
    limits.settings = prelude;
    const isolationLevel = opts.isolationLevel ?? this.config.transaction.isolationLevel ?? SERVER_DEFAULT_ISOLATION;
    const context: UnitContext = { tx: undefined, db: this.db, origin, enclosing, correlationId, savepoints: { count: 0 }, isolationLevel, limits };
    const body = async (tx: never): Promise<T> => {
      unit.state = 'running';
      // Carried by the connection along with BEGIN and the first statement, unless it cannot (driver/begin.ts).
      if (prelude !== undefined && prelude.carried !== true) await (tx as TransactionalClient).$executeRawUnsafe(prelude.sql, ...prelude.values);
      context.tx = tx;
      const value = await fn(tx as TxClient<C>);
      unit.state = 'committing';
      return value;
    };
    return units.runWith(context, unitLimits, limits, () => this.client.$transaction(body, this.prismaOptions(opts, limits))).then(
      (result) => {
        limits.end();
        this.counters.commits++;
        return result;
      },
      (err: unknown) => {
        limits.end();
        throw this.settle(err, unit.state, limits.reused === true, correlationId, limits.connection, attempts);
      },
    );
  }

  /** The error for a failure in `state` of the unit's `attempts`-th run: see the header. */
  private settle(err: unknown, state: UnitState, reused: boolean, correlationId: string | undefined, connection: object | undefined, attempts: number): unknown {
    if (state === 'running' && connection !== undefined && isConnectionLoss(err) && !connectionLost(rawConnectionOf(connection))) {
      // fn failed with a connection lost under other work (another Db's statement or unit,
      // Prisma's own $transaction beside the unit), while the unit's own connection is
      // alive: the unit rolled back, and the error is fn's own. Its outcome is that work's
      // (a write that may have run: 'unknown'), not the unit's 'rolled-back'.
      this.counters.rollbacks++;
      return err;
    }
    // Was the transaction ever open on the server? Not if BEGIN failed, nor if the connection went before BEGIN was confirmed.
    const begun = state !== 'starting' && !isBeforeBegin(err);
    // Run again only if `fn` went no further than its first statement (driver/client.ts marks it).
    const rerunnable = state === 'starting' || isLostWithFirstStatement(err);
    if (!begun && rerunnable && diedWhileIdle(err, reused)) {
      return new NotStarted('BEGIN failed', { cause: err });
    }
    const lost = isConnectionLoss(err);
    this.counters.rollbacks++;
    const detail = correlationId === undefined ? {} : { correlationId };
    // A COMMIT the driver refused unsent (its connection already lost) took the transaction with the connection.
    if (state === 'committing' && lost && begun && !wasNeverSent(err)) {
      return new DatabaseTransactionError('The connection was lost during COMMIT: the transaction may or may not have committed', {
        cause: err,
        outcome: 'unknown',
        retryable: false,
        attempts,
        ...detail,
      });
    }
    if (lost) {
      const typed = classifyError(err, correlationId);
      typed.outcome = 'rolled-back';
      return typed;
    }
    // The server cancelled a statement (its timeout, the unit's deadline): the transaction is aborted.
    if (err instanceof StatementTimeoutError && err.outcome === undefined && state !== 'committing') err.outcome = 'rolled-back';
    const mapped = isDatabaseFailure(err) ? classifyError(err, correlationId) : undefined;
    // P2028 at COMMIT: Prisma's transaction had expired (or was gone), and Prisma rolled it back instead of committing.
    const expired = mapped?.prismaCode === 'P2028' && !/committed transaction/i.test(mapped.message);
    // Prisma no longer knows the transaction (P2028 'Transaction not found ... before
    // disconnecting'): close() cut the unit's connection at its deadline and disconnected
    // Prisma's engine while fn was between statements. The unit's error is the close's, as
    // for a unit cut while a statement ran.
    const gone = mapped?.prismaCode === 'P2028' && connection !== undefined ? lossOf(rawConnectionOf(connection)) : undefined;
    if (gone instanceof DatabaseConnectionError) return new DatabaseConnectionError(gone.message, { cause: gone, retryable: false, outcome: 'rolled-back', ...detail });
    if (mapped instanceof PoolTimeoutError) {
      // It never got a connection: nothing of it ran (as for work still waiting at close()).
      if (state === 'starting') mapped.outcome ??= 'rolled-back';
      return mapped;
    }
    if (mapped instanceof DatabaseTransactionError && (state !== 'committing' || expired)) {
      // This unit's own COMMIT answered (ROLLBACK, P2028): made by the driver, which cannot know how often the unit ran.
      if (state === 'committing') (mapped as { attempts: number }).attempts = attempts;
      return mapped;
    }
    return err;
  }

  /** The unit's limits, on this pool only; `enclosing`: the running unit of another Db it starts in, whose pool keeps its own. */
  private limits(opts: TransactionOptions, enclosing: UnitLimits | undefined): UnitLimits {
    const timeoutMs = opts.timeoutMs ?? this.config.transaction.timeoutMs;
    return new UnitLimits(performance.now() + timeoutMs, timeoutMs, opts.maxWaitMs ?? this.config.transaction.maxWaitMs, this.timers, this.config, enclosing);
  }

  /**
   * Prisma's own wait for a connection is set past the pool's, so the pool (which knows
   * how long it waited, and for how many connections) is the one that reports it.
   */
  private prismaOptions(opts: TransactionOptions, limits: UnitLimits): { maxWait: number; timeout: number; isolationLevel?: IsolationLevel } {
    const isolationLevel = opts.isolationLevel ?? this.config.transaction.isolationLevel;
    return {
      // Sums of valid durations can pass Node's timer limit (which would fire at once): capped.
      maxWait: Math.min(MAX_TIMER_MS, limits.maxWaitMs + this.config.timeouts.connectMs + DEADLINE_GRACE_MS),
      timeout: limits.timeoutMs,
      ...(isolationLevel ? { isolationLevel } : {}),
    };
  }

  /**
   * The unit's own settings, all in one statement right after BEGIN (none at all when
   * there are none), as bind parameters: read-only mode; behind a transaction-mode pooler
   * the server-side timeouts; and a `timeoutMs` shorter than the statement timeout, so a
   * statement running at the unit's deadline is cancelled by the server. `true` = local.
   */
  private prelude(opts: TransactionOptions): TransactionSettings | undefined {
    if (!opts.readOnly && !this.config.pooler && opts.timeoutMs === undefined) return undefined;
    const settings: [string, string][] = [];
    if (opts.readOnly) settings.push(['transaction_read_only', 'on']);
    const { statementMs, lockMs, idleInTransactionMs } = this.config.timeouts;
    const local = new Map<string, number>();
    if (this.config.pooler) {
      local.set('statement_timeout', statementMs).set('lock_timeout', lockMs).set('idle_in_transaction_session_timeout', idleInTransactionMs);
    }
    if (opts.timeoutMs !== undefined && (statementMs === 0 || opts.timeoutMs < statementMs)) local.set('statement_timeout', opts.timeoutMs);
    for (const [name, ms] of local) settings.push([name, String(ms)]);
    if (settings.length === 0) return undefined;
    const calls = settings.map((_, i) => `set_config($${2 * i + 1}, $${2 * i + 2}, true)`).join(', ');
    return { sql: `SELECT ${calls}`, values: settings.flat() };
  }

  private async nested<T>(outer: UnitContext, fn: (tx: TxClient<C>) => Promise<T>, opts: TransactionOptions): Promise<T> {
    checkNested(outer, opts);
    if (opts.nested !== 'savepoint') return fn(outer.tx as TxClient<C>);
    // Savepoints are a stack on one connection: sibling units (a Promise.all) take turns, or
    // one's ROLLBACK TO would undo what another, already resolved, wrote after it.
    const stack = outer.savepoints;
    const before = stack.turn;
    let done!: () => void;
    stack.turn = new Promise<void>((resolve) => (done = resolve));
    try {
      if (before !== undefined) await before;
      return await this.savepoint(outer, fn);
    } finally {
      done();
    }
  }

  private async savepoint<T>(outer: UnitContext, fn: (tx: TxClient<C>) => Promise<T>): Promise<T> {
    const tx = outer.tx as TransactionalClient;
    // The name is ours (a counter), never the caller's.
    const name = `datalayer_sp_${++outer.savepoints.count}`;
    // The outer context's statements wait from now until the savepoint is gone; the
    // savepoint's own (SAVEPOINT, fn's, RELEASE / ROLLBACK TO) run in the inner context.
    let free!: () => void;
    const held = new Promise<void>((resolve) => {
      free = () => {
        if (outer.savepoints.held === held) outer.savepoints.held = undefined;
        resolve();
      };
    });
    outer.savepoints.held = held;
    // Never a wait without a deadline (fn awaiting a statement that waits for it): past the
    // unit's deadline the waiting statements go, and fail as the unit's do.
    const unwatch = outer.limits.watch(free);
    const inner: UnitContext = { ...outer, savepoints: { count: 0 } };
    // RELEASE / ROLLBACK TO go from a context of their own: `inner` refuses statements from the moment fn settled.
    const ender: UnitContext = { ...inner, savepoints: { count: 0 } };
    const end = (sql: string): Promise<number> => units.run(ender, () => tx.$executeRawUnsafe(sql));
    try {
      return await units.run(inner, async () => {
        await tx.$executeRawUnsafe(`SAVEPOINT ${name}`);
        try {
          const value = await fn(outer.tx as TxClient<C>);
          inner.savepoints.over = true;
          await end(`RELEASE SAVEPOINT ${name}`);
          return value;
        } catch (err) {
          inner.savepoints.over = true;
          await end(`ROLLBACK TO SAVEPOINT ${name}`);
          throw err;
        }
      });
    } finally {
      unwatch();
      free();
    }
  }

  session = async <T>(fn: (c: TxClient<C>) => Promise<T>, options: SessionOptions = {}): Promise<T> => {
    const opts = checkSessionOptions(options);
    const outer = startedUnit(this.db);
    if (outer) {
      // The unit's connection is the session's: what the session leaves on it is discarded before its next use.
      const connection = outer.limits.connection;
      if (connection !== undefined) discardBeforeReuse(connection);
      return fn(outer.tx as TxClient<C>);
    }
    if (this.config.pooler) throw sessionOnPooler();
    const correlationId = opts.correlationId ?? currentCorrelationId();
    // The Neon adapter creates its pool when Prisma connects; no query is sent here.
    await this.client.$connect();
    const pool = this.pool();
    if (!pool) throw new Error('the pool does not exist after $connect');
    const run = (): Promise<T> => pool.withConnection(() => fn(this.client as unknown as TxClient<C>));
    try {
      return correlationId === undefined ? await run() : await correlations.run(correlationId, run);
    } catch (err) {
      throw this.failure(err, 1, correlationId);
    }
  };

  /**
   * The unit's transaction client, else this client. In work a settled unit left behind it
   * is still the unit's, which refuses (P2028): a write meant for a unit that rolled back
   * must not land outside it.
   */
  current = (): TxClient<C> => (unitOf(this.db)?.tx ?? this.client) as TxClient<C>;
}

/**
 * A session needs one server connection for all its statements. A transaction-mode pooler
 * (PgBouncer, Neon's -pooler endpoints) hands each statement outside a transaction whichever
 * server connection is free: the session's SET, advisory lock or temporary table lands on a
 * connection other clients then get (they ran under its statement_timeout), and its next
 * statement may not see it (pg_advisory_unlock answers false). Refused before fn runs.
 */
function sessionOnPooler(): ConfigError {
  return new ConfigError([
    {
      setting: 'db.session()',
      problem:
        "needs one server connection for its statements, which a transaction-mode pooler (pooler: true, pgbouncer=true, a -pooler host or DB_POOLER) does not keep: its SETs, advisory locks and temporary tables would land on server connections other clients share. Use db.transaction() (SET LOCAL, pg_advisory_xact_lock, ON COMMIT DROP), or a Db on the direct (non-pooler) URL",
    },
  ]);
}
