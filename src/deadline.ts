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
 * One Node timer for waits of one length that mostly come one after another: a
 * connection's statements, a pool's checkouts, a Db's units of work. A setTimeout per wait
 * costs a Timeout and, when it is the only timer of its length (a sequential workload), a
 * Node timer list of its own, created, queued and deleted again for every wait: together
 * about 2 thousand CPU instructions a wait (callgrind, Node 24). Here a wait re-arms the
 * one timer (`refresh()`, which also re-arms a timer that has fired), and its end only
 * forgets the wait: the timer, when it fires with no wait armed, does nothing. A wait that
 * starts while another holds the timer gets a timer of its own. Unref'd: what is waited
 * for (a socket, a connection being opened) keeps the process alive, not its deadline.
 */
export class ReusedTimer {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private armed: (() => void) | undefined;
  /** When the armed wait started (performance.now()). */
  private armedAt = 0;

  constructor(readonly ms: number) {}

  /** Calls `expire` once `ms` have passed, unless the returned function is called first. */
  start(expire: () => void): () => void {
    if (this.armed !== undefined) {
      const own = setTimeout(expire, this.length()).unref();
      return () => clearTimeout(own);
    }
    this.armed = expire;
    this.armedAt = performance.now();
    if (this.timer === undefined) this.timer = setTimeout(this.fire, this.length()).unref();
    else this.timer.refresh();
    return () => {
      if (this.armed === expire) this.armed = undefined;
    };
  }

  /** Node fires at once for lengths past its limit: capped. */
  private length(): number {
    return Math.min(Math.max(this.ms, 0), MAX_TIMER_MS);
  }

  private readonly fire = (): void => {
    const expire = this.armed;
    if (expire === undefined) return;
    // Node runs every timer of a list it found due, after the microtasks the one before
    // queued: a wait armed there (refresh()) by work that timer woke (a statement sent on
    // this connection once another's deadline failed its caller) was cut after 0 ms.
    const left = this.armedAt + this.length() - performance.now();
    if (left > 1) {
      setTimeout(() => this.fireIfStill(expire), left).unref();
      return;
    }
    this.armed = undefined;
    expire();
  };

  private fireIfStill(expire: () => void): void {
    if (this.armed !== expire) return;
    this.armed = undefined;
    expire();
  }
}

/**
 * Reused timers by length, for waits whose length comes from configuration (a handful of
 * values); past `max` lengths, a wait gets a timer of its own.
 */
export class ReusedTimers {
  private readonly byMs = new Map<number, ReusedTimer>();
  constructor(private readonly max = 8) {}

  start(ms: number, expire: () => void): () => void {
    let timer = this.byMs.get(ms);
    if (timer === undefined) {
      timer = new ReusedTimer(ms);
      if (this.byMs.size < this.max) this.byMs.set(ms, timer);
    }
    return timer.start(expire);
  }
}

/** Settings a unit's transaction gets right after BEGIN: one statement, with bind parameters. */
export interface TransactionSettings {
  readonly sql: string;
  readonly values: readonly string[];
  /** Set by a connection that sends them along with BEGIN (driver/begin.ts); else the unit sends them. */
  carried?: boolean;
}

/**
 * The running unit of work's limits: when it must be over, and how long it may wait for a
 * connection. Its statements share one client-side deadline (`watch`): one timer per unit,
 * not one per statement, each of which had a duration of its own (the time left) and so a
 * Node timer list of its own. The unit's timer comes from `timers`, reused by the Db's
 * units one after another (see ReusedTimer).
 */
export class UnitLimits {
  /** Set by the pool when it hands the unit its connection: a reused one may have died idle. */
  reused?: boolean;
  /** That connection. */
  connection?: object;
  /** The unit's settings, for its transaction right after BEGIN (set before the unit starts). */
  settings?: TransactionSettings;
  private stop: (() => void) | undefined;
  /** The pending statements' expiries: the first in `one`, more (a Promise.all in the unit) in `more`. */
  private one: (() => void) | undefined;
  private more: Set<() => void> | undefined;

  constructor(
    /** performance.now() value at which the unit's deadline passes. */
    readonly endsAt: number,
    readonly timeoutMs: number,
    readonly maxWaitMs: number,
    timers: ReusedTimers,
    /** The configuration of the pool the unit runs on (its stack's DbConfig): only that pool's work takes these limits. */
    readonly owner?: object,
    /** The running unit of another Db (or another pool) the caller was in when this one started. */
    readonly enclosing?: UnitLimits,
  ) {
    // Started with the unit, so every unit with the same timeout shares one timer length.
    this.stop = timers.start(timeoutMs + DEADLINE_GRACE_MS, this.fire);
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
    if (this.one === undefined) this.one = expire;
    else (this.more ??= new Set()).add(expire);
    // Past the deadline (the timer has fired): a late statement still gets the grace.
    this.stop ??= new ReusedTimer(this.statementMs()).start(this.fire);
    return () => {
      if (this.one === expire) this.one = undefined;
      else this.more?.delete(expire);
    };
  }

  private readonly fire = (): void => {
    this.stop = undefined;
    const due = [this.one, ...(this.more ?? [])];
    this.one = undefined;
    this.more?.clear();
    for (const expire of due) expire?.();
  };

  /** The unit settled: work it left behind (a timer) is no longer its. */
  ended = false;
  /** The session connection this unit holds, when it runs inside a session (pool.ts): its plain statements go there. */
  lease?: object;

  /** The unit is over: its timer is released. */
  end(): void {
    this.ended = true;
    this.stop?.();
    this.stop = undefined;
    this.one = undefined;
    this.more?.clear();
  }
}

export const unitLimits = new ContextSlot<UnitLimits>();

/**
 * The limits of the caller's unit of work on the pool built from `owner` (that pool's
 * DbConfig), if it runs in one. A unit of another Db the caller runs in (an audit
 * database's unit inside the application's, or the reverse) is not it: its deadline, its
 * maxWaitMs and its connection are its own pool's, and this pool's checkouts and
 * statements keep their own. One context read, and one step per unit of another Db
 * nested in between (nearly always none).
 */
export function unitLimitsOn(owner: object): UnitLimits | undefined {
  let unit = unitLimits.get();
  while (unit !== undefined && unit.owner !== owner) unit = unit.enclosing;
  return unit;
}
