// Per-test-file databases on the shared primary started by globalSetup, and admin
// helpers (superuser queries, pg_stat_activity connection counts, terminating backends).
//
//   const db = await createTestDatabase();          // clone of the migrated template
//   afterAll(() => db.drop());
//   new PrismaPg({ connectionString: db.url }) ...
import crypto from 'node:crypto';
import type { ConnectionOptions } from 'node:tls';
import type { ClientConfig } from 'pg';
import type { QueryOptions } from './cluster';
import {
  clientConfig,
  queryServer,
  quoteIdent,
  serverUrl,
  tlsOptions,
  type ServerInfo,
  type UrlOptions,
} from './server';
import { readState } from './state';

export type { ServerInfo, UrlOptions } from './server';

export interface TestServer extends ServerInfo {
  /** Name of the migrated template database. */
  templateDb: string;
  /** Whether the template has the app tables (false while there are no migrations). */
  templateMigrated: boolean;
  /** URL for db (default 'postgres'); no query params unless given. Superuser unless opts.user. */
  url(db?: string, params?: Record<string, string>, opts?: UrlOptions): string;
  /** TLS options verifying against the server's CA (or the wrong CA). */
  tls(opts?: { wrongCa?: boolean }): ConnectionOptions;
  clientConfig(db?: string, opts?: UrlOptions & { applicationName?: string; ssl?: boolean }): ClientConfig;
  /** Plain serializable info (for startReplica / startPgBouncer). */
  info(): ServerInfo;
}

/** The shared primary of this test run (TLS on, SCRAM password auth). */
export function testServer(): TestServer {
  const state = readState();
  const info = state.primary;
  return {
    ...info,
    templateDb: state.templateDb,
    templateMigrated: state.templateMigrated,
    url: (db, params, opts) => serverUrl(info, db, params, opts),
    tls: (opts) => tlsOptions(info, opts),
    clientConfig: (db, opts) => clientConfig(info, db, opts),
    info: () => ({ ...info }),
  };
}

/** Runs one statement as superuser on a fresh connection (db 'postgres' unless opts.db). Returns rows. */
export function adminQuery<R extends Record<string, unknown> = Record<string, unknown>>(
  sql: string,
  params?: unknown[],
  opts?: QueryOptions,
): Promise<R[]> {
  return queryServer<R>(readState().primary, sql, params, opts);
}

/**
 * Number of client backends on the shared primary with this application_name
 * (optionally only those connected to `database`). The admin connection used to
 * count is never included.
 */
export async function countConnections(applicationName: string, database?: string): Promise<number> {
  const rows = await adminQuery<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
        AND application_name = $1 AND ($2::text IS NULL OR datname = $2)`,
    [applicationName, database ?? null],
  );
  return rows[0]?.n ?? 0;
}

/** pg_terminate_backend() on matching client backends (at least one filter required). Returns how many. */
export async function terminateConnections(filter: { applicationName?: string; database?: string }): Promise<number> {
  if (filter.applicationName === undefined && filter.database === undefined) {
    throw new Error('terminateConnections: give applicationName and/or database');
  }
  const rows = await adminQuery<{ n: number }>(
    `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
      WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
        AND ($1::text IS NULL OR application_name = $1) AND ($2::text IS NULL OR datname = $2)`,
    [filter.applicationName ?? null, filter.database ?? null],
  );
  return rows[0]?.n ?? 0;
}

export interface TestDatabase {
  /** Database name (unique per call). */
  name: string;
  /**
   * Superuser URL with `sslmode=require&sslrootcert=<CA file>`: TLS that verifies
   * against the harness CA. Works with libpq semantics (require + root cert = verify-ca)
   * and with node-postgres (which treats require as verify-full; the certificate is
   * valid for 127.0.0.1 and localhost).
   */
  url: string;
  /** Same as url but for the non-superuser `app` role (owner of the database). */
  appUrl: string;
  host: string;
  port: number;
  user: string;
  password: string;
  appUser: string;
  appPassword: string;
  /** TLS options for pg / adapters (CA, rejectUnauthorized: true). */
  ssl: ConnectionOptions;
  caFile: string;
  wrongCaFile: string;
  /** Whether the database has the app tables. */
  migrated: boolean;
  /** URL to this database with exactly these query params (none by default). */
  urlWith(params?: Record<string, string>, opts?: UrlOptions): string;
  /** One statement in this database as superuser. */
  query<R extends Record<string, unknown> = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
  /** DROP DATABASE ... WITH (FORCE). Idempotent. */
  drop(): Promise<void>;
}

let counter = 0;

function uniqueName(prefix: string): string {
  const worker = process.env.JEST_WORKER_ID ?? '0';
  return `${prefix}_w${worker}_${process.pid}_${++counter}_${crypto.randomBytes(3).toString('hex')}`.toLowerCase();
}

/**
 * Creates a database on the shared primary: a clone of the migrated template
 * (default) or, with `migrated: false`, an empty one. Owned by the `app` role.
 * Drop it in afterAll with `db.drop()`.
 */
export async function createTestDatabase(opts: { migrated?: boolean; prefix?: string } = {}): Promise<TestDatabase> {
  const state = readState();
  const info = state.primary;
  const migrated = opts.migrated ?? true;
  const name = uniqueName(opts.prefix ?? 'test');
  const template = migrated ? state.templateDb : 'template0';
  await adminQuery(
    `CREATE DATABASE ${quoteIdent(name)} OWNER ${quoteIdent(info.appUser)} TEMPLATE ${quoteIdent(template)}`,
  );
  const sslParams = { sslmode: 'require', sslrootcert: info.caFile };
  let dropped = false;
  return {
    name,
    url: serverUrl(info, name, sslParams),
    appUrl: serverUrl(info, name, sslParams, { user: info.appUser }),
    host: info.host,
    port: info.port,
    user: info.superuser,
    password: info.password,
    appUser: info.appUser,
    appPassword: info.appPassword,
    ssl: tlsOptions(info),
    caFile: info.caFile,
    wrongCaFile: info.wrongCaFile,
    migrated: migrated && state.templateMigrated,
    urlWith: (params, urlOpts) => serverUrl(info, name, params, urlOpts),
    query: (sql, params) => queryServer(info, sql, params, { db: name }),
    drop: async () => {
      if (dropped) return;
      dropped = true;
      await adminQuery(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
    },
  };
}

/** A harness URL as the DB_* variables (sslmode verify-ca with its CA), for tests of DB_*-only configuration. */
export function dbVarsFrom(appUrl: string): Record<string, string> {
  const url = new URL(appUrl);
  return {
    DB_HOST: url.hostname,
    DB_PORT: url.port,
    DB_USER: decodeURIComponent(url.username),
    DB_PASSWORD: decodeURIComponent(url.password),
    DB_NAME: url.pathname.slice(1),
    DB_SSLMODE: 'verify-ca',
    DB_SSLROOTCERT: url.searchParams.get('sslrootcert')!,
  };
}
