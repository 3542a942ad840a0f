// A drop-in for Prisma's native schema-engine binary, backed by the wasm engine (issue 8).
// The prisma CLI starts whatever PRISMA_SCHEMA_ENGINE_BINARY names and talks to it as it
// would to `schema-engine`: newline-delimited JSON-RPC 2.0 on stdin/stdout, JSON log lines
// on stderr, plus one-shot `cli <command>` invocations. This lets `prisma migrate ...` run
// where Prisma's binaries cannot be downloaded.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';

import type pg from 'pg';
import { describeUrl, redactUrls, registerUrlSecret } from '../secrets.ts';
import { LOCK_TIMEOUT, lockHeldMessage, lockHolder, throughPooler } from '../migrate.ts';
import { quoteIdent } from '../sql.ts';

import {
  engineVersion,
  openSchemaEngine,
  SchemaEngineError,
  toSchemaEngineError,
  type DiffParams,
  type MigrationList,
  type SchemaEngineHandle,
  type SchemaFilter,
  type SslOptions,
} from './wasm.ts';

/** What the CLI passes in `--datasource`: the datasource block of prisma.config.ts. */
interface DatasourceArg {
  url?: string;
  shadowDatabaseUrl?: string;
  directUrl?: string;
}

interface Args {
  version: boolean;
  datamodels: string[];
  datasource: DatasourceArg | undefined;
  cliCommand: string | undefined;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

interface RpcRequest {
  jsonrpc: '2.0';
  id?: number | string;
  method?: string;
  params?: unknown;
}

/** The error payload the prisma CLI understands (it prints `error_code` and `message`). */
interface RpcErrorData {
  is_panic: boolean;
  message: string;
  meta: unknown;
  error_code: string | null;
}

/** Entry point of bin/prisma-datalayer-schema-engine.js. */
export function main(argv: string[]): void {
  let args: Args;
  try {
    args = parseArgs(argv);
  } catch (error) {
    fatal(error instanceof Error ? error.message : String(error));
    return;
  }
  if (args.version) {
    process.stdout.write(`schema-engine-cli ${engineVersion()}\n`);
    return;
  }
  const secrets = new Secrets(args.datasource);
  const run = args.cliCommand !== undefined ? runCliCommand(args.cliCommand, args, secrets) : serveRpc(args, secrets);
  run.then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => fatal(secrets.scrub(error instanceof Error ? error.message : String(error))),
  );
}

function parseArgs(argv: string[]): Args {
  const args: Args = { version: false, datamodels: [], datasource: undefined, cliCommand: undefined };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = (): string => {
      const next = argv[++i];
      if (next === undefined) throw new Error(`missing value for ${arg}`);
      return next;
    };
    switch (arg) {
      case '--version':
      case '-V':
        args.version = true;
        break;
      case '--datamodels':
      case '-d':
        args.datamodels.push(value());
        break;
      case '--datasource':
        args.datasource = JSON.parse(value()) as DatasourceArg;
        break;
      // Accepted for compatibility; the wasm engine reads preview features from the schema.
      case '--enabled-preview-features':
      case '--extension-types':
        value();
        break;
      case 'cli':
        args.cliCommand = value();
        break;
      default:
        throw new Error(`unknown argument ${arg ?? ''}`);
    }
  }
  return args;
}

/** Log line in the native engine's format; the CLI keeps the last ERROR one for its message. */
function logLine(level: 'INFO' | 'ERROR', fields: Record<string, Json>): string {
  return JSON.stringify({ timestamp: new Date().toISOString(), level, fields, target: 'schema_engine::logger' });
}

function fatal(message: string): void {
  process.stderr.write(`${logLine('ERROR', { is_panic: false, message })}\n`);
  process.exitCode = 1;
}

/** Passwords of the datasource URLs, removed from everything this process prints (secrets.ts). */
class Secrets {
  constructor(datasource: DatasourceArg | undefined) {
    for (const url of [datasource?.url, datasource?.shadowDatabaseUrl, datasource?.directUrl]) registerUrlSecret(url);
  }

