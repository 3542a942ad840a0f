// Hostile input, kept as a table so a new case is one line. Every value a user can hand
// the layer (DATABASE_URL, DB_* variables, createDb options, unit-of-work options) is a
// way into SQL text, the startup packet or a log line. For each case the suite checks:
// the error class; the setting the error names (the source the value really came from)
// and the expected form; that no password and no full URL leaks anywhere (message, stack,
// cause chain, util.inspect, JSON, 'error' events, logger output); that nothing ran on
// the server (canary sequence and table untouched); and, for startup-packet injections,
// that the session did not land in another database or in read-only mode.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Console } from 'node:console';
import { inspect } from 'node:util';
import {
  ConfigError,
  createDb,
  DatabaseConnectionError,
  DatalayerError,
  type CreateDbOptions,
  type Db,
  type DbOptions,
  type TransactionOptions,
} from '../src/index';
import { PrismaClient } from '../src/generated/prisma/client';
import { createTestDatabase, type TestDatabase } from './support/db';

/** A password no harness server knows, distinctive enough to grep for. */
const FAKE = 'S3cr3t-Pa55-word';
const KB10 = 'a'.repeat(10_240);
const INJECT_SETVAL = "1000', true); SELECT setval('canary_seq', 424242); SELECT set_config('x.y', '1";
/** Passes `< statementMs` through valueOf, carries SQL through toString. */
const sneakyNumber = (): object => ({
  valueOf: () => 20_000,
  toString: () => "20000', true); DROP TABLE canary_victim; SELECT setval('canary_seq', 424242); SELECT set_config('x.y', '1",
});

type Env = Record<string, string | undefined>;
type ErrorClass = abstract new (...args: never[]) => Error;

interface Ctx {
  t: TestDatabase;
  /** Temp dir (exists, is a directory) and files in it. */
  dir: string;
  missing: string;
  garbageCert: string;
  /** postgresql://postgres:FAKE@127.0.0.1:port/<testdb>, raw query string appended as given. */
  fakeUrl(query?: string, auth?: string): string;
  /** Same with the real superuser password (for cases where today's code may connect). */
  realUrl(query?: string): string;
  /** DB_HOST/DB_PORT/DB_USER/DB_PASSWORD/DB_NAME with the fake password. */
  fakeEnv(extra?: Env): Env;
  realEnv(extra?: Env): Env;
}

interface Expectation {
  error: ErrorClass;
  /** For ConfigError: one of `issues[].setting` equals (string) or matches (RegExp) this, and the message names it. */
  setting?: string | RegExp;
  /** The expected form, in the issue's problem and the message. */
  hint?: RegExp;
}

interface HostileCase {
  name: string;
  where: 'url' | 'env' | 'option' | 'unit';
  /** url/env/option: what createDb gets besides PrismaClient, logger and env. */
  options?: (c: Ctx) => Partial<DbOptions>;
  env?: (c: Ctx) => Env;
  /** unit: the transaction options (hostile on purpose, so untyped), and the Db it runs on. */
  unit?: (c: Ctx) => unknown;
  unitDb?: Partial<DbOptions>;
  /** Never connect, even if createDb accepts the input (the host is not loopback). */
  noConnect?: boolean;
  expect: 'ok' | Expectation;
  /** For 'ok' cases: what the session must look like. */
  check?: (probe: Probe, c: Ctx) => void;
}

const cfg = (setting: string | RegExp, hint?: RegExp): Expectation => ({ error: ConfigError, setting, ...(hint ? { hint } : {}) });
const WHOLE = /whole number/i;
const SECONDS = /whole number of seconds/i;
const DURATION = /duration|milliseconds|e\.g\./i;
const FLAG = /true or false/i;
const ENCODE = /percent-encod/i;
const NUL = /NUL|zero byte|\\0|null byte|forbidden/i;
const SSLMODES = /disable, allow, prefer, require, verify-ca, verify-full/;
const DIRECTORY = /directory|not a (regular )?file/i;
const NOT_FOUND = /not found|no such file|does not exist/i;
const UNIT = cfg(/timeoutMs/);

const nulApp = 'x\0database\0postgres';
const nulOpts = 'x\0options\0-c default_transaction_read_only=on';
/**
 * What PostgreSQL 15 stores for an application_name: every byte outside printable ASCII
 * becomes '?' (pg_clean_ascii in src/backend/utils/misc/guc.c's check_application_name).
 * The layer may pass unicode through; the server, not the layer, replaces it.
 */
const pgCleanAscii = (name: string): string => [...Buffer.from(name, 'utf8')].map((b) => (b >= 32 && b <= 126 ? String.fromCharCode(b) : '?')).join('');
/** 63 bytes exactly: 21 three-byte characters. */
const UNICODE_63B = '日本語'.repeat(7);
/** 32 characters but 64 bytes: PostgreSQL would cut it mid-character. */
const UNICODE_64B = 'é'.repeat(32);

