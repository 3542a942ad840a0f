// Invocation scopes: `db.scope(fn)` and `db.handler(fn)`. A serverless invocation opens
// one connection, not one per statement: inside a scope every statement, unit of work and
// session takes its connection from the scope, which keeps the connections it opened for
// the scope's next statement instead of closing them, and closes them all when the scope
// ends — resolved, thrown or timed out. Nothing is held between invocations.
//
// - Lazy: a scope opens a connection when its first statement needs one. A handler that
//   sends nothing opens nothing, and on Neon with `httpQueries` single statements go over
//   HTTP (no connection at all) while a unit of work takes the scope's WebSocket connection.
// - Sequential work shares one connection; work the function runs in parallel (a
//   Promise.all of units) takes a second one rather than waiting: two units never share a
//   connection, and a statement never lands inside another unit's transaction.
// - When the scope ends, idle connections are closed and awaited (bounded); connections
//   still busy with statements the function did not await are destroyed. Statements sent
//   after the end are refused: a late statement must not open a connection nobody closes.
// - `timeoutMs`: the scope rejects with DeadlineExceededError('scope') and destroys its
//   connections, so a statement still running fails too. A scope nested in a running one
//   only rejects (its work goes on in the outer scope): `outcome: 'unknown'`.
// - A connection the scope hands out is a wrapper; `rawConnectionOf` gives the pool's own.
//
// A pooled pool's connections are borrowed as usual (none is kept for the scope: the pool
// already keeps them warm between invocations, and holding one across a request's
// non-database work would starve other requests); the end and the timeout apply the same
// way — refusal afterwards, busy connections destroyed. Which it is, kept or borrowed, is
// the mode of the pool the connection comes from, not of the Db that opened the scope: a
// scope holds the work of every Db run in it (an application database and an audit one).

import { ContextSlot } from './context.ts';
import { waitAtMost, withDeadline } from './deadline.ts';
import { abandon } from './driver/client.ts';
import { DeadlineExceededError, ScopeEndedError } from './errors.ts';
import { timeoutOption } from './unit-options.ts';
import type { Checkout, GuardedPool, PoolClient } from './pool.ts';

export interface ScopeOptions {
  /**
   * The scope's deadline: when it passes, the scope rejects with DeadlineExceededError
   * (`deadline: 'scope'`) and its connections are destroyed. Default: none.
   */
  timeoutMs?: number;
}

/** How long the end of a scope waits for its connections' sockets to close. */
const CLOSE_WAIT_MS = 1_000;

const active = new ContextSlot<ConnectionScope>();

/** The pool's connection under a scope's wrapper (pool.ts marks the pool's own). */
const wrapped = new WeakMap<object, PoolClient>();

export function rawConnectionOf(client: object): object {
  return wrapped.get(client) ?? client;
}

/** The scopes' connections, by the pool's own: `releaseKeptIdle` finds whether one is kept idle. */
const heldBy = new WeakMap<object, Held>();

/**
 * db.$disconnect() (pool.ts): a connection a scope keeps idle between its statements goes
 * back to its pool now, which closes it; the scope opens another if it needs one.
 */
export function releaseKeptIdle(raw: object): void {
  const held = heldBy.get(raw);
  if (held !== undefined && !held.inUse) held.scope.drop(held);
}

/** The scope the caller runs in, if any. */
export function currentScope(): ConnectionScope | undefined {
  return active.get();
}

/** One connection taken by a scope. */
interface Held {
  readonly scope: ConnectionScope;
  readonly pool: GuardedPool;
  readonly raw: PoolClient;
  /** What the statement, unit or session using it sees: its release hands it back to the scope. */
  readonly client: PoolClient;
  inUse: boolean;
  /** Kept between statements: its pool is in serverless mode (it closes connections on release). */
  readonly keep: boolean;
  /** Resolves when the socket has closed (a kept connection's; a borrowed one lives on in its pool). */
  readonly closed: Promise<void>;
  isClosed: boolean;
  /** Handed back to the pool for good. */
  dropped: boolean;
}

