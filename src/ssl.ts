// libpq's sslmode semantics, translated to Node's TLS options: the one SSL plan every entry
// point uses (createDb, the migration API, doctor, the CLI).
//
// sslmode is never handed to node-postgres: its own URL parsing treats `require`,
// `prefer` and `verify-ca` as verify-full, and an sslmode in a connection string silently
// replaces any `ssl` object. The driver only ever sees the object built here.

import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import type { DbConfig, SslMode } from './config.ts';
import { ConfigError } from './errors.ts';

export interface SslPlan {
  /** What the first connection attempt uses: `false` is plaintext. */
  first: false | ConnectionOptions;
  /**
   * What to try when the first attempt fails for a reason the other side fixes: `prefer`
   * falls back to plaintext when the server has no SSL (or, with a root certificate, when
   * it does not verify); `allow` upgrades to SSL when the server insists on it.
   * `undefined` = no second attempt (libpq behaves the same).
   */
  fallback: false | ConnectionOptions | undefined;
  /**
   * The settings behind the plan and where each came from (`sslmode=verify-full from
   * DB_SSLMODE, root certificate /etc/ca.pem from DATABASE_URL parameter sslrootcert`),
   * added to a certificate failure's message so that it names what to change.
   */
  settings?: string;
}

type SslSource = Pick<DbConfig, 'ssl' | 'target'> & { sslSources?: DbConfig['sslSources'] };

function read(setting: string, path: string): Buffer {
  try {
    if (statSync(path).isDirectory()) throw new Error('is a directory, not a file');
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError([{ setting, problem: `cannot read ${path}: ${(err as Error).message}` }]);
  }
}

function tlsOptions(config: SslSource, mode: SslMode): ConnectionOptions {
  const { rootCert, cert, key } = config.ssl;
  const source = (name: 'rootCert' | 'cert' | 'key', fallback: string): string => config.sslSources?.[name] ?? fallback;
  const opts: ConnectionOptions = {};
  if (cert !== undefined && key !== undefined) {
    opts.cert = read(source('cert', 'DB_SSLCERT'), cert);
    opts.key = read(source('key', 'DB_SSLKEY'), key);
  }
  // libpq: with a root certificate file, require (and prefer/allow's TLS attempt) verify the chain.
  const effective = mode !== 'verify-full' && mode !== 'verify-ca' && rootCert !== undefined ? 'verify-ca' : mode;
  if (effective === 'verify-ca' || effective === 'verify-full') {
    if (rootCert !== undefined && rootCert !== 'system') opts.ca = read(source('rootCert', 'DB_SSLROOTCERT'), rootCert);
    opts.rejectUnauthorized = true;
    if (effective === 'verify-ca') {
      // The chain is checked against the CA; the host name is not (libpq's verify-ca).
      opts.checkServerIdentity = () => undefined;
    } else if (isIP(config.target.host) === 0) {
      // SNI carries host names only; for an IP address Node checks the certificate's IP entries.
      opts.servername = config.target.host;
    }
  } else {
    // require / prefer / allow without a root certificate: encrypted, not verified (libpq).
    opts.rejectUnauthorized = false;
  }
  return opts;
}

export function sslPlan(config: SslSource): SslPlan {
  const mode = config.ssl.mode;
  // libpq: "sslmode is ignored for Unix domain socket communication". PostgreSQL offers no TLS
  // on its socket, so an SSLRequest there failed every connect for require and verify-*.
  if (config.target.host.startsWith('/')) return { first: false, fallback: undefined };
  switch (mode) {
    case 'disable':
      return { first: false, fallback: undefined };
    case 'allow':
      return { first: false, fallback: tlsOptions(config, mode), settings: settingsOf(config) };
    case 'prefer':
      return { first: tlsOptions(config, mode), fallback: false, settings: settingsOf(config) };
    default:
      return { first: tlsOptions(config, mode), fallback: undefined, settings: settingsOf(config) };
  }
}

function settingsOf(config: SslSource): string {
  const { mode, rootCert } = config.ssl;
  const from = (name: 'mode' | 'rootCert'): string => (config.sslSources?.[name] === undefined ? '' : ` from ${config.sslSources[name]}`);
  const root = rootCert === undefined ? 'no root certificate (DB_SSLROOTCERT / sslrootcert: Node\'s public CAs only)' : rootCert === 'system' ? `the system's CAs${from('rootCert')}` : `root certificate ${rootCert}${from('rootCert')}`;
  return `sslmode=${mode}${from('mode')}, ${root}`;
}

const NO_SSL_SUPPORT = 'The server does not support SSL connections';
const CERT_FAILURE = /certificate|self[- ]signed|UNABLE_TO_|CERT_/i;

/** Did this attempt fail for a reason the other side of prefer/allow fixes? */
export function wantsSslFallback(err: unknown, plan: SslPlan): boolean {
  if (plan.fallback === undefined) return false;
  const message = err instanceof Error ? err.message : '';
  const code = (err as { code?: unknown } | null)?.code;
  if (plan.fallback === false) return message === NO_SSL_SUPPORT || CERT_FAILURE.test(`${String(code)} ${message}`);
  // A hostssl-only pg_hba answers a plaintext attempt with 28000 "... no encryption".
  return code === '28000' && /no encryption/i.test(message);
}

/**
 * The SSL side new connections use. It starts on the plan's first side; an attempt that
 * fails for lack of (or insistence on) TLS switches it and is retried on the other side.
 * Attempts already under way when it switches fail the same way and retry too, so any
 * number of concurrent first connections succeed.
 */
export class SslChoice {
  private current: false | ConnectionOptions;
  constructor(readonly plan: SslPlan) {
    this.current = plan.first;
  }

  /** The `ssl` option for the next connection. */
  get ssl(): false | ConnectionOptions {
    return this.current;
  }

  /**
   * A connect that failed on the server's certificate, with the SSL settings that checked it
   * and where they came from; any other error as it is.
   */
  explain<E extends Error & { retryable: boolean }>(err: E, make: (message: string, cause: unknown) => E): E {
    const settings = this.plan.settings;
    if (settings === undefined || !CERT_FAILURE.test(`${String((err.cause as { code?: unknown } | undefined)?.code)} ${err.message}`)) return err;
    return make(`${err.message} (${settings})`, err.cause ?? err);
  }

  /** True when a failed attempt should be retried with the other side (now current). */
  fallBack(err: unknown): boolean {
    if (!wantsSslFallback(err, this.plan)) return false;
    this.current = this.plan.fallback as false | ConnectionOptions;
    return true;
  }
}