const CASES: HostileCase[] = [
  // ---- DATABASE_URL ------------------------------------------------------------------
  { name: 'URL application_name with NUL injects database=postgres', where: 'url', env: (c) => ({ DATABASE_URL: c.realUrl('application_name=x%00database%00postgres') }), expect: cfg('DATABASE_URL parameter application_name', NUL) },
  { name: 'URL application_name with NUL injects options (read-only session)', where: 'url', env: (c) => ({ DATABASE_URL: c.realUrl('application_name=x%00options%00-c%20default_transaction_read_only%3Don') }), expect: cfg('DATABASE_URL parameter application_name', NUL) },
  { name: 'url option: application_name with NUL', where: 'url', options: (c) => ({ url: c.realUrl('application_name=x%00database%00postgres') }), expect: cfg('url parameter application_name', NUL) },
  { name: 'URL application_name of 10 kB', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl(`application_name=${KB10}`) }), expect: cfg('DATABASE_URL parameter application_name', /63/) },
  { name: 'URL application_name: 32 characters but 64 bytes', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl(`application_name=${encodeURIComponent(UNICODE_64B)}`) }), expect: cfg('DATABASE_URL parameter application_name', /63 bytes/) },
  { name: 'URL application_name: unicode within 63 bytes connects', where: 'url', env: (c) => ({ DATABASE_URL: c.realUrl(`application_name=${encodeURIComponent(UNICODE_63B)}`) }), expect: 'ok', check: (p) => expect(p.app).toBe(pgCleanAscii(UNICODE_63B)) },
  { name: 'URL options with NUL injects database=postgres', where: 'url', env: (c) => ({ DATABASE_URL: c.realUrl('options=-c%20search_path%3Dpublic%00database%00postgres') }), expect: cfg(/^DATABASE_URL parameter options/, NUL) },
  { name: 'URL options statement_timeout=5x', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('options=-c%20statement_timeout%3D5x') }), expect: cfg('DATABASE_URL parameter options statement_timeout', DURATION) },
  { name: 'URL options statement_timeout carrying a quote and SQL', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl(`options=${encodeURIComponent("-c statement_timeout=1000';DROP TABLE canary_victim;--")}`) }), expect: cfg('DATABASE_URL parameter options statement_timeout', DURATION) },
  // PostgreSQL folds setting names: these are statement_timeout and lock_timeout to the server.
  { name: 'URL options STATEMENT_TIMEOUT=5x (the name in upper case)', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('options=-c%20STATEMENT_TIMEOUT%3D5x') }), expect: cfg('DATABASE_URL parameter options statement_timeout', DURATION) },
  { name: 'URL options --Lock-Timeout beyond PostgreSQL (mixed case, dashes)', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('options=--Lock-Timeout%3D99999999999') }), expect: cfg('DATABASE_URL parameter options lock_timeout', /at most/) },
  { name: 'URL user with NUL', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('', `postgres%00database%00postgres:${FAKE}`) }), expect: cfg('DATABASE_URL', NUL) },
  { name: 'URL database name with NUL', where: 'url', env: (c) => ({ DATABASE_URL: c.realUrl().replace(`/${c.t.name}`, `/${c.t.name}%00options%00-c%20default_transaction_read_only%3Don`) }), expect: cfg('DATABASE_URL', NUL) },
  { name: 'URL sslmode garbage', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('sslmode=sometimes') }), expect: cfg('DATABASE_URL parameter sslmode', SSLMODES) },
  { name: 'URL sslmode of 10 kB', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl(`sslmode=${KB10}`) }), expect: cfg('DATABASE_URL parameter sslmode', SSLMODES) },
  { name: 'URL sslmode with NUL', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('sslmode=require%00') }), expect: cfg('DATABASE_URL parameter sslmode') },
  { name: 'URL sslrootcert missing file', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl(`sslmode=verify-full&sslrootcert=${encodeURIComponent(c.missing)}`) }), expect: cfg('DATABASE_URL parameter sslrootcert', NOT_FOUND) },
  { name: 'URL sslrootcert is a directory (verify-full)', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl(`sslmode=verify-full&sslrootcert=${encodeURIComponent(c.dir)}`) }), expect: cfg('DATABASE_URL parameter sslrootcert', DIRECTORY) },
  { name: 'URL sslrootcert is a directory (prefer)', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl(`sslmode=prefer&sslrootcert=${encodeURIComponent(c.dir)}`) }), expect: cfg('DATABASE_URL parameter sslrootcert', DIRECTORY) },
  { name: 'URL sslrootcert is garbage, not PEM', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl(`sslmode=verify-ca&sslrootcert=${encodeURIComponent(c.garbageCert)}`) }), expect: cfg('DATABASE_URL parameter sslrootcert', /certificate|PEM/i) },
  { name: 'URL sslcert without sslkey', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl(`sslmode=require&sslcert=${encodeURIComponent(c.t.caFile)}`) }), expect: cfg(/^DATABASE_URL parameter ssl(cert|key)$/, /sslkey/) },
  { name: 'URL sslkey is a directory', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl(`sslmode=require&sslcert=${encodeURIComponent(c.t.caFile)}&sslkey=${encodeURIComponent(c.dir)}`) }), expect: cfg('DATABASE_URL parameter sslkey', DIRECTORY) },
  { name: 'URL connection_limit=-1', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('connection_limit=-1') }), expect: cfg('DATABASE_URL parameter connection_limit', /at least 1/) },
  { name: 'URL connection_limit=NaN', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('connection_limit=NaN') }), expect: cfg('DATABASE_URL parameter connection_limit', WHOLE) },
  { name: 'URL connection_limit=1.5', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('connection_limit=1.5') }), expect: cfg('DATABASE_URL parameter connection_limit', WHOLE) },
  { name: 'URL connection_limit huge', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('connection_limit=99999999999999999999') }), expect: cfg('DATABASE_URL parameter connection_limit', /at most/) },
  { name: 'URL pool_timeout=abc', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('pool_timeout=abc') }), expect: cfg('DATABASE_URL parameter pool_timeout', SECONDS) },
  { name: 'URL connect_timeout=-5', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('connect_timeout=-5') }), expect: cfg('DATABASE_URL parameter connect_timeout', SECONDS) },
  { name: 'URL pgbouncer=maybe', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('pgbouncer=maybe') }), expect: cfg('DATABASE_URL parameter pgbouncer', FLAG) },
  { name: 'URL password with unencoded /', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('', `postgres:${FAKE}/x`) }), expect: cfg('DATABASE_URL', ENCODE) },
  { name: 'URL password with unencoded #', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('', `postgres:${FAKE}#x`) }), expect: cfg('DATABASE_URL', ENCODE) },
  { name: 'URL password with unencoded ?', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('', `postgres:${FAKE}?x`) }), expect: cfg('DATABASE_URL', ENCODE) },
  { name: 'URL password with malformed %zz', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('', `postgres:${FAKE}%zz`) }), expect: cfg('DATABASE_URL', ENCODE) },
  { name: 'url option: password with unencoded /', where: 'url', options: (c) => ({ url: c.fakeUrl('', `postgres:${FAKE}/x`) }), expect: cfg('url', ENCODE) },
  { name: 'URL database name with malformed %E0%A4%A', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl().replace(`/${c.t.name}`, '/db%E0%A4%A') }), expect: cfg('DATABASE_URL', ENCODE) },
  { name: 'URL with a mysql:// scheme', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl().replace(/^postgresql:/, 'mysql:') }), expect: cfg('DATABASE_URL', /postgresql:\/\//) },
  { name: 'URL port 99999', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl().replace(`:${c.t.port}/`, ':99999/') }), expect: cfg('DATABASE_URL') },
  { name: 'URL password of 10 kB reaches the server and fails authentication', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('', `postgres:${FAKE}${KB10}`) }), expect: { error: DatabaseConnectionError } },
  { name: 'URL sslmode=disable for a remote host in production names the URL', where: 'url', noConnect: true, env: () => ({ NODE_ENV: 'production', DATABASE_URL: `postgresql://app:${FAKE}@db.example.com:5432/shop?sslmode=disable` }), expect: cfg('DATABASE_URL parameter sslmode', /require|verify/) },

  // ---- DB_* variables ---------------------------------------------------------------
  { name: 'DB_APPLICATION_NAME with NUL injects database=postgres', where: 'env', env: (c) => c.realEnv({ DB_APPLICATION_NAME: nulApp }), expect: cfg('DB_APPLICATION_NAME', NUL) },
  { name: 'DB_APPLICATION_NAME with NUL injects options (read-only session)', where: 'env', env: (c) => c.realEnv({ DB_APPLICATION_NAME: nulOpts }), expect: cfg('DB_APPLICATION_NAME', NUL) },
  { name: 'DB_APPLICATION_NAME of 10 kB', where: 'env', env: (c) => c.fakeEnv({ DB_APPLICATION_NAME: KB10 }), expect: cfg('DB_APPLICATION_NAME', /63/) },
  { name: 'DB_USER with NUL', where: 'env', env: (c) => c.realEnv({ DB_USER: 'postgres\0database\0postgres' }), expect: cfg('DB_USER', NUL) },
  { name: 'DB_NAME with NUL', where: 'env', env: (c) => c.realEnv({ DB_NAME: `${c.t.name}\0options\0-c default_transaction_read_only=on` }), expect: cfg('DB_NAME', NUL) },
  { name: 'DB_PASSWORD with NUL', where: 'env', env: (c) => c.fakeEnv({ DB_PASSWORD: `${FAKE}\0tail` }), expect: cfg('DB_PASSWORD', NUL) },
  { name: 'DB_HOST with NUL', where: 'env', noConnect: true, env: (c) => c.fakeEnv({ DB_HOST: '127.0.0.1\0evil' }), expect: cfg('DB_HOST', NUL) },
  { name: 'DB_POOL_SIZE=abc', where: 'env', env: (c) => c.fakeEnv({ DB_POOL_SIZE: 'abc' }), expect: cfg('DB_POOL_SIZE', WHOLE) },
  { name: 'DB_POOL_SIZE=-1', where: 'env', env: (c) => c.fakeEnv({ DB_POOL_SIZE: '-1' }), expect: cfg('DB_POOL_SIZE', /at least 1/) },
  { name: 'DB_POOL_SIZE=0', where: 'env', env: (c) => c.fakeEnv({ DB_POOL_SIZE: '0' }), expect: cfg('DB_POOL_SIZE', /at least 1/) },
  { name: 'DB_POOL_SIZE=2.5', where: 'env', env: (c) => c.fakeEnv({ DB_POOL_SIZE: '2.5' }), expect: cfg('DB_POOL_SIZE', WHOLE) },
  { name: 'DB_POOL_SIZE=NaN', where: 'env', env: (c) => c.fakeEnv({ DB_POOL_SIZE: 'NaN' }), expect: cfg('DB_POOL_SIZE', WHOLE) },
  { name: 'DB_POOL_SIZE=Infinity', where: 'env', env: (c) => c.fakeEnv({ DB_POOL_SIZE: 'Infinity' }), expect: cfg('DB_POOL_SIZE', WHOLE) },
  { name: 'DB_POOL_SIZE huge (1e30 digits)', where: 'env', env: (c) => c.fakeEnv({ DB_POOL_SIZE: '1000000000000000000000000000000' }), expect: cfg('DB_POOL_SIZE', /at most/) },
  { name: 'DB_POOL_SIZE in Arabic-Indic digits', where: 'env', env: (c) => c.fakeEnv({ DB_POOL_SIZE: '٣' }), expect: cfg('DB_POOL_SIZE', WHOLE) },
  { name: 'DB_POOL_SIZE=0x10', where: 'env', env: (c) => c.fakeEnv({ DB_POOL_SIZE: '0x10' }), expect: cfg('DB_POOL_SIZE', WHOLE) },
  { name: 'DB_PORT=abc', where: 'env', env: (c) => c.fakeEnv({ DB_PORT: 'abc' }), expect: cfg('DB_PORT', WHOLE) },
  { name: 'DB_PORT=70000', where: 'env', env: (c) => c.fakeEnv({ DB_PORT: '70000' }), expect: cfg('DB_PORT', /65535/) },
  { name: 'DB_PORT=5432.5', where: 'env', env: (c) => c.fakeEnv({ DB_PORT: '5432.5' }), expect: cfg('DB_PORT', WHOLE) },
  { name: 'DB_POOLER=maybe', where: 'env', env: (c) => c.fakeEnv({ DB_POOLER: 'maybe' }), expect: cfg('DB_POOLER', FLAG) },
  { name: 'DB_STATEMENT_TIMEOUT=5x', where: 'env', env: (c) => c.fakeEnv({ DB_STATEMENT_TIMEOUT: '5x' }), expect: cfg('DB_STATEMENT_TIMEOUT', DURATION) },
  { name: 'DB_STATEMENT_TIMEOUT=-1', where: 'env', env: (c) => c.fakeEnv({ DB_STATEMENT_TIMEOUT: '-1' }), expect: cfg('DB_STATEMENT_TIMEOUT', DURATION) },
  { name: 'DB_STATEMENT_TIMEOUT carrying SQL', where: 'env', env: (c) => c.fakeEnv({ DB_STATEMENT_TIMEOUT: "1000', true); DROP TABLE canary_victim; --" }), expect: cfg('DB_STATEMENT_TIMEOUT', DURATION) },
  { name: 'DB_STATEMENT_TIMEOUT beyond PostgreSQL (> 2147483647 ms)', where: 'env', env: (c) => c.fakeEnv({ DB_STATEMENT_TIMEOUT: '99999999999' }), expect: cfg('DB_STATEMENT_TIMEOUT', /at most/) },
  { name: 'DB_LOCK_TIMEOUT=1e3', where: 'env', env: (c) => c.fakeEnv({ DB_LOCK_TIMEOUT: '1e3' }), expect: cfg('DB_LOCK_TIMEOUT', DURATION) },
  { name: 'DB_POOL_TIMEOUT=abc', where: 'env', env: (c) => c.fakeEnv({ DB_POOL_TIMEOUT: 'abc' }), expect: cfg('DB_POOL_TIMEOUT', SECONDS) },
  { name: 'DB_CONNECT_TIMEOUT=-1', where: 'env', env: (c) => c.fakeEnv({ DB_CONNECT_TIMEOUT: '-1' }), expect: cfg('DB_CONNECT_TIMEOUT', SECONDS) },
  { name: 'DB_TX_RETRIES=-1', where: 'env', env: (c) => c.fakeEnv({ DB_TX_RETRIES: '-1' }), expect: cfg('DB_TX_RETRIES', /at least 0/) },
  { name: 'DB_SSLMODE garbage', where: 'env', env: (c) => c.fakeEnv({ DB_SSLMODE: 'yes please' }), expect: cfg('DB_SSLMODE', SSLMODES) },
  { name: 'DB_SSLROOTCERT missing file', where: 'env', env: (c) => c.fakeEnv({ DB_SSLMODE: 'verify-full', DB_SSLROOTCERT: c.missing }), expect: cfg('DB_SSLROOTCERT', NOT_FOUND) },
  { name: 'DB_SSLROOTCERT is a directory', where: 'env', env: (c) => c.fakeEnv({ DB_SSLMODE: 'verify-full', DB_SSLROOTCERT: c.dir }), expect: cfg('DB_SSLROOTCERT', DIRECTORY) },
  { name: 'DB_SSLCERT without DB_SSLKEY', where: 'env', env: (c) => c.fakeEnv({ DB_SSLCERT: c.t.caFile }), expect: cfg('DB_SSLKEY', /DB_SSLKEY/) },
  { name: 'DB_SSLMODE=disable for a remote host in production', where: 'env', noConnect: true, env: () => ({ NODE_ENV: 'production', DB_HOST: 'db.example.com', DB_PASSWORD: FAKE, DB_SSLMODE: 'disable' }), expect: cfg('DB_SSLMODE', /require|verify/) },
  // PostgreSQL truncates a longer role or database name to its first 63 bytes: the connection would land in another database.
  { name: 'DB_NAME of 64 bytes', where: 'env', env: (c) => c.fakeEnv({ DB_NAME: 'd'.repeat(64) }), expect: cfg('DB_NAME', /63 bytes/) },
  { name: 'URL user of 70 bytes', where: 'url', env: (c) => ({ DATABASE_URL: c.fakeUrl('', `${'u'.repeat(70)}:${FAKE}`) }), expect: cfg('DATABASE_URL', /63 bytes/) },
  { name: 'DB_APPLICATION_NAME: unicode within 63 bytes connects', where: 'env', env: (c) => c.realEnv({ DB_APPLICATION_NAME: 'ünïcødé ✓ 🐘' }), expect: 'ok', check: (p) => expect(p.app).toBe(pgCleanAscii('ünïcødé ✓ 🐘')) },

  // ---- createDb options -------------------------------------------------------------
  { name: 'applicationName with NUL injects database=postgres', where: 'option', options: (c) => ({ url: c.realUrl(), applicationName: nulApp }), expect: cfg('applicationName', NUL) },
  { name: 'applicationName with NUL injects options (read-only session)', where: 'option', options: (c) => ({ url: c.realUrl(), applicationName: nulOpts }), expect: cfg('applicationName', NUL) },
  { name: 'applicationName blank', where: 'option', options: (c) => ({ url: c.fakeUrl(), applicationName: '   ' }), expect: cfg('applicationName', /empty/) },
  { name: 'applicationName: exactly 63 bytes of unicode connects', where: 'option', options: (c) => ({ url: c.realUrl(), applicationName: UNICODE_63B }), expect: 'ok', check: (p) => expect(p.app).toBe(pgCleanAscii(UNICODE_63B)) },
  { name: 'user with NUL', where: 'option', options: (c) => ({ url: c.realUrl(), user: 'postgres\0database\0postgres' }), expect: cfg('user', NUL) },
  { name: 'database with NUL', where: 'option', options: (c) => ({ url: c.realUrl(), database: `${c.t.name}\0options\0-c default_transaction_read_only=on` }), expect: cfg('database', NUL) },
  { name: 'password with NUL', where: 'option', options: (c) => ({ url: c.fakeUrl(), password: `${FAKE}\0tail` }), expect: cfg('password', NUL) },
  { name: 'port=0', where: 'option', options: (c) => ({ url: c.fakeUrl(), port: 0 }), expect: cfg('port', /at least 1/) },
  { name: 'port=NaN', where: 'option', options: (c) => ({ url: c.fakeUrl(), port: NaN }), expect: cfg('port', WHOLE) },
  { name: 'pool.size=-1', where: 'option', options: (c) => ({ url: c.fakeUrl(), pool: { size: -1 } }), expect: cfg('pool.size', /at least 1/) },
  { name: 'pool.size=1.5', where: 'option', options: (c) => ({ url: c.fakeUrl(), pool: { size: 1.5 } }), expect: cfg('pool.size', WHOLE) },
  { name: 'pool.size=NaN', where: 'option', options: (c) => ({ url: c.fakeUrl(), pool: { size: NaN } }), expect: cfg('pool.size', WHOLE) },
  { name: 'pool.size=Infinity', where: 'option', options: (c) => ({ url: c.fakeUrl(), pool: { size: Infinity } }), expect: cfg('pool.size', WHOLE) },
  { name: 'pool.size=2**53+2', where: 'option', options: (c) => ({ url: c.fakeUrl(), pool: { size: 2 ** 53 + 2 } }), expect: cfg('pool.size', /at most/) },
  { name: 'pool.size as an object with valueOf', where: 'option', options: (c) => ({ url: c.fakeUrl(), pool: { size: { valueOf: () => 5 } as unknown as number } }), expect: cfg('pool.size', WHOLE) },
  { name: 'pool.maxOverflow=-1', where: 'option', options: (c) => ({ url: c.fakeUrl(), pool: { maxOverflow: -1 } }), expect: cfg('pool.maxOverflow', /at least 0/) },
  { name: 'pool.timeoutMs=NaN', where: 'option', options: (c) => ({ url: c.fakeUrl(), pool: { timeoutMs: NaN } }), expect: cfg('pool.timeoutMs', WHOLE) },
  { name: 'timeouts.statementMs=-1', where: 'option', options: (c) => ({ url: c.fakeUrl(), timeouts: { statementMs: -1 } }), expect: cfg('timeouts.statementMs', /at least 0/) },
  { name: 'timeouts.statementMs=1.5', where: 'option', options: (c) => ({ url: c.fakeUrl(), timeouts: { statementMs: 1.5 } }), expect: cfg('timeouts.statementMs', WHOLE) },
  { name: 'timeouts.statementMs=Infinity', where: 'option', options: (c) => ({ url: c.fakeUrl(), timeouts: { statementMs: Infinity } }), expect: cfg('timeouts.statementMs', WHOLE) },
  { name: 'timeouts.statementMs=2**31 (beyond PostgreSQL)', where: 'option', options: (c) => ({ url: c.fakeUrl(), timeouts: { statementMs: 2 ** 31 } }), expect: cfg('timeouts.statementMs', /at most/) },
  { name: 'timeouts.statementMs as a string carrying SQL', where: 'option', options: (c) => ({ url: c.fakeUrl(), timeouts: { statementMs: INJECT_SETVAL as unknown as number } }), expect: cfg('timeouts.statementMs', WHOLE) },
  { name: 'timeouts.lockMs as an object with valueOf/toString', where: 'option', options: (c) => ({ url: c.fakeUrl(), timeouts: { lockMs: sneakyNumber() as unknown as number } }), expect: cfg('timeouts.lockMs', WHOLE) },
  { name: 'timeouts.connectMs=0', where: 'option', options: (c) => ({ url: c.fakeUrl(), timeouts: { connectMs: 0 } }), expect: cfg('timeouts.connectMs', /at least 1/) },
  { name: 'transaction.retries=1.5', where: 'option', options: (c) => ({ url: c.fakeUrl(), transaction: { retries: 1.5 } }), expect: cfg('transaction.retries', WHOLE) },
  { name: 'transaction.isolationLevel carrying SQL', where: 'option', options: (c) => ({ url: c.fakeUrl(), transaction: { isolationLevel: 'Serializable; DROP TABLE canary_victim' as never } }), expect: cfg('transaction.isolationLevel', /ReadCommitted/) },
  { name: 'slowQueryMs=-5', where: 'option', options: (c) => ({ url: c.fakeUrl(), slowQueryMs: -5 }), expect: cfg('slowQueryMs', /at least 0/) },
  { name: 'ssl.mode in the wrong case', where: 'option', options: (c) => ({ url: c.fakeUrl(), ssl: { mode: 'Require' as never } }), expect: cfg('ssl.mode', SSLMODES) },
  { name: 'ssl.rootCert is a directory', where: 'option', options: (c) => ({ url: c.fakeUrl(), ssl: { mode: 'verify-full', rootCert: c.dir } }), expect: cfg('ssl.rootCert', DIRECTORY) },
  { name: 'ssl.rootCert missing', where: 'option', options: (c) => ({ url: c.fakeUrl(), ssl: { mode: 'verify-ca', rootCert: c.missing } }), expect: cfg('ssl.rootCert', NOT_FOUND) },
  { name: 'ssl.rootCert is garbage, not PEM', where: 'option', options: (c) => ({ url: c.fakeUrl(), ssl: { mode: 'verify-full', rootCert: c.garbageCert } }), expect: cfg('ssl.rootCert', /certificate|PEM/i) },
  { name: 'ssl.cert without ssl.key names the options', where: 'option', options: (c) => ({ url: c.fakeUrl(), ssl: { cert: c.t.caFile } }), expect: cfg('ssl.key', /ssl\.key/) },
  { name: 'ssl.mode=disable for a remote host in production names ssl.mode', where: 'option', noConnect: true, env: () => ({ NODE_ENV: 'production' }), options: () => ({ url: `postgresql://app:${FAKE}@db.example.com:5432/shop`, ssl: { mode: 'disable' } }), expect: cfg('ssl.mode', /require|verify/) },

  // ---- unit-of-work options -----------------------------------------------------------
  { name: 'timeoutMs string carrying SQL (statement timeout off)', where: 'unit', unitDb: { timeouts: { statementMs: 0 } }, unit: () => ({ timeoutMs: INJECT_SETVAL }), expect: UNIT },
  { name: 'timeoutMs object: valueOf passes the check, toString carries DROP TABLE', where: 'unit', unit: () => ({ timeoutMs: sneakyNumber() }), expect: UNIT },
  { name: 'timeoutMs object (statement timeout off)', where: 'unit', unitDb: { timeouts: { statementMs: 0 } }, unit: () => ({ timeoutMs: sneakyNumber() }), expect: UNIT },
  { name: "timeoutMs='abc'", where: 'unit', unit: () => ({ timeoutMs: 'abc' }), expect: UNIT },
  { name: "timeoutMs='5000' (a numeric string)", where: 'unit', unitDb: { timeouts: { statementMs: 0 } }, unit: () => ({ timeoutMs: '5000' }), expect: UNIT },
  { name: 'timeoutMs=NaN', where: 'unit', unit: () => ({ timeoutMs: NaN }), expect: UNIT },
  { name: 'timeoutMs=-1', where: 'unit', unit: () => ({ timeoutMs: -1 }), expect: UNIT },
  { name: 'timeoutMs=1.5', where: 'unit', unit: () => ({ timeoutMs: 1.5 }), expect: UNIT },
  { name: 'timeoutMs=Infinity', where: 'unit', unit: () => ({ timeoutMs: Infinity }), expect: UNIT },
  { name: 'timeoutMs=2**53', where: 'unit', unit: () => ({ timeoutMs: 2 ** 53 }), expect: UNIT },
  { name: 'timeoutMs={}', where: 'unit', unit: () => ({ timeoutMs: {} }), expect: UNIT },
  { name: 'maxWaitMs=NaN', where: 'unit', unit: () => ({ maxWaitMs: NaN }), expect: cfg(/maxWaitMs/) },
  { name: "maxWaitMs='abc'", where: 'unit', unit: () => ({ maxWaitMs: 'abc' }), expect: cfg(/maxWaitMs/) },
  { name: 'retries=-1', where: 'unit', unit: () => ({ retries: -1 }), expect: cfg(/retries/) },
  { name: 'retries=Infinity', where: 'unit', unit: () => ({ retries: Infinity }), expect: cfg(/retries/) },
  { name: 'isolationLevel carrying SQL', where: 'unit', unit: () => ({ isolationLevel: 'Serializable; DROP TABLE canary_victim' }), expect: cfg(/isolationLevel/) },
  { name: "readOnly='false' (a truthy string)", where: 'unit', unit: () => ({ readOnly: 'false' }), expect: cfg(/readOnly/) },
  { name: "nested='bogus'", where: 'unit', unit: () => ({ nested: 'bogus' }), expect: cfg(/nested/) },
  { name: 'valid unit options still work', where: 'unit', unit: () => ({ timeoutMs: 5000, maxWaitMs: 5000, retries: 1, isolationLevel: 'Serializable', readOnly: true }), expect: 'ok' },
];

