// `prisma-datalayer doctor`: connects with exactly the configuration the application
// would load (same env variables, same adapter, pool options, SSL plan and startup
// parameters), asks the server what it actually sees in one statement, and turns each
// difference between intent and reality into a finding with concrete advice.

import path from 'node:path';
import { pathToFileURL } from 'node:url';

import type { SqlDriverAdapter, SqlResultSet } from '@prisma/driver-adapter-utils';
import {
  checkApplicationName,
  checkCapacity,
  checkRole,
  checkServerVersion,
  checkSsl,
  checkTimeouts,
  connectionAdvice,
  FACTS_SQL,
  factsLimitMs,
  provenance,
  toFacts,
  type DoctorFacts,
  type Facts,
  type Finding,
  type FindingStatus,
  type Provenance,
} from '../audit.ts';
import { createDriver, type DriverHandle } from '../driver/index.ts';
import { EventHub } from '../events.ts';
import { newCounters } from '../stats.ts';
import { loadConfig, type DbConfig } from '../config.ts';
import { ConfigError, DeadlineExceededError } from '../errors.ts';
import { withDeadline } from '../deadline.ts';
import { describeError } from '../stats.ts';
import { describeUrl } from '../secrets.ts';

export type { DoctorFacts, Finding, FindingStatus } from '../audit.ts';

export interface DoctorReport {
  ok: boolean;
  failures: number;
  warnings: number;
  facts: DoctorFacts;
  findings: Finding[];
}

export interface DoctorOptions {
  env: Record<string, string | undefined>;
  /**
   * The application's resolved configuration (`db.config` of the Db its module exports,
   * see `loadDbModule`). Without it the configuration is loaded from `env` alone.
   */
  config?: DbConfig;
  /** Where `config` came from, for the report (e.g. `./dist/db.js`). */
  configFrom?: string;
  /** Application instances expected to run at once (replicas, workers, concurrent functions). */
  instances: number;
  /** Count warnings as failures. */
  strict?: boolean;
}

export async function doctor(options: DoctorOptions): Promise<DoctorReport> {
  const findings: Finding[] = [];
  const facts: DoctorFacts = {};
  const add = (f: Finding): void => void findings.push(f);
  const finish = (): DoctorReport => {
    const failures = findings.filter((f) => f.status === 'fail' || (options.strict === true && f.status === 'warn')).length;
    const warnings = findings.filter((f) => f.status === 'warn').length;
    return { ok: failures === 0, failures, warnings, facts, findings };
  };

  let config: DbConfig;
  try {
    config = options.config ?? loadConfig({}, options.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const issue of err.issues) {
      add({ check: 'config', status: 'fail', summary: `${issue.setting}: ${issue.problem}`, advice: 'Fix this setting in the environment the application runs with.' });
    }
    return finish();
  }
  const from = provenance(config, options);
  add({
    check: 'config',
    status: 'ok',
    summary: `configuration is valid; target from ${from.target}, sslmode from ${from.sslMode}${options.configFrom ? ` (the Db exported by ${options.configFrom})` : ''}`,
  });

  const appUrl = describeUrl(`postgresql://${config.target.host}:${config.target.port}/${config.target.database}`);
  facts.driver = config.driver;
  facts.mode = config.mode;
  facts.target = appUrl;
  checkUrls(config, appUrl, from, facts, add);

  const started = performance.now();
  const queried = await queryFacts(config);
  if (!queried.ok) {
    const message = describeError(queried.error).message;
    add({ check: 'connection', status: 'fail', summary: `could not query ${appUrl}: ${message}`, advice: connectionAdvice(message, config, from) });
    return finish();
  }
  const row = queried.row;
  facts.latencyMs = Math.round(performance.now() - started);
  facts.serverVersion = row.server_version ?? undefined;
  add({
    check: 'connection',
    status: 'ok',
    summary: `connected in ${facts.latencyMs} ms as ${row.role ?? '?'} (PostgreSQL ${row.server_version ?? '?'}, ${config.driver} driver, ${config.mode} mode)`,
  });

  checkSsl(config, row, facts, options.env, from, add);
  checkApplicationName(config, row, facts, add);
  checkCapacity(config, row, facts, options.instances, add);
  checkTimeouts(config, row, facts, add);
  checkServerVersion(row, add);
  checkRole(row, from, add);
  return finish();
}

