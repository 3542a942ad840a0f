// A throwaway PgBouncer (transaction pooling by default) in front of a harness
// PostgreSQL server. Runs as the `postgres` OS user when we are root (PgBouncer
// refuses to run as root). Same roles and passwords as the server (SCRAM, plain
// passwords in its userlist); TLS towards the server when the server has it;
// TLS to clients offered (`client_tls_sslmode = allow`) unless `tls: false`.
import fs from 'node:fs';
import path from 'node:path';
import type { ConnectionOptions } from 'node:tls';
import { Client, type ClientConfig } from 'pg';
import {
  chownToPostgres,
  freePort,
  guardServer,
  livePidFromFile,
  makeServerDir,
  pgbouncerBin,
  portOpen,
  sleep,
  spawnServer,
  stopServerProcess,
  tail,
  type ServerProcess,
} from './proc';
import { clientConfig, serverUrl, tlsOptions, type ServerInfo, type UrlOptions } from './server';

export interface PgBouncerOptions {
  /** Default 'transaction'. */
  poolMode?: 'transaction' | 'session' | 'statement';
  /** max_client_conn (default 200). */
  maxClientConn?: number;
  /** default_pool_size: server connections per (database, user) pair (default 10). */
  defaultPoolSize?: number;
  /**
   * ignore_startup_parameters. Default: extra_float_digits, options, statement_timeout,
   * lock_timeout, idle_in_transaction_session_timeout — node-postgres sends the latter four
   * as startup parameters when configured; PgBouncer would otherwise refuse the connection.
   * NOTE: ignored means silently dropped, so timeouts given that way are NOT in effect
   * through PgBouncer. Pass [] to get PgBouncer's refusal instead.
   */
  ignoreStartupParameters?: string[];
  /** Offer TLS to clients (default true; optional for clients, `client_tls_sslmode = allow`). */
  tls?: boolean;
  /** Extra [pgbouncer] settings, written as-is (key = value). */
  extraConf?: Record<string, string>;
  name?: string;
}

export interface PgBouncer extends ServerInfo {
  readonly dir: string;
  readonly logFile: string;
  readonly poolMode: string;
  /** The PostgreSQL server behind it. */
  readonly target: ServerInfo;
  /** URL through PgBouncer (db default 'postgres', superuser; no params unless given). */
  url(db?: string, params?: Record<string, string>, opts?: UrlOptions): string;
  /** TLS options verifying PgBouncer's certificate (same CA as the server). Only if tls is on. */
  tls(opts?: { wrongCa?: boolean }): ConnectionOptions;
  /** node-postgres config through PgBouncer (plain TCP unless opts.ssl; superuser unless opts.user). */
  clientConfig(db?: string, opts?: UrlOptions & { applicationName?: string; ssl?: boolean }): ClientConfig;
  /** Runs an admin console command (SHOW POOLS, SHOW CLIENTS, RECONNECT, KILL db, ...) and returns rows. */
  console<R extends Record<string, unknown> = Record<string, unknown>>(command: string): Promise<R[]>;
  pid(): number | undefined;
  isRunning(): boolean;
  logTail(lines?: number): string;
  /** Stops PgBouncer and removes its files. Idempotent. */
  stop(): Promise<void>;
}