// ---- the runner ---------------------------------------------------------------------------

interface Probe {
  db: string;
  ro: string;
  app: string;
}

interface Outcome {
  err: unknown;
  stage: 'createDb' | 'use' | undefined;
  probe: Probe | undefined;
  connectionsOpened: number;
  logs: string[];
  /** What db.on('error') delivered. */
  events: unknown[];
}

function capturingLogger(logs: string[]): NonNullable<CreateDbOptions<PrismaClient>['logger']> {
  const log = (level: string) => (details: Record<string, unknown>, message: string) => {
    logs.push(`${level} ${message} ${inspect(details, { depth: 10 })} ${safeJson(details)}`);
  };
  return { warn: log('warn'), error: log('error'), info: log('info') };
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? '';
  } catch (err) {
    return `JSON.stringify threw: ${(err as Error).message}`;
  }
}

async function probe(db: Db<PrismaClient>): Promise<Probe> {
  const rows = await db.$queryRaw<Probe[]>`SELECT current_database() AS db,
    current_setting('transaction_read_only') AS ro, current_setting('application_name') AS app`;
  return rows[0]!;
}

async function run(c: HostileCase, ctx: Ctx): Promise<Outcome> {
  const out: Outcome = { err: undefined, stage: undefined, probe: undefined, connectionsOpened: 0, logs: [], events: [] };
  let db: Db<PrismaClient> | undefined;
  try {
    const options = c.where === 'unit' ? { url: ctx.realUrl(), ...c.unitDb } : (c.options?.(ctx) ?? {});
    db = createDb({ PrismaClient, env: c.env?.(ctx) ?? {}, logger: capturingLogger(out.logs), ...options });
  } catch (err) {
    out.err = err;
    out.stage = 'createDb';
  }
  if (!db) return out;
  db.on('error', (err) => out.events.push(err));
  try {
    if (c.where === 'unit') {
      await db.transaction(async (tx) => tx.$queryRaw`SELECT 1`, c.unit!(ctx) as TransactionOptions);
    } else if (!c.noConnect) {
      out.probe = await probe(db);
    }
  } catch (err) {
    out.err = err;
    out.stage = 'use';
  } finally {
    out.connectionsOpened = db.stats().counters.connectionsOpened;
    await db.close({ deadlineMs: 5000 }).catch(() => undefined);
  }
  return out;
}

