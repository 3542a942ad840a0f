// Programmatic `prisma migrate deploy` / `migrate status` / drift check, without the prisma
// CLI and without the native schema-engine binary: the wasm engine does the work and keeps
// the same `_prisma_migrations` bookkeeping, so this and the CLI can be mixed freely.

import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';

import type { ConnectionOptions } from 'node:tls';
import { loadMigrationConfig, toUrl, type DbConfig } from './config.ts';
import { ConfigError, MigrationError } from './errors.ts';
import { describeUrl, redactUrls, registerUrlSecret } from './secrets.ts';
import { sslPlan } from './ssl.ts';
export { MigrationError };
import { isDirectory, resolveProject, type ProjectPaths } from './engine/project.ts';

import {
  openSchemaEngine,
  queryBeside,
  type MigrationList,
  type SchemaEngineHandle,
  type SchemaFilter,
  type SslOptions,
} from './engine/wasm.ts';

export interface MigrateOptions {
  /** postgresql:// URL of the database. Use the direct (unpooled) URL: the engine needs session state. */
  url: string;
  /** TLS options for every connection (the URL's sslmode is then ignored), e.g. `{ rejectUnauthorized: false }`. */
  ssl?: SslOptions;
  /**
   * Directory of `<timestamp>_<name>/migration.sql` folders. Default: the application's, found
   * as the prisma CLI finds it: `migrations.path` in `prisma.config.ts` of `projectDir`, else
   * `migrations/` next to the schema (`./prisma/migrations`). A missing directory is an error.
   */
  migrationsDir?: string;
  /**
   * Prisma schema file or folder (drift only). Default: the application's, `schema` in its
   * `prisma.config.ts`, else `./schema.prisma` or `./prisma/schema.prisma` in `projectDir`.
   */
  schemaPath?: string;
  /** The application's directory, where the defaults above are looked up. Default: `process.cwd()`. */
  projectDir?: string;
  /**
   * Empty database used to replay migrations (drift only). Without it a temporary database is
   * created on the server and dropped afterwards, which needs the CREATEDB privilege.
   */
  shadowDatabaseUrl?: string;
}

export interface DeployResult {
  /** Migrations applied by this call, in order. Empty when the database was up to date. */
  applied: string[];
}

export interface MigrationStatus {
  /** Migrations recorded as successfully applied in the database. */
  applied: string[];
  /** Migrations on disk not yet applied. */
  pending: string[];
  /** Migrations that started but did not finish (need `prisma migrate resolve`). */
  failed: string[];
  /** Applied migrations whose migration.sql changed on disk since. */
  edited: string[];
  /** Migrations recorded in the database but missing from the migrations directory. */
  missingLocally: string[];
  /** True when every migration on disk is applied, none failed and none is missing locally. */
  upToDate: boolean;
}

export interface DriftResult {
  /** True when the migrations do not produce the schema in schema.prisma. */
  hasDrift: boolean;
  /** SQL that would bring the migrated schema to schema.prisma; '' when there is no drift. */
  sql: string;
  /** Human-readable summary of the same difference; '' when there is no drift. */
  summary: string;
}

const NO_FILTER: SchemaFilter = { externalTables: [], externalEnums: [] };
const LOCKFILE = 'migration_lock.toml';
const MIGRATION_FILE = 'migration.sql';

/** Applies every pending migration, like `prisma migrate deploy`. */
export async function deploy(options: MigrateOptions): Promise<DeployResult> {
  refuseTransactionPooler('deploy', throughPooler(options.url), describeUrl(options.url));
  return withEngine('deploy', options, async (engine, migrations) => {
    const { appliedMigrationNames } = await engine.applyMigrations({ migrationsList: migrations, filters: NO_FILTER });
    return { applied: appliedMigrationNames };
  });
}