export class ConnectionScope {
  private readonly held: Held[] = [];
  /** Why the scope ended (what its busy connections are destroyed with); undefined while it runs. */
  private endedBy: Error | undefined;
  /** Checkouts under way, by whether their pool's connections are kept: the end waits for those (bounded), then closes what they got. */
  private readonly opening = new Map<Promise<unknown>, boolean>();
  /** What else the scope's end must stop: HTTP statements in flight (Neon), told the reason. */
  private readonly watchers = new Set<(reason: Error) => void>();

  get isEnded(): boolean {
    return this.endedBy !== undefined;
  }

  /** A connection of `pool` for one statement, unit or session inside the scope. */
  async take(pool: GuardedPool): Promise<Checkout> {
    if (this.isEnded) throw new ScopeEndedError();
    const idle = this.held.find((h) => h.pool === pool && !h.inUse && !h.isClosed);
    if (idle) {
      idle.inUse = true;
      return { client: idle.client, reused: true };
    }
    const checkout = pool.checkout();
    this.opening.set(checkout, pool.serverless);
    let got: Checkout;
    try {
      got = await checkout;
    } finally {
      this.opening.delete(checkout);
    }
    if (this.isEnded) {
      got.client.release();
      throw new ScopeEndedError();
    }
    const held = this.hold(pool, got.client);
    this.held.push(held);
    return { client: held.client, reused: got.reused };
  }

  /**
   * Work the scope does not hold a connection for (an HTTP statement) is sent in it: refused
   * once the scope ended; `stop` is told the scope's end while it runs. Returns its unwatch.
   */
  watch(stop: (reason: Error) => void): () => void {
    if (this.isEnded) throw new ScopeEndedError();
    this.watchers.add(stop);
    return () => this.watchers.delete(stop);
  }

  private hold(pool: GuardedPool, raw: PoolClient): Held {
    // A socket error while the scope keeps it idle cannot crash the process: the pool gave
    // every connection a listener for its whole life (pool.ts listen()).
    let held!: Held;
    // Only a kept connection is watched: a pooled one lives on after the scope, and a
    // listener per scope would pile up on it.
    const keep = pool.serverless;
    const closed = !keep
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          raw.once?.('end', () => {
            held.isClosed = true;
            // Closed under the scope while idle (db.close() past its deadline, the server
            // going away): give it back now, so the pool can count it closed and end.
            if (!held.inUse) this.drop(held, new Error('the connection closed while the scope kept it'));
            resolve();
          });
        });
    const client: PoolClient = {
      query: (text, values) => raw.query(text, values),
      release: (err) => this.giveBack(held, err),
      on: (event, listener) => raw.on(event, listener),
      removeListener: (event, listener) => raw.removeListener(event, listener),
      get processID() {
        return raw.processID;
      },
      get connection() {
        return raw.connection;
      },
    };
    held = { scope: this, pool, raw, client, inUse: true, keep, closed, isClosed: false, dropped: false };
    wrapped.set(client, raw);
    // Only a kept connection is ever held idle.
    if (keep) heldBy.set(raw, held);
    return held;
  }

  private giveBack(held: Held, err?: Error | boolean): void {
    if (!held.inUse) return;
    held.inUse = false;
    // Kept for the scope's next statement, unless work waits for a slot of a full pool
    // (maybe this scope's own, in a Promise.all wider than the pool): then it frees one;
    // or db.$disconnect() is closing it.
    if (held.keep && !err && !this.isEnded && !held.isClosed && !held.pool.hasWaiters() && !held.pool.retires(held.raw)) return;
    this.drop(held, err);
  }

  /** Hands the connection back to the pool for good (serverless: the pool closes it). Also releaseKeptIdle's. */
  drop(held: Held, err?: Error | boolean): void {
    if (held.dropped) return;
    held.dropped = true;
    const at = this.held.indexOf(held);
    if (at >= 0) this.held.splice(at, 1);
    held.raw.release(err);
  }

  /**
   * Ends the scope: idle connections go back (closed in serverless mode), busy ones are
   * destroyed with `reason` and go back when their user lets go. Resolves once the kept
   * connections' sockets have closed, or after a bounded wait.
   */
  async end(reason: Error): Promise<void> {
    if (this.isEnded) return;
    this.endedBy = reason;
    for (const stop of this.watchers) stop(reason);
    this.watchers.clear();
    // A connection still being opened is closed as soon as it arrives (take); in serverless mode waited for, bounded.
    const closing: Promise<unknown>[] = [...this.opening].flatMap(([c, keep]) => (keep ? [c.catch(() => undefined)] : []));
    for (const held of [...this.held]) {
      if (held.keep && !held.isClosed) closing.push(held.closed);
      if (held.inUse) {
        abandon(held.raw, ownError(reason));
      } else {
        this.drop(held);
      }
    }
    if (closing.length > 0) await waitAtMost(Promise.all(closing), CLOSE_WAIT_MS);
  }

  /** Is work of the scope on the database right now: a connection in use, an HTTP statement? */
  private busy(): boolean {
    return this.watchers.size > 0 || this.held.some((h) => h.inUse);
  }

  /**
   * The scope's deadline error. With work still on the database, that work may have
   * happened (an autocommit write, a COMMIT): `outcome: 'unknown'`, not retryable.
   */
  private expired(timeoutMs: number): DeadlineExceededError {
    return this.busy() ? new DeadlineExceededError('scope', timeoutMs, { outcome: 'unknown', retryable: false }) : new DeadlineExceededError('scope', timeoutMs);
  }

  /** Runs `fn` in this scope, bounded by `timeoutMs`; ends the scope however `fn` ends. */
  async run<T>(fn: () => Promise<T>, timeoutMs: number | undefined): Promise<T> {
    let expired: DeadlineExceededError | undefined;
    // A function that throws before returning ends the scope too (it may have started work).
    let work: Promise<T>;
    try {
      work = active.run(this, fn);
    } catch (err) {
      work = Promise.reject(err);
    }
    try {
      return timeoutMs === undefined ? await work : await withDeadline(work, timeoutMs, () => (expired = this.expired(timeoutMs)));
    } finally {
      await this.end(expired ?? new ScopeEndedError());
    }
  }
}