/** Everything a user could see of an error: message, stack, each cause, inspect, JSON. */
function errorSurface(err: unknown): string[] {
  const seen: string[] = [inspect(err, { depth: 10 }), safeJson(err)];
  let e: unknown = err;
  for (let i = 0; i < 10 && e !== undefined && e !== null; i++) {
    if (e instanceof Error) seen.push(e.message, e.stack ?? '');
    else seen.push(String(e));
    e = (e as { cause?: unknown }).cause;
  }
  return seen;
}

function secretsOf(c: HostileCase, ctx: Ctx): string[] {
  const raw = [FAKE, ctx.t.password, ctx.t.appPassword];
  const secrets = raw.flatMap((s) => [s, encodeURIComponent(s)]);
  const env = c.env?.(ctx) ?? {};
  const opts = c.where === 'unit' ? {} : (c.options?.(ctx) ?? {});
  for (const url of [env.DATABASE_URL, opts.url]) if (url) secrets.push(url);
  return secrets;
}

/** A URL with credentials that were not replaced by `***`. */
const CREDENTIAL_URL = /postgres(?:ql)?:\/\/[^\s:@/]*:(?!\*\*\*@)[^\s@/]+@/i;

function assertNoLeak(c: HostileCase, ctx: Ctx, out: Outcome): void {
  // db.on('error') delivers the layer's typed, redacted errors, never raw driver errors.
  for (const event of out.events) expect(event).toBeInstanceOf(DatalayerError);
  const surfaces = [...(out.err === undefined ? [] : errorSurface(out.err)), ...out.logs, ...out.events.flatMap(errorSurface)];
  for (const text of surfaces) {
    for (const secret of secretsOf(c, ctx)) {
      if (text.includes(secret)) throw new Error(`secret or full URL leaked (${secret.slice(0, 12)}…) in: ${text.slice(0, 300)}`);
    }
    expect(text).not.toMatch(CREDENTIAL_URL);
  }
}