  add(url: string | undefined): void {
    registerUrlSecret(url);
  }

  scrub(text: string): string {
    return redactUrls(text);
  }
}

// ---------------------------------------------------------------------------------------
// TLS: the CLI hands over the URL as written, so sslmode & co. are interpreted here with
// libpq's meaning (require = encrypted but unverified) instead of node-postgres' (require =
// verify-full), and Prisma's sslaccept/sslcert parameters are honoured.

async function sslFor(url: string, baseDir: string): Promise<SslOptions> {
  const params = new URL(url).searchParams;
  const mode = params.get('sslmode') ?? 'prefer';
  if (mode === 'disable') return false;
  const rootCert = params.get('sslrootcert');
  // Prisma's own name for the CA file; Prisma verifies against it unless told otherwise.
  const prismaCa = params.get('sslcert');
  const caFile = rootCert ?? prismaCa;
  const accept = params.get('sslaccept');
  // libpq: `require` with a root certificate behaves like verify-ca.
  const effective = mode === 'require' && rootCert !== null ? 'verify-ca' : mode;
  const verify =
    effective === 'verify-ca' ||
    effective === 'verify-full' ||
    accept === 'strict' ||
    (prismaCa !== null && accept !== 'accept_invalid_certs');
  const tls: Exclude<SslOptions, boolean | undefined> = { rejectUnauthorized: verify };
  if (caFile !== null && caFile !== 'system') tls.ca = readFileSync(path.resolve(baseDir, caFile));
  // verify-ca checks the chain but not the host name.
  if (effective === 'verify-ca') tls.checkServerIdentity = () => undefined;
  if (mode === 'prefer' || mode === 'allow') return (await serverRefusesTls(url, tls)) ? false : tls;
  return tls;
}

/** Prisma's connect_timeout (seconds, default 5; 0 or nonsense: the default), in ms. */
function connectTimeoutMs(url: string): number {
  const value = Number(new URL(url).searchParams.get('connect_timeout') ?? 5);
  return (Number.isFinite(value) && value > 0 ? value : 5) * 1000;
}

/**
 * For sslmode=prefer: one probe connection decides whether TLS is available at all, within
 * the URL's connect timeout (a fixed 10 s made an unreachable server with connect_timeout=1
 * take 20 s and more to report, the probe running again for each of the CLI's requests).
 */
async function serverRefusesTls(url: string, tls: Exclude<SslOptions, boolean | undefined>): Promise<boolean> {
  const { Client } = require('pg') as typeof import('pg');
  const client = new Client({ ...withoutTlsParams(url), ssl: tls, connectionTimeoutMillis: connectTimeoutMs(url) });
  try {
    await client.connect();
    return false;
  } catch (error) {
    return error instanceof Error && /does not support SSL/i.test(error.message);
  } finally {
    await client.end().catch(() => undefined);
  }
}

function withoutTlsParams(url: string): pg.ClientConfig {
  const parsed = new URL(url);
  for (const key of ['sslmode', 'sslcert', 'sslkey', 'sslrootcert', 'sslaccept', 'sslidentity', 'sslpassword', 'schema']) {
    parsed.searchParams.delete(key);
  }
  return { connectionString: parsed.toString() };
}

function baseDirOf(args: Args): string {
  const first = args.datamodels[0];
  return first === undefined ? process.cwd() : path.dirname(path.resolve(first));
}

function requireUrl(datasource: DatasourceArg | undefined): string {
  const url = datasource?.url;
  if (!url) throw new Error('No datasource URL: set datasource.url in prisma.config.ts');
  return url;
}

// ---------------------------------------------------------------------------------------
// `cli <command>`: one-shot commands. Failures go to stderr as log lines after a first
// line the CLI skips, without a trailing newline (it JSON-parses every line after the first).

