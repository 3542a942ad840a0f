// Throwaway PostgreSQL 15 servers for tests: a primary (`startCluster`) and a
// streaming replica of any primary (`startReplica`). Each one lives in its own temp
// dir (data dir, unix socket, TLS certificates, log), listens on a free port on
// 127.0.0.1, requires password (SCRAM) authentication and, by default, has TLS on
// with a CA generated at start. Servers run as the `postgres` OS user when we are
// root. They are torn down by `destroy()`, and otherwise — crash, forgotten
// cleanup, killed Jest worker — by an exit hook and a detached watchdog.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ConnectionOptions } from 'node:tls';
import type { ClientConfig } from 'pg';
import {
  chownToPostgres,
  freePort,
  guardServer,
  makeServerDir,
  pgBin,
  pidAlive,
  runChecked,
  sleep,
  spawnServer,
  stopServerProcess,
  tail,
  livePidFromFile,
  type ServerProcess,
} from './proc';
import {
  clientConfig,
  queryServer,
  quoteIdent,
  quoteLiteral,
  serverUrl,
  tlsOptions,
  type ServerInfo,
  type UrlOptions,
} from './server';

export type { ServerInfo, UrlOptions } from './server';

export interface ClusterOptions {
  /** TLS on (default true). Certificates are generated either way. */
  ssl?: boolean;
  /** Only accept TLS connections over TCP (pg_hba `hostssl`); default false (TLS optional). */
  requireSsl?: boolean;
  /** max_connections (default 100). superuser_reserved_connections is min(3, maxConnections - 1). */
  maxConnections?: number;
  /** Allow replication connections (pg_hba `replication` lines, wal senders); default true. */
  replication?: boolean;
  /** log_connections / log_disconnections (default false). */
  logConnections?: boolean;
  /** Extra postgresql.conf settings (values are written quoted), applied last. */
  extraConf?: Record<string, string>;
  /** Label used in the temp dir name. */
  name?: string;
}

export interface QueryOptions extends UrlOptions {
  /** Database (default 'postgres'). */
  db?: string;
  applicationName?: string;
  /** Use TLS for this connection (default: whether the server has TLS). */
  ssl?: boolean;
}

export interface Cluster extends ServerInfo {
  /** Temp dir holding everything (removed by destroy()). */
  readonly dir: string;
  readonly dataDir: string;
  readonly logFile: string;
  /** Connection URL (user/password URL-encoded). Defaults: db 'postgres', superuser, no query params. */
  url(db?: string, params?: Record<string, string>, opts?: UrlOptions): string;
  /** TLS options verifying against the cluster CA (or the wrong CA). */
  tls(opts?: { wrongCa?: boolean }): ConnectionOptions;
  /** node-postgres client config with verified TLS. */
  clientConfig(db?: string, opts?: UrlOptions & { applicationName?: string; ssl?: boolean }): ClientConfig;
  /** One statement on a fresh superuser connection; returns rows. */
  query<R extends Record<string, unknown> = Record<string, unknown>>(
    sql: string,
    params?: unknown[],
    opts?: QueryOptions,
  ): Promise<R[]>;
  /** Plain serializable connection info. */
  info(): ServerInfo;
  /** pid of the postmaster, if running. */
  pid(): number | undefined;
  isRunning(): boolean;
  /** Starts the (stopped) server again on the same port. */
  start(): Promise<void>;
  /** Fast shutdown (clients are disconnected); data is kept, start() brings it back. */
  stop(): Promise<void>;
  /** stop() + start(). */
  restart(): Promise<void>;
  /** Immediate shutdown (like a crash: no checkpoint, clients cut off); start() recovers. */
  kill(): Promise<void>;
  /** Stops the server (immediately) and removes every file. Idempotent. Call it in afterAll. */
  destroy(): Promise<void>;
  /** Last lines of the server log. */
  logTail(lines?: number): string;
}

export interface Replica extends Cluster {
  readonly primary: ServerInfo;
  /** Waits until the replica has replayed everything the primary had written when called. */
  waitForCatchUp(timeoutMs?: number): Promise<void>;
}

/** Random password with characters that must be URL-encoded (but no quotes/backslashes). */
export function randomPassword(): string {
  return 'Pw-' + crypto.randomBytes(15).toString('base64url') + '%@:/#?&+';
}

interface Certs {
  caFile: string;
  wrongCaFile: string;
  serverCertFile: string;
  serverKeyFile: string;
}