function describeOutcome(out: Outcome): string {
  if (out.err === undefined) return `no error at all; session ${JSON.stringify(out.probe)}`;
  const e = out.err as Error & { issues?: unknown };
  return `${e.constructor?.name} at ${out.stage}: ${e.message?.slice(0, 400)} ${e.issues ? JSON.stringify(e.issues).slice(0, 400) : ''}`;
}

function assertExpected(c: HostileCase, ctx: Ctx, out: Outcome): void {
  if (c.expect === 'ok') {
    if (out.err !== undefined) throw new Error(`expected success, got ${describeOutcome(out)}`);
    if (c.where !== 'unit') {
      expect(out.probe?.db).toBe(ctx.t.name);
      expect(out.probe?.ro).toBe('off');
      c.check?.(out.probe!, ctx);
    }
    return;
  }
  const want = c.expect;
  if (!(out.err instanceof want.error)) {
    throw new Error(`expected ${want.error.name}, got ${describeOutcome(out)}`);
  }
  const err = out.err as DatalayerError;
  // Bounded: a 10 kB value is never echoed whole.
  expect(err.message.length).toBeLessThan(4000);
  if (want.error === ConfigError) {
    // Validation happens before anything is sent: at createDb, or for unit options before BEGIN.
    if (c.where === 'unit') expect(out.connectionsOpened).toBe(0);
    else expect(out.stage).toBe('createDb');
  }
  if (want.setting !== undefined) {
    const issues = (err as ConfigError).issues ?? [];
    const matches = issues.filter((i) => (typeof want.setting === 'string' ? i.setting === want.setting : want.setting!.test(i.setting)));
    if (matches.length === 0) throw new Error(`expected a problem with ${String(want.setting)}, got ${describeOutcome(out)}`);
    for (const m of matches) expect(err.message).toContain(m.setting);
    if (want.hint) {
      if (!matches.some((m) => want.hint!.test(m.problem))) throw new Error(`expected the hint ${String(want.hint)}, got ${describeOutcome(out)}`);
      expect(err.message).toMatch(want.hint);
    }
  }
}