/** Compares the migrations directory with the database's `_prisma_migrations`, like `prisma migrate status`. */
export async function status(options: MigrateOptions): Promise<MigrationStatus> {
  return withEngine('status', options, async (engine, migrations) => {
    const diagnosis = await engine.diagnoseMigrationHistory({
      migrationsList: migrations,
      optInToShadowDatabase: false,
      filters: NO_FILTER,
    });
    const history = diagnosis.history;
    const pending = history && history.diagnostic !== 'migrationsDirectoryIsBehind' ? history.unappliedMigrationNames : [];
    const missingLocally = history && history.diagnostic !== 'databaseIsBehind' ? history.unpersistedMigrationNames : [];
    const failed = diagnosis.failedMigrationNames;
    // The engine reports differences only; a failed migration counts as recorded but not applied.
    const local = migrations.migrationDirectories.map((dir) => dir.path);
    const applied = [...local.filter((name) => !pending.includes(name)), ...missingLocally].filter(
      (name) => !failed.includes(name),
    );
    return {
      applied,
      pending,
      failed,
      edited: diagnosis.editedMigrationNames,
      missingLocally,
      upToDate: history === null && failed.length === 0,
    };
  });
}

/**
 * Difference between what the committed migrations build and what schema.prisma describes.
 * Replays the migrations into a shadow database; the target database is only connected to.
 */
export async function drift(options: MigrateOptions): Promise<DriftResult> {
  const files = await schemaFiles(options);
  return withEngine('drift', options, async (engine, migrations) => {
    const to = { tag: 'schemaDatamodel' as const, files };
    const from = { tag: 'migrations' as const, ...migrations };
    const script = await engine.diff({ from, to, script: true, exitCode: true, filters: NO_FILTER });
    // exitCode 2 is the engine's own "non-empty diff" signal (`migrate diff --exit-code`).
    if (script.exitCode !== 2) return { hasDrift: false, sql: '', summary: '' };
    const summary = await engine.diff({ from, to, script: false, exitCode: null, filters: NO_FILTER });
    return { hasDrift: true, sql: script.stdout ?? '', summary: (summary.stdout ?? '').trim() };
  });
}

const projects = new WeakMap<Pick<MigrateOptions, 'projectDir'>, Promise<ProjectPaths>>();

/** The application's project paths, looked up once per call and only when an option is missing. */
function projectOf(options: Pick<MigrateOptions, 'projectDir'>): Promise<ProjectPaths> {
  let found = projects.get(options);
  if (found === undefined) {
    found = resolveProject(options.projectDir ?? process.cwd());
    projects.set(options, found);
  }
  return found;
}

/** The schema as the engine wants it: one file, or every `.prisma` file of a schema folder. */
async function schemaFiles(options: MigrateOptions): Promise<{ path: string; content: string }[]> {
  let schemaPath = options.schemaPath;
  if (schemaPath === undefined) {
    const project = await projectOf(options).catch((error: unknown) => {
      throw toMigrationError('drift', error, [options.url]);
    });
    if (project.schemaPath === undefined) {
      throw new MigrationError(`migrate drift failed: no Prisma schema found (${project.source}); pass schemaPath`);
    }
    schemaPath = project.schemaPath;
  }
  const paths = isDirectory(schemaPath) ? await prismaFilesIn(schemaPath) : [path.resolve(schemaPath)];
  return Promise.all(paths.map(async (file) => ({ path: file, content: await readText(file, 'schema', options.url) })));
}

async function prismaFilesIn(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((entry) => entry.isFile() && entry.name.endsWith('.prisma'))
    .map((entry) => path.join(entry.parentPath, entry.name))
    .sort();
}

/**
 * The migrations directory to use. It must exist: deploying "nothing" from a directory that
 * is not there would still create `_prisma_migrations` in the target database, and usually
 * means the command ran in the wrong directory.
 */
