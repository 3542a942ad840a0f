// The client factory: config → driver → pool → Prisma client → units of work, assembled
// once. Creating a Db validates the configuration and builds objects; it opens no socket,
// starts no timer and sends no query. The first query connects.

import { Instrumentation } from './adapter.ts';
import { loadConfig, type DbConfig, type DbOptions, type IsolationLevel } from './config.ts';
import { createDriver, type DriverHandle } from './driver/index.ts';
import { EventHub, type DbEvents } from './events.ts';
import { checkHealth, type HealthOptions, type HealthReport } from './health.ts';
import { Lifecycle, type CloseOnSignalsOptions, type CloseOptions, type DbLogger, type Shutdown } from './lifecycle.ts';
import type { GuardedPool } from './pool.ts';
import { LAG_QUERY, ReplicaRouter, routeReads, type ReplicaStatus, type ReplicaTarget } from './replicas.ts';
import { scopes, type ScopeOptions } from './scope.ts';
import { describeUrl } from './secrets.ts';
import { describeError, newCounters, type DbCounters, type DbStats, type LastError } from './stats.ts';
import { UnitOfWork, type TransactionalClient, type TransactionOptions, type TxClient, type UnitsOfWork } from './unit-of-work.ts';
import { withDeadline } from './deadline.ts';
import type { SqlDriverAdapterFactory } from '@prisma/driver-adapter-utils';

/** What createDb needs to build an application's own generated Prisma client. */
export interface PrismaClientOptions {
  adapter: SqlDriverAdapterFactory;
  transactionOptions?: { maxWait?: number; timeout?: number; isolationLevel?: IsolationLevel };
}
export type PrismaClientClass<C> = new (options: PrismaClientOptions) => C;

export interface CreateDbOptions<C> extends DbOptions {
  /** The application's generated `PrismaClient` class (from `prisma generate`). */
  PrismaClient: PrismaClientClass<C>;
  /** Environment to read instead of process.env. */
  env?: Record<string, string | undefined>;
  /** pino-style or console logger for slow queries, pool errors and shutdown. Nothing by default. */
  logger?: DbLogger;
  /** Close the pool on SIGTERM / SIGINT (see `closeOnSignals()`). Default: no handler. */
  closeOnSignals?: boolean | CloseOnSignalsOptions;
}

export interface DatalayerApi<C> {
  /** Runs `fn` in a transaction: commit on success, rollback on any throw. */
  transaction: UnitsOfWork<C>['transaction'];
  /** A read-only unit of work, on a healthy replica when there is one, else on the primary. */
  read<T>(fn: (tx: TxClient<C>) => Promise<T>, options?: Omit<TransactionOptions, 'readOnly'>): Promise<T>;
  /** Each replica: reachable, lag behind the primary, last problem. */
  replicas(): ReplicaStatus[];
  /** Runs `fn` on one reserved connection without a transaction. */
  session: UnitsOfWork<C>['session'];
  /** The active unit of work's client, or the plain client outside one. */
  current(): TxClient<C>;
  /**
   * Runs `fn` as one invocation (scope.ts): in serverless mode its statements, units and
   * sessions share one connection, opened on first use and closed when `fn` ends,
   * resolved, thrown or past `timeoutMs`. Statements sent after the end are refused.
   */
  scope<T>(fn: () => Promise<T>, options?: ScopeOptions): Promise<T>;
  /** `fn` with a scope per call: `export default db.handler(async (req) => …)`. */
  handler<A extends unknown[], R>(fn: (...args: A) => Promise<R>, options?: ScopeOptions): (...args: A) => Promise<R>;
  stats(): DbStats;
  /** One SELECT within `timeoutMs`. Never throws. */
  health(options?: HealthOptions): Promise<HealthReport & { replicas: ReplicaStatus[] }>;
  /** pg-pool's lifecycle events (pids only), typed `error`s and `slowQuery` (SQL text, never parameters). */
  on<E extends keyof DbEvents>(event: E, listener: (...args: DbEvents[E]) => void): () => void;
  /** Host, port, database, driver and mode: safe to log. */
  describe(): string;
  /** The resolved configuration. Secrets are hidden from printing and serialising, not from code. */
  readonly config: DbConfig;
  /**
   * Refuses new work (DatabaseClosedError), waits for work in flight up to `deadlineMs`,
   * then destroys what is still busy and closes every connection. Idempotent. `$disconnect()` does the same.
   */
  close(options?: CloseOptions): Promise<void>;
  /** Closes on SIGTERM / SIGINT, then lets the signal take effect. Returns an unregister function. */
  closeOnSignals(options?: CloseOnSignalsOptions): () => void;
}

