// Read replicas. Each replica has its own pool and Prisma client, built exactly like the
// primary's. Read-only units of work go to a healthy replica, round robin; a replica that
// fails or lags past the bound is skipped for a while and reads fall back to the primary.
// Health is learned from the traffic itself plus one lag query per replica at most every
// `lagCheckIntervalMs`, run only when a read is about to be routed or db.health() asks: no
// background loop.

import type { IsolationLevel } from './config.ts';
import { waitAtMost } from './deadline.ts';
import { DatabaseConnectionError, PoolTimeoutError } from './errors.ts';
import { isPermanentConnectFailure } from './failures.ts';
import type { PoolFigures } from './stats.ts';
import { checkUnitOptions } from './unit-options.ts';
import type { TransactionOptions, TxClient, UnitsOfWork } from './unit-of-work.ts';

export interface ReplicaStatus {
  name: string;
  /**
   * In rotation: not taken out after a failure, not lagging. In db.replicas(), also true
   * before anything was checked (see `checked`); db.health() checks first.
   */
  up: boolean;
  /** False until a lag check or a read has told something about this replica: `up` is then only presumed. */
  checked: boolean;
  lagMs: number | undefined;
  lastError: string | undefined;
  /** This replica's own pool (db.stats().pool is the primary's). */
  pool: PoolFigures;
}

/** One row of LAG_QUERY. */
export interface LagRow {
  in_recovery: boolean;
  /** A WAL receiver process exists: the replica is connected (or connecting) to its primary. */
  receiving: boolean;
  /** null: unknown (not receiving, and nothing replayed since the replica started). */
  lag_ms: number | null;
}

export interface ReplicaTarget<C> {
  name: string;
  units: UnitsOfWork<C>;
  /** One LAG_QUERY row, bounded by the replica's connect timeout. Rejects if unreachable. */
  measureLag(): Promise<LagRow>;
  figures(): PoolFigures;
  /**
   * Takes back this pool's count of a unit that failed here and runs again on the primary
   * (routeReads), which counts it: one read is one unit of the Db, counted where it ended,
   * not a rollback beside a commit. The failure itself stays counted (errors, poolTimeouts).
   */
  uncountUnit(): void;
  close(): Promise<void>;
}

interface ReplicaState<C> {
  target: ReplicaTarget<C>;
  downUntil: number;
  lagMs: number | undefined;
  checkedAt: number;
  checked: boolean;
  lastError: string | undefined;
  /** The lag check in flight, shared by the reads that arrive meanwhile. */
  check: Promise<void> | undefined;
}

export interface ReplicaPolicy {
  maxLagMs: number;
  retryAfterMs: number;
  lagCheckIntervalMs: number;
}

/** What routing needs from the Db around it. */
export interface ReadRouting<C = unknown> {
  /** The Db's defaults for a unit's options. */
  defaults: { isolationLevel?: IsolationLevel | undefined; timeoutMs: number; maxWaitMs: number };
  /** True once close() has begun: a failure then says nothing about a replica, and nothing falls back. */
  closing(): boolean;
  /** What a read cut by close() fails with: the primary's non-retryable error for work cut by close(). */
  closedError(cause: unknown): Error;
  /** Does the caller run inside a unit of this Db? Then its reads are that unit's. */
  inUnit(): boolean;
  /**
   * Does the caller run inside a db.session() of this Db? Then its reads run on the
   * session's connection, as its other units do: on a replica they would not see the
   * session's settings, temporary tables, nor its writes not yet replayed there.
   */
  inSession(): boolean;
  /** The units a read runs on a replica with: the replica's own, or those of a client extended from the Db (client.ts). */
  unitsOf?(target: ReplicaTarget<C>): UnitsOfWork<C>;
}

export class ReplicaRouter<C> {
  private readonly states: ReplicaState<C>[];
  private next = 0;

  constructor(
    targets: ReplicaTarget<C>[],
    private readonly policy: ReplicaPolicy,
    private readonly closing: () => boolean,
  ) {
    this.states = targets.map((target) => ({ target, downUntil: 0, lagMs: undefined, checkedAt: 0, checked: false, lastError: undefined, check: undefined }));
  }

  get size(): number {
    return this.states.length;
  }

  /** A replica fit to serve a read now, or undefined (read on the primary). Waits at most `waitMs` for lag checks. */
  async pick(waitMs: number): Promise<ReplicaTarget<C> | undefined> {
    const until = performance.now() + waitMs;
    for (let i = 0; i < this.states.length; i++) {
      const state = this.states[(this.next + i) % this.states.length]!;
      if (await this.usable(state, until)) {
        this.next = (this.next + i + 1) % this.states.length;
        return state.target;
      }
    }
    return undefined;
  }

