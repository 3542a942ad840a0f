// Configuration: explicit options > DB_* environment variables > DATABASE_URL query
// parameters > documented defaults. Every value is validated by a valibot schema (the lightest
// well-kept validator: zod alone was half of the layer's import time); every
// problem is collected and reported at once in one ConfigError naming the setting as the
// user wrote it. Nothing here touches the network.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import { MAX_TIMER_MS } from './deadline.ts';
import * as v from './valibot.ts';
import { ConfigError, type ConfigIssue } from './errors.ts';
import { hideSecrets, registerSecret } from './secrets.ts';

export type Driver = 'pg' | 'neon';
/** `pooled` keeps connections (SQLAlchemy's QueuePool); `serverless` keeps none (NullPool). */
export type PoolMode = 'pooled' | 'serverless';
export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];
export const ISOLATION_LEVELS = ['ReadUncommitted', 'ReadCommitted', 'RepeatableRead', 'Serializable'] as const;
export type IsolationLevel = (typeof ISOLATION_LEVELS)[number];

/** Settings for the Neon driver; the defaults reach Neon's public endpoints. */
export interface NeonOptions {
  /** Where the WebSocket goes: `host:port/path` or a function of the database host and port. */
  wsProxy?: string | ((host: string, port: number | string) => string);
  /** `false` only for a local plain-text WebSocket proxy. Default true. */
  useSecureWebSocket?: boolean;
  /** TLS to Postgres inside the WebSocket. Neon's proxy terminates TLS itself: default off. */
  pipelineTLS?: boolean;
  /**
   * The driver's pipelined startup: `'password'` (its default, what Neon's proxy expects) or
   * `false`, for a self-hosted PostgreSQL (SCRAM) behind a plain WebSocket relay.
   */
  pipelineConnect?: 'password' | false;
  /** The SQL-over-HTTP endpoint, for serverless mode's single queries. */
  fetchEndpoint?: string | ((host: string, port: number | string, options?: unknown) => string);
  /** Single queries over HTTP in serverless mode (Neon's fastest path). Default true. */
  httpQueries?: boolean;
}

export interface DbOptions {
  /** postgres:// or postgresql:// URL. Default: DATABASE_URL, else DB_HOST/DB_PORT/... */
  url?: string;
  /** Unpooled URL for migrations (DIRECT_URL). */
  directUrl?: string;
  host?: string;
  port?: number;
  user?: string;
  password?: string;
  database?: string;
  /** Default: `neon` for *.neon.tech hosts, `pg` otherwise (DB_DRIVER). */
  driver?: Driver;
  /** Default: `serverless` when a serverless platform is detected, else `pooled` (DB_POOL_MODE). */
  mode?: PoolMode;
  /** The URL goes through a transaction-mode pooler (PgBouncer, Neon -pooler). Detected from the URL. */
  pooler?: boolean;
  ssl?: {
    mode?: SslMode;
    /** Path of the CA certificate file, or `system` for the platform's CAs. */
    rootCert?: string;
    cert?: string;
    key?: string;
    /** Allow a plaintext connection to a non-local host when NODE_ENV=production. */
    allowInsecure?: boolean;
  };
  pool?: {
    /** Connections kept open (SQLAlchemy pool_size). Default 5. */
    size?: number;
    /** Extra connections opened under load and closed once idle (max_overflow). Default 10. */
    maxOverflow?: number;
    /** How long a caller waits for a free connection before PoolTimeoutError. Default 30 000. */
    timeoutMs?: number;
    /** Maximum age of a connection; 0 = no limit (pool_recycle). Default 1 800 000. */
    recycleMs?: number;
    /** How long an overflow connection may stay idle before it is closed. Default 10 000. */
    overflowIdleMs?: number;
    /** Idle longer than this, a connection is validated before use. 0 = always. Default 30 000. */
    validateAfterIdleMs?: number;
  };
  timeouts?: {
    connectMs?: number;
    /** Server-side statement_timeout; 0 = none. Default 30 000. */
    statementMs?: number;
    /** Server-side idle_in_transaction_session_timeout; 0 = none. Default 60 000. */
    idleInTransactionMs?: number;
    /** Server-side lock_timeout; 0 = none. Default 10 000. */
    lockMs?: number;
  };
  applicationName?: string;
  transaction?: {
    /** How long a unit of work may wait for a connection. Default: the pool timeout. */
    maxWaitMs?: number;
    /** How long a unit of work may run. Default 15 000. */
    timeoutMs?: number;
    /** Re-runs after a serialization failure or deadlock. Default 3. */
    retries?: number;
    isolationLevel?: IsolationLevel;
  };
  neon?: NeonOptions;
  /** Read replicas (DATABASE_REPLICA_URL, comma-separated). Read-only units go there. */
  replicas?: string[];
  replica?: {
    /** A replica further behind than this is skipped. Default 10 000 (DB_REPLICA_MAX_LAG_MS). */
    maxLagMs?: number;
    /** How long a failed replica stays out of rotation. Default 5 000. */
    retryAfterMs?: number;
    /** How often a replica's lag is measured, at most (only when reads are routed). Default 2 000. */
    lagCheckIntervalMs?: number;
  };
  /** Statements at least this slow emit `slowQuery` (and a logger warning); 0 = off (DB_SLOW_QUERY_MS). Default 0. */
  slowQueryMs?: number;
  /**
   * The PostgreSQL schema the models live in (Prisma's `schema` URL parameter, `PrismaPg`'s
   * `schema` option). Default: the URL's `schema` parameter, else `public`.
   */
  schema?: string;
}

export interface ConnectionTarget {
  host: string;
  port: number;
  user: string;
  password: string | undefined;
  database: string;
}

export interface DbConfig {
  readonly driver: Driver;
  readonly mode: PoolMode;
  readonly pooler: boolean;
  readonly target: ConnectionTarget;
  readonly directUrl: string | undefined;
  /** Where each SSL value came from (`DB_SSLROOTCERT`, `DATABASE_URL parameter sslrootcert`, ...), for messages. */
  readonly sslSources: { readonly mode: string; readonly rootCert?: string; readonly cert?: string; readonly key?: string };
  readonly ssl: {
    readonly mode: SslMode;
    readonly rootCert: string | undefined;
    readonly cert: string | undefined;
    readonly key: string | undefined;
  };
  readonly pool: {
    readonly size: number;
    readonly maxOverflow: number;
    readonly timeoutMs: number;
    readonly recycleMs: number;
    readonly overflowIdleMs: number;
    readonly validateAfterIdleMs: number;
  };
  readonly timeouts: {
    readonly connectMs: number;
    readonly statementMs: number;
    readonly idleInTransactionMs: number;
    readonly lockMs: number;
  };
  /**
   * libpq's channel_binding. The pg driver binds SCRAM to the TLS channel when the server
   * offers it; over Neon's WebSocket, TLS ends at the proxy, so it cannot apply there.
   */
  readonly channelBinding: 'disable' | 'prefer' | 'require';
  /** Startup `options` the URL carried that are not timeouts we manage (passed through). */
  readonly serverOptions: string | undefined;
  readonly applicationName: string;
  readonly transaction: {
    readonly maxWaitMs: number;
    readonly timeoutMs: number;
    readonly retries: number;
    readonly isolationLevel: IsolationLevel | undefined;
  };
  readonly neon: NeonOptions;
  readonly slowQueryMs: number;
  /** The schema Prisma's queries name (`"<schema>"."<table>"`); undefined = `public`. */
  readonly schema: string | undefined;
  readonly replicaUrls: readonly string[];
  readonly replica: { readonly maxLagMs: number; readonly retryAfterMs: number; readonly lagCheckIntervalMs: number };
}

