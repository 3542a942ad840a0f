// libpq's sslmode semantics, translated to Node's TLS options.
//
// We never hand sslmode to node-postgres: its own URL parsing treats `require`,
// `prefer` and `verify-ca` as verify-full, and an sslmode in a connection string
// silently replaces any `ssl` object. The driver only ever sees the object built here.

import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import type { DbConfig, SslMode } from './config.ts';
import { ConfigError } from './errors.ts';

export interface SslPlan {
  /** What the first connection attempt uses: `false` is plaintext. */
  first: false | ConnectionOptions;
  /**
   * What to try when the server refuses the first attempt: `prefer` falls back to
   * plaintext when the server has no SSL; `allow` upgrades to SSL when the server
   * insists on it. `undefined` = no second attempt (libpq behaves the same).
   */
  fallback: false | ConnectionOptions | undefined;
}

function read(setting: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError([{ setting, problem: `cannot read ${path}: ${(err as Error).message}` }]);
  }
}

function tlsOptions(config: DbConfig, mode: SslMode): ConnectionOptions {
  const { rootCert, cert, key } = config.ssl;
  const opts: ConnectionOptions = {};
  if (cert !== undefined && key !== undefined) {
    opts.cert = read('DB_SSLCERT', cert);
    opts.key = read('DB_SSLKEY', key);
  }
  // libpq: with a root certificate file present, `require` behaves like `verify-ca`.
  const effective = mode === 'require' && rootCert !== undefined ? 'verify-ca' : mode;
  if (effective === 'verify-ca' || effective === 'verify-full') {
    if (rootCert !== undefined && rootCert !== 'system') opts.ca = read('DB_SSLROOTCERT', rootCert);
    opts.rejectUnauthorized = true;
    if (effective === 'verify-ca') {
      // The chain is checked against the CA; the host name is not (libpq's verify-ca).
      opts.checkServerIdentity = () => undefined;
    } else if (isIP(config.target.host) === 0) {
      // SNI carries host names only; for an IP address Node checks the certificate's
      // IP entries against the address it connected to.
      opts.servername = config.target.host;
    }
  } else {
    // require / prefer / allow: encrypted, certificate not verified (libpq semantics).
    opts.rejectUnauthorized = false;
  }
  return opts;
}

export function sslPlan(config: DbConfig): SslPlan {
  const mode = config.ssl.mode;
  switch (mode) {
    case 'disable':
      return { first: false, fallback: undefined };
    case 'allow':
      return { first: false, fallback: tlsOptions(config, mode) };
    case 'prefer':
      return { first: tlsOptions(config, mode), fallback: false };
    default:
      return { first: tlsOptions(config, mode), fallback: undefined };
  }
}

/** Does this connection error mean "try the other side of prefer/allow"? */
export function wantsSslFallback(err: unknown, attemptedSsl: boolean): boolean {
  const message = err instanceof Error ? err.message : '';
  if (attemptedSsl) return message === 'The server does not support SSL connections';
  // A hostssl-only pg_hba answers a plaintext attempt with 28000 "... no encryption".
  return (err as { code?: unknown }).code === '28000' && /no encryption/i.test(message);
}
