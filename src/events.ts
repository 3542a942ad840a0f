// Operations: what a running service needs to see and control of its Db.
//
// - Statement counters and the slow-query event come from a thin wrapper around the
//   driver adapter (the one place every statement Prisma sends passes through, inside a
//   transaction or not), so they count what really went to the server.
// - The logger gets structured objects (pino's `logger.warn(obj, msg)`, which console
//   also accepts). Nothing here ever logs statement parameters: the adapter hands us
//   the SQL text with $1 placeholders and the values separately, and only the text is
//   used, after secret removal.
// - Shutdown: a gate in front of units of work and statements. Once close() starts, new
//   work gets a DatabaseClosedError while work already running (and anything it starts,
//   such as a nested unit) carries on until the deadline; then every connection closes.

import { AsyncLocalStorage } from 'node:async_hooks';
import { EventEmitter } from 'node:events';
import type {
  SqlDriverAdapter,
  SqlDriverAdapterFactory,
  SqlQuery,
  SqlResultSet,
  Transaction,
} from '@prisma/driver-adapter-utils';
import type { DbConfig } from './config.ts';
import { DatabaseConnectionError, DatalayerError } from './errors.ts';
import type { PoolCounters, PoolEvents, PoolFigures, PoolMonitor } from './pool.ts';
import { redact } from './redact.ts';

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
}

/** Every event `db.on` offers: pg-pool's lifecycle events plus the slow-query event. */
export interface DbEvents extends PoolEvents {
  slowQuery: [info: SlowQueryInfo];
}

/** One logging call shape that pino (`warn(obj, msg)`) and console (`warn(...data)`) both accept. */
export type LogMethod = (details: Record<string, unknown>, message: string) => void;

/** A pino-style or console logger. Only `warn` is required; `error` and `info` are used when present. */
export interface DbLogger {
  warn: LogMethod;
  error?: LogMethod;
  info?: LogMethod;
}

/** The most recent failure, fit for a log line or a status page. */
export interface LastError {
  /** `connection`, `pool-timeout`, `query`, ...: the layer's error kind, or `driver`. */
  kind: string;
  /** Secrets removed; quoted literals (which may be user data) replaced by `…`. */
  message: string;
  sqlState?: string;
  /** ISO 8601 time of the failure. */
  at: string;
}

export interface DbCounters extends PoolCounters {
  /** Units of work started (nested ones join their outer unit and are not counted). */
  transactions: number;
  commits: number;
  rollbacks: number;
  /** Re-runs of a unit after a serialization failure or deadlock. */
  retries: number;
  /** Statements Prisma sent through the adapter (including COMMIT / ROLLBACK of units). */
  queries: number;
  /** Statements that failed (server errors and lost connections alike). */
  queryErrors: number;
  /** Statements at or above the slow-query threshold. */
  slowQueries: number;
}

export interface DbStats {
  pool: PoolFigures;
  counters: DbCounters;
  /** `null` until something fails. */
  lastError: LastError | null;
  /** `open`, `closing` (draining after close()) or `closed`. */
  state: LifecycleState;
}

export type LifecycleState = 'open' | 'closing' | 'closed';

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

/** Raised to work started after `db.close()`: the Db accepts nothing new. Not retryable. */
export class DatabaseClosedError extends DatabaseConnectionError {
  constructor(correlationId?: string) {
    super('The database client is closed (db.close() was called): no new work is accepted', {
      retryable: false,
      ...(correlationId === undefined ? {} : { correlationId }),
    });
  }
}

export const DEFAULT_CLOSE_DEADLINE_MS = 10_000;
/** After the deadline, connections are ended; this bounds the wait for the pool to notice. */
const FORCE_GRACE_MS = 1_000;
const MAX_SQL_LENGTH = 2_000;

type SessionCounters = Pick<DbCounters, 'transactions' | 'commits' | 'rollbacks' | 'retries'>;