async function makeCa(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  await runChecked(
    'openssl',
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', cert, '-days', '3650', '-subj', `/CN=prisma-datalayer test ${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ],
    { asPostgres: false, cwd: dir },
  );
  return { cert, key };
}

/** CA + server certificate signed by it (CN=localhost, SAN localhost/127.0.0.1/::1) + an unrelated CA. */
async function makeCerts(dir: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const [ca, wrong] = await Promise.all([makeCa(dir, 'ca'), makeCa(dir, 'wrong-ca')]);
  const serverKeyFile = path.join(dir, 'server.key');
  const csr = path.join(dir, 'server.csr');
  const serverCertFile = path.join(dir, 'server.crt');
  const ext = path.join(dir, 'server.ext');
  fs.writeFileSync(
    ext,
    [
      'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1',
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment,keyAgreement',
      'extendedKeyUsage=serverAuth',
      '',
    ].join('\n'),
  );
  await runChecked(
    'openssl',
    ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', serverKeyFile, '-out', csr, '-subj', '/CN=localhost'],
    { asPostgres: false, cwd: dir },
  );
  await runChecked(
    'openssl',
    ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', '0x' + crypto.randomBytes(8).toString('hex'),
      '-days', '3650', '-out', serverCertFile, '-extfile', ext],
    { asPostgres: false, cwd: dir },
  );
  fs.rmSync(csr, { force: true });
  fs.rmSync(wrong.key, { force: true });
  fs.chmodSync(serverKeyFile, 0o600);
}

function confValue(v: string): string {
  return quoteLiteral(v).replace(/\\/g, '\\\\');
}

const RUN_ID = crypto.randomBytes(3).toString('hex');
let serial = 0;

class PgCluster implements Cluster {
  host = '127.0.0.1';
  port: number;
  socketDir: string;
  ssl: boolean;
  superuser = 'postgres';
  password: string;
  appUser = 'app';
  appPassword: string;
  replicationUser = 'replicator';
  replicationPassword: string;
  caFile: string;
  wrongCaFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  readonly dir: string;
  readonly dataDir: string;
  readonly logFile: string;

  private portFixed = false;
  private destroyed = false;
  private guard: { release(): Promise<void> } | undefined;

  constructor(
    init: { dir: string; port: number; passwords: { superuser: string; app: string; replication: string }; certs: Certs },
    private readonly opts: ClusterOptions,
  ) {
    this.dir = init.dir;
    this.dataDir = path.join(init.dir, 'data');
    this.socketDir = path.join(init.dir, 'sock');
    this.logFile = path.join(init.dir, 'postgres.log');
    this.port = init.port;
    this.ssl = opts.ssl ?? true;
    this.password = init.passwords.superuser;
    this.appPassword = init.passwords.app;
    this.replicationPassword = init.passwords.replication;
    this.caFile = init.certs.caFile;
    this.wrongCaFile = init.certs.wrongCaFile;
    this.serverCertFile = init.certs.serverCertFile;
    this.serverKeyFile = init.certs.serverKeyFile;
  }

  info(): ServerInfo {
    return {
      host: this.host,
      port: this.port,
      socketDir: this.socketDir,
      ssl: this.ssl,
      superuser: this.superuser,
      password: this.password,
      appUser: this.appUser,
      appPassword: this.appPassword,
      replicationUser: this.replicationUser,
      replicationPassword: this.replicationPassword,
      caFile: this.caFile,
      wrongCaFile: this.wrongCaFile,
      serverCertFile: this.serverCertFile,
      serverKeyFile: this.serverKeyFile,
    };
  }

  url(db?: string, params?: Record<string, string>, opts?: UrlOptions): string {
    return serverUrl(this.info(), db, params, opts);
  }

  tls(opts?: { wrongCa?: boolean }): ConnectionOptions {
    return tlsOptions(this.info(), opts);
  }

  clientConfig(db?: string, opts?: UrlOptions & { applicationName?: string; ssl?: boolean }): ClientConfig {
    return clientConfig(this.info(), db, opts);
  }

  query<R extends Record<string, unknown> = Record<string, unknown>>(
    sql: string,
    params?: unknown[],
    opts?: QueryOptions,
  ): Promise<R[]> {
    return queryServer<R>(this.info(), sql, params, opts);
  }

