// Read replicas. Each replica has its own pool and Prisma client, built exactly like the
// primary's. Read-only units of work go to a healthy replica, round robin; a replica that
// fails or lags past the bound is skipped for a while and reads fall back to the primary.
// Health is learned from the traffic itself plus one lag query per replica at most every
// `lagCheckIntervalMs`, run only when a read is about to be routed: no background loop.

import type { IsolationLevel } from './config.ts';
import { DatabaseConnectionError, PoolTimeoutError } from './errors.ts';
import { inUnitOfWork, type TransactionOptions, type TxClient, type UnitsOfWork } from './unit-of-work.ts';

export interface ReplicaStatus {
  name: string;
  up: boolean;
  lagMs: number | undefined;
  lastError: string | undefined;
}

export interface ReplicaTarget<C> {
  name: string;
  units: UnitsOfWork<C>;
  /** Lag behind the primary in ms (0 when fully replayed). Rejects if unreachable. */
  measureLag(): Promise<number>;
  close(): Promise<void>;
}

interface ReplicaState<C> {
  target: ReplicaTarget<C>;
  downUntil: number;
  lagMs: number | undefined;
  checkedAt: number;
  lastError: string | undefined;
}

export interface ReplicaPolicy {
  maxLagMs: number;
  retryAfterMs: number;
  lagCheckIntervalMs: number;
}

export class ReplicaRouter<C> {
  private readonly states: ReplicaState<C>[];
  private next = 0;

  constructor(targets: ReplicaTarget<C>[], private readonly policy: ReplicaPolicy) {
    this.states = targets.map((target) => ({ target, downUntil: 0, lagMs: undefined, checkedAt: 0, lastError: undefined }));
  }

  get size(): number {
    return this.states.length;
  }

  /** A replica fit to serve a read now, or undefined (read on the primary). */
  async pick(): Promise<ReplicaTarget<C> | undefined> {
    for (let i = 0; i < this.states.length; i++) {
      const state = this.states[(this.next + i) % this.states.length]!;
      if (await this.usable(state)) {
        this.next = (this.next + i + 1) % this.states.length;
        return state.target;
      }
    }
    return undefined;
  }

  private async usable(state: ReplicaState<C>): Promise<boolean> {
    const now = Date.now();
    if (now < state.downUntil) return false;
    if (now - state.checkedAt < this.policy.lagCheckIntervalMs) {
      return state.lagMs !== undefined && state.lagMs <= this.policy.maxLagMs;
    }
    state.checkedAt = now;
    try {
      state.lagMs = await state.target.measureLag();
      if (Number.isNaN(state.lagMs)) throw new Error('not a replica: pg_is_in_recovery() is false');
    } catch (err) {
      this.markDown(state.target, err);
      return false;
    }
    if (state.lagMs > this.policy.maxLagMs) {
      state.lastError = `lagging ${Math.round(state.lagMs)} ms behind the primary (bound ${this.policy.maxLagMs} ms)`;
      return false;
    }
    state.lastError = undefined;
    return true;
  }

  /** Takes a replica out of rotation after a failure; it is probed again later. */
  markDown(target: ReplicaTarget<C>, err: unknown): void {
    const state = this.states.find((s) => s.target === target);
    if (!state) return;
    state.downUntil = Date.now() + this.policy.retryAfterMs;
    state.checkedAt = 0;
    state.lagMs = undefined;
    state.lastError = err instanceof Error ? err.message : String(err);
  }

  status(): ReplicaStatus[] {
    const now = Date.now();
    return this.states.map((s) => ({
      name: s.target.name,
      up: now >= s.downUntil && s.lastError === undefined,
      lagMs: s.lagMs,
      lastError: s.lastError,
    }));
  }

  async close(): Promise<void> {
    await Promise.all(this.states.map((s) => s.target.close()));
  }
}

/**
 * Lag in ms: zero when everything received is replayed (also right after a restart,
 * before streaming resumes, when nothing is pending), else the age of the last replay.
 * The age alone would call an idle primary's replica "lagging".
 */
export const LAG_QUERY = `SELECT CASE
  WHEN NOT pg_is_in_recovery() THEN NULL
  WHEN pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
  ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000, 0)
END::float8 AS lag_ms`;

/**
 * Units of work with read-only routing: a read-only unit (outside any other unit) runs on
 * a replica; if that replica cannot be reached it is taken out of rotation and the unit
 * runs on the primary. Re-running is safe because a read-only unit wrote nothing. A
 * SERIALIZABLE unit stays on the primary: a hot standby refuses that isolation level.
 */
export function routeReads<C>(
  primary: UnitsOfWork<C>['transaction'],
  router: ReplicaRouter<C> | undefined,
  defaultIsolation: IsolationLevel | undefined,
): UnitsOfWork<C>['transaction'] {
  if (!router || router.size === 0) return primary;
  return async <T>(fn: (tx: TxClient<C>) => Promise<T>, opts: TransactionOptions = {}): Promise<T> => {
    const serializable = (opts.isolationLevel ?? defaultIsolation) === 'Serializable';
    if (opts.readOnly && !serializable && !inUnitOfWork()) {
      const target = await router.pick();
      if (target) {
        try {
          return await target.units.transaction(fn, opts);
        } catch (err) {
          if (!(err instanceof DatabaseConnectionError || err instanceof PoolTimeoutError)) throw err;
          router.markDown(target, err);
        }
      }
    }
    return primary(fn, opts);
  };
}