/** The part of a pg-pool pool `close` needs when the deadline passes. */
interface ObservablePool {
  on(event: 'acquire', listener: (client: EndableClient) => void): unknown;
  on(event: 'release', listener: (err: unknown, client: EndableClient) => void): unknown;
  on(event: 'remove', listener: (client: EndableClient) => void): unknown;
}
interface EndableClient {
  end?: () => Promise<void> | void;
}

export interface Operations {
  /** The adapter factory with counting, slow-query timing and the close gate. */
  instrument(factory: SqlDriverAdapterFactory): SqlDriverAdapterFactory;
  /** Wraps a unit-of-work entry point (transaction, session) with the close gate. */
  guard<F extends (...args: never[]) => Promise<unknown>>(fn: F): F;
  on<E extends keyof DbEvents>(event: E, listener: (...args: DbEvents[E]) => void): () => void;
  stats(sessions: SessionCounters): DbStats;
  readonly state: LifecycleState;
  /** Drains, then runs `shutdown` (which closes the connections). Idempotent. */
  close(options: CloseOptions | undefined, shutdown: () => Promise<void>): Promise<void>;
  /** Registers close-on-signal handlers; returns a function that removes them. */
  closeOnSignals(close: (options: CloseOptions) => Promise<void>, options?: CloseOnSignalsOptions): () => void;
}