  pid(): number | undefined {
    return livePidFromFile(path.join(this.dataDir, 'postmaster.pid'), this.dataDir);
  }

  isRunning(): boolean {
    if (this.proc && !this.proc.hasExited()) return true;
    return this.pid() !== undefined;
  }

  logTail(lines = 40): string {
    return tail(this.logFile, lines);
  }

  /** Guard against leftovers from the moment the dir exists. */
  protect(): void {
    this.guard = guardServer({
      dir: this.dir,
      pidFile: path.join(this.dataDir, 'postmaster.pid'),
      marker: this.dataDir,
      signal: 'SIGQUIT',
    });
  }

  writeConf(): void {
    const max = this.opts.maxConnections ?? 100;
    const replication = this.opts.replication ?? true;
    const conf: Record<string, string> = {
      listen_addresses: '127.0.0.1',
      port: String(this.port),
      unix_socket_directories: this.socketDir,
      max_connections: String(max),
      superuser_reserved_connections: String(Math.max(0, Math.min(3, max - 1))),
      shared_buffers: '32MB',
      fsync: 'off',
      full_page_writes: 'off',
      synchronous_commit: 'off',
      wal_level: 'replica',
      max_wal_senders: replication ? '10' : '0',
      max_replication_slots: replication ? '10' : '0',
      hot_standby: 'on',
      autovacuum: 'off',
      jit: 'off',
      ssl: this.ssl ? 'on' : 'off',
      ssl_cert_file: this.serverCertFile,
      ssl_key_file: this.serverKeyFile,
      password_encryption: 'scram-sha-256',
      // A client that stalls mid-handshake must not hold a connection slot for the default 60 s.
      authentication_timeout: '10s',
      log_connections: this.opts.logConnections ? 'on' : 'off',
      log_disconnections: this.opts.logConnections ? 'on' : 'off',
      log_line_prefix: '%m [%p] %q%u@%d/%a ',
      lc_messages: 'C',
      timezone: 'UTC',
      ...this.opts.extraConf,
    };
    const body = Object.entries(conf)
      .map(([k, v]) => `${k} = ${confValue(v)}`)
      .join('\n');
    fs.writeFileSync(path.join(this.dataDir, 'harness.conf'), `# written by test/support/cluster.ts\n${body}\n`);
    const main = path.join(this.dataDir, 'postgresql.conf');
    const mainText = fs.readFileSync(main, 'utf8');
    if (!mainText.includes("include 'harness.conf'")) {
      fs.appendFileSync(main, "\ninclude 'harness.conf'\n");
    }
    const host = this.opts.requireSsl && this.ssl ? 'hostssl' : 'host';
    const hba = [
      '# TYPE  DATABASE     USER  ADDRESS        METHOD   (written by test/support/cluster.ts)',
      'local   all          all                  scram-sha-256',
      `${host} all          all   127.0.0.1/32   scram-sha-256`,
      ...(replication
        ? ['local   replication  all                  scram-sha-256', `${host} replication  all   127.0.0.1/32   scram-sha-256`]
        : []),
      '',
    ].join('\n');
    fs.writeFileSync(path.join(this.dataDir, 'pg_hba.conf'), hba);
    fs.mkdirSync(this.socketDir, { recursive: true });
    chownToPostgres(this.dir, true);
  }

  /** The postmaster, when started by this process. */
  private proc: ServerProcess | undefined;

  /** Reads the status line of postmaster.pid ('starting', 'ready', 'standby', 'stopping'). */
  private pidFileStatus(pid: number): string | undefined {
    try {
      const lines = fs.readFileSync(path.join(this.dataDir, 'postmaster.pid'), 'utf8').split('\n');
      if (Number(lines[0]) !== pid) return undefined;
      return lines[7]?.trim() || undefined;
    } catch {
      return undefined;
    }
  }

