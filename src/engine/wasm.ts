// The single place that loads Prisma's WebAssembly schema engine
// (@prisma/schema-engine-wasm) and drives it over a `pg` driver adapter. It replaces the
// native schema-engine binary, which has to be downloaded from Prisma's servers.
//
// Nothing is loaded or connected on import: the wasm module (5 MB) is compiled on the first
// `openSchemaEngine()` call and then reused, because wasm-bindgen keeps module-level state
// that breaks if a second instance is started in the same process.

import { redactUrls } from '../secrets.ts';
import { DEADLINE_GRACE_MS, waitAtMost } from '../deadline.ts';
import { abandon, destroySocket, guardedClientClass, type ClientClass, type ClientPolicy, type SocketHolder } from '../driver/client.ts';
import { DatabaseConnectionError, DeadlineExceededError } from '../errors.ts';
import { isConnectionLoss } from '../failures.ts';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import type pg from 'pg';
import type {
  ApplyMigrationsInput,
  ApplyMigrationsOutput,
  CreateMigrationInput,
  CreateMigrationOutput,
  DbExecuteParams,
  DevDiagnosticInput,
  DevDiagnosticOutput,
  DiagnoseMigrationHistoryInput,
  DiagnoseMigrationHistoryOutput,
  DiffParams,
  DiffResult,
  EnsureConnectionValidityParams,
  EvaluateDataLossInput,
  EvaluateDataLossOutput,
  GetDatabaseVersionInput,
  IntrospectParams,
  IntrospectResult,
  IntrospectSqlParams,
  IntrospectSqlResult,
  MarkMigrationAppliedInput,
  MarkMigrationRolledBackInput,
  ResetInput,
  SchemaEngine as WasmSchemaEngine,
  SchemaPushInput,
  SchemaPushOutput,
} from '@prisma/schema-engine-wasm' with { 'resolution-mode': 'import' };
import type { SqlDriverAdapter, SqlMigrationAwareDriverAdapterFactory } from '@prisma/driver-adapter-utils';

// Only what the engine's callers in this package name; the engine's full type surface
// stays in @prisma/schema-engine-wasm.
export type { DiffParams, MigrationList, SchemaFilter } from '@prisma/schema-engine-wasm' with { 'resolution-mode': 'import' };

/** TLS options handed to `pg` as-is (`pg.PoolConfig['ssl']`). */
export type SslOptions = pg.PoolConfig['ssl'];

export interface OpenSchemaEngineOptions {
  /** postgresql:// URL of the database to migrate. */
  url: string;
  /**
   * TLS settings for every connection the engine opens. When given, the URL's `sslmode`
   * & co. are ignored, because `pg` lets URL parameters override the `ssl` object and a
   * self-signed server would then be rejected despite `rejectUnauthorized: false`.
   */
  ssl?: SslOptions;
  /** Prisma schema text; needed by methods that read the datamodel from the engine's own state. */
  schema?: string;
  /** File name reported in schema validation errors. */
  schemaPath?: string;
  /** Multi-file schemas (prismaSchemaFolder); takes precedence over `schema`. */
  schemaFiles?: { path: string; content: string }[];
  /**
   * An existing, empty database to use as shadow database. Without it, a temporary database
   * is created on the same server for each shadow-database operation and dropped afterwards.
   */
  shadowDatabaseUrl?: string;
  /** Receives the engine's log lines (JSON). */
  log?: (line: string) => void;
}

/** The engine methods this library uses, bound to one database. */
export interface SchemaEngineHandle {
  applyMigrations(input: ApplyMigrationsInput): Promise<ApplyMigrationsOutput>;
  createMigration(input: CreateMigrationInput): Promise<CreateMigrationOutput>;
  dbExecute(input: DbExecuteParams): Promise<void>;
  devDiagnostic(input: DevDiagnosticInput): Promise<DevDiagnosticOutput>;
  diagnoseMigrationHistory(input: DiagnoseMigrationHistoryInput): Promise<DiagnoseMigrationHistoryOutput>;
  diff(input: DiffParams): Promise<DiffResult>;
  ensureConnectionValidity(input: EnsureConnectionValidityParams): Promise<void>;
  evaluateDataLoss(input: EvaluateDataLossInput): Promise<EvaluateDataLossOutput>;
  introspect(input: IntrospectParams): Promise<IntrospectResult>;
  introspectSql(input: IntrospectSqlParams): Promise<IntrospectSqlResult>;
  markMigrationApplied(input: MarkMigrationAppliedInput): Promise<void>;
  markMigrationRolledBack(input: MarkMigrationRolledBackInput): Promise<void>;
  reset(input: ResetInput): Promise<void>;
  schemaPush(input: SchemaPushInput): Promise<SchemaPushOutput>;
  version(input?: GetDatabaseVersionInput | null): Promise<string>;
  /**
   * The first connection this engine lost while a statement was in flight (a statement or
   * connect deadline passed, the server went away), if any: what that statement did is unknown.
   */
  connectionLost(): Error | undefined;
  /** Frees the engine and ends every pool it opened (including temporary shadow databases). */
  close(): Promise<void>;
}