export async function migrationsDirOf(options: Pick<MigrateOptions, 'migrationsDir' | 'projectDir'>, action: string): Promise<string> {
  if (options.migrationsDir !== undefined) {
    const dir = path.resolve(options.migrationsDir);
    if (!isDirectory(dir)) throw new MigrationError(`migrate ${action} failed: the migrations directory ${dir} does not exist`);
    return dir;
  }
  const project = await projectOf(options).catch((error: unknown) => {
    throw toMigrationError(action, error, []);
  });
  if (!isDirectory(project.migrationsDir)) {
    throw new MigrationError(
      `migrate ${action} failed: no migrations directory at ${project.migrationsDir} (${project.source}). ` +
        'Run it from the application\'s directory, set migrations.path in prisma.config.ts, or pass migrationsDir',
    );
  }
  return project.migrationsDir;
}

/** Reads a migrations directory exactly as the prisma CLI does before handing it to the engine. */
export async function readMigrations(migrationsDir: string): Promise<MigrationList> {
  const baseDir = path.resolve(migrationsDir);
  const lockContent = await readFile(path.join(baseDir, LOCKFILE), 'utf8').catch(() => null);
  const entries = await readdir(baseDir, { withFileTypes: true }).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return [];
    throw error;
  });
  const migrationDirectories = await Promise.all(
    entries
      .filter((entry) => entry.isDirectory())
      .map(async (entry) => {
        const content = await readFile(path.join(baseDir, entry.name, MIGRATION_FILE), 'utf8').then(
          (value) => ({ tag: 'ok' as const, value }),
          (error: Error) => ({ tag: 'error' as const, value: error.message }),
        );
        return { path: entry.name, migrationFile: { path: MIGRATION_FILE, content } };
      }),
  );
  // Same order as the CLI (and so the same order the engine applies them in).
  migrationDirectories.sort((a, b) => a.path.localeCompare(b.path));
  return {
    baseDir,
    lockfile: { path: LOCKFILE, content: lockContent },
    shadowDbInitScript: '',
    migrationDirectories,
  };
}

async function withEngine<T>(
  action: string,
  options: MigrateOptions,
  work: (engine: SchemaEngineHandle, migrations: MigrationList) => Promise<T>,
): Promise<T> {
  // The URL's sslmode with libpq's meaning (ssl.ts), as createDb and the CLI read it;
  // node-postgres would read `require` as verify-full.
  if (options.ssl === undefined) return withSsl(urlConfig(action, options.url), options, (o) => withEngine(action, o, work));
  let engine: SchemaEngineHandle | undefined;
  try {
    const migrations = await readMigrations(await migrationsDirOf(options, action));
    engine = await openSchemaEngine({
      url: options.url,
      ...(options.ssl !== undefined && { ssl: options.ssl }),
      ...(options.shadowDatabaseUrl !== undefined && { shadowDatabaseUrl: options.shadowDatabaseUrl }),
    });
    return await work(engine, migrations);
  } catch (error) {
    const lost = action === 'deploy' ? engine?.connectionLost() : undefined;
    const holder = lost === undefined && LOCK_TIMEOUT.test(error instanceof Error ? error.message : String(error)) ? await lockHolder(options) : undefined;
    throw toMigrationError(action, lost ?? error, [options.url, options.shadowDatabaseUrl], lost !== undefined, holder);
  } finally {
    await engine?.close();
  }
}

/** Does this URL name a transaction pooler (pgbouncer=true, a -pooler host)? A URL that cannot be read fails later, as before. */
export function throughPooler(url: string): boolean {
  try {
    return loadMigrationConfig(url).pooler;
  } catch {
    return false;
  }
}

function urlConfig(action: string, url: string): DbConfig {
  try {
    return loadMigrationConfig(url);
  } catch (error) {
    throw toMigrationError(action, error, [url]);
  }
}

async function readText(file: string, what: string, url: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    throw toMigrationError(`read ${what}`, error, [url]);
  }
}

/** The engine's own lock timeout (about 10 s) on `pg_advisory_lock`, which serialises migrations. */
export const LOCK_TIMEOUT = /advisory lock/i;

/** The session holding the migration lock in this database (a bigint advisory lock below 2^32: classid 0, objid the key, objsubid 1). */
const LOCK_HOLDER_SQL = `SELECT l.pid, a.application_name, host(a.client_addr) AS client_addr, to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS since, a.state
  FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
  WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = 72707369 AND l.objsubid = 1
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`;

