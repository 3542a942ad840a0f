// Connection info for a harness server (primary, replica or pgbouncer) and the
// helpers built on it: URLs, TLS options, pg client configs, one-off queries.
import fs from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { Client, type ClientConfig } from 'pg';

/** Plain, JSON-serializable description of a running server (it crosses the globalSetup → worker boundary). */
export interface ServerInfo {
  /** Always '127.0.0.1' (servers listen on IPv4 loopback only). */
  host: string;
  port: number;
  /** Directory of the server's unix socket (PostgreSQL servers only; '' for pgbouncer). */
  socketDir: string;
  /** Whether the server accepts TLS. */
  ssl: boolean;
  /** Superuser `postgres` and its password (contains characters that need URL-encoding). */
  superuser: string;
  password: string;
  /** Non-superuser application role `app` (LOGIN CREATEDB; has ALL on the template's tables). */
  appUser: string;
  appPassword: string;
  /** Role with REPLICATION (for pg_basebackup / streaming replicas). */
  replicationUser: string;
  replicationPassword: string;
  /** CA that signed the server certificate (CN=localhost, SAN DNS:localhost, IP:127.0.0.1, IP:::1). */
  caFile: string;
  /** An unrelated CA: verification against it must fail. */
  wrongCaFile: string;
  serverCertFile: string;
  serverKeyFile: string;
}

export interface UrlOptions {
  /** Role to connect as (default: the superuser). `'app'` and the replication role get their passwords filled in. */
  user?: string;
  /** Password (default: the role's known password). Pass '' for none. */
  password?: string;
  /** Host to put in the URL (default '127.0.0.1'; 'localhost' works for verify-full too, but listens on IPv4 only). */
  host?: string;
  port?: number;
}

/** postgresql://user:pass@host:port/db?params with every component URL-encoded. */
export function buildUrl(parts: {
  user: string;
  password?: string;
  host: string;
  port: number;
  database: string;
  params?: Record<string, string>;
}): string {
  const auth =
    encodeURIComponent(parts.user) + (parts.password ? ':' + encodeURIComponent(parts.password) : '');
  const query = parts.params && Object.keys(parts.params).length > 0 ? '?' + new URLSearchParams(parts.params).toString() : '';
  return `postgresql://${auth}@${parts.host}:${parts.port}/${encodeURIComponent(parts.database)}${query}`;
}

export function passwordFor(info: ServerInfo, user: string): string | undefined {
  if (user === info.superuser) return info.password;
  if (user === info.appUser) return info.appPassword;
  if (user === info.replicationUser) return info.replicationPassword;
  return undefined;
}

/** URL for `db` (default 'postgres') with query `params` (nothing added by default: pass e.g. { sslmode: 'require' }). */
export function serverUrl(info: ServerInfo, db = 'postgres', params?: Record<string, string>, opts: UrlOptions = {}): string {
  const user = opts.user ?? info.superuser;
  const password = opts.password ?? passwordFor(info, user);
  return buildUrl({
    user,
    ...(password !== undefined ? { password } : {}),
    host: opts.host ?? info.host,
    port: opts.port ?? info.port,
    database: db,
    ...(params ? { params } : {}),
  });
}

/** TLS options that verify the server against the harness CA (verify-full). */
export function tlsOptions(info: ServerInfo, opts: { wrongCa?: boolean } = {}): ConnectionOptions {
  return { ca: fs.readFileSync(opts.wrongCa ? info.wrongCaFile : info.caFile, 'utf8'), rejectUnauthorized: true };
}

/** A node-postgres client config (verified TLS when the server has TLS). */
export function clientConfig(
  info: ServerInfo,
  db = 'postgres',
  opts: UrlOptions & { applicationName?: string; ssl?: boolean } = {},
): ClientConfig {
  const user = opts.user ?? info.superuser;
  const password = opts.password ?? passwordFor(info, user);
  const useSsl = opts.ssl ?? info.ssl;
  return {
    host: opts.host ?? info.host,
    port: opts.port ?? info.port,
    user,
    ...(password !== undefined ? { password } : {}),
    database: db,
    ssl: useSsl ? tlsOptions(info) : false,
    application_name: opts.applicationName ?? 'datalayer-test-admin',
    connectionTimeoutMillis: 10_000,
  };
}

/** Runs one statement on a fresh connection (closed afterwards) and returns the rows. */
export async function queryServer<R extends Record<string, unknown> = Record<string, unknown>>(
  info: ServerInfo,
  sql: string,
  params: unknown[] = [],
  opts: UrlOptions & { db?: string; applicationName?: string; ssl?: boolean } = {},
): Promise<R[]> {
  const client = new Client(clientConfig(info, opts.db ?? 'postgres', opts));
  client.on('error', () => {
    /* server went away after the query: nothing to do */
  });
  await client.connect();
  try {
    const res = params.length > 0 ? await client.query<R>(sql, params) : await client.query<R>(sql);
    return res.rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Quotes an identifier for SQL ("name" with doubled quotes). */
export function quoteIdent(name: string): string {
  return '"' + name.replace(/"/g, '""') + '"';
}

/** Quotes a string literal for SQL ('text' with doubled quotes). */
export function quoteLiteral(value: string): string {
  return "'" + value.replace(/'/g, "''") + "'";
}
