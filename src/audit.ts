// The checks of a live database against the configuration the application loaded, shared
// by `prisma-datalayer doctor` (src/cli/doctor.ts: every finding, printed) and `db.verify()`
// (src/verify.ts: a startup gate, throwing on the failed ones). One statement (FACTS_SQL)
// gathers what the server sees; each check turns a difference between intent and reality
// into a finding with concrete advice, so both tell the user the same thing.

import { durationMs, isLocalHost, loadConfig, type DbConfig } from './config.ts';
import { DEADLINE_GRACE_MS } from './deadline.ts';
import { quoteIdent } from './sql.ts';

export type FindingStatus = 'ok' | 'info' | 'warn' | 'fail';

export interface Finding {
  /** Stable identifier: config, connection, ssl, application-name, capacity, urls, timeouts, server-version, replica, role. */
  check: string;
  status: FindingStatus;
  summary: string;
  /** What to do about it (warn / fail only). */
  advice?: string;
}

/** What the checks learned, for the report. */
export interface DoctorFacts {
  driver?: string;
  mode?: string;
  target?: string;
  latencyMs?: number;
  serverVersion?: string;
  /**
   * SSL of this connection: `active` when it is known to be on. Behind a transaction pooler
   * the server only sees the pooler's own link (`serverLink`), so `active` then follows from
   * the sslmode (require and verify-* refuse a plaintext pooler), and version/cipher are unknown.
   */
  ssl?: { active: boolean; version: string | null; cipher: string | null; mode: string; serverLink?: { active: boolean; version: string | null; cipher: string | null } };
  applicationName?: { configured: string; seenByServer: string | null };
  capacity?: {
    poolMaxPerInstance: number;
    instances: number;
    total: number;
    maxConnections: number;
    superuserReserved: number;
    reserved: number;
    available: number;
    clientConnectionsNow: number;
  };
  urls?: { app: string; appThroughPooler: boolean; direct: string | null; migrationsUse: string };
  timeouts?: {
    server: Record<string, string | null>;
    client: { connectMs: number; poolTimeoutMs: number; transactionTimeoutMs: number };
  };
}


// One round trip. current_setting(name, true) is NULL for settings this server version
// lacks (reserved_connections: 16+, transaction_timeout: 17+).
export const FACTS_SQL = `SELECT current_setting('server_version') AS server_version,
  current_setting('server_version_num') AS server_version_num,
  (SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS ssl,
  (SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS ssl_version,
  (SELECT cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS ssl_cipher,
  (SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()) AS application_name,
  current_setting('max_connections') AS max_connections,
  current_setting('superuser_reserved_connections') AS superuser_reserved_connections,
  current_setting('reserved_connections', true) AS reserved_connections,
  current_setting('statement_timeout') AS statement_timeout,
  current_setting('lock_timeout') AS lock_timeout,
  current_setting('idle_in_transaction_session_timeout') AS idle_in_transaction_session_timeout,
  current_setting('idle_session_timeout', true) AS idle_session_timeout,
  current_setting('transaction_timeout', true) AS transaction_timeout,
  pg_is_in_recovery()::text AS in_recovery,
  (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::text AS client_connections,
  current_user::text AS role,
  (SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user) AS superuser`;

export const COLUMNS = [
  'server_version', 'server_version_num', 'ssl', 'ssl_version', 'ssl_cipher', 'application_name',
  'max_connections', 'superuser_reserved_connections', 'reserved_connections', 'statement_timeout',
  'lock_timeout', 'idle_in_transaction_session_timeout', 'idle_session_timeout', 'transaction_timeout',
  'in_recovery', 'client_connections', 'role', 'superuser',
] as const;
export type Facts = Record<(typeof COLUMNS)[number], string | null>;

/** The facts row from any row reader (a driver adapter's cells, a Prisma raw row), as text or null. */
export function toFacts(cell: (name: string) => unknown): Facts {
  return Object.fromEntries(COLUMNS.map((name) => {
    const v = cell(name);
    return [name, v === null || v === undefined ? null : String(v)];
  })) as Facts;
}