/** An error thrown by the engine, normalised: `code` is Prisma's error code (P1000, P3006...) when known. */
export class SchemaEngineError extends Error {
  readonly code: string | undefined;
  readonly meta: unknown;
  readonly isPanic: boolean;

  constructor(message: string, options: { code?: string; meta?: unknown; isPanic?: boolean; cause?: unknown }) {
    super(message, { cause: options.cause });
    this.name = 'SchemaEngineError';
    this.code = options.code;
    this.meta = options.meta;
    this.isPanic = options.isPanic ?? false;
  }
}

// The project's lib settings (ES2023, no DOM) carry no WebAssembly typings; this is the
// slice of the global API used here.
interface WasmInstance {
  exports: Record<string, unknown>;
}
interface WasmGlobal {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => WasmInstance;
}

interface WasmRuntime {
  SchemaEngine: typeof WasmSchemaEngine;
  version(): string;
}

interface WasmBindgenGlue extends WasmRuntime {
  __wbg_set_wasm(exports: Record<string, unknown>): void;
}

let runtime: WasmRuntime | undefined;

/**
 * The engine arms timers it never clears (a 10 s one after applyMigrations), which would
 * keep a script alive after `close()`. While any engine is open its timers hold the process
 * like any I/O; once the last one closes, the leftovers are unref'd: they still fire if the
 * process lives on, but no longer delay its exit.
 */
const engineTimers = new Set<NodeJS.Timeout>();
let openEngines = 0;

function engineSetTimeout(callback: () => void, ms: number): NodeJS.Timeout {
  const timer = setTimeout(() => {
    engineTimers.delete(timer);
    callback();
  }, ms);
  if (openEngines === 0) timer.unref();
  else engineTimers.add(timer);
  return timer;
}

function releaseEngineTimers(): void {
  if (openEngines > 0) return;
  for (const timer of engineTimers) timer.unref();
  engineTimers.clear();
}

/** Version of the bundled wasm engine (Prisma engines commit hash). Loads the module. */
export function engineVersion(): string {
  return loadRuntime().version();
}

function loadRuntime(): WasmRuntime {
  if (runtime) return runtime;
  // Resolved through the package's own export map so a hoisted or nested install both work.
  const gluePath = require.resolve('@prisma/schema-engine-wasm/schema_engine_bg');
  const glue = evaluateGlue(readFileSync(gluePath, 'utf8'));
  const { WebAssembly } = globalThis as unknown as { WebAssembly: WasmGlobal };
  const module = new WebAssembly.Module(readFileSync(path.join(path.dirname(gluePath), 'schema_engine_bg.wasm')));
  // The wasm imports its JS helpers under the glue file's own module specifier.
  const instance = new WebAssembly.Instance(module, {
    './schema_engine_bg.js': glue as unknown as Record<string, unknown>,
  });
  glue.__wbg_set_wasm(instance.exports);
  const start = instance.exports['__wbindgen_start'];
  if (typeof start === 'function') (start as () => void)();
  runtime = glue;
  return runtime;
}

/**
 * The glue file is an ES module, which neither `require()` (Jest, and Node 20 without a
 * warning) nor a dynamic `import()` under Jest's VM can load. Its only module syntax is
 * `export function`/`export class` declarations (wasm-bindgen's bundler output, pinned to an
 * exact version), so dropping the keyword and returning the names is a faithful translation.
 * `new Function` keeps the code in the caller's realm, so `instanceof` checks on values
 * the driver adapter hands to the engine keep working under Jest.
 */