  async start(): Promise<void> {
    if (this.destroyed) throw new Error(`cluster ${this.dir} was destroyed`);
    if (this.isRunning()) return;
    for (let attempt = 1; ; attempt++) {
      this.writeConf();
      const logStart = fs.existsSync(this.logFile) ? fs.statSync(this.logFile).size : 0;
      const proc = spawnServer(pgBin('postgres'), ['-D', this.dataDir], { cwd: this.dir, logFile: this.logFile });
      this.proc = proc;
      const deadline = Date.now() + 60_000;
      let status: string | undefined;
      while (!proc.hasExited() && Date.now() < deadline) {
        status = this.pidFileStatus(proc.pid);
        if (status === 'ready' || status === 'standby') break;
        await sleep(20);
      }
      if (!proc.hasExited() && (status === 'ready' || status === 'standby')) {
        this.portFixed = true;
        return;
      }
      if (!proc.hasExited()) await stopServerProcess(proc, 'SIGQUIT', 5_000);
      const log = this.logSince(logStart);
      const portTaken = /could not bind|Address already in use|could not create any TCP\/IP sockets/i.test(log);
      if (portTaken && attempt < 8) {
        if (!this.portFixed) this.port = await freePort();
        else await sleep(250); // restarting on a fixed port: wait for it to come free
        continue;
      }
      throw new Error(
        `PostgreSQL failed to start (port ${this.port}, dir ${this.dir})${proc.hasExited() ? '' : ': timed out'}\n--- log ---\n${log}`,
      );
    }
  }