export function createOperations(config: DbConfig, monitor: PoolMonitor, logger?: DbLogger): Operations {
  const own = new EventEmitter<Pick<DbEvents, 'slowQuery'>>();
  const counters = { queries: 0, queryErrors: 0, slowQueries: 0 };
  const threshold = config.slowQueryMs;
  let lastError: LastError | null = null;
  let state: LifecycleState = 'open';
  let inFlight = 0;
  let drained: (() => void) | undefined;
  let closing: Promise<void> | undefined;
  /** Marks the async context of work admitted before close(): what it starts is admitted too. */
  const admitted = new AsyncLocalStorage<true>();
  /** Connections checked out of the pool(s) right now: ended if the deadline passes. */
  const checkedOut = new Set<EndableClient>();
  const watchedPools = new WeakSet<object>();

  const record = (err: unknown): void => {
    lastError = describeError(err);
  };
  // Connection-level failures the pool reports (idle sockets dying, failed connects).
  monitor.events.on('error', (err) => {
    record(err);
    logger?.error?.({ event: 'error', kind: lastError?.kind, error: lastError?.message }, 'database error');
  });

  function enter(): () => void {
    if (admitted.getStore()) return () => {};
    if (state !== 'open') throw new DatabaseClosedError();
    inFlight++;
    return () => {
      inFlight--;
      if (inFlight === 0) drained?.();
    };
  }

  async function timed<R>(query: SqlQuery, inTransaction: boolean, run: () => Promise<R>): Promise<R> {
    const leave = enter();
    const started = performance.now();
    counters.queries++;
    try {
      return await run();
    } catch (err) {
      counters.queryErrors++;
      record(err);
      throw err;
    } finally {
      leave();
      const durationMs = Math.round(performance.now() - started);
      if (threshold > 0 && durationMs >= threshold) {
        counters.slowQueries++;
        const info: SlowQueryInfo = { sql: safeSql(query.sql), durationMs, thresholdMs: threshold, inTransaction };
        own.emit('slowQuery', info);
        logger?.warn({ event: 'slowQuery', ...info }, `slow query: ${durationMs} ms (threshold ${threshold} ms)`);
      }
    }
  }

  function watchPool(adapter: SqlDriverAdapter): void {
    const driver = (adapter as { underlyingDriver?: () => unknown }).underlyingDriver?.();
    if (typeof driver !== 'object' || driver === null || watchedPools.has(driver)) return;
    if (typeof (driver as { on?: unknown }).on !== 'function') return;
    watchedPools.add(driver);
    const pool = driver as ObservablePool;
    pool.on('acquire', (client) => checkedOut.add(client));
    pool.on('release', (_err, client) => checkedOut.delete(client));
    pool.on('remove', (client) => checkedOut.delete(client));
  }

  function instrumentTransaction(tx: Transaction, leave: () => void): Transaction {
    let done = false;
    const finish = (): void => {
      if (!done) {
        done = true;
        leave();
      }
    };
    return overlay(tx, {
      queryRaw: (q: SqlQuery) => timed(q, true, () => tx.queryRaw(q)),
      executeRaw: (q: SqlQuery) => timed(q, true, () => tx.executeRaw(q)),
      commit: () => tx.commit().finally(finish),
      rollback: () => tx.rollback().finally(finish),
    });
  }

  function instrumentAdapter(adapter: SqlDriverAdapter): SqlDriverAdapter {
    watchPool(adapter);
    return overlay(adapter, {
      queryRaw: (q: SqlQuery): Promise<SqlResultSet> => timed(q, false, () => adapter.queryRaw(q)),
      executeRaw: (q: SqlQuery): Promise<number> => timed(q, false, () => adapter.executeRaw(q)),
      executeScript: async (script: string): Promise<void> => {
        const leave = enter();
        try {
          await adapter.executeScript(script);
        } finally {
          leave();
        }
      },
      startTransaction: async (level?: Parameters<SqlDriverAdapter['startTransaction']>[0]): Promise<Transaction> => {
        // A transaction opened directly with $transaction counts as work in flight until
        // it commits or rolls back, just like a unit of work.
        const leave = enter();
        try {
          return instrumentTransaction(await adapter.startTransaction(level), leave);
        } catch (err) {
          leave();
          record(err);
          throw err;
        }
      },
    });
  }

  const ops: Operations = {
    instrument(factory) {
      return overlay(factory, {
        connect: async (): Promise<SqlDriverAdapter> => {
          // After close, Prisma reconnects on the next query: hand it an adapter that
          // refuses everything, so the caller gets DatabaseClosedError and no socket opens.
          if (state !== 'open' && !admitted.getStore()) return closedAdapter(factory);
          return instrumentAdapter(await factory.connect());
        },
      });
    },

    guard<F extends (...args: never[]) => Promise<unknown>>(fn: F): F {
      const guarded = async (...args: never[]): Promise<unknown> => {
        const leave = enter();
        try {
          return await admitted.run(true, () => fn(...args));
        } finally {
          leave();
        }
      };
      return guarded as F;
    },

    on(event, listener) {
      const target = (event === 'slowQuery' ? own : monitor.events) as unknown as EventEmitter;
      const handler = listener as (...args: unknown[]) => void;
      target.on(event, handler);
      return () => void target.off(event, handler);
    },

    stats: (sessions) => ({
      pool: monitor.figures(),
      counters: { ...monitor.counters, ...sessions, ...counters },
      lastError: lastError === null ? null : { ...lastError },
      state,
    }),

    get state() {
      return state;
    },

    close(options, shutdown) {
      return (closing ??= (async () => {
        state = 'closing';
        const deadlineMs = options?.deadlineMs ?? DEFAULT_CLOSE_DEADLINE_MS;
        logger?.info?.({ event: 'close', inFlight, deadlineMs }, 'closing database: draining work in flight');
        let timer: NodeJS.Timeout | undefined;
        const finished =
          inFlight === 0
            ? true
            : await Promise.race([
                new Promise<boolean>((resolve) => (drained = () => resolve(true))),
                new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), deadlineMs))),
              ]);
        clearTimeout(timer);
        drained = undefined;
        if (!finished) {
          logger?.warn(
            { event: 'close', inFlight, deadlineMs, connectionsEnded: checkedOut.size },
            'close deadline passed: closing connections still in use',
          );
          // Ending the socket fails the statement running on it; its owner then releases
          // the connection with an error and the pool discards it.
          for (const client of checkedOut) void Promise.resolve(client.end?.()).catch(() => {});
          await raceTimeout(shutdown(), FORCE_GRACE_MS);
        } else {
          await shutdown();
        }
        // pg-pool's end() resolves once its list of clients is empty, before their sockets
        // have finished closing: wait for those too, so that "closed" means no socket left.
        await allRemoved(monitor, FORCE_GRACE_MS);
        state = 'closed';
        logger?.info?.({ event: 'close', drained: finished }, 'database closed');
      })());
    },

    closeOnSignals(close, options = {}) {
      const signals = options.signals ?? ['SIGTERM', 'SIGINT'];
      const handlers = new Map<NodeJS.Signals, () => void>();
      const remove = (): void => {
        for (const [signal, handler] of handlers) process.removeListener(signal, handler);
        handlers.clear();
      };
      for (const signal of signals) {
        const handler = (): void => {
          remove();
          logger?.info?.({ event: 'signal', signal }, `${signal} received: closing database`);
          const deadline = options.deadlineMs === undefined ? {} : { deadlineMs: options.deadlineMs };
          void close(deadline)
            .catch((err: unknown) => logger?.error?.({ event: 'close', error: describeError(err).message }, 'close failed'))
            .finally(() => {
              // Our listener replaced Node's default action (exit). With nobody else
              // handling the signal, let it take effect now that the pool is closed.
              if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
            });
        };
        handlers.set(signal, handler);
        process.once(signal, handler);
      }
      return remove;
    },
  };
  return ops;
}

