// Pool policy. Both drivers' pools are pg-pool underneath (node-postgres' `pg.Pool`, and
// the copy bundled in @neondatabase/serverless), so one policy serves both: the options
// we hand pg-pool decide the bounds, and `guardPool` adds what pg-pool lacks —
// validation of long-idle connections at checkout, transparent re-runs of a statement
// that landed on a reused connection which had died while idle (bounded by the pool
// size; never for a fresh connection), libpq's prefer/allow SSL fallback, typed errors, counters
// and events. As in SQLAlchemy, the no-pool mode (NullPool) is a policy, not a second
// code path: the same pool, told to close every connection on release.

import { AsyncLocalStorage } from 'node:async_hooks';
import { EventEmitter } from 'node:events';
import type { ConnectionOptions } from 'node:tls';
import type { DbConfig } from './config.ts';
import { DatabaseConnectionError, PoolTimeoutError } from './errors.ts';
import { redact } from './redact.ts';
import { wantsSslFallback, type SslPlan } from './ssl.ts';

/** The part of a pg-pool client the policy uses. */
export interface PoolClientLike {
  query(config: unknown, values?: unknown): Promise<unknown>;
  release(err?: Error | boolean): void;
  on(event: 'error', listener: (err: Error) => void): unknown;
  removeListener(event: 'error', listener: (err: Error) => void): unknown;
  processID?: number | null;
}

/** The part of a pg-pool pool the policy uses (pg.Pool and @neondatabase/serverless Pool). */
export interface PoolLike {
  options: Record<string, unknown>;
  connect(): Promise<PoolClientLike>;
  query(config: unknown, values?: unknown): Promise<unknown>;
  end(): Promise<void>;
  on(event: string, listener: (...args: never[]) => void): unknown;
  readonly totalCount: number;
  readonly idleCount: number;
  readonly waitingCount: number;
}

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

/** pg-pool's five lifecycle events, re-emitted with safe payloads. */
export interface PoolEvents {
  connect: [info: { pid: number | undefined }];
  acquire: [info: { pid: number | undefined; reused: boolean }];
  release: [info: { pid: number | undefined; broken: boolean }];
  remove: [info: { pid: number | undefined }];
  error: [error: Error];
}

/**
 * Counters and events of one Db. They outlive any single pool: the Neon adapter creates
 * its pool when Prisma connects and ends it on disconnect.
 */
export class PoolMonitor {
  readonly events = new EventEmitter<PoolEvents>();
  readonly counters: PoolCounters = {
    connectionsOpened: 0,
    connectionsClosed: 0,
    connectionsRecovered: 0,
    acquires: 0,
    poolTimeouts: 0,
    validations: 0,
    errors: 0,
  };
  private current: PoolLike | undefined;
  private readonly max: number;
  /** Set by guardPool: the checkout with validation, for `withConnection`. */
  checkout: (() => Promise<{ client: PoolClientLike; reused: boolean }>) | undefined;

  constructor(config: DbConfig) {
    this.max = config.pool.size + config.pool.maxOverflow;
  }

  attach(pool: PoolLike): void {
    this.current = pool;
  }

  figures(): PoolFigures {
    const p = this.current;
    if (!p) return { open: 0, idle: 0, inUse: 0, waiting: 0, max: this.max };
    return { open: p.totalCount, idle: p.idleCount, inUse: p.totalCount - p.idleCount, waiting: p.waitingCount, max: this.max };
  }

  /**
   * Runs `fn` with one connection reserved for it: every statement the Prisma client
   * sends inside `fn` (through this pool) goes to that connection. Session state is
   * discarded before the connection goes back, so nothing leaks to the next user.
   */
  async withConnection<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.checkout) throw new Error('withConnection before the pool exists');
    const { client } = await this.checkout();
    const onError = (): void => {};
    client.on('error', onError);
    let broken: Error | undefined;
    try {
      return await pinned.run({ monitor: this, client: lend(client) }, fn);
    } catch (err) {
      if (isConnectionFailure(err)) broken = err as Error;
      throw err;
    } finally {
      if (!broken) await client.query('DISCARD ALL').catch((err: Error) => (broken = err));
      client.removeListener('error', onError);
      client.release(broken);
    }
  }

  /** Errors are re-emitted only when someone listens: an unheard 'error' would throw. */
  emitError(err: Error): void {
    if (this.events.listenerCount('error') > 0) this.events.emit('error', err);
  }
}