/**
 * The application's Prisma client with the layer's API on it. Every member is also under
 * `$datalayer`: when a model's accessor has the same name (a `Session` or `Transaction`
 * model), the model keeps the name and the layer's member is reached there.
 */
export type Db<C> = C & DatalayerApi<C> & { readonly $datalayer: DatalayerApi<C> };

interface PrismaLike extends TransactionalClient {
  $queryRawUnsafe(query: string, ...values: unknown[]): Promise<unknown>;
  $disconnect(): Promise<void>;
}

/** One database behind one pool: what the primary and every replica are built from. */
interface Stack<C> {
  config: DbConfig;
  prisma: C & PrismaLike;
  driver: DriverHandle;
  units: UnitOfWork<C>;
  counters: DbCounters;
  hub: EventHub;
  /** Ends Prisma's engine (the original $disconnect) and the pool. */
  end(): Promise<void>;
}

function buildStack<C>(PrismaClient: PrismaClientClass<C>, config: DbConfig, lifecycle: Lifecycle, logger: DbLogger | undefined, record: (err: unknown) => void): Stack<C> {
  const counters = newCounters();
  const hub = new EventHub();
  const driver = createDriver(config, counters, hub);
  const ins = new Instrumentation(counters, hub, lifecycle, config.slowQueryMs, logger, record);
  const prisma = new PrismaClient({
    adapter: ins.factory(driver.factory),
    transactionOptions: { maxWait: config.transaction.maxWaitMs, timeout: config.transaction.timeoutMs },
  }) as C & PrismaLike;
  const disconnect = prisma.$disconnect.bind(prisma);
  const units = new UnitOfWork<C>(prisma, config, counters, driver.pool);
  return { config, prisma, driver, units, counters, hub, end: async () => void (await Promise.all([disconnect(), driver.close()])) };
}

function replicaTarget<C>(stack: Stack<C>, url: string): ReplicaTarget<C> {
  const ms = stack.config.timeouts.connectMs;
  return {
    name: describeUrl(url),
    units: stack.units,
    measureLag: async () => {
      const rows = (await withDeadline(stack.prisma.$queryRawUnsafe(LAG_QUERY), ms, () => new Error('lag check timed out'))) as { lag_ms: number | null }[];
      return rows[0]?.lag_ms ?? NaN;
    },
    close: stack.end,
  };
}

