// db.health(): one SELECT on a pooled connection, raced against a timer. It never throws:
// a load balancer or orchestrator wants an answer within its own deadline, and an
// unreachable database is an answer ("unhealthy"), not an exception.
//
// The check borrows a connection the way the application does (same pool, same SSL and
// startup settings) but sends its statement directly, not through Prisma: a health probe
// every few seconds should not count as application queries or trip slow-query logging.

import { withDeadline } from './deadline.ts';
import { destroySocket } from './driver/client.ts';
import { DeadlineExceededError, PoolTimeoutError } from './errors.ts';
import { isConnectionLoss } from './failures.ts';
import type { GuardedPool, PoolClient } from './pool.ts';
import { rawConnectionOf } from './scope.ts';
import { describeError, type PoolFigures } from './stats.ts';
import { timeoutOption } from './unit-options.ts';

export interface HealthOptions {
  /** How long to wait for the answer, connecting included: 1 to 2147483647. Default 5 000 ms. */
  timeoutMs?: number;
}

export interface HealthReport {
  status: 'healthy' | 'unhealthy';
  /** Time to borrow a connection and get the answer, or until the failure. */
  latencyMs: number;
  /** `server_version`, e.g. `15.8`; null when the server was not reached. */
  serverVersion: string | null;
  /** The server's clock (ISO 8601); compare with the host's to spot clock drift. */
  serverTime: string | null;
  /** pg_is_in_recovery(): true on a read replica (writes will fail). */
  isReplica: boolean | null;
  /** SSL of this backend's connection as the server sees it (pg_stat_ssl). */
  ssl: { active: boolean; version: string | null; cipher: string | null } | null;
  pool: PoolFigures;
  /** Why the check failed: secrets removed. */
  error?: string;
}

export const DEFAULT_HEALTH_TIMEOUT_MS = 5_000;

// One round trip: every fact comes from one row. The LEFT JOIN keeps the row when
// pg_stat_ssl has no entry for us (some managed services hide it).
const HEALTH_SQL = `SELECT current_setting('server_version') AS server_version,
       now() AS server_time,
       pg_is_in_recovery() AS is_replica,
       s.ssl AS ssl, s.version AS ssl_version, s.cipher AS ssl_cipher
  FROM (SELECT 1) AS one
  LEFT JOIN pg_stat_ssl AS s ON s.pid = pg_backend_pid()`;

interface HealthRow {
  server_version: string;
  server_time: Date | string;
  is_replica: boolean;
  ssl: boolean | null;
  ssl_version: string | null;
  ssl_cipher: string | null;
}

export interface HealthDeps {
  /** The layer's pool, created on demand (the Neon adapter creates it when Prisma connects). */
  pool(): Promise<GuardedPool>;
  figures(): PoolFigures;
  /** Set once close() has started: no new connection may be opened. */
  isClosed(): boolean;
  /** Other checks run beside this one (the replicas'), given its timeout; never rejects, resolves within it. */
  alongside?(timeoutMs: number): Promise<void>;
}

export async function checkHealth(deps: HealthDeps, options: HealthOptions = {}): Promise<HealthReport> {
  const started = performance.now();
  const elapsed = (): number => Math.round(performance.now() - started);
  const unhealthy = (error: string): HealthReport => ({
    status: 'unhealthy',
    latencyMs: elapsed(),
    serverVersion: null,
    serverTime: null,
    isReplica: null,
    ssl: null,
    pool: deps.figures(),
    error,
  });
  if (deps.isClosed()) return unhealthy('the database client is closed');
  // A timeout that is not one (NaN from an unset variable, Infinity, a string) would leave
  // the check without its deadline: a frozen server would hold the probe for as long as
  // the statement deadline allows, or forever with statement_timeout 0. Nothing is sent.
  let timeoutMs: number;
  try {
    timeoutMs = timeoutOption(options, 'health', DEFAULT_HEALTH_TIMEOUT_MS) ?? DEFAULT_HEALTH_TIMEOUT_MS;
  } catch (err) {
    return unhealthy((err as Error).message);
  }
  const others = deps.alongside?.(timeoutMs);
  try {
    const row = await queryWithin<HealthRow>(deps.pool, HEALTH_SQL, timeoutMs, () => new DeadlineExceededError('health', timeoutMs));
    await others;
    return {
      status: 'healthy',
      latencyMs: elapsed(),
      serverVersion: row.server_version,
      serverTime: row.server_time instanceof Date ? row.server_time.toISOString() : new Date(row.server_time).toISOString(),
      isReplica: row.is_replica,
      ssl: { active: row.ssl === true, version: row.ssl_version, cipher: row.ssl_cipher },
      pool: deps.figures(),
    };
  } catch (err) {
    await others;
    return unhealthy(describeError(err).message);
  }
}