/**
 * How long doctor and db.verify() wait for the facts row, connecting included: the connect
 * timeout, then the statement timeout (or, with statement_timeout 0, the connect timeout
 * again: the statement is tiny), plus the client deadline's grace. Past it the connection
 * is destroyed: a server gone silent is a finding, never a hang.
 */
export function factsLimitMs(config: DbConfig): number {
  const { connectMs, statementMs } = config.timeouts;
  return connectMs + (statementMs > 0 ? statementMs : connectMs) + DEADLINE_GRACE_MS;
}

/** What to do about a failed connection, from its (redacted) message. */
export function connectionAdvice(message: string, config: DbConfig, from: Provenance): string {
  if (/password authentication failed|28P01/i.test(message)) return `Check the user name and password (${from.target}).`;
  if (/does not exist|3D000/i.test(message)) return `Check the database name (${config.target.database}) and that it has been created.`;
  if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN|timeout|unreachable|No answer from the database/i.test(message)) {
    return `Check that ${config.target.host}:${config.target.port} is reachable from this host (DNS, firewall, security group, the server running). The connect timeout is ${config.timeouts.connectMs} ms (DB_CONNECT_TIMEOUT).`;
  }
  if (/SSL|certificate|self.signed|TLS/i.test(message)) {
    return `Check the SSL settings: sslmode=${config.ssl.mode}${config.ssl.rootCert ? `, root certificate ${config.ssl.rootCert}` : ''}. verify-full needs the server's CA (DB_SSLROOTCERT) and a host name matching the certificate.`;
  }
  if (/no pg_hba.conf entry/i.test(message)) return "The server's pg_hba.conf rejects this host, user or SSL choice: allow it there, or connect with SSL if only hostssl lines exist.";
  return `Check the connection settings the application uses (${from.target}).`;
}

export function checkSsl(config: DbConfig, row: Facts, facts: DoctorFacts, env: Record<string, string | undefined>, from: Provenance, add: (f: Finding) => void): void {
  const active = row.ssl === 'true';
  facts.ssl = { active, version: row.ssl_version, cipher: row.ssl_cipher, mode: config.ssl.mode };
  if (config.driver === 'neon') {
    const secure = config.neon.useSecureWebSocket !== false;
    add(
      secure
        ? { check: 'ssl', status: 'ok', summary: "TLS on the WebSocket (wss): Neon's proxy terminates it" }
        : { check: 'ssl', status: 'fail', summary: 'the Neon WebSocket is plaintext (useSecureWebSocket: false)', advice: 'Only use useSecureWebSocket: false with a local proxy; remove it for Neon.' },
    );
    return;
  }
  if (config.target.host.startsWith('/')) {
    // No network to protect: PostgreSQL offers no TLS on its socket, and libpq ignores sslmode there.
    add({ check: 'ssl', status: 'ok', summary: `unix socket ${config.target.host}: no network, so no TLS (sslmode does not apply, as in libpq)` });
    return;
  }
  if (config.pooler) {
    checkSslBehindPooler(config, row, facts, env, from, add);
    return;
  }
  if (!active) {
    const allowed = /^(1|true|yes)$/i.test(env.DB_SSL_ALLOW_INSECURE ?? '');
    add({
      check: 'ssl',
      status: allowed ? 'warn' : 'fail',
      summary: `SSL was not negotiated: this connection is plaintext (sslmode=${config.ssl.mode} from ${from.sslMode}${isLocalHost(config.target.host) ? ', local host' : ''})`,
      advice: plaintextAdvice(config.ssl.mode, from.sslMode),
    });
    return;
  }
  const verified = config.ssl.mode === 'verify-full' || config.ssl.mode === 'verify-ca' || (config.ssl.mode === 'require' && config.ssl.rootCert !== undefined);
  const what = `SSL negotiated (${row.ssl_version ?? '?'}, ${row.ssl_cipher ?? '?'}), sslmode=${config.ssl.mode}`;
  if (!verified) {
    add({
      check: 'ssl',
      status: 'warn',
      summary: `${what}, but the server certificate is not verified`,
      advice: 'Anyone on the network path can impersonate the server. Set DB_SSLMODE=verify-full and DB_SSLROOTCERT (the CA file, or `system` for public CAs).',
    });
  } else if (config.ssl.mode !== 'verify-full') {
    add({ check: 'ssl', status: 'ok', summary: `${what}; certificate verified against the CA (host name not checked: verify-full would also check it)` });
  } else {
    add({ check: 'ssl', status: 'ok', summary: `${what}; certificate and host name verified` });
  }
}