async function runCliCommand(command: string, args: Args, secrets: Secrets): Promise<number> {
  const url = requireUrl(args.datasource);
  const ssl = await sslFor(url, baseDirOf(args));
  try {
    switch (command) {
      case 'can-connect-to-database': {
        const engine = await openSchemaEngine({ url, ssl });
        await engine.close();
        return 0;
      }
      case 'create-database':
        await createDatabase(url, ssl);
        return 0;
      case 'drop-database':
        await withMaintenanceClient(url, ssl, (client, name) => client.query(`DROP DATABASE ${quoteIdent(name)}`));
        return 0;
      default:
        throw new Error(`Unknown cli command: ${command}`);
    }
  } catch (error) {
    const e = toSchemaEngineError(error);
    const fields: Record<string, Json> = { is_panic: e.isPanic, message: secrets.scrub(e.message) };
    if (e.code !== undefined) fields['error_code'] = e.code;
    process.stderr.write(`${logLine('INFO', { message: `Running cli ${command}` })}\n${logLine('ERROR', fields)}`);
    return 1;
  }
}

async function createDatabase(url: string, ssl: SslOptions): Promise<string> {
  await withMaintenanceClient(url, ssl, (client, name) => client.query(`CREATE DATABASE ${quoteIdent(name)}`));
  return new URL(url).pathname.slice(1) || 'postgres';
}

