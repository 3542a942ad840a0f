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
//   connections, so a statement still running fails too.
//
// In pooled mode a scope borrows from the pool as usual (no connection is kept for the
// scope: the pool already keeps them warm between invocations, and holding one across a
// request's non-database work would starve other requests); the end and the timeout apply
// the same way — refusal afterwards, busy connections destroyed.

import { ContextSlot } from './context.ts';
import { MAX_TIMER_MS, waitAtMost, withDeadline } from './deadline.ts';
import { destroySocket } from './driver/client.ts';
import { ConfigError, DeadlineExceededError, ScopeEndedError, type ConfigIssue } from './errors.ts';
import { wholeOption } from './unit-options.ts';
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

/** The scope the caller runs in, if any. */
export function currentScope(): ConnectionScope | undefined {
  return active.get();
}

/** One connection taken by a scope. */
interface Held {
  readonly pool: GuardedPool;
  readonly raw: PoolClient;
  /** What the statement, unit or session using it sees: its release hands it back to the scope. */
  readonly client: PoolClient;
  inUse: boolean;
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>;
  isClosed: boolean;
  /** Handed back to the pool for good. */
  dropped: boolean;
}

export class ConnectionScope {
  private readonly held: Held[] = [];
  private ended: Error | undefined;

  /** `keep`: connections stay with the scope between statements (serverless mode). */
  constructor(private readonly keep: boolean) {}

  /** A connection of `pool` for one statement, unit or session inside the scope. */
  async take(pool: GuardedPool): Promise<Checkout> {
    if (this.ended) throw this.ended;
    const idle = this.held.find((h) => h.pool === pool && !h.inUse && !h.isClosed);
    if (idle) {
      idle.inUse = true;
      return { client: idle.client, reused: true };
    }
    const { client: raw, reused } = await pool.checkout();
    if (this.ended) {
      raw.release();
      throw this.ended;
    }
    const held = this.hold(pool, raw);
    this.held.push(held);
    return { client: held.client, reused };
  }

  private hold(pool: GuardedPool, raw: PoolClient): Held {
    // A socket error while the scope keeps it idle cannot crash the process: the pool gave
    // every connection a listener for its whole life (pool.ts listen()).
    let held!: Held;
    const closed = new Promise<void>((resolve) => {
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
    held = { pool, raw, client, inUse: true, closed, isClosed: false, dropped: false };
    return held;
  }

  private giveBack(held: Held, err?: Error | boolean): void {
    if (!held.inUse) return;
    held.inUse = false;
    if (this.keep && !err && !this.ended && !held.isClosed) return;
    this.drop(held, err);
  }

  /** Hands the connection back to the pool for good (serverless: the pool closes it). */
  private drop(held: Held, err?: Error | boolean): void {
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
    if (this.ended) return;
    this.ended = reason;
    const closing: Promise<void>[] = [];
    for (const held of [...this.held]) {
      if (this.keep && !held.isClosed) closing.push(held.closed);
      if (held.inUse) {
        destroySocket(held.raw, reason);
      } else {
        this.drop(held);
      }
    }
    if (closing.length > 0) await waitAtMost(Promise.all(closing), CLOSE_WAIT_MS);
  }

  /** Runs `fn` in this scope, bounded by `timeoutMs`; ends the scope however `fn` ends. */
  async run<T>(fn: () => Promise<T>, timeoutMs: number | undefined): Promise<T> {
    let expired: DeadlineExceededError | undefined;
    const work = active.run(this, fn);
    try {
      return timeoutMs === undefined
        ? await work
        : await withDeadline(work, timeoutMs, () => (expired = new DeadlineExceededError('scope', timeoutMs)));
    } finally {
      await this.end(expired ?? new ScopeEndedError());
    }
  }
}

/** `db.scope(fn, options)`: `serverless` keeps the scope's connections between its statements. */
export function runScope<T>(serverless: boolean, fn: () => Promise<T>, options: ScopeOptions = {}): Promise<T> {
  const timeoutMs = checkTimeout(options.timeoutMs);
  // A scope inside a scope is the outer one: one invocation, one set of connections.
  if (currentScope()) return fn();
  return new ConnectionScope(serverless).run(fn, timeoutMs);
}

/** Checked before anything runs, like a unit's options. */
function checkTimeout(ms: unknown): number | undefined {
  const issues: ConfigIssue[] = [];
  wholeOption(issues, 'scope option timeoutMs', ms, 1, MAX_TIMER_MS, 'milliseconds', '10000');
  if (issues.length > 0) throw new ConfigError(issues);
  return ms as number | undefined;
}