/** `target` with some members replaced; every other member still works on the original object. */
function overlay<T extends object>(target: T, overrides: Partial<T>): T {
  return new Proxy(target, {
    get(t, prop) {
      if (Object.prototype.hasOwnProperty.call(overrides, prop)) return (overrides as Record<PropertyKey, unknown>)[prop];
      const value: unknown = Reflect.get(t, prop, t);
      // Bound to the original: adapters may use private fields, which a proxy `this` lacks.
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(t) : value;
    },
  });
}

function closedAdapter(factory: SqlDriverAdapterFactory): SqlDriverAdapter {
  const refuse = (): Promise<never> => Promise.reject(new DatabaseClosedError());
  return {
    provider: factory.provider,
    adapterName: factory.adapterName,
    queryRaw: refuse,
    executeRaw: refuse,
    executeScript: refuse,
    startTransaction: refuse,
    dispose: async () => {},
  };
}

function allRemoved(monitor: PoolMonitor, ms: number): Promise<void> {
  const left = (): number => monitor.counters.connectionsOpened - monitor.counters.connectionsClosed;
  if (left() <= 0) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const check = (): void => {
      if (left() <= 0) done();
    };
    const done = (): void => {
      clearTimeout(timer);
      monitor.events.off('remove', check);
      resolve();
    };
    const timer = setTimeout(done, ms);
    monitor.events.on('remove', check);
  });
}

async function raceTimeout(work: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([work.catch(() => {}), new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

function safeSql(sql: string): string {
  const text = redact(sql);
  return text.length > MAX_SQL_LENGTH ? `${text.slice(0, MAX_SQL_LENGTH)}…` : text;
}

/** Quoted literals in server messages can be user data (`invalid input syntax: "..."`). */
function withoutLiterals(message: string): string {
  return message.replace(/"(?:[^"\\]|\\.)*"/g, '"…"').replace(/'(?:[^'\\]|\\.)*'/g, "'…'");
}

/** A failure as a LastError: the layer's own errors as they are, driver errors sanitized. */
export function describeError(err: unknown): LastError {
  const at = new Date().toISOString();
  if (err instanceof DatalayerError) {
    return { kind: err.kind, message: redact(err.message), at, ...(err.sqlState ? { sqlState: err.sqlState } : {}) };
  }
  const cause = (err as { cause?: { originalCode?: unknown; originalMessage?: unknown; kind?: unknown } } | null)?.cause;
  if (cause && typeof cause === 'object' && typeof cause.originalMessage === 'string') {
    const sqlState = typeof cause.originalCode === 'string' ? cause.originalCode : undefined;
    return { kind: 'query', message: redact(withoutLiterals(cause.originalMessage)), at, ...(sqlState ? { sqlState } : {}) };
  }
  if (cause && typeof cause === 'object' && typeof cause.kind === 'string') {
    return { kind: 'driver', message: `driver error: ${cause.kind}`, at };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { kind: 'driver', message: redact(withoutLiterals(message)), at };
}
