// The client factory: config → driver → pool → Prisma client → units of work, assembled
// once. Creating a Db validates the configuration and builds objects; it opens no socket,
// starts no timer and sends no query. The first query connects.

import { Instrumentation } from './adapter.ts';
import { keepBatchesInContext } from './batching.ts';
import { loadConfig, loadReplicaConfig, type DbConfig, type DbOptions, type IsolationLevel } from './config.ts';
import { ReusedTimers } from './deadline.ts';
import { createDriver, type DriverHandle } from './driver/index.ts';
import { EventHub, type DbEvents } from './events.ts';
import type { WithDbExtends } from './extended-types.ts';
import { ownedUnits, type Member } from './extensions.ts';
import { checkHealth, queryWithin, type HealthOptions, type HealthReport } from './health.ts';
import { checkCloseOnSignals, Lifecycle, type CloseOnSignalsOptions, type CloseOptions, type DbLogger, type Shutdown } from './lifecycle.ts';
import type { GuardedPool } from './pool.ts';
import { LAG_QUERY, ReplicaRouter, routeReads, type LagRow, type ReadRouting, type ReplicaStatus, type ReplicaTarget } from './replicas.ts';
import { checkScopeOptions, runScope, type ScopeOptions } from './scope.ts';
import { describeUrl } from './secrets.ts';
import { describeError, newCounters, type DbCounters, type DbStats, type LastError } from './stats.ts';
import { createTelemetry, defaultPoolName, type PoolRecorder, type Telemetry, type TelemetryOptions } from './telemetry.ts';
import { inUnitOf, UnitOfWork, type TransactionalClient, type TransactionOptions, type TxClient, type UnitsHome, type UnitsOfWork, type UnitTelemetry } from './unit-of-work.ts';
import { ConfigError, DatabaseConnectionError, type ConfigIssue, type DatalayerError } from './errors.ts';
import type * as Verify from './verify.ts';
import type { VerifyOptions, VerifyReport } from './verify.ts';
import type { SqlDriverAdapterFactory } from '@prisma/driver-adapter-utils';

let verifyModule: typeof Verify | undefined;
/**
 * db.verify() brings doctor's checks and the migration code: loaded on its first call, so
 * an application that only queries never loads them (cold start of a serverless function).
 * No extension: `verify.js` in the build, `verify.ts` under the test runner.
 */
function verifier(): typeof Verify {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  verifyModule ??= require('./verify') as typeof Verify;
  return verifyModule;
}

/** What createDb needs to build an application's own generated Prisma client. */
export interface PrismaClientOptions {
  adapter: SqlDriverAdapterFactory;
  transactionOptions?: { maxWait?: number; timeout?: number; isolationLevel?: IsolationLevel };
}
export type PrismaClientClass<C> = new (options: PrismaClientOptions) => C;

/**
 * Prisma's own client options, passed to every client the layer builds (primary and
 * replicas). The layer keeps `adapter` (its pool) and `transactionOptions` (set from its
 * `transaction` option): both are refused here with a ConfigError.
 */
export interface PrismaOptions {
  log?: readonly ('info' | 'query' | 'warn' | 'error' | { level: 'info' | 'query' | 'warn' | 'error'; emit: 'stdout' | 'event' })[];
  errorFormat?: 'pretty' | 'colorless' | 'minimal';
  /** Prisma's global omit: `{ user: { password: true } }`. */
  omit?: Record<string, Record<string, boolean>>;
  /** Prisma's SQL commenter plugins. */
  comments?: readonly unknown[];
  queryPlanCacheMaxSize?: number;
}