// ---- fixtures ---------------------------------------------------------------------------------

let ctx: Ctx;

beforeAll(async () => {
  const t = await createTestDatabase({ prefix: 'hostile' });
  const dir = mkdtempSync(path.join(tmpdir(), 'hostile-'));
  const garbageCert = path.join(dir, 'garbage.crt');
  writeFileSync(garbageCert, 'this is not a certificate\n');
  await t.query('CREATE SEQUENCE canary_seq');
  await t.query('CREATE TABLE canary_victim (id int)');
  const base = `127.0.0.1:${t.port}/${t.name}`;
  const realAuth = `${encodeURIComponent(t.user)}:${encodeURIComponent(t.password)}`;
  ctx = {
    t,
    dir,
    missing: path.join(dir, 'no-such-file.crt'),
    garbageCert,
    fakeUrl: (query = '', auth = `postgres:${FAKE}`) => `postgresql://${auth}@${base}${query ? `?${query}` : ''}`,
    realUrl: (query = '') => `postgresql://${realAuth}@${base}${query ? `?${query}` : ''}`,
    fakeEnv: (extra = {}) => ({ DB_HOST: '127.0.0.1', DB_PORT: String(t.port), DB_USER: 'postgres', DB_PASSWORD: FAKE, DB_NAME: t.name, ...extra }),
    realEnv: (extra = {}) => ({ DB_HOST: '127.0.0.1', DB_PORT: String(t.port), DB_USER: t.user, DB_PASSWORD: t.password, DB_NAME: t.name, ...extra }),
  };
});