export function createDb<C>(options: CreateDbOptions<C>): Db<C> {
  const { PrismaClient, env, logger, closeOnSignals, ...dbOptions } = options;
  const config = loadConfig(dbOptions, env);
  const lifecycle = new Lifecycle(logger);
  let lastError: LastError | null = null;
  const record = (err: unknown): void => void (lastError = describeError(err));
  const primary = buildStack(PrismaClient, config, lifecycle, logger, record);
  primary.hub.onFailure = (err) => {
    record(err);
    logger?.error?.({ event: 'error', kind: err.kind, error: lastError?.message }, 'database error');
  };
  const replicaStacks = config.replicaUrls.map((url) => ({ url, stack: buildStack(PrismaClient, loadConfig({ ...dbOptions, url, replicas: [] }, env), lifecycle, logger, () => {}) }));
  const router = replicaStacks.length === 0 ? undefined : new ReplicaRouter(replicaStacks.map(({ url, stack }) => replicaTarget(stack, url)), config.replica);
  const transaction = routeReads(primary.units.transaction, router);
  const scoped = scopes(config.mode === 'serverless');
  const pools = (): GuardedPool[] => [primary, ...replicaStacks.map((r) => r.stack)].flatMap((s) => s.driver.pool() ?? []);

  const shutdown: Shutdown = {
    destroyBusy: () => pools().reduce((n, pool) => n + pool.destroyBusy(new Error('closed by db.close() after its deadline')), 0),
    end: async () => void (await Promise.all([primary.end(), router?.close()])),
    allClosed: () => allClosed(primary),
  };
  const api: DatalayerApi<C> = {
    transaction: lifecycle.guard(transaction) as typeof transaction,
    read: lifecycle.guard((fn: (tx: TxClient<C>) => Promise<unknown>, readOptions?: Omit<TransactionOptions, 'readOnly'>) => transaction(fn, { ...readOptions, readOnly: true })) as DatalayerApi<C>['read'],
    replicas: () => router?.status() ?? [],
    session: lifecycle.guard(primary.units.session) as UnitsOfWork<C>['session'],
    current: primary.units.current,
    scope: lifecycle.guard(scoped.scope) as DatalayerApi<C>['scope'],
    handler: (fn, handlerOptions) => (...args) => api.scope(() => fn(...args), handlerOptions),
    stats: () => ({ pool: primary.driver.pool()?.figures() ?? emptyFigures(config), counters: { ...primary.counters }, lastError: lastError && { ...lastError }, state: lifecycle.state }),
    health: async (healthOptions) => ({
      ...(await checkHealth(
        {
          pool: async () => {
            await primary.prisma.$connect();
            return primary.driver.pool()!;
          },
          figures: () => primary.driver.pool()?.figures() ?? emptyFigures(config),
          isClosed: () => lifecycle.state !== 'open',
        },
        healthOptions,
      )),
      // What routing learned from traffic; health itself sends nothing to the replicas.
      replicas: router?.status() ?? [],
    }),
    on: (event, listener) => primary.hub.on(event, listener),
    describe: () => `${config.driver} ${config.mode} postgresql://${config.target.host}:${config.target.port}/${config.target.database} ssl=${config.ssl.mode}`,
    config,
    close: (closeOptions) => lifecycle.close(closeOptions, shutdown),
    closeOnSignals: (signalOptions) => lifecycle.closeOnSignals(api.close, signalOptions),
  };
  if (closeOnSignals) api.closeOnSignals(closeOnSignals === true ? {} : closeOnSignals);
  return attach(primary.prisma, api);
}

function emptyFigures(config: DbConfig): DbStats['pool'] {
  return { open: 0, idle: 0, inUse: 0, waiting: 0, max: config.pool.size + config.pool.maxOverflow };
}

/** Resolves once every connection the stack opened has closed (bounded by the caller). */
function allClosed<C>(stack: Stack<C>): Promise<void> {
  const left = (): number => stack.counters.connectionsOpened - stack.counters.connectionsClosed;
  if (left() <= 0) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const off = stack.hub.on('remove', () => {
      if (left() > 0) return;
      off();
      resolve();
    });
  });
}

/**
 * The layer's members as plain properties of the client (a client extension would put a
 * proxy layer on every model access), and `$disconnect` closing the pools as close() does.
 */
function attach<C>(prisma: C & PrismaLike, api: DatalayerApi<C>): Db<C> {
  const db = prisma as unknown as Record<string, unknown>;
  for (const [name, member] of Object.entries(api)) {
    if (!(name in db)) db[name] = member;
  }
  db.$datalayer = api;
  db.$disconnect = () => api.close();
  return db as unknown as Db<C>;
}

const GLOBAL_KEY = Symbol.for('prisma-datalayer.db');
type GlobalSlot = { [GLOBAL_KEY]?: unknown };

/**
 * The process-wide Db. Kept on globalThis so that a development server's module reloads
 * reuse the open pool instead of leaking a new one per reload.
 */
export function getDb<C>(options: CreateDbOptions<C>): Db<C> {
  const slot = globalThis as GlobalSlot;
  slot[GLOBAL_KEY] ??= createDb(options);
  return slot[GLOBAL_KEY] as Db<C>;
}

/** Forgets the process-wide Db (after closing it), so the next getDb creates a new one. */
export async function resetDb(): Promise<void> {
  const slot = globalThis as GlobalSlot;
  const db = slot[GLOBAL_KEY] as { close?: () => Promise<void> } | undefined;
  delete slot[GLOBAL_KEY];
  await db?.close?.();
}