/**
 * One round trip on a connection built exactly as the application's would be, bounded as a
 * whole (factsLimitMs): with statement_timeout 0 the statement has no deadline of its own,
 * and a server gone silent once connected held doctor for ever. Past the bound the
 * connection is destroyed (with a cancel request) and the failure is the finding.
 */
async function queryFacts(config: DbConfig): Promise<{ ok: true; row: Facts } | { ok: false; error: unknown }> {
  let adapter: DriverHandle | undefined;
  let connection: SqlDriverAdapter | undefined;
  const limitMs = factsLimitMs(config);
  try {
    adapter = createDriver(config, newCounters(), new EventHub());
    const driver = adapter;
    const ask = async (): Promise<SqlResultSet> => {
      connection = await driver.factory.connect();
      return connection.queryRaw({ sql: FACTS_SQL, args: [], argTypes: [] });
    };
    const result = await withDeadline(ask(), limitMs, () => {
      const err = new DeadlineExceededError('connect', limitMs);
      driver.pool()?.destroyBusy(() => err);
      return err;
    });
    const values = result.rows[0] ?? [];
    return { ok: true, row: toFacts((name) => values[result.columnNames.indexOf(name)]) };
  } catch (error) {
    return { ok: false, error };
  } finally {
    await connection?.dispose().catch(() => {});
    await adapter?.close().catch(() => {});
  }
}

function checkUrls(config: DbConfig, appUrl: string, from: Provenance, facts: DoctorFacts, add: (f: Finding) => void): void {
  const direct = config.directUrl === undefined ? null : describeUrl(config.directUrl);
  facts.urls = { app: appUrl, appThroughPooler: config.pooler, direct, migrationsUse: direct === null ? from.target : from.direct };
  const route = config.pooler ? 'through a transaction-mode pooler' : 'directly (no transaction pooler)';
  if (config.pooler && direct === null) {
    add({
      check: 'urls',
      status: 'fail',
      summary: `the application connects ${route} (target from ${from.target}) and DIRECT_URL is not set: migrations would run through the pooler`,
      advice: 'Set DIRECT_URL to the unpooled endpoint (Neon: the host without -pooler; PgBouncer: the server itself). Migrations need session state and advisory locks, which a transaction pooler does not keep.',
    });
    return;
  }
  if (direct !== null && /-pooler\.|:6432\//.test(direct)) {
    add({
      check: 'urls',
      status: 'warn',
      summary: `DIRECT_URL (${direct}) looks like a pooled endpoint`,
      advice: 'Point DIRECT_URL at the database server itself, not at PgBouncer or a -pooler host.',
    });
    return;
  }
  add({
    check: 'urls',
    status: 'ok',
    summary: `application connects ${route} to ${appUrl}; migrations use ${direct === null ? `the same target (${from.target})` : `${from.direct} ${direct}`}`,
  });
}

/** The part of a Db the doctor uses: recognised by `$datalayer`, as the Db marks itself. */
interface DbLike {
  $datalayer: unknown;
  config: DbConfig;
  close?: (options?: { deadlineMs?: number }) => Promise<void>;
}

function isDb(value: unknown): value is DbLike {
  return (
    (typeof value === 'object' || typeof value === 'function') &&
    value !== null &&
    '$datalayer' in value &&
    'config' in value &&
    typeof (value as { config: unknown }).config === 'object'
  );
}

