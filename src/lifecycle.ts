// Shutdown: a gate in front of units of work and statements, and the close sequence.
// Once close() starts, new work gets a DatabaseClosedError while work already running
// (and anything it starts, such as a nested unit) carries on until the deadline; then
// every connection still busy is destroyed and the pools end. close() always resolves
// by its deadline plus a bounded grace period, whatever the network does.

import { constants as osConstants } from 'node:os';
import { ContextSlot } from './context.ts';
import { MAX_TIMER_MS, waitAtMost } from './deadline.ts';
import { ConfigError, DatabaseClosedError, PoolTimeoutError, type ConfigIssue } from './errors.ts';
import type { LifecycleState } from './stats.ts';
import { describeError } from './stats.ts';
import { describe, wholeOption } from './unit-options.ts';

export interface CloseOptions {
  /**
   * How long to wait for units of work and statements already running before their
   * connections are closed under them. Default 10 000 ms.
   */
  deadlineMs?: number;
}

export interface CloseOnSignalsOptions extends CloseOptions {
  /** Default SIGTERM and SIGINT. */
  signals?: NodeJS.Signals[];
}

/** One logging call shape that pino (`warn(obj, msg)`) and console (`warn(...data)`) both accept. */
export type LogMethod = (details: Record<string, unknown>, message: string) => void;

/** A pino-style or console logger. Only `warn` is required; `error` and `info` are used when present. */
export interface DbLogger {
  warn: LogMethod;
  error?: LogMethod;
  info?: LogMethod;
}

export const DEFAULT_CLOSE_DEADLINE_MS = 10_000;
const noop = (): void => {};
/** After the deadline, busy connections are destroyed; this bounds the wait for the pools to finish. */
const FORCE_GRACE_MS = 1_000;

/** The lifecycles (one per Db) that admitted the caller's work, innermost first. */
interface Admission {
  readonly by: Lifecycle;
  readonly outer: Admission | undefined;
}
const admissions = new ContextSlot<Admission>();

export interface Shutdown {
  /** Destroys connections still in use; returns how many. */
  destroyBusy(): number;
  /** Ends every pool (and Prisma's engine). */
  end(): Promise<void>;
  /** Resolves once no connection is open any more. */
  allClosed(): Promise<void>;
}

export class Lifecycle {
  private current: LifecycleState = 'open';
  private inFlight = 0;
  private drained: (() => void) | undefined;
  private closing: Promise<void> | undefined;
  constructor(private readonly logger: DbLogger | undefined) {}

  get state(): LifecycleState {
    return this.current;
  }

  /** Is new work refused here (closed, and not part of work admitted earlier)? */
  refuses(): boolean {
    return this.current !== 'open' && !this.admitted();
  }

  /** Does the caller's work belong to work this lifecycle admitted (before close(), or not)? What it starts is admitted too. */
  private admitted(): boolean {
    for (let a = admissions.get(); a !== undefined; a = a.outer) if (a.by === this) return true;
    return false;
  }

  /**
   * Admits one piece of work; the returned function marks it done. While open (every
   * statement's path) this is a counter and a shared function: the async context is read
   * only once close() has begun, to let work admitted earlier finish what it started.
   */
  enter(): () => void {
    if (this.current === 'open') {
      this.inFlight++;
      return this.leave;
    }
    if (this.admitted()) return noop;
    throw new DatabaseClosedError();
  }

  private readonly leave = (): void => {
    this.inFlight--;
    if (this.inFlight === 0) this.drained?.();
  };

  /** Wraps a unit-of-work entry point (transaction, session) with the gate. */
  guard<A extends unknown[], R>(fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
    // Not an async function: one `then` instead of an async frame and an await per unit.
    return (...args: A): Promise<R> => {
      let leave: () => void;
      let work: Promise<R>;
      try {
        leave = this.enter();
      } catch (err) {
        return Promise.reject(err as Error);
      }
      try {
        work = admissions.run({ by: this, outer: admissions.get() }, () => fn(...args));
      } catch (err) {
        leave();
        return Promise.reject(err as Error);
      }
      return work.then(
        (value) => {
          leave();
          return value;
        },
        (err: unknown) => {
          leave();
          throw this.current !== 'open' && err instanceof PoolTimeoutError ? closedWhileWaiting(err) : err;
        },
      );
    };
  }