export interface LockHolderRow {
  pid: number;
  application_name: string | null;
  client_addr: string | null;
  since: string | null;
  state: string | null;
}

/**
 * Who holds the migration lock, as far as this role may see (another role's session shows
 * its pid only), in one short statement on a connection of its own; undefined when that
 * cannot be read (the lock was released meanwhile, the server does not answer).
 */
export async function lockHolder(options: Pick<MigrateOptions, 'url' | 'ssl'>): Promise<LockHolderRow | undefined> {
  try {
    return (await queryBeside<LockHolderRow>(options, LOCK_HOLDER_SQL, []))[0];
  } catch {
    return undefined;
  }
}

function describeHolder(holder: LockHolderRow): string {
  const details = [
    holder.application_name ? `application "${holder.application_name}"` : undefined,
    holder.client_addr ? `from ${holder.client_addr}` : undefined,
    holder.since ? `connected since ${holder.since} UTC` : undefined,
    holder.state ? `now ${holder.state}` : undefined,
  ].filter(Boolean);
  return [`pid ${holder.pid}`, ...details].join(', ');
}

/**
 * The engine's lock timeout surfaces as Prisma's P1002 "the database server was reached but
 * timed out ... make sure your database server is running", which sends the reader after a
 * server that is fine. What happened is that another session holds the migration lock.
 */
export function lockHeldMessage(action: string, holder: LockHolderRow | undefined): string {
  const who = holder === undefined ? 'another session' : `another session (${describeHolder(holder)})`;
  const pid = holder === undefined ? '<pid>' : String(holder.pid);
  return (
    `migrate ${action} failed: the migration lock (pg_advisory_lock(72707369)) is held by ${who} and was not released within the engine's lock timeout (10 s); nothing was applied. ` +
    `Usually another migrate deploy is running: let it finish, then deploy again. If none is, that session kept the lock (a deploy that ran through a transaction pooler, a stuck tool): ` +
    `end it with SELECT pg_terminate_backend(${pid}) and deploy again` +
    (holder === undefined ? ' (find it in pg_locks: locktype \'advisory\', objid 72707369)' : '')
  );
}

/**
 * `inFlight`: the connection was lost while migrations were being applied, so whether the
 * one then running was applied is unknown.
 */
function toMigrationError(action: string, error: unknown, urls: (string | undefined)[], inFlight = false, holder?: LockHolderRow): MigrationError {
  if (error instanceof MigrationError) return error;
  const raw = scrub(error instanceof Error ? error.message : String(error), urls);
  const code = typeof (error as { code?: unknown })?.code === 'string' ? (error as { code: string }).code : undefined;
  // Prisma codes (P1000...) are useful; Node's (ENOENT...) are already in the message.
  const prismaCode = code !== undefined && /^P\d{4}$/.test(code) ? code : undefined;
  const failed = `migrate ${action} failed${prismaCode ? ` (${prismaCode})` : ''}`;
  if (inFlight) {
    const message = `${failed}: the connection was lost while migrations were being applied (${raw}). The outcome of the migration in flight is unknown: run \`prisma-datalayer migrate status\` before deploying again`;
    return new MigrationError(message, prismaCode, { outcome: 'unknown' });
  }
  if (LOCK_TIMEOUT.test(raw)) {
    // Prisma's code stays in `code` (the native engine gives P1002 too); the message says what happened instead.
    return new MigrationError(scrub(lockHeldMessage(action, holder), urls), prismaCode, { retryable: true });
  }
  return new MigrationError(`${failed}: ${raw}`, prismaCode);
}

/** Removes URL credentials by shape and the passwords of the given URLs by value. */
function scrub(text: string, urls: (string | undefined)[]): string {
  for (const url of urls) registerUrlSecret(url);
  return redactUrls(text);
}