/** pg-pool options expressing the configured policy. */
export function poolOptions(config: DbConfig, ssl: SslPlan): Record<string, unknown> {
  const { pool, timeouts, mode } = config;
  const common: Record<string, unknown> = {
    host: config.target.host,
    port: config.target.port,
    user: config.target.user,
    password: config.target.password,
    database: config.target.database,
    ssl: ssl.first,
    max: pool.size + pool.maxOverflow,
    // pg-pool uses this one option both for the wait in its queue and for a new
    // connection's handshake; `checkout` sets it per call (see there).
    connectionTimeoutMillis: pool.timeoutMs,
    // Idle sockets must not keep a process alive that has nothing else to do.
    allowExitOnIdle: true,
    // Kernel TCP keepalive notices a silently vanished peer without any query of ours.
    keepAlive: true,
    application_name: config.applicationName,
  };
  if (!config.pooler) {
    // Startup parameters: they take effect on the server from the first statement and
    // cost no round trip. Transaction poolers reject them (see session.ts for those).
    if (timeouts.statementMs > 0) common.statement_timeout = timeouts.statementMs;
    if (timeouts.lockMs > 0) common.lock_timeout = timeouts.lockMs;
    if (timeouts.idleInTransactionMs > 0) common.idle_in_transaction_session_timeout = timeouts.idleInTransactionMs;
    if (config.serverOptions !== undefined) common.options = config.serverOptions;
  }
  if (mode === 'serverless') {
    // NullPool: a connection lives for one checkout. `maxUses: 1` closes it on release
    // (an idle timeout of 0 would mean the opposite: keep it forever).
    return { ...common, min: 0, maxUses: 1, idleTimeoutMillis: 1 };
  }
  return {
    ...common,
    // QueuePool: `size` connections stay; the overflow above it closes once idle.
    min: pool.size,
    idleTimeoutMillis: pool.overflowIdleMs,
    maxLifetimeSeconds: pool.recycleMs / 1000,
  };
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * Did the connection itself fail (as opposed to the server rejecting a statement)?
 * SQLSTATE class 08 is "connection exception"; 57P01-57P03 are the server shutting
 * down or terminating the backend.
 */
export function isConnectionFailure(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (CONNECTION_CODES.has(code) || code.startsWith('08') || /^57P0[1-3]$/.test(code)) return true;
    if (/^[0-9A-Z]{5}$/.test(code)) return false;
  }
  return /Connection terminated|connection timeout|Client has encountered a connection error|socket hang up|not queryable|WebSocket|ECONNRESET|ECONNREFUSED/i.test(err.message);
}

function toConnectionError(err: unknown, phase: 'connect' | 'query'): DatabaseConnectionError {
  const e = err as Error & { code?: unknown };
  const sqlState = typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) ? e.code : undefined;
  const what = phase === 'connect' ? 'Could not connect to the database' : 'The database connection was lost';
  // Wrong credentials or a missing database will not fix themselves on a retry.
  const permanent = sqlState === '28P01' || sqlState === '28000' || sqlState === '3D000';
  return new DatabaseConnectionError(`${what}: ${redact(e.message ?? String(err))}`, {
    cause: err,
    retryable: !permanent,
    ...(sqlState === undefined ? {} : { sqlState }),
  });
}

const pinned = new AsyncLocalStorage<{ monitor: PoolMonitor; client: PoolClientLike }>();

/**
 * The reserved connection as the adapters see it: "release" is a no-op (the session
 * owns it), and statements sent concurrently (a Promise.all inside the session) run one
 * after another, as node-postgres 9 will require instead of queueing them itself.
 */
function lend(client: PoolClientLike): PoolClientLike {
  let tail: Promise<unknown> = Promise.resolve();
  return {
    query: (config, values) => {
      const run = tail.then(() => client.query(config, values));
      tail = run.catch(() => undefined);
      return run;
    },
    release: () => {},
    on: (event, listener) => client.on(event, listener),
    removeListener: (event, listener) => client.removeListener(event, listener),
    processID: client.processID ?? null,
  };
}

interface ClientState {
  releasedAt: number;
  fresh: boolean;
}