function evaluateGlue(source: string): WasmBindgenGlue {
  const names: string[] = [];
  const body = source.replace(/^export (function|class) ([A-Za-z0-9_$]+)/gm, (_m, kind: string, name: string) => {
    names.push(name);
    return `${kind} ${name}`;
  });
  if (/^\s*(export|import)\b/m.test(body)) {
    throw new Error('@prisma/schema-engine-wasm: unexpected module syntax in schema_engine_bg.js (package version changed?)');
  }
  // `module` is an ESM free variable there: undefined makes its Node-crypto fallback inert.
  // `setTimeout` is shadowed so engine timers can be released when the last engine closes.
  const factory = new Function('module', 'setTimeout', `"use strict";\n${body}\nreturn { ${names.join(', ')} };`) as (
    module: undefined,
    setTimeout: (callback: () => void, ms: number) => NodeJS.Timeout,
  ) => Record<string, unknown>;
  const glue = factory(undefined, engineSetTimeout);
  for (const required of ['__wbg_set_wasm', 'SchemaEngine', 'version']) {
    if (typeof glue[required] !== 'function') {
      throw new Error(`@prisma/schema-engine-wasm: schema_engine_bg.js does not export ${required}`);
    }
  }
  return glue as unknown as WasmBindgenGlue;
}

/** Prisma's default connect_timeout (seconds). */
const DEFAULT_CONNECT_S = 5;
/**
 * How long a statement may go unanswered when the URL has no socket_timeout: a migration
 * statement can rightly run for minutes (an index build), so this is long. A connection
 * nothing comes back on any more (a black-holed network) is found sooner by watchStatement.
 */
const DEFAULT_STATEMENT_S = 600;

/** A pool's settings: pg's, and the deadlines of its connections. */
interface EngineConnection {
  config: pg.PoolConfig;
  schema?: string;
  /** The URL's channel_binding=require (libpq's): SCRAM-SHA-256-PLUS over SSL or no connection. */
  requireChannelBinding?: boolean;
  connectMs: number;
  statementMs: number;
}

/** A whole number of seconds from a URL parameter; 0 or nonsense: the fallback (every wait has a deadline). */
function seconds(parsed: URL, name: string, fallback: number): number {
  const value = Number(parsed.searchParams.get(name) ?? fallback);
  return (Number.isFinite(value) && value > 0 ? value : fallback) * 1000;
}

/**
 * pg merges URL parameters over the config object, so an explicit `ssl` object only wins
 * if the URL carries no TLS parameters. Prisma-only parameters are dropped for the same reason;
 * connect_timeout and socket_timeout (Prisma's, in seconds) become the connections' deadlines.
 */
function connectionConfig(url: string, ssl: SslOptions | undefined): EngineConnection {
  const parsed = new URL(url);
  const schema = parsed.searchParams.get('schema') ?? undefined;
  const connectMs = seconds(parsed, 'connect_timeout', DEFAULT_CONNECT_S);
  const statementMs = seconds(parsed, 'socket_timeout', DEFAULT_STATEMENT_S);
  const channelBinding = parsed.searchParams.get('channel_binding') ?? 'prefer';
  const drop = ['schema', 'channel_binding', 'connection_limit', 'pool_timeout', 'pgbouncer', 'statement_cache_size', 'socket_timeout', 'connect_timeout'];
  if (ssl !== undefined) drop.push('ssl', 'sslmode', 'sslcert', 'sslkey', 'sslrootcert', 'sslaccept', 'uselibpqcompat');
  for (const key of drop) parsed.searchParams.delete(key);
  // Migration scripts name their tables without a schema (`CREATE TABLE "users"`): the
  // native engine runs them with the URL's schema as search_path, and so do these connections.
  if (schema !== undefined) parsed.searchParams.set('options', [searchPathOption(schema), parsed.searchParams.get('options')].filter(Boolean).join(' '));
  // idleTimeoutMillis 0: migrations are serialised by a session-level advisory lock taken on
  // whichever pooled connection ran `pg_advisory_lock`; pg's default would close that
  // connection after 10 idle seconds (releasing the lock) while a long migration runs on
  // another one. Pools live only as long as the engine, so nothing idles for long.
  // connectionTimeoutMillis bounds the wait for a free connection; each connection's own
  // handshake is bounded by its class (driver/client.ts), which fires first and says so.
  const config: pg.PoolConfig = { connectionString: parsed.toString(), max: 4, idleTimeoutMillis: 0, connectionTimeoutMillis: connectMs + DEADLINE_GRACE_MS };
  if (ssl !== undefined) config.ssl = ssl;
  // As the application's connections (driver/pg.ts, options.ts): bound when the server offers it; `require` refuses otherwise.
  if (channelBinding !== 'disable') Object.assign(config, { enableChannelBinding: true });
  return { config, connectMs, statementMs, ...(schema === undefined ? {} : { schema }), ...(channelBinding === 'require' ? { requireChannelBinding: true } : {}) };
}