afterAll(async () => {
  await ctx?.t.drop();
  if (ctx) rmSync(ctx.dir, { recursive: true, force: true });
});

const CANARY_UNTOUCHED = { seq: '1', called: false, victim: true };

/** The canary's state, then restored so that one failing case cannot fail the next. */
async function canaryState(): Promise<typeof CANARY_UNTOUCHED> {
  const [seq] = await ctx.t.query<{ last_value: string; is_called: boolean }>('SELECT last_value::text, is_called FROM canary_seq');
  const [victim] = await ctx.t.query<{ present: boolean }>("SELECT to_regclass('canary_victim') IS NOT NULL AS present");
  await ctx.t.query("SELECT setval('canary_seq', 1, false)");
  await ctx.t.query('CREATE TABLE IF NOT EXISTS canary_victim (id int)');
  return { seq: seq!.last_value, called: seq!.is_called, victim: victim!.present };
}

it('has at least 60 cases across URL, DB_* variables, options and unit options', () => {
  expect(CASES.length).toBeGreaterThanOrEqual(60);
  for (const where of ['url', 'env', 'option', 'unit'] as const) expect(CASES.filter((c) => c.where === where).length).toBeGreaterThanOrEqual(10);
  expect(new Set(CASES.map((c) => c.name)).size).toBe(CASES.length);
});