/**
 * One statement's first row, on a connection of the pool, sent directly (not through
 * Prisma: it counts as no application query and trips no slow-query log), within
 * `timeoutMs`, connecting included; past it, `expire`'s error, and the connection is
 * destroyed (see run). Health checks and replica lag checks use it.
 */
export async function queryWithin<R>(pool: () => Promise<GuardedPool>, sql: string, timeoutMs: number, expire: () => Error): Promise<R> {
  const abort = new AbortController();
  const waiting: Waiting = { pool: undefined, forSlot: false };
  return withDeadline(run<R>(pool, sql, abort.signal, waiting), timeoutMs, () => {
    abort.abort();
    return busyPool(waiting, timeoutMs) ?? expire();
  });
}

/** Where a check stands: waiting for a connection of its pool, or past that. */
interface Waiting {
  pool: GuardedPool | undefined;
  forSlot: boolean;
}

/**
 * A check that was still queued for a slot of a full pool at its deadline never reached
 * the database: that is a pool timeout (the application holds every connection), not a
 * silent server, and nothing was closed. A health endpoint would otherwise report the
 * database down under load, and a replica's lag check would take it out of rotation.
 */
function busyPool(waiting: Waiting, timeoutMs: number): PoolTimeoutError | undefined {
  if (!waiting.forSlot || waiting.pool === undefined || !waiting.pool.hasWaiters()) return undefined;
  const { inUse, max } = waiting.pool.figures();
  return inUse >= max ? new PoolTimeoutError(timeoutMs, { max }) : undefined;
}

/**
 * Borrows a connection (inside a db.scope, the scope's) and runs the statement. When the caller has given up (`signal`
 * aborted), the connection is handed back at once: a late checkout goes back intact, a
 * connection with the statement still running is destroyed, so nothing is left running.
 * A reused connection found dead is replaced, within the pool's recovery budget.
 */
async function run<R>(connect: () => Promise<GuardedPool>, sql: string, signal: AbortSignal, waiting: Waiting): Promise<R> {
  const pool = await connect();
  waiting.pool = pool;
  for (let recovered = 0; ; recovered++) {
    waiting.forSlot = true;
    const { client, reused } = await pool.take();
    waiting.forSlot = false;
    if (signal.aborted) {
      client.release();
      throw new Error('check abandoned');
    }
    const outcome = await queryOnce<R>(client, sql, signal);
    if (outcome.ok) return outcome.row;
    if (!signal.aborted && isConnectionLoss(outcome.error) && pool.mayRecover(outcome.error, reused, recovered)) continue;
    throw outcome.error;
  }
}

async function queryOnce<R>(client: PoolClient, sql: string, signal: AbortSignal): Promise<{ ok: true; row: R } | { ok: false; error: unknown }> {
  let released = false;
  const release = (err?: Error): void => {
    if (released) return;
    released = true;
    client.release(err);
  };
  // Destroying the connection is the only way to stop waiting for a server that does
  // not answer; the statement then fails and nothing is left running.
  const onAbort = (): void => {
    const reason = new Error('check timed out');
    // The socket's holder: in a scope, `client` is the scope's wrapper around it.
    destroySocket(rawConnectionOf(client), reason);
    release(reason);
  };
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    const result = (await client.query(sql)) as { rows: R[] };
    release();
    const row = result.rows[0];
    return row ? { ok: true, row } : { ok: false, error: new Error('the check returned no row') };
  } catch (error) {
    release(isConnectionLoss(error) ? (error as Error) : undefined);
    return { ok: false, error };
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