/** `-c search_path="<schema>"` for the startup packet's options (a space or backslash escaped, as PostgreSQL splits them). */
function searchPathOption(schema: string): string {
  const value = `"${schema.replace(/"/g, '""')}"`.replace(/[\\\s]/g, (c) => `\\${c}`);
  return `-c search_path=${value}`;
}

/**
 * The library's own connection class (driver/client.ts): a connect deadline, TCP keepalive,
 * and a deadline on every statement, past which the socket is destroyed.
 */
function engineClientClass(connection: EngineConnection): ClientClass {
  const statement = { ms: connection.statementMs, kind: 'statement' as const };
  const policy: ClientPolicy = {
    connectMs: connection.connectMs,
    keepAliveDelayMs: Math.min(30_000, Math.max(1_000, connection.connectMs)),
    statementDeadline: () => statement,
    ...(connection.requireChannelBinding === true ? { requireChannelBinding: true } : {}),
  };
  const { Client } = require('pg') as typeof import('pg');
  return guardedClientClass(Client as unknown as ClientClass, policy);
}

function withDatabase(connection: EngineConnection, database: string): EngineConnection {
  const parsed = new URL(connection.config.connectionString ?? '');
  parsed.pathname = `/${encodeURIComponent(database)}`;
  return { ...connection, config: { ...connection.config, connectionString: parsed.toString() } };
}

type Disposable = { dispose(): Promise<void> };

const PG_CHAR_OID = 18;
const PG_TEXT_OID = 25;

interface FieldLike {
  dataTypeID: number;
}

/**
 * The engine describes schemas with catalog queries returning the one-byte `"char"` type
 * (pg_class.relkind, pg_constraint.contype...), which @prisma/adapter-pg 7.10 rejects as an
 * unsupported column type. pg already parsed those values as strings, so relabelling the
 * column as text before the adapter looks at it is lossless.
 */
function relabelCharColumns(result: unknown): void {
  for (const part of Array.isArray(result) ? result : [result]) {
    const fields = (part as { fields?: FieldLike[] } | null | undefined)?.fields;
    if (!Array.isArray(fields)) continue;
    for (const field of fields) {
      if (field.dataTypeID === PG_CHAR_OID) field.dataTypeID = PG_TEXT_OID;
    }
  }
}

type QueryFn = (...args: unknown[]) => unknown;

/**
 * Relabels `"char"` columns in every result, reports a statement whose connection was lost,
 * and watches every statement for a silent network (watchStatement).
 */
function patchClientQuery(client: pg.PoolClient, connection: EngineConnection, onLost: (error: unknown) => void): void {
  const original = client.query.bind(client) as QueryFn;
  const settle = (error: unknown, result: unknown): void => {
    if (!error) relabelCharColumns(result);
    else if (isConnectionLoss(error)) onLost(error);
  };
  const patched: QueryFn = (...args) => {
    const last = args[args.length - 1];
    const unwatch = watchStatement(client, connection);
    // Pool.query() uses the callback form; the adapter's transactions use the promise form.
    if (typeof last === 'function') {
      args[args.length - 1] = (error: unknown, result: unknown) => {
        unwatch();
        settle(error, result);
        (last as (e: unknown, r: unknown) => void)(error, result);
      };
      return original(...args);
    }
    const returned = original(...args);
    if (returned instanceof Promise) {
      return returned.then(
        (result: unknown) => {
          unwatch();
          settle(undefined, result);
          return result;
        },
        (error: unknown) => {
          unwatch();
          settle(error, undefined);
          throw error;
        },
      );
    }
    unwatch();
    return returned;
  };
  (client as unknown as { query: QueryFn }).query = patched;
}

/**
 * How often a statement that has gone unanswered is looked up from a connection of its own
 * (watchStatement): twice the connect timeout, 2 to 30 s. Two checks in a row that find
 * the network silent give the connection up, so a black hole ends a migration within a
 * few of these, not at the 600 s statement deadline.
 */
function livenessCheckMs(connectMs: number): number {
  return Math.min(30_000, Math.max(2_000, 2 * connectMs));
}

/** What a look from another connection found of a statement's backend. */
type BackendSeen = 'running' | 'answered' | 'unreachable' | 'unknown';

/**
 * A migration statement may rightly run for many minutes (an index build), so it has no
 * short deadline; and TCP cannot tell a long statement from a lost answer (keepalive probes
 * wait while the statement's bytes are unacknowledged, and a middlebox that forgot the flow,
 * or a proxy whose far side went silent, acknowledges them itself). So a statement unanswered
 * for livenessCheckMs is looked up on the server from a new connection: its backend still
 * running it (`active` in pg_stat_activity) is a long statement and keeps it going; a
 * backend that finished it (idle) while nothing came back, or a server that cannot be reached
 * at all within the connect timeout, twice in a row, is a silent network: the connection is
 * given up (cancel request, socket destroyed) and the statement fails as a lost connection.
 * Anything else (a pooler's made-up backend pid, no right to see the backend, the server
 * refusing the extra connection) proves nothing, and the statement keeps waiting as before.
 */