function userlistLine(user: string, password: string): string {
  const q = (s: string): string => '"' + s.replace(/"/g, '""') + '"';
  return `${q(user)} ${q(password)}`;
}

const SERVING_DEADLINE_MS = 20_000;

/**
 * Readiness, proven by use: a bound port only says PgBouncer accepts TCP. Its first
 * client login also makes it open (TLS, SCRAM) a server connection, and a failed server
 * login is retried only after server_login_retry; a suite that starts before that has
 * succeeded sees its first connects hang until their timeout. So a real statement must
 * get through PgBouncer to PostgreSQL before the fixture is handed out.
 */
async function untilServing(port: number, target: ServerInfo): Promise<void> {
  const deadline = Date.now() + SERVING_DEADLINE_MS;
  for (;;) {
    const left = deadline - Date.now();
    const client = new Client({
      host: target.host,
      port,
      user: target.superuser,
      password: target.password,
      database: 'postgres',
      ssl: false,
      application_name: 'datalayer-test-admin',
      connectionTimeoutMillis: Math.max(left, 1),
    });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('SELECT 1');
      return;
    } catch (err) {
      if (Date.now() >= deadline) throw err;
      await sleep(100);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}

export async function startPgBouncer(target: ServerInfo, opts: PgBouncerOptions = {}): Promise<PgBouncer> {
  const dir = makeServerDir(opts.name ?? 'pgbouncer');
  const ini = path.join(dir, 'pgbouncer.ini');
  const pidFile = path.join(dir, 'pgbouncer.pid');
  const logFile = path.join(dir, 'pgbouncer.log');
  const guard = guardServer({ dir, pidFile, marker: ini, signal: 'SIGTERM' });
  const poolMode = opts.poolMode ?? 'transaction';
  const tlsOn = opts.tls ?? true;

  const certDir = path.join(dir, 'certs');
  fs.mkdirSync(certDir);
  const caFile = path.join(certDir, 'ca.crt');
  const wrongCaFile = path.join(certDir, 'wrong-ca.crt');
  const serverCertFile = path.join(certDir, 'server.crt');
  const serverKeyFile = path.join(certDir, 'server.key');
  fs.copyFileSync(target.caFile, caFile);
  fs.copyFileSync(target.wrongCaFile, wrongCaFile);
  fs.copyFileSync(target.serverCertFile, serverCertFile);
  fs.copyFileSync(target.serverKeyFile, serverKeyFile);
  fs.chmodSync(serverKeyFile, 0o600);

  fs.writeFileSync(
    path.join(dir, 'userlist.txt'),
    [
      userlistLine(target.superuser, target.password),
      userlistLine(target.appUser, target.appPassword),
      '',
    ].join('\n'),
    { mode: 0o600 },
  );

  const ignore = opts.ignoreStartupParameters ?? [
    'extra_float_digits',
    'options',
    'statement_timeout',
    'lock_timeout',
    'idle_in_transaction_session_timeout',
  ];

  const writeIni = (port: number): void => {
    const settings: Record<string, string> = {
      listen_addr: '127.0.0.1',
      listen_port: String(port),
      unix_socket_dir: '',
      auth_type: 'scram-sha-256',
      auth_file: path.join(dir, 'userlist.txt'),
      admin_users: target.superuser,
      stats_users: target.superuser,
      pool_mode: poolMode,
      max_client_conn: String(opts.maxClientConn ?? 200),
      default_pool_size: String(opts.defaultPoolSize ?? 10),
      min_pool_size: '0',
      reserve_pool_size: '0',
      server_reset_query: 'DISCARD ALL',
      server_check_delay: '0',
      server_login_retry: '1',
      logfile: logFile,
      pidfile: pidFile,
      log_connections: '0',
      log_disconnections: '0',
      ...(ignore.length > 0 ? { ignore_startup_parameters: ignore.join(',') } : {}),
      ...(target.ssl ? { server_tls_sslmode: 'require', server_tls_ca_file: caFile } : {}),
      ...(tlsOn
        ? {
            client_tls_sslmode: 'allow',
            client_tls_key_file: serverKeyFile,
            client_tls_cert_file: serverCertFile,
            client_tls_ca_file: caFile,
          }
        : {}),
      ...opts.extraConf,
    };
    const text = [
      '; written by test/support/pgbouncer.ts',
      '[databases]',
      `* = host=${target.host} port=${target.port}`,
      '',
      '[pgbouncer]',
      ...Object.entries(settings).map(([k, v]) => `${k} = ${v}`),
      '',
    ].join('\n');
    fs.writeFileSync(ini, text);
    chownToPostgres(dir, true);
  };

  let proc: ServerProcess | undefined;
  const pid = (): number | undefined =>
    proc && !proc.hasExited() ? proc.pid : livePidFromFile(pidFile, ini);
  let port = 0;
  try {
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      writeIni(port);
      fs.rmSync(logFile, { force: true });
      // Foreground (no -d): a direct child of ours, so we reap it when it stops.
      const p = spawnServer(pgbouncerBin(), ['-q', ini], { cwd: dir, logFile: path.join(dir, 'stderr.log') });
      proc = p;
      let error = '';
      const deadline = Date.now() + 15_000;
      for (;;) {
        if (p.hasExited()) {
          error = 'pgbouncer exited';
          break;
        }
        // Our process has bound the port once its pid file exists and the port answers.
        if (livePidFromFile(pidFile, ini) === p.pid && (await portOpen('127.0.0.1', port))) break;
        if (Date.now() > deadline) {
          error = 'pgbouncer did not start listening within 15 s';
          break;
        }
        await sleep(20);
      }
      if (!error) break;
      await stopServerProcess(p, 'SIGKILL', 5_000);
      const log = tail(logFile) + '\n' + tail(path.join(dir, 'stderr.log'));
      if (/Address already in use|bind\(\)/i.test(log) && attempt < 8) continue;
      throw new Error(`PgBouncer failed to start on port ${port}: ${error}\n--- log tail ---\n${log}`);
    }
    const ready = proc;
    await untilServing(port, target).catch(async (err: Error) => {
      await stopServerProcess(ready, 'SIGKILL', 5_000);
      throw new Error(`PgBouncer on port ${port} does not serve queries: ${err.message}\n--- log tail ---\n${tail(logFile)}`);
    });
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    await guard.release();
    throw err;
  }
  const running = proc;

  let stopped = false;
  const info: ServerInfo = {
    ...target,
    port,
    socketDir: '',
    ssl: tlsOn,
    caFile,
    wrongCaFile,
    serverCertFile,
    serverKeyFile,
  };
  const bouncer: PgBouncer = {
    ...info,
    dir,
    logFile,
    poolMode,
    target,
    url: (db, params, urlOpts) => serverUrl(info, db, params, urlOpts),
    tls: (o) => tlsOptions(info, o),
    clientConfig: (db, o) => clientConfig(info, db, { ssl: false, ...o }),
    console: async <R extends Record<string, unknown> = Record<string, unknown>>(command: string): Promise<R[]> => {
      const client = new Client({
        host: info.host,
        port,
        user: target.superuser,
        password: target.password,
        database: 'pgbouncer',
        ssl: false,
      });
      client.on('error', () => undefined);
      await client.connect();
      try {
        const res = await client.query<R>(command);
        return res.rows;
      } finally {
        await client.end().catch(() => undefined);
      }
    },
    pid,
    isRunning: () => pid() !== undefined,
    logTail: (lines = 40) => tail(logFile, lines),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      // SIGTERM: immediate shutdown (SIGINT would wait for clients to finish).
      await stopServerProcess(running, 'SIGTERM', 10_000);
      fs.rmSync(dir, { recursive: true, force: true });
      await guard.release();
    },
  };
  return bouncer;
}
