// The events of one Db: pg-pool's five lifecycle events (with safe payloads: pids, never
// client objects), `error` with the layer's typed, redacted errors, and `slowQuery`.
// Events are emitted only when someone listens, so an unobserved Db pays nothing.
//
// A listener runs inside the layer's own work: a pool's checkout or release, a statement's
// completion, a COMMIT. A listener (or a logger) that throws must not change what that
// work did: a committed unit reported failed is retried and writes twice; a connection
// whose release threw is never given back. So every listener and logger call is guarded,
// and what one throws is reported (the Db's logger, else a process warning), not raised.

import { EventEmitter } from 'node:events';
import type { DatalayerError } from './errors.ts';
import { classifyError } from './failures.ts';
import type { DbLogger } from './lifecycle.ts';

/** A statement that took at least `thresholdMs`. The SQL text only: never its parameters. */
export interface SlowQueryInfo {
  sql: string;
  /**
   * From handing the statement to the driver until its result: a wait for a free
   * connection (or a new connection's handshake) counts, as the caller waited for it too.
   */
  durationMs: number;
  thresholdMs: number;
  inTransaction: boolean;
  /** The pool it ran on: see PoolName. */
  pool: PoolName;
}

/**
 * Which of the Db's pools an event is about: `'primary'`, or a replica's `name` as
 * db.replicas() shows it (`postgresql://host:port/database`). The Db's events cover all
 * its pools; without it a replica's connections, failures and slow reads would pass for
 * the primary's.
 */
export type PoolName = string;

/** pg-pool's five lifecycle events, re-emitted with safe payloads. */
export interface PoolEvents {
  connect: [info: { pid: number | undefined; pool: PoolName }];
  acquire: [info: { pid: number | undefined; reused: boolean; pool: PoolName }];
  release: [info: { pid: number | undefined; broken: boolean; pool: PoolName }];
  remove: [info: { pid: number | undefined; pool: PoolName }];
  /** Always one of the layer's typed errors, secrets removed; `info.pool`: where it happened. */
  error: [error: DatalayerError, info: { pool: PoolName }];
}

/** Every event `db.on` offers. */
export interface DbEvents extends PoolEvents {
  slowQuery: [info: SlowQueryInfo];
}

export class EventHub {
  private readonly emitter = new EventEmitter<DbEvents>();
  /** Called with every failure reported here, listened to or not (stats' lastError, the logger). */
  onFailure: ((err: DatalayerError, pool: PoolName) => void) | undefined;

  /** `pool`: the pool whose events these are (every payload names it). */
  constructor(
    private readonly logger?: DbLogger,
    readonly pool: PoolName = 'primary',
  ) {}

  /** True when `emit(event)` would reach someone: callers skip building payloads otherwise. */
  wants(event: keyof DbEvents): boolean {
    return this.emitter.listenerCount(event) > 0;
  }

  emit<E extends keyof DbEvents>(event: E, ...args: DbEvents[E]): void {
    if (this.emitter.listenerCount(event) > 0) (this.emitter.emit as (e: E, ...a: DbEvents[E]) => boolean)(event, ...args);
  }

  /** A failure, typed and redacted before anyone sees it. */
  fail(err: unknown): DatalayerError {
    const typed = classifyError(err);
    if (this.onFailure !== undefined) this.guarded('the failure hook', this.onFailure, typed, this.pool);
    this.emit('error', typed, { pool: this.pool });
    return typed;
  }

  /** A call into the application's code (a listener, the logger): what it throws is reported, not raised. */
  guarded<A extends unknown[]>(what: string, fn: (...args: A) => void, ...args: A): void {
    try {
      fn(...args);
    } catch (err) {
      this.listenerFailed(what, err);
    }
  }

  private listenerFailed(what: string, err: unknown): void {
    const message = `${what} threw (ignored: the database work it observed is unaffected): ${err instanceof Error ? err.message : String(err)}`;
    try {
      if (this.logger?.error !== undefined) {
        this.logger.error({ event: 'listener-error', error: message }, message);
        return;
      }
    } catch {
      // The logger is what threw: fall through to the process warning.
    }
    process.emitWarning(message, { code: 'DATALAYER_LISTENER_ERROR' });
  }

  on<E extends keyof DbEvents>(event: E, listener: (...args: DbEvents[E]) => void): () => void {
    const what = `a db.on('${event}') listener`;
    const handler = (...args: unknown[]): void => this.guarded(what, listener as (...a: unknown[]) => void, ...args);
    (this.emitter as unknown as EventEmitter).on(event, handler);
    return () => void (this.emitter as unknown as EventEmitter).off(event, handler);
  }
}