/**
 * Applying migrations needs a session of its own: the engine holds the migration lock
 * (`pg_advisory_lock(72707369)`, session-level) from the first migration to the last. Through
 * a transaction-mode pooler (pgbouncer=true, a -pooler host, DB_POOLER) the lock stayed behind
 * on one of the pooler's server connections after deploy, and every later deploy (the direct
 * URL's too) failed after the engine's 10 s lock timeout, until the pooler closed that
 * connection. Refused before connecting; reading the history (status) needs no lock.
 */
export function refuseTransactionPooler(action: string, pooler: boolean, label: string): void {
  if (!pooler) return;
  throw new MigrationError(
    `migrate ${action} refused: ${label} goes through a transaction-mode pooler, which does not keep the session the migration lock (pg_advisory_lock(72707369)) is held in: ` +
      'the lock would stay behind on one of its server connections and block every later deploy. Set DIRECT_URL to the direct (unpooled) URL of the database; nothing was applied',
  );
}

/** Where migrations run, and the configuration (host, SSL, timeouts) of that connection. */
export interface MigrationTarget {
  /** postgresql:// URL for the engine, password included. */
  url: string;
  /** The setting and where it points, without the password (for messages). */
  label: string;
  /** The target's own configuration: DIRECT_URL's alone when it is set, never the pooled URL's. */
  config: DbConfig;
}

/** Where migrations run for an application's configuration: DIRECT_URL when set, else its URL. */
export function migrationTarget(config: DbConfig): MigrationTarget {
  const direct = config.directUrl;
  if (direct !== undefined) {
    const own = directConfig(direct);
    // The application's models are in its schema: migrations go there unless DIRECT_URL names one.
    const url = own.schema === undefined && config.schema !== undefined ? withParam(direct, 'schema', config.schema) : direct;
    return { url, label: `DIRECT_URL ${describeUrl(direct)}`, config: own };
  }
  const url = new URL(toUrl(config));
  // Prisma's connect_timeout (whole seconds), which the engine reads: toUrl carries no settings.
  url.searchParams.set('connect_timeout', String(Math.ceil(config.timeouts.connectMs / 1000)));
  // The models' schema, where the engine creates the tables and `_prisma_migrations` (as `prisma migrate` does with `?schema=`).
  if (config.schema !== undefined) url.searchParams.set('schema', config.schema);
  // The application's channel_binding (DB_CHANNEL_BINDING or the URL's), which the engine's connections honour.
  if (config.channelBinding !== 'prefer') url.searchParams.set('channel_binding', config.channelBinding);
  return { url: url.toString(), label: `DATABASE_URL ${describeUrl(url.toString())}`, config };
}

function withParam(raw: string, name: string, value: string): string {
  const url = new URL(raw);
  url.searchParams.set(name, value);
  return url.toString();
}

/**
 * DIRECT_URL's configuration from DIRECT_URL alone: its host is the one its certificate is
 * checked against, and its sslmode, sslrootcert and connect_timeout apply, not DATABASE_URL's.
 */
function directConfig(directUrl: string): DbConfig {
  try {
    return loadMigrationConfig(directUrl);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    throw new ConfigError(error.issues.map((i) => ({ ...i, setting: i.setting.replace(/^url\b/, 'DIRECT_URL') })));
  }
}

/** The SSL attempts libpq would make for this sslmode: prefer/allow have a second one. */
function sslAttempts(config: DbConfig): (false | ConnectionOptions)[] {
  const plan = sslPlan(config);
  return plan.fallback === undefined ? [plan.first] : [plan.first, plan.fallback];
}

/** Runs `run` with the SSL side libpq would use, trying the second one for prefer/allow. */
export async function withSsl<T>(config: DbConfig, base: MigrateOptions, run: (o: MigrateOptions) => Promise<T>): Promise<T> {
  const attempts = sslAttempts(config);
  for (let i = 0; ; i++) {
    try {
      return await run({ ...base, ssl: attempts[i] });
    } catch (err) {
      const other = /does not support SSL|no encryption/i.test((err as Error).message);
      if (!other || i + 1 >= attempts.length) throw err;
    }
  }
}