export interface CreateDbOptions<C> extends DbOptions {
  /** The application's generated `PrismaClient` class (from `prisma generate`). */
  PrismaClient: PrismaClientClass<C>;
  /** Environment to read instead of process.env. */
  env?: Record<string, string | undefined>;
  /** pino-style or console logger for slow queries, pool errors and shutdown. Nothing by default. */
  logger?: DbLogger;
  /** Close the pool on SIGTERM / SIGINT (see `closeOnSignals()`). Default: no handler. */
  closeOnSignals?: boolean | CloseOnSignalsOptions;
  /** OpenTelemetry: pool metrics and unit-of-work spans (see README, Observability). Nothing is measured without it. */
  telemetry?: TelemetryOptions;
  /** Prisma's own client options (`log`, `errorFormat`, `omit`, `comments`, ...), for every client the layer builds. */
  prisma?: PrismaOptions;
}

/** Every option createDb takes (the compiler checks the list is complete). */
const OPTION_NAMES: Record<keyof CreateDbOptions<unknown>, true> = {
  PrismaClient: true, env: true, logger: true, closeOnSignals: true, telemetry: true, prisma: true,
  url: true, directUrl: true, host: true, port: true, user: true, password: true, database: true, driver: true, mode: true, pooler: true,
  ssl: true, pool: true, timeouts: true, applicationName: true, transaction: true, neon: true, replicas: true, replica: true, slowQueryMs: true, schema: true,
};
const PRISMA_OPTION_NAMES = ['log', 'errorFormat', 'omit', 'comments', 'queryPlanCacheMaxSize', 'adapter', 'accelerateUrl', 'transactionOptions', 'datasourceUrl', 'datasources'];