/**
 * Behind a transaction pooler, pg_stat_ssl describes the pooler's connection to the server,
 * not the application's to the pooler: the application's side follows from its sslmode.
 */
function checkSslBehindPooler(config: DbConfig, row: Facts, facts: DoctorFacts, env: Record<string, string | undefined>, from: Provenance, add: (f: Finding) => void): void {
  const mode = config.ssl.mode;
  const link = row.ssl === 'true' ? `SSL (${row.ssl_version ?? '?'}, ${row.ssl_cipher ?? '?'})` : 'plaintext';
  const serverLink = `the pooler's own link to the server is ${link} (pg_stat_ssl)`;
  const required = mode === 'require' || mode === 'verify-ca' || mode === 'verify-full';
  facts.ssl = { active: required, version: null, cipher: null, mode, serverLink: { active: row.ssl === 'true', version: row.ssl_version, cipher: row.ssl_cipher } };
  if (mode === 'disable') {
    const allowed = /^(1|true|yes)$/i.test(env.DB_SSL_ALLOW_INSECURE ?? '');
    add({ check: 'ssl', status: allowed ? 'warn' : 'fail', summary: `the connection to the pooler is plaintext (sslmode=disable from ${from.sslMode}); ${serverLink}`, advice: plaintextAdvice(mode, from.sslMode) });
    return;
  }
  if (!required) {
    add({
      check: 'ssl',
      status: 'warn',
      summary: `cannot tell whether the connection to the pooler uses SSL: sslmode=${mode} (from ${from.sslMode}) falls back to plaintext, and the server only sees the pooler; ${serverLink}`,
      advice: 'Set sslmode=verify-full (DB_SSLMODE) with the CA (DB_SSLROOTCERT), so a plaintext connection to the pooler is refused instead.',
    });
    return;
  }
  const verified = mode === 'verify-full' || mode === 'verify-ca' || config.ssl.rootCert !== undefined;
  const what = `SSL to the pooler (sslmode=${mode} refuses plaintext); ${serverLink}`;
  if (!verified) {
    add({ check: 'ssl', status: 'warn', summary: `${what}; the pooler's certificate is not verified`, advice: "Anyone on the network path can impersonate the pooler. Set DB_SSLMODE=verify-full and DB_SSLROOTCERT (the CA file, or `system` for public CAs)." });
  } else {
    add({ check: 'ssl', status: 'ok', summary: `${what}; certificate ${mode === 'verify-full' ? 'and host name ' : ''}verified` });
  }
}

/**
 * Why the connection is plaintext, by libpq's rules: `disable` never asks for SSL, `allow`
 * asks for plaintext first and only tries SSL when the server refuses it, `prefer` asks for
 * SSL first and falls back only when the server cannot do SSL. Only `prefer` is a fallback.
 */
function plaintextAdvice(mode: DbConfig['ssl']['mode'], source: string): string {
  const fix = 'set sslmode=verify-full (DB_SSLMODE) with the CA (DB_SSLROOTCERT), so a plaintext connection is refused instead';
  if (mode === 'disable') return `sslmode=disable (from ${source}) turned SSL off: the server was never asked for it. Unless this is a trusted local socket, ${fix}.`;
  if (mode === 'allow') return `sslmode=allow (from ${source}) asks for plaintext first, and the server accepted it; the server may support SSL all the same. ${fix[0]!.toUpperCase()}${fix.slice(1)}.`;
  if (mode === 'prefer') return `sslmode=prefer (from ${source}) asked for SSL and the server refused it, so the connection fell back to plaintext. Enable SSL on the server (ssl = on), then ${fix}.`;
  return 'The server reports no SSL for this backend: check for a proxy terminating TLS in front of it.';
}