describe.each(['url', 'env', 'option', 'unit'] as const)('hostile %s input', (where) => {
  it.each(CASES.filter((c) => c.where === where).map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const out = await run(c, ctx);
    const canary = await canaryState();
    if (JSON.stringify(canary) !== JSON.stringify(CANARY_UNTOUCHED)) {
      throw new Error(`SQL ran on the server: canary ${JSON.stringify(canary)}; outcome: ${describeOutcome(out)}`);
    }
    assertExpected(c, ctx, out);
    assertNoLeak(c, ctx, out);
  });
});

// ---- the resolved configuration never shows the password --------------------------------------

describe('inspecting a Db never shows the password', () => {
  let db: Db<PrismaClient>;
  let secrets: string[];

  beforeAll(() => {
    db = createDb({ PrismaClient, url: ctx.realUrl(), env: {} });
    secrets = [ctx.t.password, encodeURIComponent(ctx.t.password)];
  });
  afterAll(async () => {
    await db?.close();
  });

  function consoleLog(value: unknown): string {
    let text = '';
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        text += chunk.toString();
        done();
      },
    });
    new Console({ stdout: sink, stderr: sink }).log(value);
    return text;
  }

  const views: [string, () => unknown][] = [
    ['db', () => db],
    ['db.config', () => db.config],
    ['db.$datalayer', () => db.$datalayer],
    ['db.config.target', () => db.config.target],
  ];

  function assertHidden(): void {
    const leaks: string[] = [];
    for (const [label, get] of views) {
      const renderings = {
        'console.log': consoleLog(get()),
        'util.inspect': inspect(get()),
        'util.inspect depth 10': label === 'db' ? '' : inspect(get(), { depth: 10 }),
        'JSON.stringify': safeJson(get()),
        'structured logger': safeJson({ msg: 'starting', config: get() }),
        'template string': label === 'db' ? '' : `${String(get())}`,
      };
      for (const [how, text] of Object.entries(renderings)) {
        if (secrets.some((secret) => text.includes(secret))) leaks.push(`${how}(${label})`);
      }
    }
    expect(leaks).toEqual([]);
  }

  it('before the first query', () => {
    assertHidden();
  });

  it('after connecting', async () => {
    await expect(probe(db)).resolves.toMatchObject({ db: ctx.t.name });
    assertHidden();
  });

  it('code that needs the password still gets it', () => {
    expect(db.config.target.password).toBe(ctx.t.password);
    expect(db.$datalayer.config.target.password).toBe(ctx.t.password);
  });
});