/** A misplaced or misspelt option is an error, never ignored; Prisma's are refused where the layer owns them. */
function checkOptions(options: object): void {
  const issues: ConfigIssue[] = [];
  for (const name of Object.keys(options)) {
    if (name in OPTION_NAMES) continue;
    const problem = PRISMA_OPTION_NAMES.includes(name)
      ? `is a Prisma client option: pass it as createDb({ prisma: { ${name} } })`
      : 'is not an option of createDb';
    issues.push({ setting: name, problem });
  }
  const prisma = (options as { prisma?: Record<string, unknown> }).prisma ?? {};
  if ('adapter' in prisma || 'accelerateUrl' in prisma) issues.push({ setting: 'prisma.adapter', problem: "the layer builds Prisma's driver adapter on its own pool: configure the connection with createDb's options (url, pool, ssl, ...)" });
  if ('transactionOptions' in prisma) issues.push({ setting: 'prisma.transactionOptions', problem: "the layer sets Prisma's $transaction defaults from its `transaction` option: use transaction: { maxWaitMs, timeoutMs, isolationLevel }" });
  if (issues.length > 0) throw new ConfigError(issues);
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
  /** `fn` with a scope per call: `export default db.handler(async (req) => …)`. Options that are not the scope's: a ConfigError here. */
  handler<A extends unknown[], R>(fn: (...args: A) => Promise<R>, options?: ScopeOptions): (...args: A) => Promise<R>;
  /** Counters, events' lastError: the whole Db's, replicas included. `pool`: the primary's pool (each replica's is in `replicas()`). */
  stats(): DbStats;
  /** One SELECT within `timeoutMs`. Never throws. */
  health(options?: HealthOptions): Promise<HealthReport & { replicas: ReplicaStatus[] }>;
  /** pg-pool's lifecycle events (pids only), typed `error`s and `slowQuery` (SQL text, never parameters): the primary's and the replicas'. */
  on<E extends keyof DbEvents>(event: E, listener: (...args: DbEvents[E]) => void): () => void;
  /**
   * Startup check, before taking traffic: connects within the connect timeout and checks the
   * server version, SSL, the application name, optionally migrations and capacity. Throws one
   * VerificationError listing every failed check with `doctor`'s advice; else the report.
   */
  verify(options?: VerifyOptions): Promise<VerifyReport>;
  /** Host, port, database, driver and mode: safe to log. */
  describe(): string;
  /** The resolved configuration. Secrets are hidden from printing and serialising, not from code. */
  readonly config: DbConfig;
  /**
   * Refuses new work (DatabaseClosedError), waits for work in flight up to `deadlineMs`,
   * then destroys what is still busy and closes every connection. Idempotent and final.
   * (`$disconnect()` closes the connections as Prisma's does and leaves the Db usable.)
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
export type Db<C, L extends LogLevel = never> = DbOn<L> & WithDbExtends<C> & DatalayerApi<C> & { readonly $datalayer: DatalayerApi<C> };

type LogLevel = 'info' | 'query' | 'warn' | 'error';

/** The event of `db.$on('query', ...)`, as Prisma's generated `Prisma.QueryEvent`. */
export interface QueryEvent {
  timestamp: Date;
  query: string;
  /** The parameters as JSON text. */
  params: string;
  /** Milliseconds. */
  duration: number;
  target: string;
}

/** The event of `db.$on('info' | 'warn' | 'error', ...)`, as Prisma's generated `Prisma.LogEvent`. */
export interface LogEvent {
  timestamp: Date;
  message: string;
  target: string;
}

/**
 * The levels `prisma.log` lists, counted as Prisma's generated client counts them (GetEvents):
 * what `db.$on` takes. The generated class infers them from its constructor's options, which
 * the layer calls, so the class the application passes types `$on` with none.
 */
export type LogEvents<P> = P extends { log?: readonly (infer E)[] } ? (E extends LogLevel ? E : E extends { level: infer V extends LogLevel } ? V : never) : never;

/** `$on` for the levels the Db was created with, as Prisma types it on a client built with those options. */
type DbOn<L extends LogLevel> = [L] extends [never] ? unknown : DbOnLevels<L>;
interface DbOnLevels<L extends LogLevel> {
  $on<V extends L>(eventType: V, callback: (event: V extends 'query' ? QueryEvent : LogEvent) => void): this;
}

interface PrismaLike extends TransactionalClient {
  $on(eventType: string, callback: (event: unknown) => void): unknown;
  $queryRawUnsafe(query: string, ...values: unknown[]): Promise<unknown>;
  $disconnect(): Promise<void>;
  $extends: PrismaExtends;
}

/** One database behind one pool: what the primary and every replica are built from. */
interface Stack<C> {
  config: DbConfig;
  prisma: C & PrismaLike;
  driver: DriverHandle;
  units: UnitOfWork<C>;
  /** Units of work on another client of this stack's Prisma instance (one extended from it). */
  unitsOn(client: unknown): UnitOfWork<C>;
  counters: DbCounters;
  hub: EventHub;
  /** Ends Prisma's engine (the original $disconnect) and the pool. */
  end(): Promise<void>;
}

/** The Db's telemetry and this pool's name in it. */
interface StackTelemetry {
  telemetry: Telemetry;
  poolName: string;
}

function buildStack<C>(
  PrismaClient: PrismaClientClass<C>,
  /** The Db's identity (UnitsHome.db), the same for all its stacks. */
  db: object,
  config: DbConfig,
  /** What its events call this pool: 'primary', or the replica's name in db.replicas(). */
  pool: string,
  lifecycle: Lifecycle,
  logger: DbLogger | undefined,
  record: (err: unknown) => void,
  telemetry?: StackTelemetry,
  prismaOptions: PrismaOptions = {},
): Stack<C> {
  const counters = newCounters();
  const hub = new EventHub(logger, pool);
  const recorder = telemetry === undefined ? undefined : poolRecorder(telemetry, config, () => driver.pool());
  const driver = createDriver(config, counters, hub, recorder);
  const ins = new Instrumentation(counters, hub, lifecycle, config.slowQueryMs, logger, record, db);
  const prisma = new PrismaClient({
    ...prismaOptions,
    adapter: ins.factory(driver.factory),
    transactionOptions: { maxWait: config.transaction.maxWaitMs, timeout: config.transaction.timeoutMs },
  } as PrismaClientOptions) as C & PrismaLike;
  if (!keepBatchesInContext(prisma)) logger?.warn({ event: 'prisma-internals' }, "Prisma's request batching was not found where Prisma 7.10 keeps it: findUnique calls made in one tick inside different scopes or units may share one's context");
  const disconnect = prisma.$disconnect.bind(prisma);
  const home: UnitsHome = { db, config, counters, pool: driver.pool, telemetry: telemetry && unitTelemetry(telemetry, config), timers: new ReusedTimers() };
  const unitsOn = (client: unknown): UnitOfWork<C> => new UnitOfWork<C>(client as C & PrismaLike, home);
  const units = unitsOn(prisma);
  const end = async (): Promise<void> => {
    await Promise.all([disconnect(), driver.close()]);
    recorder?.detach();
  };
  return { config, prisma, driver, units, unitsOn, counters, hub, end };
}

/** Registers a pool's metrics: its figures plus the idle bounds its configuration sets. */
function poolRecorder(t: StackTelemetry, config: DbConfig, pool: () => GuardedPool | undefined): PoolRecorder | undefined {
  const serverless = config.mode === 'serverless';
  return t.telemetry.pool({
    name: t.poolName,
    figures: () => {
      const f = pool()?.figures() ?? emptyFigures(config);
      // pg-pool keeps `size` connections and lets idle ones reach max; serverless keeps none.
      return { ...f, idleMin: serverless ? 0 : config.pool.size, idleMax: serverless ? 0 : f.max };
    },
  });
}

function unitTelemetry(t: StackTelemetry, config: DbConfig): UnitTelemetry {
  const { host, port, database } = config.target;
  return { telemetry: t.telemetry, info: { poolName: t.poolName, database, serverAddress: host, serverPort: port } };
}

function replicaTarget<C>(stack: Stack<C>): ReplicaTarget<C> {
  const ms = stack.config.timeouts.connectMs;
  // Sent as health checks are (not through Prisma: no query counted, no slow-query log),
  // and bounded as one: past the connect timeout the connection is destroyed.
  const timedOut = (): Error => new DatabaseConnectionError(`The replica did not answer its lag check within the connect timeout (${ms} ms): the connection was closed`);
  return {
    // The name its events carry (EventHub.pool): one name for the replica everywhere.
    name: stack.hub.pool,
    units: stack.units,
    measureLag: () => queryWithin<LagRow>(() => poolOf(stack), LAG_QUERY, ms, timedOut),
    figures: () => figuresOf(stack),
    uncountUnit: () => {
      // Every unit that fails (never re-run within its pool) counted one start and one rollback (unit-of-work.ts).
      stack.counters.transactions--;
      stack.counters.rollbacks--;
    },
    close: stack.end,
  };
}

/** The stack's pool, created on demand (the Neon adapter creates it when Prisma connects). */
async function poolOf<C>(stack: Stack<C>): Promise<GuardedPool> {
  await stack.prisma.$connect();
  return stack.driver.pool()!;
}

function figuresOf<C>(stack: Stack<C>): DbStats['pool'] {
  return stack.driver.pool()?.figures() ?? emptyFigures(stack.config);
}

export function createDb<C, P extends PrismaOptions = {}>(options: CreateDbOptions<C> & { prisma?: P }): Db<C, LogEvents<P>> {
  checkOptions(options);
  const { PrismaClient, env, logger, closeOnSignals, telemetry: telemetryOptions, prisma: prismaOptions, ...dbOptions } = options;
  // Before anything is built: a ConfigError then leaves nothing behind (telemetry, clients).
  if (typeof closeOnSignals === 'object') checkCloseOnSignals(closeOnSignals);
  const config = loadConfig(dbOptions, env);
  const lifecycle = new Lifecycle(logger);
  // Which units of work are this Db's: its clients and pools join them, another Db's do not.
  const db = {};
  if (config.driver === 'neon' && config.channelBinding === 'require') warnChannelBinding(logger);
  let lastError: LastError | null = null;
  const record = (err: unknown): void => void (lastError = describeError(err));
  // Said even without a logger (as a process warning): telemetry was asked for and there will be none.
  const telemetry = createTelemetry(telemetryOptions, (message) =>
    logger ? logger.warn({ event: 'telemetry' }, message) : process.emitWarning(message, { code: 'PRISMA_DATALAYER_TELEMETRY' }),
  );
  const named = (poolName: string): StackTelemetry | undefined => telemetry && { telemetry, poolName };
  const poolName = telemetryOptions?.poolName;
  // One Db's failures, wherever they happen (primary or replica): stats' lastError and the logger.
  const reportFailure = (err: DatalayerError, pool: string): void => {
    record(err);
    logger?.error?.({ event: 'error', kind: err.kind, error: lastError?.message, pool }, 'database error');
  };
  // Every replica's configuration before any stack is built: a bad replica URL must fail
  // createDb before the primary's pool exists (it would live on unclosed, its telemetry
  // series reported for ever and added to those of a Db on the same target).
  // A replica is a copy of the primary: the models are in the primary's schema there too.
  const replicaOptions = config.schema === undefined ? dbOptions : { ...dbOptions, schema: config.schema };
  const replicaConfigs = config.replicaUrls.map((url, i) => loadReplicaConfig(replicaOptions, env, url, i));
  const primary = buildStack(PrismaClient, db, config, 'primary', lifecycle, logger, record, named(poolName ?? defaultPoolName(config.target)), prismaOptions);
  primary.hub.onFailure = reportFailure;
  const replicaStacks = config.replicaUrls.map((url, i) => {
    const replicaConfig = replicaConfigs[i]!;
    const name = poolName === undefined ? defaultPoolName(replicaConfig.target) : `${poolName}/replica-${i + 1}`;
    const stack = buildStack(PrismaClient, db, replicaConfig, describeUrl(url), lifecycle, logger, record, named(name), prismaOptions);
    stack.hub.onFailure = reportFailure;
    return stack;
  });
  const stacks = [primary, ...replicaStacks];
  if (replicaStacks.length > 0) listenOnReplicas(primary.prisma, replicaStacks.map((r) => r.prisma));
  const closing = (): boolean => lifecycle.state !== 'open';
  const targets = replicaStacks.map((stack) => replicaTarget(stack));
  const router = targets.length === 0 ? undefined : new ReplicaRouter(targets, config.replica, closing);
  const pools = (): GuardedPool[] => stacks.flatMap((s) => s.driver.pool() ?? []);

  const shutdown: Shutdown = {
    destroyBusy: () => pools().reduce((n, pool) => n + pool.destroyBusy(cutByClose), 0),
    end: async () => void (await Promise.all([primary.end(), router?.close()])),
    // Every pool's: a replica's connections still closing when close() resolved were counted and reported after 'closed'.
    allClosed: async () => void (await Promise.all(stacks.map(allClosed))),
  };
  const shared: SharedApi<C> = {
    replicas: () => router?.status() ?? [],
    scope: lifecycle.guard(<T>(fn: () => Promise<T>, scopeOptions?: ScopeOptions) => runScope(fn, scopeOptions)) as DatalayerApi<C>['scope'],
    handler: (fn, handlerOptions) => {
      // When the handler is made (module load), not at its first invocation.
      if (handlerOptions !== undefined) checkScopeOptions(handlerOptions, 'handler');
      return (...args) => shared.scope(() => fn(...args), handlerOptions);
    },
    stats: () => ({ pool: figuresOf(primary), counters: sumCounters(stacks), lastError: lastError && { ...lastError }, state: lifecycle.state }),
    health: (healthOptions) => healthOf(primary, lifecycle, router, healthOptions),
    verify: lifecycle.guard((verifyOptions?: VerifyOptions) =>
      verifier().verify({ config, env: env ?? process.env, query: (sql, ms, expire) => queryWithin(() => poolOf(primary), sql, ms, expire) }, verifyOptions),
    ) as DatalayerApi<C>['verify'],
    on: (event, listener) => {
      const offs = stacks.map((s) => s.hub.on(event, listener));
      return () => offs.forEach((off) => off());
    },
    describe: () => `${config.driver} ${config.mode} postgresql://${config.target.host}:${config.target.port}/${config.target.database} ssl=${config.ssl.mode}`,
    config,
    close: (closeOptions) => lifecycle.close(closeOptions, shutdown),
    closeOnSignals: (signalOptions) => lifecycle.closeOnSignals(shared.close, signalOptions),
  };
  if (closeOnSignals) shared.closeOnSignals(closeOnSignals === true ? {} : closeOnSignals);
  const family: Family<C> = {
    stacks,
    targets,
    router,
    routing: { defaults: config.transaction, closing, closedError: closedUnderWork, inUnit: () => inUnitOf(db), inSession: () => primary.driver.pool()?.inSession() ?? false },
    lifecycle,
    shared,
    prismaExtends: stacks.map((s) => s.prisma.$extends),
    names: [],
  };
  const base: Member = { family, parent: undefined, clients: stacks.map((s) => s.prisma) };
  const api = memberApi(base, family, stacks.map((s) => s.units));
  // The layer's members as plain properties of the client (a client extension would put a
  // proxy layer on every model access); a model accessor of the same name keeps its name.
  family.names = Object.keys(api).filter((name) => !(name in primary.prisma));
  present(base, family, api);
  return primary.prisma as unknown as Db<C, LogEvents<P>>;
}

/**
 * `db.$on(...)` hears Prisma's log events of every client the Db built, as `prisma.log` is
 * given to each: Prisma's own `$on` is the primary client's alone, so a read sent to a
 * replica (db.read) raised no 'query' event and a query log missed it.
 */
function listenOnReplicas(primary: PrismaLike, replicas: readonly PrismaLike[]): void {
  const own = primary.$on;
  primary.$on = function (this: unknown, eventType: string, callback: (event: unknown) => void): unknown {
    // Prisma's checks of the event type first; its return value (the client) for chained calls.
    const result = own.call(this, eventType, callback);
    for (const replica of replicas) replica.$on(eventType, callback);
    return result;
  };
}

/** The layer's API members that are the same on every client of a Db (extended or not). */
type SharedApi<C> = Omit<DatalayerApi<C>, 'transaction' | 'read' | 'session' | 'current'>;

/** Prisma's own `$extends`, called with the client to extend as `this`. */
type PrismaExtends = (this: unknown, args: unknown) => unknown;

/** One Db: what its own client and every client extended from it share. */
interface Family<C> {
  stacks: Stack<C>[];
  targets: ReplicaTarget<C>[];
  router: ReplicaRouter<C> | undefined;
  routing: ReadRouting<C>;
  lifecycle: Lifecycle;
  shared: SharedApi<C>;
  /** Each stack's Prisma `$extends`, kept before present() replaced the primary's. */
  prismaExtends: PrismaExtends[];
  /** The names the layer's members take on the client (not those of a model accessor). */
  names: string[];
}

/** The API of one client of the Db: its own units of work (one per pool) with the Db's routing, the rest shared. */
function memberApi<C>(member: Member, family: Family<C>, units: UnitOfWork<C>[]): DatalayerApi<C> {
  const owned = units.map((u, i) => ownedUnits(member, i, u));
  const primary = owned[0]!;
  // Routing state (which replica is up, whose turn it is) is the Db's; the units are this client's.
  const unitsOf = (target: ReplicaTarget<C>): UnitsOfWork<C> => owned[family.targets.indexOf(target) + 1]!;
  const transaction = routeReads(primary.transaction, family.router, { ...family.routing, unitsOf });
  const { lifecycle } = family;
  return {
    ...family.shared,
    transaction: lifecycle.guard(transaction) as typeof transaction,
    read: lifecycle.guard((fn: (tx: TxClient<C>) => Promise<unknown>, readOptions?: Omit<TransactionOptions, 'readOnly'>) => transaction(fn, { ...readOptions, readOnly: true })) as DatalayerApi<C>['read'],
    session: lifecycle.guard(primary.session) as UnitsOfWork<C>['session'],
    current: primary.current,
  };
}

/**
 * Puts the layer's API on a client of the Db: its members, `$datalayer`, `$disconnect`
 * closing the pools' connections as Prisma's does (the Db stays usable), and `$extends`
 * giving a client with the API too.
 * On an extended client (Prisma's extension proxy) they are set on the proxy's target and
 * shadow the Db's, which the target inherits.
 */
function present<C>(member: Member, family: Family<C>, api: DatalayerApi<C>): void {
  const client = member.clients[0] as Record<string, unknown>;
  for (const name of family.names) client[name] = api[name as keyof DatalayerApi<C>];
  client.$datalayer = api;
  client.$disconnect = () => disconnect(family);
  client.$extends = (args: unknown) => extendMember(member, family, args);
}

/**
 * `$disconnect()`: every pool's connections closed, the Db left open (Lifecycle.disconnect).
 * Prisma's engine stays connected: its own $disconnect would roll back the units of work
 * running (cancelAllTransactions) and free the query compiler, loaded again by the next
 * query; bare Prisma's connections are its pool's, which this closes.
 */
function disconnect<C>(family: Family<C>): Promise<void> {
  return family.lifecycle.disconnect(() => Promise.all(family.stacks.map((stack) => stack.driver.pool()?.disconnect())));
}

/** `client.$extends(args)`: the same extension on the client of every pool, with units of work of its own. */
function extendMember<C>(member: Member, family: Family<C>, args: unknown): unknown {
  // Prisma's function form (Prisma.defineExtension) calls $extends on the client given to it: back here.
  if (typeof args === 'function') return (args as (client: unknown) => unknown)(member.clients[0]);
  const clients = member.clients.map((client, i) => family.prismaExtends[i]!.call(client, args));
  const child: Member = { family, parent: member, clients };
  present(child, family, memberApi(child, family, family.stacks.map((s, i) => s.unitsOn(clients[i]))));
  return clients[0];
}

/** db.health(): the primary's pool, and each replica's lag check when one is due, within the same timeout. */
async function healthOf<C>(primary: Stack<C>, lifecycle: Lifecycle, router: ReplicaRouter<C> | undefined, options?: HealthOptions): Promise<HealthReport & { replicas: ReplicaStatus[] }> {
  const figures = (): DbStats['pool'] => primary.driver.pool()?.figures() ?? emptyFigures(primary.config);
  let replicas: ReplicaStatus[] | undefined;
  const report = await checkHealth(
    {
      pool: async () => {
        await primary.prisma.$connect();
        return primary.driver.pool()!;
      },
      figures,
      isClosed: () => lifecycle.state !== 'open',
      // Each replica is checked when a reading is due, not only reported from what reads
      // have learned: one no read has reached yet would otherwise be reported up.
      ...(router === undefined ? {} : { alongside: async (ms: number) => void (replicas = await router.probe(ms)) }),
    },
    options,
  );
  return { ...report, replicas: replicas ?? router?.status() ?? [] };
}

/** What work still running at close()'s deadline fails with: its connection was closed under it. */
function closedUnderWork(cause?: unknown): DatabaseConnectionError {
  return new DatabaseConnectionError('The connection was closed by db.close() after its deadline, with this work still running', { retryable: false, ...(cause === undefined ? {} : { cause }) });
}

/**
 * What work running at close()'s deadline fails with, one error per connection: it was
 * running, so it may have happened (`outcome: 'unknown'`; a unit of work, which knows
 * better, says 'rolled-back' for its own).
 */
function cutByClose(): DatabaseConnectionError {
  const err = closedUnderWork();
  err.outcome = 'unknown';
  return err;
}

/** The counters of the Db: its primary's and its replicas' together. */
function sumCounters(stacks: readonly Stack<unknown>[]): DbCounters {
  const sum = newCounters();
  for (const { counters } of stacks) for (const key of Object.keys(sum) as (keyof DbCounters)[]) sum[key] += counters[key];
  return sum;
}

/**
 * A replica's configuration: the primary's options with the replica's URL. A problem in
 * that URL is reported under the replica's own setting (`replicas[0]`,
 * `DATABASE_REPLICA_URL[0]`), not the primary's `url`; ConfigError removes the password.
 */
let channelBindingWarned = false;

/** Neon's URLs carry channel_binding=require; over its WebSocket, TLS ends at the proxy, so it cannot apply. Said once. */
function warnChannelBinding(logger: DbLogger | undefined): void {
  if (channelBindingWarned) return;
  channelBindingWarned = true;
  const message = 'channel_binding=require does not apply to the neon driver: TLS ends at Neon\'s WebSocket proxy (wss), which authenticates with the password it receives';
  if (logger) logger.warn({ event: 'config', setting: 'channel_binding' }, message);
  else process.emitWarning(message, { code: 'PRISMA_DATALAYER_CHANNEL_BINDING' });
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

const GLOBAL_KEY = Symbol.for('prisma-datalayer.db');
/** The options of the last getDb call known to name the process-wide Db's database. */
const GLOBAL_SEEN = Symbol.for('prisma-datalayer.db.seen');
type GlobalSlot = { [GLOBAL_KEY]?: unknown; [GLOBAL_SEEN]?: readonly unknown[] };

/** What decides which database getDb's options name (the rest, such as pool sizes, does not). */
function targetOptions(options: CreateDbOptions<unknown>): readonly unknown[] {
  const { url, host, port, user, database, env } = options;
  return [url, host, port, user, database, env];
}

/**
 * The process-wide Db. Kept on globalThis so that a development server's module reloads
 * reuse the open pool instead of leaking a new one per reload. A call whose options name
 * another database (a second getDb for an audit database) is a ConfigError: handing it the
 * first database's Db sent its writes there.
 */
export function getDb<C, P extends PrismaOptions = {}>(options: CreateDbOptions<C> & { prisma?: P }): Db<C, LogEvents<P>> {
  const slot = globalThis as GlobalSlot;
  const seen = targetOptions(options as CreateDbOptions<unknown>);
  const existing = slot[GLOBAL_KEY] as Db<C, LogEvents<P>> | undefined;
  if (existing === undefined) {
    const db = createDb(options);
    slot[GLOBAL_KEY] = db;
    slot[GLOBAL_SEEN] = seen;
    return db;
  }
  // The same options as before (every call of a module, every reload): no configuration read.
  const known = slot[GLOBAL_SEEN];
  if (known !== undefined && known.length === seen.length && known.every((v, i) => v === seen[i])) return existing;
  const { PrismaClient: _class, env, logger: _logger, closeOnSignals: _signals, telemetry: _telemetry, prisma: _prisma, ...dbOptions } = options;
  const wanted = loadConfig(dbOptions, env).target;
  const held = existing.config.target;
  if (wanted.host !== held.host || wanted.port !== held.port || wanted.database !== held.database || wanted.user !== held.user) {
    const where = (t: typeof held): string => `${t.user}@${t.host}:${t.port}/${t.database}`;
    throw new ConfigError([
      {
        setting: 'getDb',
        problem: `the process-wide Db is ${where(held)}, and these options name ${where(wanted)}: getDb keeps one Db per process. Use createDb for a second database, or await resetDb() first to replace it`,
      },
    ]);
  }
  slot[GLOBAL_SEEN] = seen;
  return existing;
}

/** Forgets the process-wide Db (after closing it), so the next getDb creates a new one. */
export async function resetDb(): Promise<void> {
  const slot = globalThis as GlobalSlot;
  const db = slot[GLOBAL_KEY] as { close?: () => Promise<void> } | undefined;
  delete slot[GLOBAL_KEY];
  delete slot[GLOBAL_SEEN];
  await db?.close?.();
}