  /** Drains, then shuts down. Idempotent. Options that are not what they name: a ConfigError, and nothing closes. */
  close(options: CloseOptions | undefined, shutdown: Shutdown): Promise<void> {
    let deadlineMs: number;
    try {
      deadlineMs = closeDeadline(options, 'close');
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return (this.closing ??= this.runClose(deadlineMs, shutdown));
  }

  private async runClose(deadlineMs: number, shutdown: Shutdown): Promise<void> {
    this.current = 'closing';
    this.logger?.info?.({ event: 'close', inFlight: this.inFlight, deadlineMs }, 'closing database: draining work in flight');
    const drained = this.inFlight === 0 || (await waitAtMost(new Promise<void>((resolve) => (this.drained = resolve)), deadlineMs));
    this.drained = undefined;
    if (!drained) {
      const destroyed = shutdown.destroyBusy();
      this.logger?.warn({ event: 'close', inFlight: this.inFlight, deadlineMs, connectionsEnded: destroyed }, 'close deadline passed: closing connections still in use');
    }
    // pg-pool's end() resolves once its list of clients is empty, before their sockets have
    // finished closing: wait for those too, so that "closed" means no socket left — bounded.
    await waitAtMost(shutdown.end(), FORCE_GRACE_MS);
    await waitAtMost(shutdown.allClosed(), FORCE_GRACE_MS);
    this.current = 'closed';
    this.logger?.info?.({ event: 'close', drained }, 'database closed');
  }

  /**
   * db.$disconnect(): as Prisma's, it closes the connections and leaves the Db usable (the
   * next query connects again), where close() is the end. `disconnect` closes every pool's
   * connections, waiting for those in use (pool.ts). Bounded by close()'s default deadline:
   * work that holds its connection longer (a session, Prisma's own $transaction around
   * the call) keeps it until it releases it, then it closes. Once close() has begun, it
   * resolves with that close.
   */
  async disconnect(disconnect: () => Promise<unknown>): Promise<void> {
    if (this.current !== 'open') return this.closing;
    const deadlineMs = DEFAULT_CLOSE_DEADLINE_MS;
    if (!(await waitAtMost(disconnect(), deadlineMs))) {
      this.logger?.warn({ event: 'disconnect', deadlineMs }, 'db.$disconnect(): connections still in use after the deadline close as their work releases them');
    }
    // A close() begun meanwhile ended the pools (which ends the wait above): resolved once it is over.
    if (this.current !== 'open') await this.closing;
  }

  /**
   * Registers close-on-signal handlers; returns a function that removes them. Until the
   * close a signal started has ended, this Db keeps a listener on each of its signals: a
   * repeated SIGTERM (a process group's and its parent's, an impatient operator) would
   * otherwise meet Node's default action and end the process mid-drain, and so would the
   * re-raised signal of another Db whose close ended first. The signal is raised again
   * once the last such close has ended and nobody else listens for it.
   */
  closeOnSignals(close: (options: CloseOptions) => Promise<void>, options: CloseOnSignalsOptions = {}): () => void {
    const { deadlineMs, signals } = checkCloseOnSignals(options);
    const handlers = new Map<NodeJS.Signals, () => void>();
    const remove = (): void => {
      for (const [signal, handler] of handlers) process.removeListener(signal, handler);
      handlers.clear();
    };
    const start = (signal: NodeJS.Signals): void => {
      remove();
      this.logger?.info?.({ event: 'signal', signal }, `${signal} received: closing database`);
      // Signals arriving while this close runs: noted, not fatal (the close is bounded by its deadline).
      const repeat = (again: NodeJS.Signals): void => void this.logger?.info?.({ event: 'signal', signal: again }, `${again} received: already closing the database`);
      for (const s of signals) process.on(s, repeat);
      void close({ deadlineMs })
        .catch((err: unknown) => this.logger?.error?.({ event: 'close', error: describeError(err).message }, 'close failed'))
        .finally(() => {
          for (const s of signals) process.removeListener(s, repeat);
          // Our listener replaced Node's default action (exit). With nobody else
          // handling the signal, let it take effect now that the pool is closed.
          if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
        });
    };
    for (const signal of signals) {
      const handler = (): void => start(signal);
      handlers.set(signal, handler);
      process.once(signal, handler);
    }
    return remove;
  }
}

/**
 * closeOnSignals' options, checked when the handlers are registered (at startup, in
 * createDb for its `closeOnSignals` option): at the signal it is too late to say so.
 */
export function checkCloseOnSignals(options: CloseOnSignalsOptions): { deadlineMs: number; signals: NodeJS.Signals[] } {
  const deadlineMs = closeDeadline(options, 'closeOnSignals');
  return { deadlineMs, signals: checkSignals(options.signals) };
}

/** Signals a process can catch: SIGKILL and SIGSTOP cannot be (Node throws EINVAL). */
const CATCHABLE = new Set(Object.keys(osConstants.signals).filter((name) => name !== 'SIGKILL' && name !== 'SIGSTOP'));

/**
 * The signals to close on. A name that is no signal ('sigterm', 'SIGTEM') registered a
 * listener for an event that never comes: the real SIGTERM then ended the process with
 * nothing drained. SIGKILL / SIGSTOP made Node throw its own EINVAL with the handlers
 * before it already registered; an empty list registered nothing at all.
 */
function checkSignals(signals: unknown): NodeJS.Signals[] {
  if (signals === undefined) return ['SIGTERM', 'SIGINT'];
  const bad = (problem: string): ConfigError => new ConfigError([{ setting: 'closeOnSignals option signals', problem }]);
  if (!Array.isArray(signals) || signals.length === 0) throw bad(`must be a non-empty list of signal names such as ['SIGTERM', 'SIGINT'] (got ${Array.isArray(signals) ? 'an empty list' : describe(signals)})`);
  for (const signal of signals as unknown[]) {
    if (typeof signal !== 'string' || !CATCHABLE.has(signal)) {
      throw bad(`${typeof signal === 'string' && /^[A-Za-z0-9]{1,16}$/.test(signal) ? JSON.stringify(signal) : describe(signal)} is not a signal a process can catch (e.g. 'SIGTERM', 'SIGINT', 'SIGHUP')`);
    }
  }
  return [...new Set(signals as NodeJS.Signals[])];
}

/**
 * close()'s deadline, checked: a whole number of milliseconds from 0 (cut at once) to what
 * Node's timers honour. NaN (an unset variable through Number()), Infinity or a string
 * reached the deadline's timer as no deadline at all: close() then waited for work in flight
 * for as long as it ran, where the README promises its deadline plus about a second.
 */
function closeDeadline(options: unknown, what: string): number {
  if (options === undefined) return DEFAULT_CLOSE_DEADLINE_MS;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new ConfigError([{ setting: `${what} options`, problem: `must be an object such as { deadlineMs: ${DEFAULT_CLOSE_DEADLINE_MS} } (got ${describe(options)})` }]);
  }
  const deadlineMs = (options as CloseOptions).deadlineMs;
  const issues: ConfigIssue[] = [];
  // A misspelt option was dropped: `deadline: 0` closed after the 10 s default, `signal: ['SIGUSR2']` listened for SIGTERM and SIGINT.
  const known = what === 'close' ? ['deadlineMs'] : ['deadlineMs', 'signals'];
  for (const name of Object.keys(options)) {
    if (known.includes(name)) continue;
    const near = known.find((k) => k.startsWith(name) || name.startsWith(k.slice(0, -1)));
    issues.push({ setting: `${what} option ${name}`, problem: `is not an option of ${what}${near === undefined ? '' : `: did you mean ${near}?`} (it takes ${known.join(', ')})` });
  }
  wholeOption(issues, `${what} option deadlineMs`, deadlineMs, 0, MAX_TIMER_MS, 'milliseconds', String(DEFAULT_CLOSE_DEADLINE_MS));
  if (issues.length > 0) throw new ConfigError(issues);
  return deadlineMs ?? DEFAULT_CLOSE_DEADLINE_MS;
}

/**
 * A unit still waiting for a connection when close() ended the pools: Prisma gives up its
 * start ("Unable to start a transaction in the given time", typed as a pool timeout, which
 * says "retry"). It never started, and this Db will not run it again.
 */
function closedWhileWaiting(err: PoolTimeoutError): DatabaseClosedError {
  return new DatabaseClosedError({ correlationId: err.correlationId, whileWaiting: true, cause: err });
}
