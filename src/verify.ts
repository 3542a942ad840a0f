// `db.verify()`: one call at startup, before the application takes traffic, that checks the
// database is the one this configuration expects — reachable within the connect timeout,
// a recent enough server, SSL in force when the sslmode requires it, the application name
// visible, optionally every committed migration applied and the pools of all instances
// within max_connections. The checks and their advice are `doctor`'s (audit.ts); here the
// ones that make running unsafe fail, all reported at once in one VerificationError.

import {
  checkApplicationName,
  checkCapacity,
  checkServerVersion,
  checkSsl,
  connectionAdvice,
  FACTS_SQL,
  factsLimitMs,
  MIGRATION_ADVICE,
  provenance,
  SUPPORTED_MAJOR,
  toFacts,
  type DoctorFacts,
  type Facts,
  type Finding,
} from './audit.ts';
import type { DbConfig } from './config.ts';
import { ConfigError, DeadlineExceededError, VerificationError, type ConfigIssue } from './errors.ts';
import { migrationTarget, status, withSsl, type MigrationStatus } from './migrate.ts';
import { wholeOption } from './unit-options.ts';
import { describeError } from './stats.ts';

export interface VerifyOptions {
  /** Lowest PostgreSQL major version accepted. Default 13 (the oldest still supported upstream). */
  minServerVersion?: number;
  /**
   * Check that every committed migration is applied (`migrate status`, against DIRECT_URL
   * when set). `true`: the application's migrations directory, found from the current
   * directory as `migrate` finds it; or name it.
   */
  migrations?: boolean | { migrationsDir?: string; projectDir?: string };
  /** Instances of the application running at once: pool max × instances must fit max_connections minus the reserved slots. */
  instances?: number;
}

export interface VerifyReport {
  /** Every check made, passed ones and warnings (which do not fail verify) included. */
  findings: Finding[];
  facts: DoctorFacts;
  /** With `migrations`: the status of the migrations. */
  migrations?: MigrationStatus;
}

/** What verify needs from a Db. */
export interface VerifyTarget {
  config: DbConfig;
  env: Record<string, string | undefined>;
  /**
   * One statement's first row on the Db's own pool (so its startup parameters and SSL are
   * the ones seen), connecting included, within `timeoutMs`: past it `expire`'s error, and a
   * connection whose statement is still unanswered is destroyed, never left holding a slot.
   */
  query(sql: string, timeoutMs: number, expire: () => Error): Promise<Record<string, unknown>>;
}

const REQUIRED_SSL = new Set(['require', 'verify-ca', 'verify-full']);

export async function verify(target: VerifyTarget, options: VerifyOptions = {}): Promise<VerifyReport> {
  const checked = checkOptions(options);
  const { config, env } = target;
  const from = provenance(config, { env, config });
  const findings: Finding[] = [];
  const facts: DoctorFacts = {};
  const add = (f: Finding): void => void findings.push(f);

  let row: Facts;
  try {
    row = await readFacts(target);
  } catch (err) {
    const message = describeError(err).message;
    add({ check: 'connection', status: 'fail', summary: `could not query the database: ${message}`, advice: connectionAdvice(message, config, from) });
    return settle(findings, facts, undefined, err);
  }
  facts.serverVersion = row.server_version ?? undefined;
  checkServerVersion(row, add, checked.minServerVersion, 'fail');
  checkSsl(config, row, facts, env, from, (f) => add(sslVerdict(config, f)));
  checkApplicationName(config, row, facts, (f) => add(f.check === 'application-name' && f.status === 'warn' ? { ...f, status: 'fail' } : f));
  if (checked.instances !== undefined) checkCapacity(config, row, facts, checked.instances, add);
  const migrations = checked.migrations === undefined ? undefined : await checkMigrations(config, checked.migrations, add);
  return settle(findings, facts, migrations);
}

/**
 * The facts row through the Db's pool, bounded as a whole (with statement_timeout 0 the
 * statement has no deadline of its own): a silent server's connection is destroyed at the
 * bound rather than left with the statement pending, holding a pool slot for ever.
 */
async function readFacts(target: VerifyTarget): Promise<Facts> {
  const limitMs = factsLimitMs(target.config);
  const first = await target.query(FACTS_SQL, limitMs, () => new DeadlineExceededError('connect', limitMs));
  return toFacts((name) => first[name]);
}

/**
 * Plaintext fails verify only when the configuration demands SSL (require, verify-*);
 * under prefer/allow/disable it is what was configured, and stays doctor's warning.
 */
function sslVerdict(config: DbConfig, f: Finding): Finding {
  if (f.status !== 'fail' || config.driver === 'neon' || REQUIRED_SSL.has(config.ssl.mode)) return f;
  return { ...f, status: 'warn' };
}