/** How long the application's module may take to load (its top-level awaits included). */
export const MODULE_IMPORT_MS = 30_000;

/**
 * The module's namespace, or an error once `ms` passed: a top-level await that never settles
 * (a connection made at import to a server that does not answer, a promise nothing resolves)
 * held the command for ever, printing nothing. The import itself cannot be stopped; the
 * command reports and exits (bin/prisma-datalayer.js ends what the module left running).
 */
async function importBounded(specifier: string, href: string, ms: number): Promise<Record<string, unknown>> {
  const loading = import(href) as Promise<Record<string, unknown>>;
  return withDeadline(loading, ms, () => new Error(
    `loading ${specifier} did not finish within ${Math.round(ms / 1000)} s: a top-level await in it (or in a module it imports) never settled, ` +
      'e.g. a connection made at import time to a database that does not answer. Export the Db without awaiting the database at import, or fix what the module waits for',
  ));
}

/**
 * Imports the application's module (ESM or CommonJS) and returns the Db it exports: the
 * default export, else the one named export that is a Db (`exportName` picks among several).
 */
export async function loadDbModule(specifier: string, cwd: string, exportName?: string, importMs = MODULE_IMPORT_MS): Promise<{ db: DbLike; label: string }> {
  const file = path.resolve(cwd, specifier);
  const ns = await importBounded(specifier, pathToFileURL(file).href, importMs);
  // A CommonJS module's exports arrive as `default` (and, when detectable, as names too).
  const exports: [string, unknown][] = Object.entries(ns);
  const fromDefault = ns.default;
  if (typeof fromDefault === 'object' && fromDefault !== null && !isDb(fromDefault)) {
    for (const [name, value] of Object.entries(fromDefault)) if (!(name in ns)) exports.push([name, value]);
  }
  const dbs = exports.filter(([, value]) => isDb(value)) as [string, DbLike][];
  const distinct = [...new Map(dbs.map(([name, db]) => [db, name])).entries()];
  const chosen =
    exportName !== undefined
      ? dbs.find(([name]) => name === exportName)
      : (dbs.find(([name]) => name === 'default') ?? (distinct.length === 1 ? dbs[0] : undefined));
  if (chosen === undefined) {
    const names = dbs.map(([name]) => name);
    throw new Error(
      exportName !== undefined
        ? `${specifier} has no Db export named ${exportName}${names.length > 0 ? ` (found: ${names.join(', ')})` : ''}`
        : names.length === 0
          ? `${specifier} exports no Db (an object from createDb or getDb, as default export or a named export)`
          : `${specifier} exports several Dbs (${names.join(', ')}): choose one with --export NAME`,
    );
  }
  return { db: chosen[1], label: `${specifier}${chosen[0] === 'default' ? '' : `#${chosen[0]}`}` };
}

const LABEL: Record<FindingStatus, string> = { ok: 'ok  ', info: 'info', warn: 'WARN', fail: 'FAIL' };

/** The report as text for a person: one line per finding, advice under it. */
export function formatDoctor(report: DoctorReport): string {
  const lines: string[] = [];
  const f = report.facts;
  lines.push(`prisma-datalayer doctor${f.target ? `: ${f.driver} ${f.mode} ${f.target}` : ''}`);
  lines.push('');
  for (const finding of report.findings) {
    lines.push(`  ${LABEL[finding.status]}  ${finding.check.padEnd(16)} ${finding.summary}`);
    if (finding.advice && finding.status !== 'ok') lines.push(`${' '.repeat(8)}${' '.repeat(17)}→ ${finding.advice}`);
  }
  lines.push('');
  const problems = `${report.failures} problem${report.failures === 1 ? '' : 's'}`;
  const warnings = `${report.warnings} warning${report.warnings === 1 ? '' : 's'}`;
  lines.push(report.ok ? `OK (${warnings})` : `${problems}, ${warnings}`);
  return lines.join('\n') + '\n';
}