export const DEFAULTS = {
  port: 5432,
  poolSize: 5,
  maxOverflow: 10,
  poolTimeoutMs: 30_000,
  recycleMs: 1_800_000,
  overflowIdleMs: 10_000,
  validateAfterIdleMs: 30_000,
  connectTimeoutMs: 10_000,
  statementTimeoutMs: 30_000,
  idleInTransactionTimeoutMs: 60_000,
  lockTimeoutMs: 10_000,
  applicationName: 'prisma-datalayer',
  transactionTimeoutMs: 15_000,
  transactionRetries: 3,
} as const;

/** Environment variables that mark a platform where a process may freeze between requests. */
export const SERVERLESS_MARKERS = ['VERCEL', 'AWS_LAMBDA_FUNCTION_NAME', 'NETLIFY', 'FUNCTIONS_WORKER_RUNTIME'] as const;

// ---- value schemas -------------------------------------------------------------------

/** PostgreSQL's INT_MAX: the largest statement_timeout & co. it accepts (ms); also Node's largest timer. */
const MAX_MS = MAX_TIMER_MS;
/** A pool larger than this is a typo, not a plan: PostgreSQL's own max_connections is 100 by default. */
const MAX_POOL = 10_000;

type Schema<T> = v.GenericSchema<unknown, T>;

/** What a check returns instead of a value when the value is not acceptable. */
class Problem {
  constructor(readonly message: string) {}
}

/** A schema from a check that returns the parsed value, or a Problem saying what is expected. */
function custom<T>(check: (value: unknown) => T | Problem): Schema<T> {
  return v.pipe(
    v.unknown(),
    v.rawTransform(({ dataset, addIssue, NEVER }) => {
      const out = check(dataset.value);
      if (!(out instanceof Problem)) return out;
      addIssue({ message: out.message });
      return NEVER;
    }),
  );
}

/** Digits only (ASCII): `2.5`, `1e3`, `0x10`, `Infinity` and look-alike digits are refused. */
function asWhole(value: unknown): number {
  if (typeof value === 'number') return value;
  return typeof value === 'string' && /^\s*-?[0-9]+\s*$/.test(value) ? Number(value) : NaN;
}

/** A whole number in [min, max]; the message states the expected form whatever went wrong. */
function whole(min: number, max: number, unit: '' | 'milliseconds' | 'seconds' = '', example = String(Math.max(min, 1) * 5)): Schema<number> {
  const form = new Problem(`must be a whole number${unit ? ` of ${unit}` : ''}, at least ${min} and at most ${max} (e.g. ${example})`);
  return custom((value) => {
    const n = asWhole(value);
    return Number.isInteger(n) && n >= min && n <= max ? n : form;
  });
}

/** Milliseconds in code, seconds in DB_* variables and URL parameters (`scale` 1000). */
const durationSetting =
  (min: number, example: number) =>
  (scale?: number): Schema<number> =>
    scale === 1000 ? whole(min, Math.floor(MAX_MS / 1000), 'seconds', String(example / 1000)) : whole(min, MAX_MS, 'milliseconds', String(example));

const flag: Schema<boolean> = custom((value) => {
  if (typeof value === 'boolean') return value;
  const text = typeof value === 'string' ? value.trim().toLowerCase() : '';
  if (['true', '1', 'yes'].includes(text)) return true;
  if (['false', '0', 'no'].includes(text)) return false;
  return new Problem('must be true or false (also 1/0, yes/no)');
});

/** One of `options`, spelled exactly. */
function oneOf<const T extends readonly string[]>(options: T, message = `must be one of ${options.join(', ')}`): Schema<T[number]> {
  return v.picklist(options, message);
}
const sslMode = oneOf(SSL_MODES);
const driver = oneOf(['pg', 'neon'], 'must be pg or neon');
const poolMode = oneOf(['pooled', 'serverless'], 'must be pooled or serverless');
const isolation = oneOf(ISOLATION_LEVELS);
const NUL_PROBLEM = 'must not contain a NUL byte (\\0): libpq forbids it, and in the startup packet it would end the value early';

/** A value that goes into the startup packet (host, user, database, application name): text, no NUL. */
function startupValue(maxBytes?: number): Schema<string> {
  return custom((value) => {
    if (typeof value !== 'string' || value.trim() === '') return new Problem('must not be empty');
    if (value.includes('\0')) return new Problem(NUL_PROBLEM);
    if (maxBytes !== undefined && Buffer.byteLength(value.trim(), 'utf8') > maxBytes) {
      return new Problem(`must be at most ${maxBytes} bytes in UTF-8 (PostgreSQL truncates longer names, possibly mid-character)`);
    }
    return value.trim();
  });
}
const nonEmpty = startupValue();
/**
 * Characters no host name or IP address has, which break the URL the host is put in
 * (toUrl, and the Neon driver's own connection string): a space or `@` there makes the
 * driver misparse it and echo the whole string, password included, in its error.
 */