async function checkMigrations(config: DbConfig, where: { migrationsDir?: string; projectDir?: string }, add: (f: Finding) => void): Promise<MigrationStatus | undefined> {
  let result: MigrationStatus;
  try {
    // DIRECT_URL's own host and SSL settings when it is set (migrationTarget), never the pool's.
    const target = migrationTarget(config);
    result = await withSsl(target.config, { url: boundedStatements(target.url, target.config), ...where }, status);
  } catch (err) {
    add({ check: 'migrations', status: 'fail', summary: `could not read the migration status: ${describeError(err).message}`, advice: 'Check the migrations directory and DIRECT_URL (`prisma-datalayer migrate status`).' });
    return undefined;
  }
  const list = (names: string[]): string => names.join(', ');
  if (result.pending.length > 0) {
    add({ check: 'migrations', status: 'fail', summary: `${result.pending.length} committed migration${result.pending.length === 1 ? ' is' : 's are'} not applied: ${list(result.pending)}`, advice: MIGRATION_ADVICE.pending });
  }
  if (result.failed.length > 0) add({ check: 'migrations', status: 'fail', summary: `failed migrations: ${list(result.failed)}`, advice: MIGRATION_ADVICE.failed });
  if (result.edited.length > 0) add({ check: 'migrations', status: 'warn', summary: `edited after being applied: ${list(result.edited)}`, advice: MIGRATION_ADVICE.edited });
  if (result.missingLocally.length > 0) add({ check: 'migrations', status: 'warn', summary: `in the database but not on disk: ${list(result.missingLocally)}`, advice: MIGRATION_ADVICE.missingLocally });
  if (result.pending.length === 0 && result.failed.length === 0) add({ check: 'migrations', status: 'ok', summary: `${result.applied.length} migrations applied, none pending` });
  return result;
}

/**
 * The status check's statements bounded as the facts read is: the engine's own default
 * (600 s) is for a deploy's long statements, and a startup gate whose migration connection
 * went silent would hold the application's start for ten minutes. A `socket_timeout` the
 * URL sets (DIRECT_URL's) is kept.
 */
function boundedStatements(url: string, config: DbConfig): string {
  const parsed = new URL(url);
  if (parsed.searchParams.has('socket_timeout')) return url;
  parsed.searchParams.set('socket_timeout', String(Math.ceil(factsLimitMs(config) / 1000)));
  return parsed.toString();
}

function settle(findings: Finding[], facts: DoctorFacts, migrations: MigrationStatus | undefined, cause?: unknown): VerifyReport {
  const failed = findings.filter((f) => f.status === 'fail');
  if (failed.length > 0) {
    throw new VerificationError(failed.map(({ check, summary, advice }) => ({ check, summary, ...(advice === undefined ? {} : { advice }) })), cause === undefined ? {} : { cause });
  }
  return { findings, facts, ...(migrations === undefined ? {} : { migrations }) };
}

interface CheckedOptions {
  minServerVersion: number;
  instances: number | undefined;
  migrations: { migrationsDir?: string; projectDir?: string } | undefined;
}

/** Every option of verify, and of its `migrations` object (the compiler checks the first list is complete). */
const OPTION_NAMES: Record<keyof VerifyOptions, true> = { minServerVersion: true, migrations: true, instances: true };
const MIGRATIONS_OPTION_NAMES = ['migrationsDir', 'projectDir'];

/** A misspelt option left its check out (`instance: 4`: no capacity check) and verify passed: refused, named. */
function unknownOptions(issues: ConfigIssue[], options: object): void {
  for (const name of Object.keys(options)) {
    if (!Object.hasOwn(OPTION_NAMES, name)) issues.push({ setting: `verify option ${name}`, problem: `is not an option of verify (${Object.keys(OPTION_NAMES).join(', ')})` });
  }
  const m = (options as VerifyOptions).migrations;
  if (typeof m !== 'object' || m === null) return;
  for (const name of Object.keys(m)) {
    if (!MIGRATIONS_OPTION_NAMES.includes(name)) issues.push({ setting: `verify migrations.${name}`, problem: `is not an option of verify's migrations (${MIGRATIONS_OPTION_NAMES.join(', ')})` });
  }
}

/** Bad options are a programming error: ConfigError before anything is sent. */
function checkOptions(options: VerifyOptions): CheckedOptions {
  const issues: ConfigIssue[] = [];
  if (typeof options !== 'object' || options === null) throw new ConfigError([{ setting: 'verify options', problem: 'must be an object such as { instances: 3 }' }]);
  unknownOptions(issues, options);
  wholeOption(issues, 'verify minServerVersion', options.minServerVersion, 1, 10_000, '', '13');
  wholeOption(issues, 'verify instances', options.instances, 1, 10_000, '', '3');
  const minServerVersion = options.minServerVersion ?? SUPPORTED_MAJOR;
  const instances = options.instances;
  const m = options.migrations;
  let migrations: CheckedOptions['migrations'];
  if (m === true) migrations = {};
  else if (typeof m === 'object' && m !== null) {
    for (const key of ['migrationsDir', 'projectDir'] as const) {
      if (m[key] !== undefined && typeof m[key] !== 'string') issues.push({ setting: `verify migrations.${key}`, problem: 'expected a directory path (string)' });
    }
    migrations = { ...(m.migrationsDir === undefined ? {} : { migrationsDir: m.migrationsDir }), ...(m.projectDir === undefined ? {} : { projectDir: m.projectDir }) };
  } else if (m !== undefined && m !== false) issues.push({ setting: 'verify migrations', problem: 'expected true, false or { migrationsDir }' });
  if (issues.length > 0) throw new ConfigError(issues);
  return { minServerVersion, instances, migrations };
}