/**
 * The error work still running on a connection at the scope's end fails with: one of its
 * own, like the scope's. The work completes it (a unit of work sets its outcome,
 * 'rolled-back', and its correlation id); shared, that rewrote the error the scope's caller
 * holds, whose 'unknown' says that other work (an autocommit statement) may have happened.
 * (An HTTP statement, never part of a unit, gets the scope's own.)
 */
function ownError(reason: Error): Error {
  if (reason instanceof DeadlineExceededError) {
    return new DeadlineExceededError(reason.deadline, reason.timeoutMs, { retryable: reason.retryable, ...(reason.outcome === undefined ? {} : { outcome: reason.outcome }) });
  }
  return reason instanceof ScopeEndedError ? new ScopeEndedError() : reason;
}

/** The scope's options checked: a ConfigError (named after `what`, scope or handler) for any that is not one. */
export function checkScopeOptions(options: ScopeOptions, what: 'scope' | 'handler' = 'scope'): number | undefined {
  return timeoutOption(options, what, 10_000);
}

/** `db.scope(fn, options)`: a serverless pool's connections stay with the scope between its statements. */
export function runScope<T>(fn: () => Promise<T>, options: ScopeOptions = {}): Promise<T> {
  const timeoutMs = checkScopeOptions(options);
  const outer = currentScope();
  // A scope inside a running scope is the outer one: one invocation, one set of
  // connections; its own deadline still holds for it. A scope opened after the outer one
  // ended (from a timer it left behind) is a new one.
  if (outer !== undefined && !outer.isEnded) {
    const work = new Promise<T>((resolve) => resolve(fn()));
    // Its work goes on in the outer scope after the deadline: it may still happen.
    return timeoutMs === undefined ? work : withDeadline(work, timeoutMs, () => new DeadlineExceededError('scope', timeoutMs, { outcome: 'unknown', retryable: false }));
  }
  return new ConnectionScope().run(fn, timeoutMs);
}