const NOT_IN_A_HOST = /[\s\x00-\x1f\x7f/\\?#@%[\]<>^`{|}"']/;
/** A host name or IP address, or a unix socket directory (starts with /, may hold any path). */
const hostValue: Schema<string> = custom((value) => {
  const text = v.safeParse(nonEmpty, value);
  if (!text.success) return new Problem(text.issues[0].message);
  const host = text.output;
  if (host.startsWith('/')) return host;
  const bare = host.replace(/^\[(.*)\]$/, '$1');
  // Only an IPv6 address has a colon (toUrl puts it in brackets): `host:port` is not one.
  if (bare.includes(':') && !isIPv6(bare)) return new Problem('must be a host name or IP address; a port goes in the port setting (DB_PORT, port)');
  if (!NOT_IN_A_HOST.test(bare)) return host;
  return new Problem('must be a host name or IP address (no spaces, nor / \\ ? # @ % [ ] < > ^ ` { | } quotes), or a unix socket directory starting with /');
});
/** A role or database name: PostgreSQL identifiers are at most 63 bytes, and a longer one is truncated to another name. */
const identifier = startupValue(63);
/**
 * The models' schema. Prisma puts it between double quotes without doubling a quote inside
 * (`"a"b"."users"`): a `"` would end the identifier and put the rest of the value into the SQL.
 */
const schemaName: Schema<string> = custom((value) => {
  const name = v.safeParse(identifier, value);
  if (!name.success) return new Problem(name.issues[0].message);
  return name.output.includes('"') ? new Problem('must not contain a double quote ("): Prisma writes the schema name into its SQL between double quotes as it is') : name.output;
});
const secret: Schema<string> = custom((value) => {
  if (typeof value !== 'string') return new Problem('must be a string');
  return value.includes('\0') ? new Problem(NUL_PROBLEM) : value;
});
const someText: Schema<string> = custom((value) => (typeof value === 'string' && value !== '' ? value : new Problem('must not be empty')));

/** A certificate or key file: read now, so a wrong path fails at startup, not at the first connect. */
const certPath: Schema<string> = custom((value) => {
  const problem = certProblem(value);
  return problem === undefined ? (value as string).trim() : new Problem(problem);
});

function certProblem(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.trim() === '') return 'must be the path of a PEM file, or `system`';
  const path = value.trim();
  if (path === 'system') return undefined;
  if (path.includes('\0')) return NUL_PROBLEM;
  if (!existsSync(path)) return `no such file: ${path}`;
  if (!statSync(path).isFile()) return `is a directory, not a file: ${path}`;
  try {
    if (!readFileSync(path, 'utf8').includes('-----BEGIN ')) return `is not a PEM file (no -----BEGIN line): ${path}`;
  } catch (err) {
    return `cannot be read: ${(err as Error).message}`;
  }
  return undefined;
}

const DURATION = /^(\d+)\s*(us|ms|s|min|h|d)?$/;
const UNIT_MS = { us: 0.001, ms: 1, s: 1000, min: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** PostgreSQL duration syntax (`5000`, `5s`, `1min`, `250ms`; bare = ms) in milliseconds. */
export function durationMs(text: string): number | undefined {
  const m = DURATION.exec(text.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * UNIT_MS[(m[2] ?? 'ms') as keyof typeof UNIT_MS]);
}

/** A server-side timeout: milliseconds, or PostgreSQL's duration syntax; 0 = none. */
const serverDuration: Schema<number> = custom((value) => {
  const ms = typeof value === 'string' ? durationMs(value) : asWhole(value);
  if (ms !== undefined && Number.isInteger(ms) && ms >= 0 && ms <= MAX_MS) return ms;
  return new Problem(`must be a whole number of milliseconds or a duration such as 5s or 1min, at least 0 and at most ${MAX_MS} (e.g. 30000; 0 = none)`);
});

// ---- resolution ------------------------------------------------------------------------

type Env = Record<string, string | undefined>;
type Candidate = readonly [setting: string, value: unknown, scale?: number];
/** A schema, or one per unit (`scale` 1000: the candidate is in seconds). */
type SchemaFor<T> = Schema<T> | ((scale?: number) => Schema<T>);

class Resolver {
  readonly issues: ConfigIssue[] = [];
  /** The setting the last `take` used, for messages raised later about that value. */
  source: string | undefined;

  /** The first candidate that is set wins; its value is validated under its own name. */
  take<T>(schema: SchemaFor<T>, fallback: T, ...candidates: Candidate[]): T;
  take<T>(schema: SchemaFor<T>, fallback: undefined, ...candidates: Candidate[]): T | undefined;
  take<T>(schema: SchemaFor<T>, fallback: T | undefined, ...candidates: Candidate[]): T | undefined {
    const chosen = candidates.find(([, value]) => value !== undefined && value !== '');
    this.source = chosen?.[0];
    if (!chosen) return fallback;
    const [setting, value, scale] = chosen;
    const parsed = v.safeParse(typeof schema === 'function' ? schema(scale) : schema, value);
    if (!parsed.success) {
      // A password is never shown, whatever its setting is named (a URL's is named after the URL).
      this.issues.push({ setting, problem: `${parsed.issues[0]?.message ?? 'invalid'} (got ${schema === secret ? 'a secret value' : show(setting, value)})` });
      return fallback;
    }
    return (scale !== undefined && typeof parsed.output === 'number' ? parsed.output * scale : parsed.output) as T;
  }

  fail(setting: string, problem: string): void {
    this.issues.push({ setting, problem });
  }
}

function show(setting: string, value: unknown): string {
  if (/password|key/i.test(setting)) return 'a secret value';
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return JSON.stringify(text.length > 60 ? `${text.slice(0, 57)}...` : text);
}

interface ParsedUrl {
  /** The port as a number from the URL's authority, as text from a `port` parameter (checked by loadConfig). */
  target: Partial<Omit<ConnectionTarget, 'port'>> & { port?: number | string };
  params: URLSearchParams;
}

function parseUrl(setting: string, raw: string, r: Resolver): ParsedUrl | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    r.fail(setting, 'is not a valid URL (expected postgresql://user:password@host:port/database). If the password contains @, /, #, ? or %, percent-encode it (e.g. @ as %40, / as %2F, # as %23)');
    return undefined;
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    r.fail(setting, `must start with postgresql:// or postgres:// (got ${url.protocol}//)`);
    return undefined;
  }
  const target: ParsedUrl['target'] = {};
  const decode = (part: string, name: string): string | undefined => {
    try {
      return decodeURIComponent(part);
    } catch {
      r.fail(setting, `has a malformed percent-encoding in the ${name} (write a literal % as %25)`);
      return undefined;
    }
  };
  if (url.hostname) target.host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (url.port) target.port = Number(url.port);
  if (url.username) target.user = decode(url.username, 'user name');
  if (url.password) target.password = decode(url.password, 'password');
  const db = url.pathname.replace(/^\//, '');
  if (db) target.database = decode(db, 'database name');
  // libpq also reads the target from query parameters. `host` wins over the URL's host, as in
  // libpq and Prisma, whose documented unix-socket form is `@localhost/db?host=/var/run/postgresql`
  // (the URL needs a host, and that one is ignored).
  const hostParam = url.searchParams.get('host');
  if (hostParam) target.host = hostParam;
  for (const [param, key] of [['port', 'port'], ['user', 'user'], ['password', 'password'], ['dbname', 'database']] as const) {
    const value = url.searchParams.get(param);
    if (value === null || value === '') continue;
    // Both spellings at once: which one libpq, Prisma and the drivers each take differs.
    if (target[key] !== undefined) r.fail(setting, `names the ${key} twice, in the URL and as the ${param} parameter: give it once`);
    else target[key] = value;
  }
  return { target, params: url.searchParams };
}

/** Which loadConfig reads a URL for: the application's pools, or migrations (DIRECT_URL, deploy's `url`). */
type UrlUse = 'application' | 'migrations';