  /** Is a lag reading due (none yet, or older than lagCheckIntervalMs)? */
  private due(state: ReplicaState<C>): boolean {
    return state.checkedAt === 0 || Date.now() - state.checkedAt >= this.policy.lagCheckIntervalMs;
  }

  private async usable(state: ReplicaState<C>, until: number): Promise<boolean> {
    if (Date.now() < state.downUntil) return false;
    if (this.due(state)) {
      state.check ??= this.check(state);
      // The read waits only within its own limits. A check it gives up on goes on, bounded
      // by the connect timeout, and its answer serves the reads that come after.
      if (!(await waitAtMost(state.check, until - performance.now()))) return false;
    }
    return Date.now() >= state.downUntil && state.lagMs !== undefined && state.lastError === undefined;
  }

  private async check(state: ReplicaState<C>): Promise<void> {
    try {
      this.record(state, await state.target.measureLag());
    } catch (err) {
      // Cut by close(), or no free connection in the replica's pool: neither says the replica is down.
      if (!this.closing() && !(err instanceof PoolTimeoutError)) this.markDown(state.target, err);
    } finally {
      state.check = undefined;
    }
  }

  private record(state: ReplicaState<C>, row: LagRow): void {
    state.checked = true;
    if (!row.in_recovery) {
      this.markDown(state.target, new Error('not a replica: pg_is_in_recovery() is false'));
      return;
    }
    state.checkedAt = Date.now();
    state.lagMs = row.lag_ms ?? undefined;
    state.lastError = lagProblem(row, this.policy.maxLagMs);
  }

  /** Takes a replica out of rotation after a failure; it is probed again later. */
  markDown(target: ReplicaTarget<C>, err: unknown): void {
    const state = this.states.find((s) => s.target === target);
    if (!state) return;
    state.downUntil = Date.now() + this.policy.retryAfterMs;
    state.checkedAt = 0;
    state.checked = true;
    state.lagMs = undefined;
    state.lastError = err instanceof Error ? err.message : String(err);
  }

  /**
   * For db.health(): the lag checks that are due (the same ones a read would run, shared
   * with reads and at most one per lagCheckIntervalMs), waited for at most `waitMs`, then
   * the status. A replica whose due check did not answer in that time is reported not up,
   * whether it answered before or never did: its last figures are stale, and a read would
   * skip it now too (it waits for the check only within its own limits). Its check goes
   * on (bounded by the connect timeout) and decides routing as usual.
   */
  async probe(waitMs: number): Promise<ReplicaStatus[]> {
    const answered = await Promise.all(
      this.states.map((state) => {
        if (Date.now() < state.downUntil || !this.due(state)) return true;
        return waitAtMost((state.check ??= this.check(state)), waitMs);
      }),
    );
    return this.status().map((s, i) =>
      answered[i] ? s : { ...s, up: false, lastError: `no answer to its lag check within the health timeout (${waitMs} ms)` },
    );
  }

  status(): ReplicaStatus[] {
    const now = Date.now();
    return this.states.map((s) => ({
      name: s.target.name,
      up: now >= s.downUntil && s.lastError === undefined,
      checked: s.checked,
      lagMs: s.lagMs,
      lastError: s.lastError,
      pool: s.target.figures(),
    }));
  }

  async close(): Promise<void> {
    await Promise.all(this.states.map((s) => s.target.close()));
  }
}

/** Why a replica with this lag reading must not serve reads, or undefined when it may. */
function lagProblem(row: LagRow, maxLagMs: number): string | undefined {
  const bound = `(bound ${maxLagMs} ms)`;
  if (row.lag_ms === null) return `not receiving WAL from the primary, and no transaction replayed since it started: its lag is unknown ${bound}`;
  if (row.lag_ms <= maxLagMs) return undefined;
  const ms = Math.round(row.lag_ms);
  return row.receiving
    ? `lagging ${ms} ms behind the primary ${bound}`
    : `not receiving WAL from the primary: its last replayed transaction is ${ms} ms old ${bound}`;
}