function watchStatement(client: pg.PoolClient, connection: EngineConnection): () => void {
  const pid = (client as { processID?: number | null }).processID;
  if (typeof pid !== 'number') return () => undefined;
  const every = livenessCheckMs(connection.connectMs);
  let silent = 0;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const schedule = (): void => {
    timer = setTimeout(() => void check(), every);
    // The statement's socket keeps the process alive while it waits, not this check.
    timer.unref();
  };
  const check = async (): Promise<void> => {
    const seen = await lookUpBackend(connection, pid);
    if (stopped) return;
    silent = seen === 'answered' || seen === 'unreachable' ? silent + 1 : 0;
    if (silent < 2) return schedule();
    const waited = Math.round(((silent + 1) * every) / 1000);
    const why =
      seen === 'answered'
        ? `the server had finished the statement but its answer never arrived in ${waited} s`
        : `the server could not be reached on a new connection either, for ${waited} s`;
    abandon(client, new DatabaseConnectionError(`The network to the database went silent during a schema engine statement: ${why}`, { retryable: false }));
  };
  schedule();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** The statement's backend as a new connection of the engine's own kind sees it, bounded by the connect timeout. */
async function lookUpBackend(connection: EngineConnection, pid: number): Promise<BackendSeen> {
  try {
    // Same database and role: a pooler's or a proxy's made-up pid (its own cancel key) is unlikely to name any backend, and then not one of these.
    const sql = 'SELECT state FROM pg_stat_activity WHERE pid = $1 AND datname = current_database() AND usename = current_user';
    const rows = await onOwnConnection<{ state: string | null }>(connection, sql, [pid]);
    const state = rows[0]?.state;
    if (state === 'active') return 'running';
    return state === 'idle' || state?.startsWith('idle in transaction') === true ? 'answered' : 'unknown';
  } catch (error) {
    return error instanceof DeadlineExceededError ? 'unreachable' : 'unknown';
  }
}

/** `sql` on a new connection like the engine's, its connect and its statement each bounded by the connect timeout. */
async function onOwnConnection<T>(connection: EngineConnection, sql: string, params: unknown[]): Promise<T[]> {
  const Client = engineClientClass({ ...connection, statementMs: connection.connectMs });
  const client = new Client({ ...connection.config }) as unknown as pg.Client;
  try {
    await client.connect();
    return (await client.query(sql, params)).rows as T[];
  } finally {
    // A goodbye the network swallows would keep the socket (and the process) open.
    if (!(await waitAtMost(client.end(), connection.connectMs))) destroySocket(client as unknown as SocketHolder, new DeadlineExceededError('connect', connection.connectMs));
  }
}

/**
 * One statement on a connection of the engine's own kind (the URL's TLS, channel binding
 * and schema), the connect and the statement each bounded by the URL's connect timeout:
 * for a short look at the database beside the engine (who holds the migration lock).
 */
export function queryBeside<T>(options: Pick<OpenSchemaEngineOptions, 'url' | 'ssl'>, sql: string, params: unknown[]): Promise<T[]> {
  return onOwnConnection<T>(connectionConfig(options.url, options.ssl), sql, params);
}

/** The part of @prisma/adapter-pg's connection adapter `wholeScripts` relies on; test/engine checks it. */
export interface PgAdapterShape {
  executeScript(script: string): Promise<void>;
  /** Throws the driver error converted as the adapter converts every error (a DriverAdapterError). */
  onError(error: unknown): never;
}

/**
 * @prisma/adapter-pg 7's `executeScript` splits the script on every `;` and runs the pieces
 * as separate autocommit statements: a plpgsql `$$ ... ; ... $$` body, a string or comment
 * with a `;` is cut apart, and a migration failing half-way stays half-applied. Prisma's
 * native schema engine sends the whole script as one simple-protocol query, which the
 * server runs as one implicit transaction. This does the same (a query without parameters
 * is a simple query in node-postgres), and converts errors with the adapter's own mapping.
 */
function wholeScripts(adapter: SqlDriverAdapter, pool: pg.Pool, onScriptError: (error: unknown) => void): SqlDriverAdapter {
  const shape = adapter as unknown as Partial<PgAdapterShape>;
  if (typeof shape.executeScript !== 'function' || typeof shape.onError !== 'function') {
    throw new Error('@prisma/adapter-pg: its adapter no longer has executeScript/onError (package version changed?)');
  }
  const convert = shape.onError.bind(adapter);
  adapter.executeScript = async (script: string): Promise<void> => {
    try {
      await pool.query(script);
    } catch (error) {
      onScriptError(error);
      convert(error);
    }
  };
  return adapter;
}

/** The connections of one pool, and those checked out (in use) right now. */
function trackClients(pool: pg.Pool): { all: Set<pg.PoolClient>; busy: Set<pg.PoolClient> } {
  const all = new Set<pg.PoolClient>();
  const busy = new Set<pg.PoolClient>();
  pool.on('connect', (client) => all.add(client));
  pool.on('acquire', (client) => busy.add(client));
  pool.on('release', (_err: unknown, client: pg.PoolClient) => busy.delete(client));
  pool.on('remove', (client) => {
    all.delete(client);
    busy.delete(client);
  });
  return { all, busy };
}

/**
 * Ends a pool without waiting on anything that may never answer. A connection still checked
 * out when the engine lets go of its pool is stuck (a `pg_advisory_lock` the engine's lock
 * timeout gave up on, a statement into a black hole): pg-pool's end() would wait for it
 * forever, so its socket is destroyed. The goodbyes to idle ones get `closeMs`, then theirs too.
 */
async function endPool(pool: pg.Pool, clients: ReturnType<typeof trackClients>, closeMs: number): Promise<void> {
  const reason = new DatabaseConnectionError('The schema engine closed this connection while a statement was still running', { retryable: false });
  for (const client of clients.busy) destroySocket(client, reason);
  if (await waitAtMost(pool.end(), closeMs)) return;
  for (const client of clients.all) destroySocket(client, new DeadlineExceededError('connect', closeMs));
}

/**
 * A migration-aware adapter factory over `@prisma/adapter-pg`, with pools owned here. PrismaPg's
 * own `connectToShadowDb()` cannot be used: with a connection string, pg lets the URL's database
 * override the shadow database name (so it would "shadow" the real database), and it drops the
 * shadow database before ending the pool that is still connected to it.
 */
function createAdapterFactory(
  options: OpenSchemaEngineOptions,
  open: Set<Disposable>,
  onLost: (error: unknown) => void,
  onScriptError: (error: unknown) => void,
): SqlMigrationAwareDriverAdapterFactory {
  const { PrismaPg } = require('@prisma/adapter-pg') as typeof import('@prisma/adapter-pg');
  const { Pool } = require('pg') as typeof import('pg');
  const main = connectionConfig(options.url, options.ssl);
  const pgOptions = main.schema === undefined ? undefined : { schema: main.schema };

  const connectTo = async (connection: EngineConnection, afterDispose?: () => Promise<void>): Promise<SqlDriverAdapter> => {
    const pool = new Pool({ ...connection.config, Client: engineClientClass(connection) } as unknown as pg.PoolConfig);
    const clients = trackClients(pool);
    pool.on('connect', (client) => patchClientQuery(client, connection, onLost));
    // An idle client dying (server restart, dropped database) must not crash the process.
    pool.on('error', () => undefined);
    const adapter = wholeScripts(await new PrismaPg(pool, pgOptions).connect(), pool, onScriptError);
    const release = adapter.dispose.bind(adapter);
    let disposed: Promise<void> | undefined;
    const entry: Disposable = {
      // Exactly once, whether the engine or close() gets there first.
      dispose: () => {
        disposed ??= (async () => {
          try {
            await release();
            await endPool(pool, clients, connection.connectMs + DEADLINE_GRACE_MS);
          } finally {
            open.delete(entry);
            await afterDispose?.();
          }
        })();
        return disposed;
      },
    };
    open.add(entry);
    adapter.dispose = entry.dispose;
    return adapter;
  };

  return {
    provider: 'postgres',
    adapterName: '@prisma/adapter-pg',
    connect: () => connectTo(main),
    connectToShadowDb: async () => {
      if (options.shadowDatabaseUrl !== undefined) {
        return connectTo(connectionConfig(options.shadowDatabaseUrl, options.ssl));
      }
      const name = `prisma_migrate_shadow_db_${globalThis.crypto.randomUUID()}`;
      const admin = await connectTo(main);
      try {
        await admin.executeScript(`CREATE DATABASE "${name}"`);
      } catch (error) {
        await admin.dispose();
        throw error;
      }
      return connectTo(withDatabase(main, name), async () => {
        try {
          await admin.executeScript(`DROP DATABASE IF EXISTS "${name}"`);
        } finally {
          await admin.dispose();
        }
      });
    },
  };
}


/**
 * Errors raised while the engine is being constructed (the first connection) lose their
 * Prisma error code at the wasm boundary but keep Prisma's user-facing message; these are
 * the connection errors' fixed openings (prisma-engines user-facing-errors, pinned version).
 */
const CONNECTION_ERROR_CODES: [RegExp, string][] = [
  [/^Authentication failed against database server/, 'P1000'],
  [/^Can't reach database server/, 'P1001'],
  [/^The database server at .* was reached but timed out/, 'P1002'],
  [/^Database `.*` does not exist/, 'P1003'],
  [/^User `.*` was denied access on the database/, 'P1010'],
  [/^Error opening a TLS connection/, 'P1011'],
  [/^Server has closed the connection/, 'P1017'],
];

function inferCode(message: string): string | undefined {
  return CONNECTION_ERROR_CODES.find(([pattern]) => pattern.test(message))?.[1];
}

/** Normalises whatever the wasm boundary throws into a SchemaEngineError. */
export function toSchemaEngineError(error: unknown): SchemaEngineError {
  if (error instanceof SchemaEngineError) return error;
  // By name: under Jest the trap's RuntimeError may come from another realm.
  if (error instanceof Error && error.name === 'RuntimeError') {
    return new SchemaEngineError(`Schema engine panicked: ${redactUrls(error.message)}`, { isPanic: true, cause: error });
  }
  if (typeof error === 'object' && error !== null) {
    const record = error as { message?: unknown; code?: unknown; meta?: unknown; error_code?: unknown };
    const message = typeof record.message === 'string' ? record.message : String(error);
    const code =
      typeof record.code === 'string'
        ? record.code
        : typeof record.error_code === 'string'
          ? record.error_code
          : inferCode(message);
    return new SchemaEngineError(redactUrls(message), { code, meta: record.meta, cause: error });
  }
  return new SchemaEngineError(redactUrls(String(error)), {});
}

/**
 * Opens a schema engine on `options.url`. The returned handle must be closed; it owns the
 * pg pools the engine opens.
 */
export async function openSchemaEngine(options: OpenSchemaEngineOptions): Promise<SchemaEngineHandle> {
  const { SchemaEngine } = loadRuntime();
  // Required here, not at module top, so importing this file loads nothing; `require`, not
  // `import()`, because Jest's VM rejects dynamic imports without experimental flags.
  const { bindMigrationAwareSqlAdapterFactory } =
    require('@prisma/driver-adapter-utils') as typeof import('@prisma/driver-adapter-utils');

  const open = new Set<Disposable>();
  let lost: Error | undefined;
  const onLost = (error: unknown): void => {
    lost ??= error instanceof Error ? error : new Error(String(error));
  };
  // The SQLSTATE of the last script that failed (a migration's): the engine's error through
  // the adapter no longer carries it.
  let scriptState: string | undefined;
  const onScriptError = (error: unknown): void => {
    const code = (error as { code?: unknown } | null)?.code;
    scriptState = typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
  };
  const adapter = bindMigrationAwareSqlAdapterFactory(createAdapterFactory(options, open, onLost, onScriptError));
  const closeAdapters = async (): Promise<void> => {
    await Promise.allSettled([...open].map((entry) => entry.dispose()));
  };

  const schemaPath = options.schemaPath ?? 'schema.prisma';
  // The engine wants either no datamodel or a non-empty list.
  const files = options.schemaFiles?.length
    ? options.schemaFiles.map((file): [string, string] => [file.path, file.content])
    : options.schema === undefined
      ? []
      : [[schemaPath, options.schema] as [string, string]];
  const datamodels = files.length > 0 ? files : undefined;
  const log = options.log ?? (() => undefined);

  const normalise = withExternalErrors(adapter, () => scriptState);
  let engine: WasmSchemaEngine;
  openEngines += 1;
  try {
    engine = await SchemaEngine.new({ datamodels }, log, adapter);
  } catch (error) {
    openEngines -= 1;
    await closeAdapters();
    releaseEngineTimers();
    throw normalise(error);
  }

  return engineHandle(engine, closeAdapters, () => lost, normalise);
}

interface ExternalErrors {
  consumeError(id: number): { error: unknown } | undefined;
}

/**
 * An error the adapter cannot classify (the layer's connect or statement deadline, for one)
 * reaches the engine as `External error id#N`, the id of the error in the bound adapter's
 * registry (@prisma/driver-adapter-utils): the message is put back from there.
 */
function withExternalErrors(adapter: object, scriptState: () => string | undefined): (error: unknown) => SchemaEngineError {
  const registry = (adapter as { errorRegistry?: ExternalErrors }).errorRegistry;
  return (error) => {
    const normalised = toSchemaEngineError(error);
    const external = /External error id#(\d+)/.exec(normalised.message);
    const original = external === null ? undefined : registry?.consumeError(Number(external[1]))?.error;
    if (!(original instanceof Error) || external === null) return asFailedMigration(normalised, scriptState);
    const message = normalised.message.replace(external[0], redactUrls(original.message));
    return new SchemaEngineError(message, { code: normalised.code, meta: normalised.meta, isPanic: normalised.isPanic, cause: original });
  };
}

/** The span the engine's error carries when a migration's script failed, naming the migration. */
const APPLY_SCRIPT_SPAN = /apply_migration::apply_script\s+with migration_name="([^"]+)"/;
/** Where the engine's span trace starts (`   0: sql_schema_connector::...`). */
const SPAN_TRACE = /\n\s+0: [a-z_]+::/;