const NOT_APPLIED = 'is a libpq parameter this layer does not apply';
const SOCKET_TIMEOUT_APP =
  "is Prisma's wait for each statement's answer, which only migrations read here (set it in DIRECT_URL): the application's statements are bounded by timeouts.statementMs / DB_STATEMENT_TIMEOUT or options=-c statement_timeout=… (on the server, and on the client 750 ms later)";

/**
 * Every query parameter libpq or Prisma defines, and what the layer does with it. libpq
 * refuses a parameter it does not know ("invalid URI query parameter"), and so does the
 * layer: a misspelt `sslmdoe=verify-full` would otherwise leave the default, weaker mode in
 * force without a word. `true`: read (loadConfig). A text: known, but nothing the layer can
 * honour, so refused with that reason rather than ignored.
 */
const URL_PARAMETERS: Readonly<Record<string, true | string>> = {
  // libpq's, honoured.
  host: true,
  sslmode: true,
  sslrootcert: true,
  sslcert: true,
  sslkey: true,
  channel_binding: true,
  connect_timeout: true,
  application_name: true,
  options: true,
  // Prisma's, honoured or mapped: schema, the pool's bounds, the pooler, certificate checking.
  schema: true,
  connection_limit: true,
  pool_timeout: true,
  pgbouncer: true,
  max_connection_lifetime: true,
  sslaccept: true,
  statement_cache_size: true,
  socket_timeout: SOCKET_TIMEOUT_APP,
  max_idle_connection_lifetime:
    'is not applied: pool.size connections stay open (pool.recycleMs / DB_POOL_RECYCLE / max_connection_lifetime bounds their age), and the overflow above it closes after pool.overflowIdleMs idle',
  sslidentity: 'names a PKCS#12 client identity, which is not supported: give the certificate and its key as PEM files in sslcert and sslkey (openssl pkcs12 -in identity.p12 -nodes prints both)',
  sslpassword: 'decrypts a client key, which is not supported: give sslkey an unencrypted PEM key (openssl pkey -in key.pem -out key-plain.pem)',
  // node-postgres' own, which would change the meaning of sslmode.
  ssl: "is node-postgres' switch, not libpq's: use sslmode (require, verify-ca or verify-full)",
  uselibpqcompat: "is node-postgres' switch: this layer always reads sslmode as libpq does",
  // node-postgres reads these from a URL too; libpq and Prisma do not.
  statement_timeout: "is node-postgres' spelling: use options=-c statement_timeout=… (or DB_STATEMENT_TIMEOUT / timeouts.statementMs)",
  lock_timeout: "is node-postgres' spelling: use options=-c lock_timeout=… (or DB_LOCK_TIMEOUT / timeouts.lockMs)",
  idle_in_transaction_session_timeout: "is node-postgres' spelling: use options=-c idle_in_transaction_session_timeout=… (or DB_IDLE_TX_TIMEOUT / timeouts.idleInTransactionMs)",
  query_timeout: "is node-postgres' client-side limit: every statement already has one, timeouts.statementMs + 750 ms (DB_STATEMENT_TIMEOUT)",
  // libpq's, honoured when the URL's own part is empty (parseUrl).
  user: true,
  password: true,
  dbname: true,
  port: true,
  // libpq's, not applied.
  hostaddr: `${NOT_APPLIED}: put the address in the host part of the URL`,
  passfile: `${NOT_APPLIED}: no password file is read; put the password in the URL or DB_PASSWORD`,
  service: `${NOT_APPLIED}: no service file is read; write the settings in the URL or DB_* variables`,
  require_auth: `${NOT_APPLIED}: channel_binding=require is the check available`,
  client_encoding: `${NOT_APPLIED}: the drivers always speak UTF8`,
  fallback_application_name: `${NOT_APPLIED}: use application_name`,
  keepalives: `${NOT_APPLIED}: TCP keepalive is always on (probing after the connect timeout, at most 30 s)`,
  keepalives_idle: `${NOT_APPLIED}: TCP keepalive is always on (probing after the connect timeout, at most 30 s)`,
  keepalives_interval: `${NOT_APPLIED}: TCP keepalive is always on (probing after the connect timeout, at most 30 s)`,
  keepalives_count: `${NOT_APPLIED}: TCP keepalive is always on (probing after the connect timeout, at most 30 s)`,
  tcp_user_timeout: `${NOT_APPLIED}: every statement has a client deadline (timeouts.statementMs + 750 ms)`,
  target_session_attrs: `${NOT_APPLIED}: one server per URL; read replicas go in DATABASE_REPLICA_URL (replicas)`,
  load_balance_hosts: `${NOT_APPLIED}: one server per URL; read replicas go in DATABASE_REPLICA_URL (replicas)`,
  replication: `${NOT_APPLIED}: replication connections are not supported`,
  gssencmode: `${NOT_APPLIED}: GSSAPI encryption is never attempted`,
  krbsrvname: `${NOT_APPLIED}: GSSAPI (Kerberos) authentication is not supported`,
  gsslib: `${NOT_APPLIED}: GSSAPI (Kerberos) authentication is not supported`,
  gssdelegation: `${NOT_APPLIED}: GSSAPI (Kerberos) authentication is not supported`,
  requiressl: `${NOT_APPLIED} (deprecated): use sslmode=require`,
  sslcompression: `${NOT_APPLIED}: TLS compression is obsolete`,
  sslcertmode: `${NOT_APPLIED}: a client certificate is sent when sslcert and sslkey are given`,
  sslcrl: `${NOT_APPLIED}: certificate revocation lists are not checked`,
  sslcrldir: `${NOT_APPLIED}: certificate revocation lists are not checked`,
  sslsni: `${NOT_APPLIED}: SNI is always sent for a host name`,
  sslnegotiation: `${NOT_APPLIED}: SSL is negotiated the standard way`,
  ssl_min_protocol_version: `${NOT_APPLIED}: Node's TLS defaults apply (TLS 1.2 or later)`,
  ssl_max_protocol_version: `${NOT_APPLIED}: Node's TLS defaults apply (TLS 1.2 or later)`,
  requirepeer: `${NOT_APPLIED}: the peer of a unix socket is not checked`,
};

/**
 * libpq parameters the layer does not read, with the values that ask for what it does anyway:
 * URLs copied from a provider's console or a libpq setup (`keepalives=1`,
 * `gssencmode=disable`, `target_session_attrs=any`) connect as written. Any other value of
 * these asks for something the layer would not do, and is refused with URL_PARAMETERS' reason.
 */
const SAME_AS_THE_LAYER: Readonly<Record<string, readonly string[]>> = {
  keepalives: ['1'],
  // The layer never attempts GSSAPI encryption: as libpq's prefer against a server without it.
  gssencmode: ['disable', 'prefer'],
  client_encoding: ['utf8', 'utf-8', 'unicode'],
  sslcompression: ['0'],
  sslsni: ['1'],
  sslnegotiation: ['postgres'],
  target_session_attrs: ['any'],
  load_balance_hosts: ['disable'],
  // libpq's default: a client certificate is sent when one is configured.
  sslcertmode: ['allow'],
};

