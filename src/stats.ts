// The counters of one Db, kept in one object that every module increments directly, and
// the last failure in a form fit for a log line or a status page.

import { DatalayerError } from './errors.ts';
import { withoutLiterals } from './failures.ts';
import { redact } from './secrets.ts';

export interface PoolCounters {
  connectionsOpened: number;
  connectionsClosed: number;
  /** Dead or expired-while-idle connections replaced without the caller seeing an error. */
  connectionsRecovered: number;
  acquires: number;
  poolTimeouts: number;
  validations: number;
  errors: number;
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

export interface PoolFigures {
  /** Connections open now (idle + in use). */
  open: number;
  idle: number;
  inUse: number;
  /** Callers waiting for a connection. */
  waiting: number;
  /** The bound: size + overflow. */
  max: number;
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

export type LifecycleState = 'open' | 'closing' | 'closed';

export interface DbStats {
  pool: PoolFigures;
  counters: DbCounters;
  /** `null` until something fails. */
  lastError: LastError | null;
  /** `open`, `closing` (draining after close()) or `closed`. */
  state: LifecycleState;
}

export function newCounters(): DbCounters {
  return {
    connectionsOpened: 0,
    connectionsClosed: 0,
    connectionsRecovered: 0,
    acquires: 0,
    poolTimeouts: 0,
    validations: 0,
    errors: 0,
    transactions: 0,
    commits: 0,
    rollbacks: 0,
    retries: 0,
    queries: 0,
    queryErrors: 0,
    slowQueries: 0,
  };
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