/**
 * application_name as the server stores it: PostgreSQL keeps printable ASCII only, and
 * replaces each other byte with '?' (up to 15) or a \xNN escape (16 and later:
 * pg_clean_ascii), so 'café' is shown as 'caf??' or 'caf\xc3\xa9'.
 */
function asServerShows(name: string): string[] {
  const bytes = [...Buffer.from(name, 'utf8')];
  const printable = (b: number): boolean => b >= 32 && b <= 126;
  const clean = (other: (b: number) => string): string => bytes.map((b) => (printable(b) ? String.fromCharCode(b) : other(b))).join('');
  return [name, clean(() => '?'), clean((b) => `\\x${b.toString(16).padStart(2, '0')}`)];
}

export function checkApplicationName(config: DbConfig, row: Facts, facts: DoctorFacts, add: (f: Finding) => void): void {
  const seen = row.application_name;
  facts.applicationName = { configured: config.applicationName, seenByServer: seen };
  if (seen !== null && asServerShows(config.applicationName).includes(seen)) {
    add({ check: 'application-name', status: 'ok', summary: `pg_stat_activity shows application_name '${seen}'` });
  } else {
    add({
      check: 'application-name',
      status: 'warn',
      summary: `pg_stat_activity shows application_name '${seen ?? ''}', not the configured '${config.applicationName}'`,
      advice: config.pooler
        ? 'The pooler does not pass application_name on: set it in the pooler (PgBouncer: application_name_add_host / per-database options).'
        : 'Something between the application and the server replaced the startup parameter; set DB_APPLICATION_NAME and check any proxy.',
    });
  }
  if (config.applicationName === 'prisma-datalayer') {
    add({ check: 'application-name', status: 'info', summary: 'the default application name is in use', advice: 'Set DB_APPLICATION_NAME per service so pg_stat_activity and the server logs tell services apart.' });
  }
}

export function checkCapacity(config: DbConfig, row: Facts, facts: DoctorFacts, instances: number, add: (f: Finding) => void): void {
  const num = (v: string | null): number => (v === null || v === '' ? 0 : Number(v));
  const perInstance = config.pool.size + config.pool.maxOverflow;
  const total = perInstance * instances;
  const maxConnections = num(row.max_connections);
  const superuserReserved = num(row.superuser_reserved_connections);
  const reserved = num(row.reserved_connections);
  const available = maxConnections - superuserReserved - reserved;
  facts.capacity = {
    poolMaxPerInstance: perInstance,
    instances,
    total,
    maxConnections,
    superuserReserved,
    reserved,
    available,
    clientConnectionsNow: num(row.client_connections),
  };
  const sum = `${perInstance} per instance (pool size ${config.pool.size} + overflow ${config.pool.maxOverflow}) × ${instances} instance${instances === 1 ? '' : 's'} = ${total}`;
  const limit = `max_connections ${maxConnections} − superuser_reserved_connections ${superuserReserved}${row.reserved_connections === null ? '' : ` − reserved_connections ${reserved}`} = ${available} for applications`;
  if (config.pooler) {
    add({
      check: 'capacity',
      status: 'info',
      summary: `${sum}; behind a transaction pooler the server's ${limit} bounds the pooler, not these connections`,
      advice: "Compare the total with the pooler's client limit (PgBouncer max_client_conn) and its server pool with max_connections.",
    });
    return;
  }
  const fits = Math.max(0, Math.floor(available / instances));
  if (total > available) {
    add({
      check: 'capacity',
      status: 'fail',
      summary: `pool too large for the server: ${sum} > ${limit}`,
      advice: `At full load connections will be refused ("too many clients"). Keep pool size + overflow ≤ ${fits} per instance (e.g. DB_POOL_SIZE=${Math.max(1, Math.ceil(fits / 2))} DB_MAX_OVERFLOW=${Math.max(0, fits - Math.max(1, Math.ceil(fits / 2)))}), put a transaction pooler (PgBouncer, Neon -pooler) in front, or raise max_connections.`,
    });
  } else if (total > available * 0.8) {
    add({
      check: 'capacity',
      status: 'warn',
      summary: `${sum}, close to the ${limit}`,
      advice: 'Leave room for migrations, consoles, monitoring and deploys running old and new instances side by side (which doubles the count).',
    });
  } else {
    add({ check: 'capacity', status: 'ok', summary: `${sum} fits within ${limit}` });
  }
}