  private logSince(offset: number): string {
    try {
      const text = fs.readFileSync(this.logFile, 'utf8');
      return text.slice(offset).split('\n').slice(-40).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** Stops the postmaster with a shutdown signal: SIGINT = fast, SIGQUIT = immediate. */
  private async shutdown(signal: 'SIGINT' | 'SIGQUIT'): Promise<void> {
    if (this.proc && !this.proc.hasExited()) {
      await stopServerProcess(this.proc, signal, 60_000);
      return;
    }
    // Not our child (should not happen): signal the pid from postmaster.pid and poll.
    const pid = this.pid();
    if (pid === undefined) return;
    try {
      process.kill(pid, signal);
    } catch {
      return;
    }
    const deadline = Date.now() + 60_000;
    while (pidAlive(pid) && Date.now() < deadline) await sleep(20);
    if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
  }

  stop(): Promise<void> {
    return this.shutdown('SIGINT');
  }

  kill(): Promise<void> {
    return this.shutdown('SIGQUIT');
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await this.shutdown('SIGQUIT').catch(() => undefined);
    fs.rmSync(this.dir, { recursive: true, force: true });
    await this.guard?.release();
  }
}

function certPaths(dir: string): Certs {
  return {
    caFile: path.join(dir, 'ca.crt'),
    wrongCaFile: path.join(dir, 'wrong-ca.crt'),
    serverCertFile: path.join(dir, 'server.crt'),
    serverKeyFile: path.join(dir, 'server.key'),
  };
}

/** Starts a fresh primary. See ClusterOptions for defaults. */
export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const dir = makeServerDir(`${opts.name ?? 'pg'}-${RUN_ID}-${++serial}`);
  const passwords = { superuser: randomPassword(), app: randomPassword(), replication: randomPassword() };
  const cluster = new PgCluster({ dir, port: 0, passwords, certs: certPaths(path.join(dir, 'certs')) }, opts);
  cluster.protect(); // from here on, leftovers are cleaned up whatever happens
  try {
    await makeCerts(path.join(dir, 'certs'));
    cluster.port = await freePort();
    const pwfile = path.join(dir, 'pwfile');
    fs.writeFileSync(pwfile, passwords.superuser + '\n', { mode: 0o600 });
    chownToPostgres(dir, true);
    await runChecked(
      pgBin('initdb'),
      ['-D', cluster.dataDir, '-U', 'postgres', `--pwfile=${pwfile}`, '-A', 'scram-sha-256', '-E', 'UTF8',
        '--locale=C', '--no-sync', '--no-instructions'],
      { cwd: dir, timeoutMs: 120_000 },
    );
    fs.rmSync(pwfile, { force: true });
    await cluster.start();
    const q = (sql: string): Promise<unknown> => cluster.query(sql);
    await q(
      `CREATE ROLE ${quoteIdent(cluster.appUser)} LOGIN CREATEDB PASSWORD ${quoteLiteral(passwords.app)}`,
    );
    await q(
      `CREATE ROLE ${quoteIdent(cluster.replicationUser)} LOGIN REPLICATION PASSWORD ${quoteLiteral(passwords.replication)}`,
    );
    return cluster;
  } catch (err) {
    await cluster.destroy().catch(() => undefined);
    throw err;
  }
}

function conninfoValue(v: string): string {
  return "'" + v.replace(/\\/g, '\\\\').replace(/'/g, "\\'") + "'";
}

/**
 * Starts a streaming replica of `primary` (any running harness primary, e.g. a Cluster
 * or testServer()): pg_basebackup -R over the replication role, same certificates
 * (same CA file verifies it), same roles and passwords, own port. Resolves once the
 * replica accepts connections and is in recovery.
 */
export async function startReplica(
  primary: ServerInfo,
  opts: Omit<ClusterOptions, 'replication' | 'ssl'> = {},
): Promise<Replica> {
  // A hot standby refuses to start with lower settings than its primary for these.
  const inherited = await queryServer<{ name: string; setting: string }>(
    primary,
    `SELECT name, setting FROM pg_settings WHERE name IN
       ('max_connections', 'max_worker_processes', 'max_wal_senders', 'max_prepared_transactions', 'max_locks_per_transaction')`,
  );
  const primaryConf = Object.fromEntries(inherited.map((r) => [r.name, r.setting]));
  const { max_connections: primaryMax, ...primaryRest } = primaryConf;
  const dir = makeServerDir(`${opts.name ?? 'replica'}-${RUN_ID}-${++serial}`);
  const certDir = path.join(dir, 'certs');
  const certs = certPaths(certDir);
  const replica = new PgCluster(
    {
      dir,
      port: 0,
      passwords: { superuser: primary.password, app: primary.appPassword, replication: primary.replicationPassword },
      certs,
    },
    {
      ...opts,
      maxConnections: Math.max(opts.maxConnections ?? 0, Number(primaryMax ?? 100)),
      extraConf: { ...primaryRest, ...opts.extraConf },
      ssl: primary.ssl,
      replication: true,
    },
  ) as PgCluster & { primary: ServerInfo; waitForCatchUp(timeoutMs?: number): Promise<void> };
  replica.protect();
  try {
    fs.mkdirSync(certDir);
    fs.copyFileSync(primary.caFile, certs.caFile);
    fs.copyFileSync(primary.wrongCaFile, certs.wrongCaFile);
    fs.copyFileSync(primary.serverCertFile, certs.serverCertFile);
    fs.copyFileSync(primary.serverKeyFile, certs.serverKeyFile);
    fs.chmodSync(certs.serverKeyFile, 0o600);
    chownToPostgres(dir, true);
    replica.port = await freePort();
    await runChecked(
      pgBin('pg_basebackup'),
      ['-D', replica.dataDir, '-R', '-X', 'stream', '-c', 'fast', '--no-sync', '-w',
        '-h', primary.host, '-p', String(primary.port), '-U', primary.replicationUser],
      {
        cwd: dir,
        timeoutMs: 120_000,
        env: { PGPASSWORD: primary.replicationPassword, PGSSLMODE: primary.ssl ? 'require' : 'disable' },
      },
    );
    // -R wrote standby.signal and a primary_conninfo; write our own (password included,
    // application_name set) so it does not depend on what pg_basebackup chose to keep.
    const conninfo = [
      `host=${primary.host}`,
      `port=${primary.port}`,
      `user=${conninfoValue(primary.replicationUser)}`,
      `password=${conninfoValue(primary.replicationPassword)}`,
      `sslmode=${primary.ssl ? 'require' : 'disable'}`,
      `application_name=${path.basename(dir).replace(/[^a-zA-Z0-9_]/g, '_')}`,
    ].join(' ');
    fs.appendFileSync(path.join(replica.dataDir, 'postgresql.auto.conf'), `primary_conninfo = ${confValue(conninfo)}\n`);
    fs.writeFileSync(path.join(replica.dataDir, 'standby.signal'), '');
    await replica.start();
    const rows = await replica.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
    if (rows[0]?.r !== true) throw new Error('replica is not in recovery');
  } catch (err) {
    await replica.destroy().catch(() => undefined);
    throw err;
  }
  replica.primary = primary;
  replica.waitForCatchUp = async (timeoutMs = 30_000): Promise<void> => {
    const [row] = await queryServer<{ lsn: string }>(primary, 'SELECT pg_current_wal_insert_lsn()::text AS lsn');
    const lsn = row?.lsn ?? '0/0';
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const [r] = await replica.query<{ ok: boolean | null }>(
        'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok',
        [lsn],
      );
      if (r?.ok) return;
      if (Date.now() > deadline) throw new Error(`replica did not catch up to ${lsn} within ${timeoutMs} ms`);
      await sleep(50);
    }
  };
  return replica;
}