/**
 * The replica's state in one row. Lag in ms:
 * - 0 when a WAL receiver is running and everything received is replayed. That a receiver
 *   exists is all a role without pg_read_all_stats can see of pg_stat_wal_receiver (the
 *   other columns are null to it), and it is enough: without a receiver (primary_conninfo
 *   wrong, the primary or the network gone) "all received is replayed" says nothing, as
 *   nothing more arrives, and a read would see data of any age.
 * - Otherwise the age of the last replayed transaction: an upper bound on how stale the
 *   replica can be. It calls a replica of an idle primary "lagging" when its receiver is
 *   down, which is right: nothing then shows that the primary wrote nothing since.
 * - null (unknown, skipped) when nothing was replayed since the replica started.
 * A receiver cut off by a partition it has not noticed yet (wal_receiver_timeout) still
 * counts as receiving: only the primary's own LSN could tell, at one more round trip.
 */
export const LAG_QUERY = `SELECT r.in_recovery, r.receiving, CASE
  WHEN NOT r.in_recovery THEN NULL
  WHEN r.receiving AND pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
  ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000
END::float8 AS lag_ms
FROM (SELECT pg_is_in_recovery() AS in_recovery, EXISTS (SELECT 1 FROM pg_stat_wal_receiver) AS receiving) AS r`;

/**
 * A read's own limits, for the read as a whole: the lag check, the replica and a fallback
 * to the primary share its `timeoutMs`; each step gets the time left, not a fresh one.
 */
class ReadBudget {
  private readonly started = performance.now();
  constructor(
    private readonly timeoutMs: number,
    private readonly maxWaitMs: number,
  ) {}

  left(): number {
    return this.timeoutMs - (performance.now() - this.started);
  }

  /** How long the lag check may hold the read up: a connection wait, and at most half its time, so a fallback keeps the rest. */
  lagWaitMs(): number {
    return Math.min(this.maxWaitMs, this.timeoutMs / 2);
  }

  /** The unit's options with the time left (whole milliseconds, at least 1). */
  options(opts: TransactionOptions): TransactionOptions {
    const left = Math.max(1, Math.floor(this.left()));
    return { ...opts, timeoutMs: left, maxWaitMs: Math.max(1, Math.min(this.maxWaitMs, left)) };
  }
}

/**
 * Whether a replica's failure lets the read go to the primary: `down` for a retryable
 * connection failure, or a connection the replica refused for good (pg_hba, a password,
 * a database or a TLS setting it does not accept: not retryable there, yet nothing ran and
 * the primary can serve the read), which takes the replica out of rotation; `busy` for no
 * free connection in its pool (it stays in). Anything else is the caller's: the work's own
 * error, a non-retryable one (work cut by close(), an ended scope), fn's own throw.
 */
function replicaFailure(err: unknown): 'down' | 'busy' | undefined {
  if (err instanceof PoolTimeoutError) return 'busy';
  if (err instanceof DatabaseConnectionError && (err.retryable || isPermanentConnectFailure(err))) return 'down';
  return undefined;
}

/**
 * Units of work with read-only routing: a read-only unit (outside any other unit or
 * session of the Db) runs on a replica; if that replica cannot be reached it is taken out of rotation and the unit
 * runs on the primary, in the time the read has left. Re-running is safe because a
 * read-only unit wrote nothing. A SERIALIZABLE unit stays on the primary: a hot standby
 * refuses that isolation level. Once close() has begun nothing falls back: the read fails
 * as work cut by close() does on the primary.
 */
export function routeReads<C>(primary: UnitsOfWork<C>['transaction'], router: ReplicaRouter<C> | undefined, routing: ReadRouting<C>): UnitsOfWork<C>['transaction'] {
  if (!router || router.size === 0) return primary;
  const { defaults } = routing;
  return async <T>(fn: (tx: TxClient<C>) => Promise<T>, opts: TransactionOptions = {}): Promise<T> => {
    const serializable = (opts.isolationLevel ?? defaults.isolationLevel) === 'Serializable';
    if (!opts.readOnly || serializable || routing.inUnit() || routing.inSession()) return primary(fn, opts);
    checkUnitOptions(opts);
    const budget = new ReadBudget(opts.timeoutMs ?? defaults.timeoutMs, opts.maxWaitMs ?? defaults.maxWaitMs);
    const target = await router.pick(budget.lagWaitMs());
    if (target) {
      try {
        return await (routing.unitsOf?.(target) ?? target.units).transaction(fn, budget.options(opts));
      } catch (err) {
        const failure = replicaFailure(err);
        if (failure === undefined) throw err;
        if (routing.closing()) throw routing.closedError(err);
        if (failure === 'down') router.markDown(target, err);
        // The replica used up the read's time: the primary would only fail it again.
        if (budget.left() < 1) throw err;
        target.uncountUnit();
      }
    }
    if (routing.closing()) throw routing.closedError(undefined);
    return primary(fn, budget.options(opts));
  };
}