function asTheLayerDoes(name: string, value: string | null): boolean {
  const same = Object.hasOwn(SAME_AS_THE_LAYER, name) ? SAME_AS_THE_LAYER[name] : undefined;
  return same !== undefined && value !== null && same.includes(value.toLowerCase());
}

/** Refuses every query parameter the layer would not apply, naming it (and the one meant, for a typo). */
function checkUrlParameters(setting: string, params: URLSearchParams, use: UrlUse, r: Resolver): void {
  for (const name of new Set(params.keys())) {
    // libpq, Prisma and node-postgres take the last of repeated values, URLSearchParams.get the
    // first: `?sslmode=disable&sslmode=verify-full` was disable here, verify-full to the others,
    // and which one the user meant cannot be told.
    const count = params.getAll(name).length;
    if (count > 1) r.fail(`${setting} parameter ${name}`, `is given ${count} times (libpq, Prisma and node-postgres take the last): give it once`);
    // `?sslmode=` (a template whose variable was unset) was read as "not given": the default, maybe weaker, applied.
    else if (params.get(name) === '') r.fail(`${setting} parameter ${name}`, 'is empty: give it a value, or remove it for the default');
    // Own properties only: `?constructor=` or `?__proto__=` must not find Object's.
    const known = Object.hasOwn(URL_PARAMETERS, name) ? URL_PARAMETERS[name] : undefined;
    if (known === true || (name === 'socket_timeout' && use === 'migrations') || asTheLayerDoes(name, params.get(name))) continue;
    if (known !== undefined) {
      r.fail(`${setting} parameter ${name}`, known);
      continue;
    }
    const meant = closestParameter(name);
    r.fail(`${setting} parameter ${name}`, `is not a connection parameter (libpq refuses it too)${meant === undefined ? '' : `: did you mean ${meant}?`}`);
  }
}

/** The parameter a misspelt name most likely meant: the same in another case, or at most two edits away. */
function closestParameter(name: string): string | undefined {
  const lower = name.toLowerCase();
  let best: { name: string; distance: number } | undefined;
  for (const candidate of Object.keys(URL_PARAMETERS)) {
    const distance = editDistance(lower, candidate);
    if (distance < (best?.distance ?? Math.min(3, Math.ceil(candidate.length / 3)))) best = { name: candidate, distance };
  }
  return best?.name;
}

/** Levenshtein distance, an adjacent swap counting as one edit (`sslmdoe` is one edit from `sslmode`). */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * Splits libpq's `options` (`-c statement_timeout=5s -c search_path=app`) into settings,
 * named as PostgreSQL names them (lower case, `-` as `_`), so a managed timeout spelt
 * `-c Statement_Timeout=…` is validated and applied like any other spelling.
 * Other `name=value` tokens (Neon's `endpoint=<id>`, for clients without SNI) are kept
 * verbatim: the proxy reads and strips them. Anything else is refused, so nothing
 * unexpected reaches the startup packet.
 */
function parseServerOptions(raw: string, setting: string, r: Resolver): { settings: Map<string, string>; verbatim: string[] } {
  const settings = new Map<string, string>();
  const verbatim: string[] = [];
  if (raw.includes('\0')) {
    r.fail(setting, NUL_PROBLEM);
    return { settings, verbatim };
  }
  const tokens = raw.trim().split(/\s+/).filter(Boolean);
  for (let i = 0; i < tokens.length; i++) {
    let tok = tokens[i]!;
    const flagged = tok === '-c' || tok.startsWith('-c') || tok.startsWith('--');
    if (tok === '-c') tok = tokens[++i] ?? '';
    else if (tok.startsWith('-c')) tok = tok.slice(2);
    else if (tok.startsWith('--')) tok = tok.slice(2);
    const eq = tok.indexOf('=');
    // PostgreSQL folds setting names to lower case (`-c STATEMENT_TIMEOUT=0` is statement_timeout).
    const name = eq > 0 ? tok.slice(0, eq).replace(/-/g, '_').toLowerCase() : '';
    if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(name)) {
      r.fail(setting, `must be -c name=value settings (got a token of ${tok.length} characters that is not one)`);
    } else if (flagged && eq === tok.length - 1 && MANAGED_OPTIONS.includes(name)) {
      // PostgreSQL refuses an empty timeout; read as "not given", it left the default in force.
      r.fail(`${setting} ${name}`, 'is empty: give it a value (0 = none), or remove it for the default');
    } else if (flagged) settings.set(name, tok.slice(eq + 1));
    else verbatim.push(tok);
  }
  return { settings, verbatim };
}

const MANAGED_OPTIONS = ['statement_timeout', 'idle_in_transaction_session_timeout', 'lock_timeout'];

/**
 * Prisma's `sslaccept`, read as the sslmode it means: `strict` checks the certificate and its
 * host name (verify-full, unless sslmode already checks it), `accept_invalid_certs`
 * checks nothing (what require and prefer do). A mode set elsewhere that contradicts it is
 * refused: which of the two the user meant cannot be guessed, and the weaker one must not win.
 */
function acceptPrismaSsl(mode: SslMode, modeSource: string | undefined, candidate: Candidate, r: Resolver): SslMode {
  const accept = r.take(oneOf(['strict', 'accept_invalid_certs'], 'must be strict or accept_invalid_certs'), undefined, candidate);
  if (accept === undefined) return mode;
  const verifies = mode === 'verify-ca' || mode === 'verify-full';
  if (accept === 'strict' && !verifies) {
    if (modeSource === undefined) return 'verify-full';
    r.fail(candidate[0], `is strict (check the server's certificate), but sslmode=${mode} from ${modeSource} does not check it: use sslmode=verify-full and drop sslaccept`);
  } else if (accept === 'accept_invalid_certs' && verifies) {
    r.fail(candidate[0], `is accept_invalid_certs, but sslmode=${mode} from ${modeSource ?? 'the configuration'} checks the certificate: drop one of them`);
  }
  return mode;
}

/** The other half of a client certificate, spelled like the half that was given. */
function counterpart(given: string | undefined): string {
  const swap: Record<string, string> = { 'ssl.cert': 'ssl.key', 'ssl.key': 'ssl.cert', DB_SSLCERT: 'DB_SSLKEY', DB_SSLKEY: 'DB_SSLCERT' };
  if (given === undefined) return 'DB_SSLKEY';
  return swap[given] ?? given.replace(/sslcert$|sslkey$/, (m) => (m === 'sslcert' ? 'sslkey' : 'sslcert'));
}

export function isLocalHost(host: string): boolean {
  return host === 'localhost' || host.startsWith('127.') || host === '::1' || host.startsWith('/');
}