/**
 * A migration whose script failed reaches the engine through the driver adapter, where the
 * native engine's user-facing P3018 is lost: what came out was `external connector error`,
 * the database's message and a Rust span trace, with no code (docs/schema-engine.md promises
 * P3018, and the prisma CLI prints its advice from it). Rebuilt as the native engine words it
 * (prisma-engines user-facing-errors ApplyMigrationError), meta included.
 */
function asFailedMigration(error: SchemaEngineError, scriptState: () => string | undefined): SchemaEngineError {
  const name = APPLY_SCRIPT_SPAN.exec(error.message)?.[1];
  if (error.code !== undefined || name === undefined) return error;
  const trace = SPAN_TRACE.exec(error.message);
  const head = trace === null ? error.message : error.message.slice(0, trace.index);
  const databaseError = head.replace(/^external connector error\s*/, '').replace(/^Error querying the database:\s*/, '').trim();
  const databaseErrorCode = scriptState() ?? 'none';
  const message =
    'A migration failed to apply. New migrations cannot be applied before the error is recovered from. Read more about how to resolve migration issues in a production database: https://pris.ly/d/migrate-resolve' +
    `\n\nMigration name: ${name}\n\nDatabase error code: ${databaseErrorCode}\n\nDatabase error:\n${databaseError}`;
  const meta = { migration_name: name, database_error_code: databaseErrorCode, database_error: databaseError };
  return new SchemaEngineError(message, { code: 'P3018', meta, isPanic: error.isPanic, cause: error });
}