/** Runs `work` connected to the server's `postgres` database, for statements on `url`'s database. */
async function withMaintenanceClient(
  url: string,
  ssl: SslOptions,
  work: (client: pg.Client, database: string) => Promise<unknown>,
): Promise<void> {
  const { Client } = require('pg') as typeof import('pg');
  const config = withoutTlsParams(url);
  const target = new URL(url);
  const database = decodeURIComponent(target.pathname.slice(1)) || 'postgres';
  const maintenance = new URL(config.connectionString ?? url);
  maintenance.pathname = '/postgres';
  // Within the URL's connect timeout: without one, a server that accepted the connection and
  // then went silent (a black hole) held create-database / drop-database for ever.
  const client = new Client({ connectionString: maintenance.toString(), connectionTimeoutMillis: connectTimeoutMs(url), ...(ssl !== undefined && { ssl }) });
  try {
    await client.connect();
    await work(client, database);
  } finally {
    await client.end().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------
// JSON-RPC server.

/**
 * The wasm engine's createMigration/evaluateDataLoss cannot open a shadow database themselves
 * ("PostgreSQL shadow DB must be provided through an external factory"): they only find the
 * migrations' schema in a per-engine cache that the shadow-database-aware commands fill. The
 * CLI's `migrate dev` fills it via devDiagnostic only on some paths (not after applying pending
 * migrations, nor for a first migration), so it is filled here first by a diagnosis that may
 * use the shadow database; when the cache already holds that history this costs no replay.
 */
async function withShadowSchema<T>(
  engine: SchemaEngineHandle,
  params: unknown,
  call: (engine: SchemaEngineHandle) => Promise<T>,
): Promise<T> {
  const input = params as { migrationsList?: MigrationList; filters?: SchemaFilter };
  if (input.migrationsList) {
    await engine.diagnoseMigrationHistory({
      migrationsList: input.migrationsList,
      optInToShadowDatabase: true,
      filters: input.filters ?? { externalTables: [], externalEnums: [] },
    });
  }
  return call(engine);
}

function send(message: Record<string, Json | undefined>): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

type EngineFor = (url: string) => Promise<SchemaEngineHandle>;

/**
 * The engine's migration-lock timeout reads as Prisma's P1002 "the database server was
 * reached but timed out ... make sure your database server is running", for a server that
 * is fine: what happened is that another session holds the lock. Said so, naming that
 * session and how to proceed, as `prisma-datalayer migrate deploy` says it; the code stays P1002.
 */
async function explainLockTimeout(error: unknown, url: string, baseDir: string): Promise<unknown> {
  const e = toSchemaEngineError(error);
  if (!LOCK_TIMEOUT.test(e.message)) return error;
  const holder = await sslFor(url, baseDir).then((ssl) => lockHolder({ url, ssl }), () => undefined);
  return new SchemaEngineError(lockHeldMessage('deploy', holder), { code: e.code ?? 'P1002', meta: e.meta, cause: error });
}

/**
 * The engine holds the migration lock (pg_advisory_lock(72707369), session-level) while it
 * applies migrations. Through a transaction-mode pooler (pgbouncer=true, a Neon -pooler host)
 * `prisma migrate deploy` applied them and exited 0, leaving the lock on one of the pooler's
 * server connections: every later deploy, the direct URL's too, then failed after the 10 s
 * lock timeout. Refused before connecting, as `prisma-datalayer migrate deploy` refuses it.
 */
function refusePooledApply(url: string): void {
  if (!throughPooler(url)) return;
  throw new Error(
    `Applying migrations refused: the datasource URL (${describeUrl(url)}) goes through a transaction-mode pooler (pgbouncer=true or a -pooler host), which does not keep the session the migration lock (pg_advisory_lock(72707369)) is held in: ` +
      'the lock would stay behind on one of its server connections and block every later deploy. Point datasource.url in prisma.config.ts at the direct (unpooled) URL of the database (e.g. DIRECT_URL); nothing was applied',
  );
}

/** The engine's JSON-RPC methods, as the prisma CLI calls them: a flat table. */
function rpcMethods(args: Args, baseDir: string, secrets: Secrets, engineFor: EngineFor): Record<string, (params: unknown) => Promise<unknown>> {
  const mainEngine = (): Promise<SchemaEngineHandle> => engineFor(requireUrl(args.datasource));
  let printId = 0;
  return {
    applyMigrations: async (p) => {
      const url = requireUrl(args.datasource);
      refusePooledApply(url);
      const engine = await mainEngine();
      try {
        return await engine.applyMigrations(p as never);
      } catch (error) {
        throw await explainLockTimeout(error, url, baseDir);
      }
    },
    createMigration: async (p) => withShadowSchema(await mainEngine(), p, (e) => e.createMigration(p as never)),
    devDiagnostic: async (p) => (await mainEngine()).devDiagnostic(p as never),
    diagnoseMigrationHistory: async (p) => (await mainEngine()).diagnoseMigrationHistory(p as never),
    evaluateDataLoss: async (p) => withShadowSchema(await mainEngine(), p, (e) => e.evaluateDataLoss(p as never)),
    introspect: async (p) => (await mainEngine()).introspect(p as never),
    introspectSql: async (p) => (await mainEngine()).introspectSql(p as never),
    markMigrationApplied: async (p) => {
      await (await mainEngine()).markMigrationApplied(p as never);
      return {};
    },
    markMigrationRolledBack: async (p) => {
      await (await mainEngine()).markMigrationRolledBack(p as never);
      return {};
    },
    reset: async (p) => {
      await (await mainEngine()).reset((p ?? { filter: { externalTables: [], externalEnums: [] } }) as never);
      return {};
    },
    schemaPush: async (p) => (await mainEngine()).schemaPush(p as never),
    ensureConnectionValidity: async (p) => {
      await (await mainEngine()).ensureConnectionValidity(p as never);
      return {};
    },
    getDatabaseVersion: async () => (await mainEngine()).version(),
    version: async () => (await mainEngine()).version(),
    createDatabase: async (p) => {
      const target = (p as { datasource?: { tag?: string; url?: string } } | undefined)?.datasource;
      const url = target?.tag === 'ConnectionString' && target.url ? target.url : requireUrl(args.datasource);
      secrets.add(url);
      return { databaseName: await createDatabase(url, await sslFor(url, baseDir)) };
    },
    dbExecute: async (p) => {
      const params = p as { script: string; datasourceType: { tag: string; url?: string } };
      // The engine runs scripts on its own connection: a different URL needs its own engine.
      const url = params.datasourceType.tag === 'url' && params.datasourceType.url ? params.datasourceType.url : undefined;
      await (url === undefined ? await mainEngine() : await engineFor(url)).dbExecute(params as never);
      return {};
    },
    diff: async (p) => {
      const result = await (await mainEngine()).diff(p as DiffParams);
      // The native engine prints diffs through a `print` request to the CLI, which writes
      // them to its stdout (or to --output); the response itself carries only the exit code.
      if (result.stdout) send({ jsonrpc: '2.0', id: `print-${++printId}`, method: 'print', params: { content: result.stdout } });
      return { exitCode: result.exitCode };
    },
  };

}

/** Answers one request: the method's result, or the engine's error with secrets removed. */
function rpcHandler(methods: Record<string, (params: unknown) => Promise<unknown>>, secrets: Secrets): (request: RpcRequest) => Promise<void> {
  return async (request: RpcRequest): Promise<void> => {
    if (request.method === undefined) return; // A response, e.g. the CLI's ack of `print`.
    const id = request.id ?? null;
    const method = methods[request.method];
    if (!method) {
      send({ jsonrpc: '2.0', id, error: { code: -32601, message: `Method not found: ${request.method}` } });
      return;
    }
    try {
      const result = await method(request.params);
      send({ jsonrpc: '2.0', id, result: (result ?? null) as Json });
    } catch (error) {
      const e = toSchemaEngineError(error);
      const data: RpcErrorData = {
        is_panic: e.isPanic,
        message: secrets.scrub(e.message),
        meta: e.meta ?? null,
        error_code: e.code ?? null,
      };
      send({
        jsonrpc: '2.0',
        id,
        error: { code: 4466, message: 'An error happened. Check the data field for details.', data: data as unknown as Json },
      });
    }
  };

}

/** One engine per URL, opened on first use; a failed open is retried by the next request. */
function engineCache(
  args: Args,
  baseDir: string,
  secrets: Secrets,
  schemaFiles: { path: string; content: string }[],
  engines: Map<string, Promise<SchemaEngineHandle>>,
): EngineFor {
  return (url: string): Promise<SchemaEngineHandle> => {
    let engine = engines.get(url);
    if (!engine) {
      secrets.add(url);
      const isMain = url === args.datasource?.url;
      engine = sslFor(url, baseDir).then((ssl) =>
        openSchemaEngine({
          url,
          ssl,
          ...(isMain && { schemaFiles }),
          ...(isMain && args.datasource?.shadowDatabaseUrl && { shadowDatabaseUrl: args.datasource.shadowDatabaseUrl }),
          log: (line) => process.stderr.write(`${secrets.scrub(line)}\n`),
        }),
      );
      // A failed open is reported to that request only; the next one retries.
      engine.catch(() => engines.delete(url));
      engines.set(url, engine);
    }
    return engine;
  };
}

async function serveRpc(args: Args, secrets: Secrets): Promise<number> {
  const baseDir = baseDirOf(args);
  const schemaFiles = args.datamodels.map((file) => ({ path: file, content: readFileSync(file, 'utf8') }));
  const engines = new Map<string, Promise<SchemaEngineHandle>>();

  const engineFor = engineCache(args, baseDir, secrets, schemaFiles, engines);

  const handle = rpcHandler(rpcMethods(args, baseDir, secrets, engineFor), secrets);

  // One request at a time: the engine's methods take `&mut self` and must not interleave.
  let queue: Promise<void> = Promise.resolve();
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  lines.on('line', (line) => {
    if (line.trim() === '') return;
    let request: RpcRequest;
    try {
      request = JSON.parse(line) as RpcRequest;
    } catch {
      send({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } });
      return;
    }
    queue = queue.then(() => handle(request));
  });

  let shuttingDown: Promise<number> | undefined;
  const shutdown = (): Promise<number> => {
    shuttingDown ??= (async () => {
      lines.close();
      await queue;
      const open = await Promise.allSettled(engines.values());
      await Promise.allSettled(open.map((entry) => (entry.status === 'fulfilled' ? entry.value.close() : undefined)));
      return 0;
    })();
    return shuttingDown;
  };
  // The CLI ends stdin to stop the engine and sends SIGTERM right after.
  process.once('SIGTERM', () => {
    void shutdown().then((code) => process.exit(code));
  });
  await new Promise<void>((resolve) => lines.once('close', resolve));
  return shutdown();
}