/**
 * A replica's configuration: the Db's settings, with the server (host, port, database, and
 * the role when the URL names one) from the replica's URL alone. An explicit `host` or
 * `database` option would otherwise win over the URL, as it does for the primary, and the
 * replica pool would connect to the primary. A problem is named after the replica's
 * setting (`replicas[1] parameter sslmode`), never the primary's `url`.
 */
export function loadReplicaConfig(options: DbOptions, env: Env | undefined, url: string, index: number): DbConfig {
  const { host: _host, port: _port, database: _database, ...rest } = options;
  const named = urlCredentials(url);
  const shared: DbOptions = { ...rest, ...(named.user ? { user: undefined } : {}), ...(named.password ? { password: undefined } : {}) };
  try {
    return loadConfig({ ...shared, url, replicas: [] }, env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const setting = `${options.replicas !== undefined ? 'replicas' : 'DATABASE_REPLICA_URL'}[${index}]`;
    throw new ConfigError(err.issues.map((issue) => ({ ...issue, setting: issue.setting.replace(/^url\b/, setting) })));
  }
}

function replicaIssues(options: DbOptions, env: Env, url: string, index: number): readonly ConfigIssue[] {
  try {
    loadReplicaConfig(options, env, url, index);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.issues;
    throw err;
  }
}

/** Does the URL name a role, a password? (A malformed URL is reported by loadConfig.) */
function urlCredentials(url: string): { user: boolean; password: boolean } {
  try {
    const u = new URL(url);
    return { user: u.username !== '', password: u.password !== '' };
  } catch {
    return { user: false, password: false };
  }
}

/** The keys each nested option object takes (the compiler checks each list is complete). */
const NESTED_OPTIONS: { [K in 'ssl' | 'pool' | 'timeouts' | 'transaction' | 'replica' | 'neon']-?: Record<keyof NonNullable<DbOptions[K]>, true> } = {
  ssl: { mode: true, rootCert: true, cert: true, key: true, allowInsecure: true },
  pool: { size: true, maxOverflow: true, timeoutMs: true, recycleMs: true, overflowIdleMs: true, validateAfterIdleMs: true },
  timeouts: { connectMs: true, statementMs: true, idleInTransactionMs: true, lockMs: true },
  transaction: { maxWaitMs: true, timeoutMs: true, retries: true, isolationLevel: true },
  replica: { maxLagMs: true, retryAfterMs: true, lagCheckIntervalMs: true },
  neon: { wsProxy: true, useSecureWebSocket: true, pipelineTLS: true, pipelineConnect: true, fetchEndpoint: true, httpQueries: true },
};

/** A misspelt nested option (`pool: { sise: 20 }`) would be ignored, and the default silently used: refused. */
function checkNestedNames(options: DbOptions, r: Resolver): void {
  for (const [group, known] of Object.entries(NESTED_OPTIONS)) {
    const value = options[group as keyof typeof NESTED_OPTIONS];
    if (typeof value !== 'object' || value === null) continue;
    for (const name of Object.keys(value)) {
      if (!(name in known)) r.fail(`${group}.${name}`, `is not an option of ${group} (it takes ${Object.keys(known).join(', ')})`);
    }
  }
}

/**
 * Resolves and validates the configuration. Throws one ConfigError listing every problem.
 * `env` defaults to process.env; tests pass their own.
 */
export function loadConfig(options: DbOptions = {}, env: Env = process.env): DbConfig {
  return resolveConfig(options, env, 'application');
}

/**
 * The configuration of a URL migrations connect with (DIRECT_URL, `deploy({ url })`): that
 * URL's settings alone, where Prisma's `socket_timeout` (the schema engine's wait for each
 * statement) is read too. A problem is named `url ...`; callers rename it.
 */
export function loadMigrationConfig(url: string): DbConfig {
  return resolveConfig({ url }, {}, 'migrations');
}

function resolveConfig(options: DbOptions, env: Env, use: UrlUse): DbConfig {
  const r = new Resolver();
  checkNestedNames(options, r);

  // Connection target: an explicit URL, else DATABASE_URL, else the DB_* parts.
  const urlSetting = options.url !== undefined ? 'url' : 'DATABASE_URL';
  const rawUrl = options.url ?? (env.DATABASE_URL || undefined);
  const parsed = rawUrl === undefined ? undefined : parseUrl(urlSetting, rawUrl, r);
  if (parsed !== undefined) checkUrlParameters(urlSetting, parsed.params, use, r);
  const p = (name: string): string | undefined => parsed?.params.get(name) ?? undefined;
  const inUrl = (name: string): string => `${urlSetting} parameter ${name}`;

  const host = r.take(hostValue, undefined, ['host', options.host], ['DB_HOST', parsed ? undefined : env.DB_HOST], [urlSetting, parsed?.target.host]);
  if (host === undefined && !r.issues.some((i) => [urlSetting, 'host', 'DB_HOST'].includes(i.setting))) {
    r.fail(rawUrl === undefined ? 'DATABASE_URL' : urlSetting, rawUrl === undefined ? 'is not set (nor DB_HOST)' : 'has no host');
  }
  const port = r.take(whole(1, 65535, '', '5432'), DEFAULTS.port, ['port', options.port], ['DB_PORT', parsed ? undefined : env.DB_PORT], [urlSetting, parsed?.target.port]);
  const user = r.take(identifier, 'postgres', ['user', options.user], ['DB_USER', parsed ? undefined : env.DB_USER], [urlSetting, parsed?.target.user]);
  const password = r.take(secret, undefined, ['password', options.password], ['DB_PASSWORD', parsed ? undefined : env.DB_PASSWORD], [urlSetting, parsed?.target.password]);
  const database = r.take(identifier, user, ['database', options.database], ['DB_NAME', parsed ? undefined : env.DB_NAME], [urlSetting, parsed?.target.database]);
  registerSecret(password);

  const directUrl = r.take(someText, undefined, ['directUrl', options.directUrl], ['DIRECT_URL', env.DIRECT_URL]);
  if (directUrl !== undefined) {
    const directSetting = options.directUrl !== undefined ? 'directUrl' : 'DIRECT_URL';
    const direct = parseUrl(directSetting, directUrl, r);
    registerSecret(direct?.target.password);
    // Migrations connect with DIRECT_URL's own settings alone (migrate.ts): checked now, as
    // the application's are, not first when `migrate deploy` runs.
    if (direct !== undefined) {
      try {
        loadMigrationConfig(directUrl);
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        for (const issue of err.issues) r.fail(issue.setting.replace(/^url\b/, directSetting), issue.problem);
      }
    }
  }

  const hostName = host ?? '';
  const drv = r.take(driver, hostName.endsWith('.neon.tech') ? 'neon' : 'pg', ['driver', options.driver], ['DB_DRIVER', env.DB_DRIVER]);
  const serverless = SERVERLESS_MARKERS.some((m) => env[m]);
  const mode = r.take(poolMode, serverless ? 'serverless' : 'pooled', ['mode', options.mode], ['DB_POOL_MODE', env.DB_POOL_MODE]);
  const pooler = r.take(flag, hostName.includes('-pooler.'), ['pooler', options.pooler], ['DB_POOLER', env.DB_POOLER], [inUrl('pgbouncer'), p('pgbouncer')]);

  // SSL. The default is libpq's `prefer` for local hosts and `require` elsewhere:
  // a remote database reached in plaintext is a misconfiguration, not a fallback.
  const sslSources: { mode: string; rootCert?: string; cert?: string; key?: string } = { mode: 'default' };
  const sslTake = (name: 'rootCert' | 'cert' | 'key', variable: string, param: string): string | undefined => {
    const value = r.take(certPath, undefined, [`ssl.${name}`, options.ssl?.[name]], [variable, env[variable]], [inUrl(param), p(param)]);
    if (r.source !== undefined) sslSources[name] = r.source;
    return value;
  };
  const sslModeValue = r.take(sslMode, isLocalHost(hostName) ? 'prefer' : 'require', ['ssl.mode', options.ssl?.mode], ['DB_SSLMODE', env.DB_SSLMODE], [inUrl('sslmode'), p('sslmode')]);
  sslSources.mode = r.source ?? 'the default for this host';
  const sslModeResolved = acceptPrismaSsl(sslModeValue, r.source, [inUrl('sslaccept'), p('sslaccept')], r);
  if (sslModeResolved !== sslModeValue) sslSources.mode = inUrl('sslaccept');
  const ssl = {
    mode: sslModeResolved,
    rootCert: sslTake('rootCert', 'DB_SSLROOTCERT', 'sslrootcert'),
    cert: sslTake('cert', 'DB_SSLCERT', 'sslcert'),
    key: sslTake('key', 'DB_SSLKEY', 'sslkey'),
  };
  const allowInsecure = r.take(flag, false, ['ssl.allowInsecure', options.ssl?.allowInsecure], ['DB_SSL_ALLOW_INSECURE', env.DB_SSL_ALLOW_INSECURE]);
  if ((ssl.cert === undefined) !== (ssl.key === undefined)) {
    const missing = counterpart(ssl.cert === undefined ? sslSources.key : sslSources.cert);
    // Prisma's own URL format spells the server's CA file `sslcert`; libpq's sslcert (read here) is the client's certificate.
    const prismaCa = ssl.key === undefined && sslSources.cert?.endsWith(' parameter sslcert') ? " (in a Prisma URL, sslcert names the server's CA certificate: here that is sslrootcert, and sslcert is a client certificate, as in libpq)" : '';
    r.fail(missing, `a client certificate needs both a certificate and its key: set ${missing} too${prismaCa}`);
  }
  const plaintextPossible = ssl.mode === 'disable' || ssl.mode === 'allow' || ssl.mode === 'prefer';
  if (env.NODE_ENV === 'production' && plaintextPossible && host !== undefined && !isLocalHost(hostName) && !allowInsecure) {
    r.fail(sslSources.mode, `sslmode=${ssl.mode} allows a plaintext connection to ${hostName} in production; use require, verify-ca or verify-full, or set DB_SSL_ALLOW_INSECURE=true`);
  }

  // Pool. Prisma's `connection_limit` is a hard cap, so it means size with no overflow.
  const connectionLimit = r.take(whole(1, MAX_POOL), undefined, [inUrl('connection_limit'), p('connection_limit')]);
  const size = r.take(whole(1, MAX_POOL), connectionLimit ?? DEFAULTS.poolSize, ['pool.size', options.pool?.size], ['DB_POOL_SIZE', env.DB_POOL_SIZE]);
  const maxOverflow = r.take(whole(0, MAX_POOL, '', '10'), connectionLimit === undefined ? DEFAULTS.maxOverflow : 0, ['pool.maxOverflow', options.pool?.maxOverflow], ['DB_MAX_OVERFLOW', env.DB_MAX_OVERFLOW]);
  const poolTimeoutMs = r.take(durationSetting(1, 30_000), DEFAULTS.poolTimeoutMs, ['pool.timeoutMs', options.pool?.timeoutMs], ['DB_POOL_TIMEOUT', env.DB_POOL_TIMEOUT, 1000], [inUrl('pool_timeout'), p('pool_timeout'), 1000]);
  // SQLAlchemy spells "never recycle" as -1; accept it as 0.
  const recycleRaw = r.take((scale?: number) => (scale === 1000 ? whole(-1, Math.floor(MAX_MS / 1000), 'seconds', '1800; 0 or -1 = never') : whole(-1, MAX_MS, 'milliseconds', '1800000; 0 or -1 = never')), DEFAULTS.recycleMs, ['pool.recycleMs', options.pool?.recycleMs], ['DB_POOL_RECYCLE', env.DB_POOL_RECYCLE, 1000], [inUrl('max_connection_lifetime'), p('max_connection_lifetime'), 1000]);
  // Prisma's prepared-statement cache: the layer prepares no named statements, so any size is already what it does (checked, not applied).
  r.take(whole(0, 1_000_000, '', '100'), undefined, [inUrl('statement_cache_size'), p('statement_cache_size')]);
  const overflowIdleMs = r.take(whole(1, MAX_MS, 'milliseconds', '10000'), DEFAULTS.overflowIdleMs, ['pool.overflowIdleMs', options.pool?.overflowIdleMs]);
  const validateAfterIdleMs = r.take(whole(0, MAX_MS, 'milliseconds', '30000'), DEFAULTS.validateAfterIdleMs, ['pool.validateAfterIdleMs', options.pool?.validateAfterIdleMs]);

  // Timeouts. Session settings may come inside the URL's libpq `options`.
  const parsedOptions = parseServerOptions(p('options') ?? '', inUrl('options'), r);
  const serverOpts = parsedOptions.settings;
  const opt = (name: string): Candidate => [`${inUrl('options')} ${name}`, serverOpts.get(name)];
  const connectMs = r.take(durationSetting(1, 10_000), DEFAULTS.connectTimeoutMs, ['timeouts.connectMs', options.timeouts?.connectMs], ['DB_CONNECT_TIMEOUT', env.DB_CONNECT_TIMEOUT, 1000], [inUrl('connect_timeout'), p('connect_timeout'), 1000]);
  const ms = serverDuration;
  const statementMs = r.take(ms, DEFAULTS.statementTimeoutMs, ['timeouts.statementMs', options.timeouts?.statementMs], ['DB_STATEMENT_TIMEOUT', env.DB_STATEMENT_TIMEOUT], opt('statement_timeout'));
  const idleInTransactionMs = r.take(ms, DEFAULTS.idleInTransactionTimeoutMs, ['timeouts.idleInTransactionMs', options.timeouts?.idleInTransactionMs], ['DB_IDLE_TX_TIMEOUT', env.DB_IDLE_TX_TIMEOUT], opt('idle_in_transaction_session_timeout'));
  const lockMs = r.take(ms, DEFAULTS.lockTimeoutMs, ['timeouts.lockMs', options.timeouts?.lockMs], ['DB_LOCK_TIMEOUT', env.DB_LOCK_TIMEOUT], opt('lock_timeout'));
  const passthrough = [
    ...[...serverOpts].filter(([k]) => !MANAGED_OPTIONS.includes(k)).map(([k, v]) => `-c ${k}=${v}`),
    ...parsedOptions.verbatim,
  ];
  // A transaction pooler gets no startup parameters (driver/options.ts): a session setting
  // of the URL's `options` would be dropped without a word, and every statement run without it.
  const unsendable = [...serverOpts.keys()].filter((k) => !MANAGED_OPTIONS.includes(k));
  if (pooler && unsendable.length > 0) {
    r.fail(
      inUrl('options'),
      `sets ${unsendable.join(', ')}, which cannot reach the server through a transaction-mode pooler (no startup parameters are sent to it, and a SET would stay on a server connection other clients share): set it on the role (ALTER ROLE ... SET ${unsendable[0]} = ...), or connect without the pooler`,
    );
  }

  const channelBinding = r.take(oneOf(['disable', 'prefer', 'require'], 'must be disable, prefer or require'), 'prefer', [inUrl('channel_binding'), p('channel_binding')], ['DB_CHANNEL_BINDING', env.DB_CHANNEL_BINDING]);
  const applicationName = r.take(startupValue(63), DEFAULTS.applicationName, ['applicationName', options.applicationName], ['DB_APPLICATION_NAME', env.DB_APPLICATION_NAME], [inUrl('application_name'), p('application_name')]);

  const transaction = {
    maxWaitMs: r.take(whole(1, MAX_MS, 'milliseconds', '30000'), poolTimeoutMs, ['transaction.maxWaitMs', options.transaction?.maxWaitMs], ['DB_TX_MAX_WAIT', env.DB_TX_MAX_WAIT]),
    timeoutMs: r.take(whole(1, MAX_MS, 'milliseconds', '15000'), DEFAULTS.transactionTimeoutMs, ['transaction.timeoutMs', options.transaction?.timeoutMs], ['DB_TX_TIMEOUT', env.DB_TX_TIMEOUT]),
    retries: r.take(whole(0, 100, '', '3'), DEFAULTS.transactionRetries, ['transaction.retries', options.transaction?.retries], ['DB_TX_RETRIES', env.DB_TX_RETRIES]),
    isolationLevel: r.take(isolation, undefined, ['transaction.isolationLevel', options.transaction?.isolationLevel], ['DB_TX_ISOLATION', env.DB_TX_ISOLATION]),
  };

  const slowQueryMs = r.take(whole(0, MAX_MS, 'milliseconds', '500'), 0, ['slowQueryMs', options.slowQueryMs], ['DB_SLOW_QUERY_MS', env.DB_SLOW_QUERY_MS]);
  // Prisma's `?schema=` (what `prisma migrate` and the schema engine read): the models' schema.
  const schema = r.take(schemaName, undefined, ['schema', options.schema], [inUrl('schema'), p('schema')]);

  const replicaSetting = options.replicas !== undefined ? 'replicas' : 'DATABASE_REPLICA_URL';
  const replicaUrls = (options.replicas ?? (env.DATABASE_REPLICA_URL ?? '').split(',')).map((u) => u.trim()).filter(Boolean);
  replicaUrls.forEach((replicaUrl, i) => {
    // Named with its index, as loadReplicaConfig names the problems in its parameters.
    const setting = `${replicaSetting}[${i}]`;
    const parsedReplica = parseUrl(setting, replicaUrl, r);
    registerSecret(parsedReplica?.target.password);
    // Its own settings (sslmode, host, ...) are checked now, as DIRECT_URL's are, not first when
    // createDb builds the replica's pool: doctor and loadConfig report them too. The Db's
    // shared settings are the primary's, reported once, under their own names.
    if (parsedReplica !== undefined) r.issues.push(...replicaIssues(options, env, replicaUrl, i).filter((issue) => issue.setting.startsWith(setting)));
  });
  const replica = {
    maxLagMs: r.take(whole(0, MAX_MS, 'milliseconds', '10000'), 10_000, ['replica.maxLagMs', options.replica?.maxLagMs], ['DB_REPLICA_MAX_LAG_MS', env.DB_REPLICA_MAX_LAG_MS]),
    retryAfterMs: r.take(whole(0, MAX_MS, 'milliseconds', '5000'), 5_000, ['replica.retryAfterMs', options.replica?.retryAfterMs]),
    lagCheckIntervalMs: r.take(whole(0, MAX_MS, 'milliseconds', '2000'), 2_000, ['replica.lagCheckIntervalMs', options.replica?.lagCheckIntervalMs]),
  };

  if (r.issues.length > 0) throw new ConfigError(r.issues);

  const config: DbConfig = {
    driver: drv,
    mode,
    pooler,
    target: hideSecrets({ host: hostName, port, user, password, database }, ['password']),
    directUrl,
    sslSources,
    ssl,
    pool: {
      size,
      maxOverflow,
      timeoutMs: poolTimeoutMs,
      recycleMs: Math.max(0, recycleRaw),
      overflowIdleMs,
      validateAfterIdleMs,
    },
    timeouts: { connectMs, statementMs, idleInTransactionMs, lockMs },
    channelBinding,
    serverOptions: passthrough.length > 0 ? passthrough.join(' ') : undefined,
    applicationName,
    transaction,
    neon: options.neon ?? {},
    slowQueryMs,
    schema,
    replicaUrls,
    replica,
  };
  // Printing, logging or serialising the configuration never shows a secret.
  return Object.freeze(hideSecrets(config, ['directUrl', 'replicaUrls']));
}

/** The connection as a URL (for the schema engine and the prisma CLI), password included. */
export function toUrl(config: DbConfig, overrides: Partial<ConnectionTarget> = {}): string {
  // The password is non-enumerable (hidden from printing): a spread would drop it.
  const t = { ...config.target, password: config.target.password, ...overrides };
  const auth = `${encodeURIComponent(t.user)}${t.password === undefined ? '' : `:${encodeURIComponent(t.password)}`}`;
  const database = encodeURIComponent(t.database);
  // A unix socket directory goes in the host parameter (Prisma's and libpq's spelling): a URL host cannot hold a path.
  if (t.host.startsWith('/')) return `postgresql://${auth}@localhost:${t.port}/${database}?host=${encodeURIComponent(t.host)}`;
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  return `postgresql://${auth}@${host}:${t.port}/${database}`;
}