/** The engine's methods with errors normalised, and a close that frees it once. */
function engineHandle(
  engine: WasmSchemaEngine,
  closeAdapters: () => Promise<void>,
  connectionLost: () => Error | undefined,
  normalise: (error: unknown) => SchemaEngineError,
): SchemaEngineHandle {
  // Calls stay on `engine` (no extracted method references): wasm-bindgen needs `this`.
  const run = async <T>(call: () => Promise<T>): Promise<T> => {
    try {
      return await call();
    } catch (error) {
      throw normalise(error);
    }
  };

  let closed = false;
  return {
    applyMigrations: (input) => run(() => engine.applyMigrations(input)),
    createMigration: (input) => run(() => engine.createMigration(input)),
    dbExecute: (input) => run(() => engine.dbExecute(input)),
    devDiagnostic: (input) => run(() => engine.devDiagnostic(input)),
    diagnoseMigrationHistory: (input) => run(() => engine.diagnoseMigrationHistory(input)),
    diff: (input) => run(() => engine.diff(input)),
    ensureConnectionValidity: async (input) => {
      await run(() => engine.ensureConnectionValidity(input));
    },
    evaluateDataLoss: (input) => run(() => engine.evaluateDataLoss(input)),
    introspect: (input) => run(() => engine.introspect(input)),
    introspectSql: (input) => run(() => engine.introspectSql(input)),
    markMigrationApplied: async (input) => {
      await run(() => engine.markMigrationApplied(input));
    },
    markMigrationRolledBack: async (input) => {
      await run(() => engine.markMigrationRolledBack(input));
    },
    reset: (input) => run(() => engine.reset(input)),
    schemaPush: (input) => run(() => engine.schemaPush(input)),
    version: (input) => run(() => engine.version(input ?? null)),
    connectionLost,
    close: async () => {
      if (closed) return;
      closed = true;
      try {
        engine.free();
      } finally {
        openEngines -= 1;
        await closeAdapters();
        releaseEngineTimers();
      }
    },
  };
}