/** Installs the policy on a freshly created pg-pool instance (ours, never a shared one). */
export function guardPool(pool: PoolLike, config: DbConfig, ssl: SslPlan, monitor: PoolMonitor): void {
  const { events, counters } = monitor;
  const emitError = (err: Error): void => monitor.emitError(err);
  monitor.attach(pool);
  const state = new WeakMap<object, ClientState>();
  const max = config.pool.size + config.pool.maxOverflow;
  const validateAfter = config.mode === 'serverless' ? Infinity : config.pool.validateAfterIdleMs;
  const pid = (c: PoolClientLike): number | undefined => c.processID ?? undefined;
  let fallbackUsed = ssl.fallback === undefined;

  // An idle client's socket error is routed by pg-pool to the pool's 'error' event;
  // with no listener that event would crash the process.
  pool.on('error', ((err: Error) => {
    counters.errors++;
    emitError(err);
  }) as never);
  pool.on('connect', ((client: PoolClientLike) => {
    counters.connectionsOpened++;
    state.set(client, { releasedAt: Date.now(), fresh: true });
    events.emit('connect', { pid: pid(client) });
  }) as never);
  pool.on('release', ((err: Error | undefined, client: PoolClientLike) => {
    const s = state.get(client);
    if (s) s.releasedAt = Date.now();
    events.emit('release', { pid: pid(client), broken: err !== undefined && err !== null });
  }) as never);
  pool.on('remove', ((client: PoolClientLike) => {
    counters.connectionsClosed++;
    events.emit('remove', { pid: pid(client) });
  }) as never);

  const rawConnect = pool.connect.bind(pool);

  async function checkout(): Promise<{ client: PoolClientLike; reused: boolean }> {
    const started = Date.now();
    for (;;) {
      let client: PoolClientLike;
      try {
        // pg-pool reads `connectionTimeoutMillis` synchronously inside connect(): as the
        // queue timeout when it must wait (full, or an idle client is about to be handed
        // over), as the handshake timeout when it opens a new connection. Setting it per
        // call keeps "no free slot" (pool timeout) and "server unreachable" (connect
        // timeout) two separate limits, as SQLAlchemy's pool_timeout / connect_timeout are.
        const mustWait = pool.totalCount >= max || pool.idleCount > 0;
        pool.options.connectionTimeoutMillis = mustWait ? config.pool.timeoutMs : config.timeouts.connectMs;
        client = await rawConnect();
      } catch (err) {
        if ((err as Error).message === 'timeout exceeded when trying to connect') {
          counters.poolTimeouts++;
          throw new PoolTimeoutError(Date.now() - started, { cause: err, max });
        }
        if (!fallbackUsed && wantsSslFallback(err, pool.options.ssl !== false)) {
          // libpq's prefer/allow: the other side of the SSL choice, once per pool.
          fallbackUsed = true;
          pool.options.ssl = ssl.fallback as false | ConnectionOptions;
          continue;
        }
        counters.errors++;
        const typed = toConnectionError(err, 'connect');
        emitError(typed);
        throw typed;
      }
      const s = state.get(client) ?? { releasedAt: 0, fresh: false };
      state.set(client, s);
      const reused = !s.fresh;
      s.fresh = false;
      if (reused && Date.now() - s.releasedAt >= validateAfter) {
        // Long idle: the server, a proxy or Neon's autosuspend may have dropped it.
        counters.validations++;
        if (!(await validate(client))) {
          counters.connectionsRecovered++;
          continue;
        }
      }
      counters.acquires++;
      events.emit('acquire', { pid: pid(client), reused });
      return { client, reused };
    }
  }

  async function validate(client: PoolClientLike): Promise<boolean> {
    const onError = (): void => {};
    client.on('error', onError);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        client.query('SELECT 1'),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error('validation timed out')), config.timeouts.connectMs);
        }),
      ]);
      return true;
    } catch (err) {
      client.release(err as Error);
      return false;
    } finally {
      clearTimeout(timer);
      client.removeListener('error', onError);
    }
  }

  const pinnedHere = (): PoolClientLike | undefined => {
    const pin = pinned.getStore();
    return pin?.monitor === monitor ? pin.client : undefined;
  };

  // Used by the adapters for work that needs one connection (transactions).
  const guardedConnect = async (): Promise<PoolClientLike> => {
    const pin = pinnedHere();
    return pin ?? (await checkout()).client;
  };

  // Used by the adapters for every statement outside a transaction.
  const guardedQuery = async (config: unknown, values?: unknown): Promise<unknown> => {
    const pin = pinnedHere();
    if (pin) return pin.query(config, values);
    for (let attempt = 0; ; attempt++) {
      const { client, reused } = await checkout();
      // A socket error between our write and the server's answer would otherwise be
      // emitted on a client nobody listens to.
      const onError = (): void => {};
      client.on('error', onError);
      try {
        const result = await client.query(config, values);
        client.removeListener('error', onError);
        client.release();
        return result;
      } catch (err) {
        client.removeListener('error', onError);
        const broken = isConnectionFailure(err);
        // pg-pool would discard the connection after any failed statement; only a
        // broken one needs that.
        client.release(broken ? (err as Error) : undefined);
        if (!broken) throw err;
        if (reused && attempt <= max) {
          // The connection died while idle in the pool, so the backend that would have
          // run this statement was already gone: run it again. Several idle connections
          // can be dead at once (a restart kills them all), hence up to `max` tries;
          // a fresh connection's failure is never retried.
          counters.connectionsRecovered++;
          continue;
        }
        counters.errors++;
        const typed = toConnectionError(err, 'query');
        emitError(typed);
        throw typed;
      }
    }
  };

  monitor.checkout = checkout;
  Object.assign(pool, { connect: guardedConnect, query: guardedQuery });
}
