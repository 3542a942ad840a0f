// The one deadline helper. Every wait on the network or on other work is bounded by it,
// so "what if the peer never answers" has one answer everywhere. Also the deadline of the
// unit of work the caller runs in, which the driver reads for every statement it sends.

import { ContextSlot } from './context.ts';

/** Node's timers fire after 1 ms for anything above this (2^31 - 1 ms, about 24.8 days). */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * `work`, or — when it has not settled within `ms` — a rejection with the error `expire`
 * returns. `expire` is where the caller destroys whatever is stuck (a socket), so nothing
 * keeps waiting behind the caller's back. A late settlement of `work` is swallowed.
 */
export function withDeadline<T>(work: Promise<T>, ms: number, expire: () => Error): Promise<T> {
  if (!Number.isFinite(ms)) return work;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      work.catch(() => {});
      reject(expire());
    }, Math.min(Math.max(ms, 0), MAX_TIMER_MS));
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** Resolves true once `work` settles, or false after `ms` (never rejects). */
export function waitAtMost(work: Promise<unknown>, ms: number): Promise<boolean> {
  const settled = work.then(
    () => true,
    () => true,
  );
  return withDeadline(settled, ms, () => new Error('deadline')).catch(() => false);
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** What a client-side deadline allows beyond the server-side one before the socket is given up. */
export const DEADLINE_GRACE_MS = 750;

/**
 * The running unit of work's limits: when it must be over, and how long it may wait for a
 * connection. Its statements share one client-side deadline (`watch`): one timer per unit,
 * not one per statement, each of which had a duration of its own (the time left) and so a
 * Node timer list of its own. (Measured by instruction counts, the per-statement timers
 * cost no more than about a percent of a unit: this is for tidiness under load, not speed.)
 */
export class UnitLimits {
  /** Set by the pool when it hands the unit its connection: a reused one may have died idle. */
  reused?: boolean;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly watchers = new Set<() => void>();

  constructor(
    /** performance.now() value at which the unit's deadline passes. */
    readonly endsAt: number,
    readonly timeoutMs: number,
    readonly maxWaitMs: number,
  ) {
    // Started with the unit, so every unit with the same timeout has a timer of the same
    // duration: Node keeps one list for them all, however many units run at once.
    this.timer = this.start(timeoutMs + DEADLINE_GRACE_MS);
  }

  /** Milliseconds until a statement sent now is given up: the time left, plus the grace. */
  statementMs(): number {
    return Math.max(0, this.endsAt - performance.now()) + DEADLINE_GRACE_MS;
  }

  /**
   * Calls `expire` when the unit's deadline (plus the grace) passes, unless the returned
   * function is called first (the statement settled). The timer fires once, for every
   * statement then pending.
   */
  watch(expire: () => void): () => void {
    this.watchers.add(expire);
    // Past the deadline (the timer has fired): a late statement still gets the grace.
    this.timer ??= this.start(this.statementMs());
    return () => void this.watchers.delete(expire);
  }

  /** Never keeps the process alive by itself: a pending statement's socket does. */
  private start(ms: number): ReturnType<typeof setTimeout> {
    return setTimeout(() => this.fire(), Math.min(ms, MAX_TIMER_MS)).unref();
  }

  private fire(): void {
    this.timer = undefined;
    const due = [...this.watchers];
    this.watchers.clear();
    for (const expire of due) expire();
  }

  /** The unit is over: no timer is left behind. */
  end(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.watchers.clear();
  }
}

export const unitLimits = new ContextSlot<UnitLimits>();