/** PostgreSQL's display form of a time setting (`30s`, `1min`, `250ms`, `0`) in ms. */
export function settingMs(value: string | null): number | undefined {
  return value === null ? undefined : durationMs(value);
}

export function checkTimeouts(config: DbConfig, row: Facts, facts: DoctorFacts, add: (f: Finding) => void): void {
  const server = {
    statement_timeout: row.statement_timeout,
    lock_timeout: row.lock_timeout,
    idle_in_transaction_session_timeout: row.idle_in_transaction_session_timeout,
    idle_session_timeout: row.idle_session_timeout,
    transaction_timeout: row.transaction_timeout,
  };
  facts.timeouts = {
    server,
    client: { connectMs: config.timeouts.connectMs, poolTimeoutMs: config.pool.timeoutMs, transactionTimeoutMs: config.transaction.timeoutMs },
  };
  const wanted: [keyof typeof server, number, string][] = [
    ['statement_timeout', config.timeouts.statementMs, 'DB_STATEMENT_TIMEOUT'],
    ['lock_timeout', config.timeouts.lockMs, 'DB_LOCK_TIMEOUT'],
    ['idle_in_transaction_session_timeout', config.timeouts.idleInTransactionMs, 'DB_IDLE_TX_TIMEOUT'],
  ];
  const shown = wanted.map(([name]) => `${name}=${server[name] ?? '?'}`).join(', ');
  const client = `connect ${config.timeouts.connectMs} ms, pool wait ${config.pool.timeoutMs} ms, unit of work ${config.transaction.timeoutMs} ms`;
  if (config.pooler) {
    add({
      check: 'timeouts',
      status: 'info',
      summary: `session shows ${shown}; behind a transaction pooler the configured ones are applied per unit of work (set_config(..., true)). Client side: ${client}`,
    });
    // Statements outside a unit of work run under the role's defaults: those must hold.
    const unbounded = wanted.filter(([name, ms]) => ms > 0 && settingMs(server[name]) === 0);
    if (unbounded.length > 0) {
      add({
        check: 'timeouts',
        status: 'warn',
        summary: `statements outside a unit of work run with no limit: ${unbounded.map(([name]) => `${name}=0`).join(', ')}`,
        advice: `Set the role's defaults once (they survive transaction pooling): ${unbounded
          .map(([name, ms]) => `ALTER ROLE ${quoteIdent(config.target.user)} SET ${name} = '${ms}ms';`)
          .join(' ')}`,
      });
    }
  } else {
    const mismatched = wanted.filter(([name, ms]) => settingMs(server[name]) !== ms);
    if (mismatched.length > 0) {
      add({
        check: 'timeouts',
        status: 'warn',
        summary: `in force: ${shown}; configured: ${mismatched.map(([name, ms]) => `${name}=${ms}ms`).join(', ')}`,
        advice: `Something overrides the startup parameters (a proxy, or ALTER ROLE/DATABASE ... SET). Check ${mismatched.map(([, , env]) => env).join(', ')} and the role's settings (\\drds in psql).`,
      });
    } else {
      add({ check: 'timeouts', status: 'ok', summary: `in force: ${shown}. Client side: ${client}` });
    }
  }
  const none = wanted.filter(([name]) => settingMs(server[name]) === 0 && !config.pooler);
  if (none.length > 0) {
    add({
      check: 'timeouts',
      status: 'warn',
      summary: `no limit: ${none.map(([name]) => name).join(', ')}`,
      advice: `A runaway statement or a forgotten transaction then holds its connection (and locks) indefinitely. Set ${none.map(([, , env]) => env).join(', ')} (e.g. 30s, 10s, 60s).`,
    });
  }
}

/** PostgreSQL majors before this one are past their end of life (postgresql.org/support/versioning). */
export const SUPPORTED_MAJOR = 13;

