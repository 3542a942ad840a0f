// Config → pg-pool options and the per-connection policy. Both drivers' pools take the
// same options (the Neon driver bundles pg-pool), so the pool policy is expressed once.

import type { DbConfig } from '../config.ts';
import { DEADLINE_GRACE_MS, unitLimitsOn } from '../deadline.ts';
import { rawConnectionOf } from '../scope.ts';
import type { SslChoice } from '../ssl.ts';
import type { PoolRecorder } from '../telemetry.ts';
import type { ClientPolicy, StatementDeadline } from './client.ts';

/** pg-pool options expressing the configured bounds; the layer's pool bounds every wait itself. */
export function poolOptions(config: DbConfig): Record<string, unknown> {
  const { pool, mode } = config;
  const common: Record<string, unknown> = {
    host: config.target.host,
    port: config.target.port,
    user: config.target.user,
    password: config.target.password,
    database: config.target.database,
    max: pool.size + pool.maxOverflow,
    // 0: pg-pool sets no timer of its own; GuardedPool bounds the wait (pool timeout vs
    // connect deadline) and each connection bounds its own handshake.
    connectionTimeoutMillis: 0,
    // Idle sockets must not keep a process alive that has nothing else to do.
    allowExitOnIdle: true,
    ...startupParameters(config),
  };
  if (mode === 'serverless') {
    // NullPool: a connection lives for one checkout. `maxUses: 1` closes it on release
    // (an idle timeout of 0 would mean the opposite: keep it forever).
    return { ...common, min: 0, maxUses: 1, idleTimeoutMillis: 1 };
  }
  // QueuePool: `size` connections stay; the overflow above it closes once idle.
  return { ...common, min: pool.size, idleTimeoutMillis: pool.overflowIdleMs, maxLifetimeSeconds: pool.recycleMs / 1000 };
}

/**
 * What the startup packet carries besides user and database. Transaction poolers reject
 * startup parameters (unit-of-work.ts sets the timeouts per unit there), so they get none but
 * Neon's routing options; Neon's proxy
 * forwards only `application_name` and `options`, so the timeouts travel inside `options`
 * as `-c name=value`, which PostgreSQL itself also accepts.
 */
export function startupParameters(config: DbConfig): Record<string, string | number> {
  const params: Record<string, string | number> = { application_name: config.applicationName };
  // Behind a pooler `serverOptions` holds only the URL's verbatim tokens (config.ts refuses its
  // settings there): Neon's `endpoint=<id>` for clients without SNI, which Neon's proxy reads
  // and strips before the compute's PgBouncer (neondatabase/neon proxy/src/compute/mod.rs
  // filtered_options). Dropped, the proxy refused the connection asking for exactly that.
  if (config.pooler) return config.serverOptions === undefined ? params : { ...params, options: config.serverOptions };
  const settings = serverSettings(config);
  const options = [...Object.entries(settings).map(([k, v]) => `-c ${k}=${v}`), ...(config.serverOptions ? [config.serverOptions] : [])];
  if (options.length > 0) params.options = options.join(' ');
  return params;
}

/** The server-side timeouts in force for this configuration (milliseconds, validated numbers). */
export function serverSettings(config: DbConfig): Record<string, number> {
  const { statementMs, lockMs, idleInTransactionMs } = config.timeouts;
  const settings: Record<string, number> = {};
  if (statementMs > 0) settings.statement_timeout = statementMs;
  if (lockMs > 0) settings.lock_timeout = lockMs;
  if (idleInTransactionMs > 0) settings.idle_in_transaction_session_timeout = idleInTransactionMs;
  return settings;
}

/**
 * The adapter option naming the models' schema: Prisma's queries name `"<schema>"."<table>"`
 * and, without it, `"public"."<table>"` whatever the URL says.
 */
export function adapterSchema(config: DbConfig): { schema?: string } {
  return config.schema === undefined ? {} : { schema: config.schema };
}

/** The per-connection policy (driver/client.ts) for this configuration. */
export function clientPolicy(config: DbConfig, ssl: SslChoice | undefined, configure?: (client: object) => void, recorder?: PoolRecorder): ClientPolicy {
  const { connectMs, statementMs } = config.timeouts;
  // One object for every statement outside a unit: nothing allocated per statement.
  const statement: StatementDeadline | undefined = statementMs > 0 ? { ms: statementMs + DEADLINE_GRACE_MS, kind: 'statement' } : undefined;
  return {
    connectMs,
    // Probe an idle connection once it has been quiet as long as a connect may take; the
    // interval between probes is the OS's (libuv >= 1.49, Node 22+: 1 s × 10 probes).
    keepAliveDelayMs: Math.min(30_000, Math.max(1_000, connectMs)),
    ...(ssl === undefined ? {} : { ssl: () => ssl.ssl }),
    ...(configure === undefined ? {} : { configure }),
    ...(recorder === undefined ? {} : { onConnected: (ms: number) => recorder.recordCreate(ms) }),
    // node-postgres over TCP; on Neon over a WebSocket to the proxy, which forwards it to the compute.
    cancelOnAbandon: true,
    // PgBouncer forwards a cancel only while the client connection its key names is open;
    // behind Neon's -pooler endpoints too (the proxy's key maps to PgBouncer's, for the
    // proxy's connection, which closes with the WebSocket).
    ...(config.pooler ? { cancelBeforeClosing: config.driver === 'pg' ? ('forwarded' as const) : ('answered' as const) } : {}),
    // Over Neon's WebSocket, TLS ends at the proxy: channel binding cannot apply (client.ts warns).
    requireChannelBinding: config.driver === 'pg' && config.channelBinding === 'require',
    opening: new Set<object>(),
    statementDeadline(): StatementDeadline | undefined {
      // This pool's unit: a statement of another Db sent inside it keeps its own deadline.
      const unit = unitLimitsOn(config);
      // The unit's timer decides when; the error names the unit's own timeoutMs (the time a statement had left, plus the grace, means nothing to the caller).
      if (unit !== undefined && !unit.ended) return { ms: unit.timeoutMs, kind: 'unit', shared: unit };
      return statement;
    },
    transactionSettings: (connection) => {
      const unit = unitLimitsOn(config);
      // Only the unit's own BEGIN: a Prisma $transaction that fn opens beside it runs in the
      // unit's context too, and must not become read-only or take the unit's timeouts.
      if (unit === undefined || unit.ended || unit.connection === undefined || rawConnectionOf(unit.connection) !== connection) return undefined;
      return unit.settings;
    },
  };
}