/** The server's major version against `minMajor`: below it, a finding of `status` (doctor warns, verify fails). */
export function checkServerVersion(row: Facts, add: (f: Finding) => void, minMajor = SUPPORTED_MAJOR, status: 'warn' | 'fail' = 'warn'): void {
  const major = Math.floor(Number(row.server_version_num ?? '0') / 10_000);
  if (major > 0 && major < minMajor) {
    add({
      check: 'server-version',
      status,
      summary:
        minMajor === SUPPORTED_MAJOR
          ? `PostgreSQL ${row.server_version} is past its end of life`
          : `PostgreSQL ${row.server_version} is older than the required ${minMajor}`,
      advice: 'Upgrade to a supported major version (see postgresql.org/support/versioning).',
    });
  } else {
    add({ check: 'server-version', status: 'ok', summary: `PostgreSQL ${row.server_version ?? '?'}` });
  }
}

/** A read replica as the target, and a superuser as the application's role. */
export function checkRole(row: Facts, from: Provenance, add: (f: Finding) => void): void {
  if (row.in_recovery === 'true') {
    add({
      check: 'replica',
      status: 'warn',
      summary: 'the server is a read replica (pg_is_in_recovery): writes will fail',
      advice: `Point the application's target (${from.target}) at the primary; use a replica only for read-only work (DATABASE_REPLICA_URL).`,
    });
  }
  if (row.superuser === 'true') {
    add({
      check: 'role',
      status: 'warn',
      summary: `the application connects as superuser ${row.role ?? ''}`,
      advice: 'Use a role with only the privileges the application needs: a superuser bypasses row security and permission checks and may take the reserved connection slots.',
    });
  }
}


/** Where the audited values came from, named as the user would look them up. */
export interface Provenance {
  target: string;
  sslMode: string;
  direct: string;
}

/**
 * `source.config`: the configuration was handed over (a Db's), not loaded from `env` alone;
 * `configFrom`: the module it came from, for the wording.
 */
export function provenance(config: DbConfig, options: { env: Record<string, string | undefined>; config?: DbConfig; configFrom?: string }): Provenance {
  const env = options.env;
  const has = (name: string): boolean => (env[name] ?? '').trim() !== '';
  // What the environment alone would give: a Db built with options differs from it.
  let fromEnv: DbConfig | undefined;
  try {
    fromEnv = options.config === undefined ? config : loadConfig({}, env);
  } catch {
    fromEnv = undefined;
  }
  const code = options.configFrom === undefined ? 'createDb options' : `createDb options in ${options.configFrom}`;
  const sameTarget =
    fromEnv !== undefined &&
    (['host', 'port', 'database', 'user'] as const).every((key) => fromEnv.target[key] === config.target[key]);
  const targetVars = ['DB_HOST', 'DB_PORT', 'DB_USER', 'DB_PASSWORD', 'DB_NAME'].filter(has);
  const target = !sameTarget
    ? code
    : has('DATABASE_URL')
      ? 'DATABASE_URL'
      : targetVars.length > 0
        ? targetVars.join(', ')
        : 'the defaults (no DATABASE_URL or DB_HOST set)';
  const urlSslMode = has('DATABASE_URL') && /[?&]sslmode=/.test(env.DATABASE_URL ?? '');
  const sslMode =
    fromEnv === undefined || fromEnv.ssl.mode !== config.ssl.mode
      ? code
      : has('DB_SSLMODE')
        ? 'DB_SSLMODE'
        : urlSslMode && target === 'DATABASE_URL'
          ? 'sslmode in DATABASE_URL'
          : `the default (${isLocalHost(config.target.host) ? 'prefer for a local host' : 'require for a remote host'})`;
  const direct = config.directUrl !== undefined && config.directUrl === env.DIRECT_URL?.trim() ? 'DIRECT_URL' : code;
  return { target, sslMode, direct };
}


/** What to do about each kind of migration difference (`migrate status` prints the same). */
export const MIGRATION_ADVICE = {
  pending: 'run `prisma-datalayer migrate deploy`',
  failed: 'fix the cause, then mark it with `prisma migrate resolve --rolled-back <name>` (or --applied) and deploy again',
  edited: 'restore the applied migration.sql; put changes in a new migration',
  missingLocally: 'deploy from the revision that has them, or check the migrations directory',
} as const;
