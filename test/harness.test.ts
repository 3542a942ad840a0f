// Proves the test harness itself: the shared server really uses TLS and passwords,
// the template carries the app schema, throwaway clusters leave nothing behind,
// replicas are in recovery and PgBouncer pools in transaction mode.
import fs from 'node:fs';
import { Client } from 'pg';
import { startCluster, startReplica, type Cluster } from './support/cluster';
import {
  adminQuery,
  countConnections,
  createTestDatabase,
  terminateConnections,
  testServer,
  type TestDatabase,
} from './support/db';
import { startPgBouncer } from './support/pgbouncer';
import { pidAlive } from './support/proc';
import { readState } from './support/state';

/**
 * The harness URLs carry `sslmode=require` (libpq semantics, for the library). node-postgres
 * reads require as verify-full anyway and prints a SECURITY WARNING about it: name the mode
 * it really applies, so nothing changes but the warning.
 */
const forPg = (url: string): string => url.replace('sslmode=require', 'sslmode=verify-full');

async function connect(config: ConstructorParameters<typeof Client>[0]): Promise<Client> {
  const c = new Client(config);
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

describe('shared server (globalSetup)', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('has TLS on: the connection shows up in pg_stat_ssl', async () => {
    const c = await connect({ connectionString: forPg(db.url), application_name: 'harness-ssl' });
    try {
      const { rows } = await c.query<{ ssl: boolean; version: string }>(
        'SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
      );
      expect(rows[0]?.ssl).toBe(true);
      expect(rows[0]?.version).toMatch(/^TLSv1\.[23]$/);
    } finally {
      await c.end();
    }
  });

  it('verifies against the CA and fails with the wrong CA', async () => {
    const s = testServer();
    const ok = await connect({ ...s.clientConfig(db.name), ssl: s.tls() });
    await ok.end();
    const okLocalhost = await connect({ ...s.clientConfig(db.name, { host: 'localhost' }), ssl: { ...s.tls(), servername: 'localhost' } });
    await okLocalhost.end().catch(() => undefined);
    await expect(connect({ ...s.clientConfig(db.name), ssl: s.tls({ wrongCa: true }) })).rejects.toThrow(
      /self-signed|unable to verify|certificate/i,
    );
    // URL form: sslrootcert pointing at the wrong CA fails too.
    await expect(
      connect({ connectionString: db.urlWith({ sslmode: 'verify-full', sslrootcert: s.wrongCaFile }) }),
    ).rejects.toThrow(/certificate|self-signed|unable to verify/i);
  });

  it('requires a password (wrong or missing password is rejected)', async () => {
    const s = testServer();
    await expect(connect(s.clientConfig(db.name, { password: 'not-the-password' }))).rejects.toThrow(
      /password authentication failed/,
    );
    await expect(connect(s.clientConfig(db.name, { user: 'app', password: s.password }))).rejects.toThrow(
      /password authentication failed/,
    );
    const app = await connect({ connectionString: forPg(db.appUrl) });
    const { rows } = await app.query<{ u: string }>('SELECT current_user AS u');
    expect(rows[0]?.u).toBe('app');
    await app.end();
  });

  it('the password needs URL-encoding and the URLs encode it', () => {
    const s = testServer();
    expect(s.password).toMatch(/[%@:/#?&]/);
    expect(db.url).toContain(encodeURIComponent(s.password));
    expect(new URL(db.url).password).toBe(encodeURIComponent(s.password));
  });

  it('template database has the app tables (when there are migrations)', async () => {
    const state = readState();
    const tables = (
      await db.query<{ t: string }>(
        "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
      )
    ).map((r) => r.t);
    if (!state.templateMigrated) {
      // No prisma/migrations yet: the template is intentionally empty.
      console.warn('harness.test: prisma/migrations is empty, template has no app tables yet (assertion skipped)');
      expect(tables.filter((t) => t !== '_prisma_migrations')).toEqual([]);
      return;
    }
    expect(tables).toEqual(expect.arrayContaining(['accounts', 'transfers', 'users', '_prisma_migrations']));
    // Built with src/migrate.ts deploy() once it exists (raw migration.sql before that).
    expect(state.migratedWith).toBe(fs.existsSync(`${__dirname}/../src/migrate.ts`) ? 'deploy' : 'sql');
    expect(state.migrations.length).toBeGreaterThan(0);
    const recorded = await db.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL',
    );
    expect(recorded[0]?.n).toBe(state.migrations.length);
    // The non-superuser app role may use them.
    const app = await connect({ connectionString: forPg(db.appUrl) });
    await app.query("INSERT INTO users (email) VALUES ('a@example.com')");
    await app.end();
  });

  it('createTestDatabase({ migrated: false }) is empty and drop() removes it', async () => {
    const empty = await createTestDatabase({ migrated: false });
    const rows = await empty.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM information_schema.tables WHERE table_schema = 'public'",
    );
    expect(rows[0]?.n).toBe(0);
    await empty.drop();
    const left = await adminQuery<{ n: number }>('SELECT count(*)::int AS n FROM pg_database WHERE datname = $1', [
      empty.name,
    ]);
    expect(left[0]?.n).toBe(0);
  });

  it('countConnections / terminateConnections see clients by application_name', async () => {
    const appName = 'harness-count';
    const clients = await Promise.all([1, 2, 3].map(() => connect({ connectionString: forPg(db.url), application_name: appName })));
    expect(await countConnections(appName)).toBe(3);
    expect(await countConnections(appName, db.name)).toBe(3);
    expect(await countConnections(appName, 'postgres')).toBe(0);
    expect(await terminateConnections({ applicationName: appName })).toBe(3);
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    expect(await countConnections(appName)).toBe(0);
  });
});

describe('startCluster', () => {
  it('starts with options, restarts, and destroy() leaves no process and no files', async () => {
    const cluster = await startCluster({ maxConnections: 7, extraConf: { statement_timeout: '1234' } });
    try {
      const rows = await cluster.query<{ m: string; t: string; ssl: string }>(
        "SELECT current_setting('max_connections') AS m, current_setting('statement_timeout') AS t, current_setting('ssl') AS ssl",
      );
      expect(rows[0]).toEqual({ m: '7', t: '1234ms', ssl: 'on' });
      const pid = cluster.pid();
      expect(pid).toBeDefined();

      await cluster.kill();
      expect(cluster.isRunning()).toBe(false);
      await expect(cluster.query('SELECT 1')).rejects.toThrow();
      await cluster.start();
      await cluster.restart();
      expect((await cluster.query<{ one: number }>('SELECT 1 AS one'))[0]?.one).toBe(1);
      expect(cluster.pid()).not.toBe(pid);
      expect(pidAlive(pid!)).toBe(false);
    } finally {
      const pid = cluster.pid();
      await cluster.destroy();
      expect(fs.existsSync(cluster.dir)).toBe(false);
      if (pid !== undefined) expect(pidAlive(pid)).toBe(false);
    }
  });

  it('ssl: false turns TLS off', async () => {
    const cluster = await startCluster({ ssl: false });
    try {
      const rows = await cluster.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
      expect(rows[0]?.ssl).toBe(false);
      await expect(cluster.query('SELECT 1', [], { ssl: true })).rejects.toThrow(/does not support SSL/);
    } finally {
      await cluster.destroy();
    }
  });
});

describe('startReplica', () => {
  let primary: Cluster;
  beforeAll(async () => {
    primary = await startCluster({ name: 'primary' });
  });
  afterAll(async () => {
    await primary?.destroy();
  });

  it('streams from the primary and is in recovery', async () => {
    const replica = await startReplica(primary.info());
    try {
      const rows = await replica.query<{ r: boolean; ssl: boolean }>(
        'SELECT pg_is_in_recovery() AS r, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS ssl',
      );
      expect(rows[0]).toEqual({ r: true, ssl: true });
      await primary.query('CREATE TABLE replicated (x int); INSERT INTO replicated VALUES (42)');
      await replica.waitForCatchUp();
      expect((await replica.query<{ x: number }>('SELECT x FROM replicated'))[0]?.x).toBe(42);
      await expect(replica.query('INSERT INTO replicated VALUES (1)')).rejects.toThrow(/read-only/);
      const senders = await primary.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_replication WHERE state = 'streaming'",
      );
      expect(senders[0]?.n).toBe(1);
    } finally {
      await replica.destroy();
    }
    expect(fs.existsSync(replica.dir)).toBe(false);
  });
});

describe('startReplica of the shared server', () => {
  it('inherits the primary\'s max_connections and sees the test databases', async () => {
    const db = await createTestDatabase({ prefix: 'repl' });
    const replica = await startReplica(testServer().info());
    try {
      await replica.waitForCatchUp();
      const rows = await replica.query<{ r: boolean; m: string }>(
        "SELECT pg_is_in_recovery() AS r, current_setting('max_connections') AS m",
      );
      expect(rows[0]).toEqual({ r: true, m: '200' });
      const dbs = await replica.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_database WHERE datname = $1', [db.name]);
      expect(dbs[0]?.n).toBe(1);
    } finally {
      await replica.destroy();
      await db.drop();
    }
  });
});

describe('startPgBouncer', () => {
  it('pools in transaction mode in front of the shared primary', async () => {
    const db = await createTestDatabase();
    const bouncer = await startPgBouncer(testServer().info(), { defaultPoolSize: 2 });
    try {
      const c = await connect({ connectionString: bouncer.url(db.name), application_name: 'harness-bouncer' });
      const { rows } = await c.query<{ one: number }>('SELECT 1 AS one');
      expect(rows[0]?.one).toBe(1);
      const pools = await bouncer.console<{ database: string; pool_mode: string }>('SHOW POOLS');
      expect(pools.find((p) => p.database === db.name)?.pool_mode).toBe('transaction');
      // Transaction pooling: session state does not stick to the client connection.
      // Five clients over a pool of two server connections.
      const many = await Promise.all(
        [1, 2, 3, 4, 5].map(() => connect({ connectionString: bouncer.url(db.name), application_name: 'harness-bouncer' })),
      );
      const pids = await Promise.all(many.map(async (m) => (await m.query<{ p: number }>('SELECT pg_backend_pid() AS p')).rows[0]?.p));
      expect(new Set(pids).size).toBeLessThanOrEqual(2);
      await Promise.all([c, ...many].map((m) => m.end()));

      // node-postgres startup parameters (statement_timeout, options) are accepted (and dropped).
      const withParams = await connect({
        ...bouncer.clientConfig(db.name),
        statement_timeout: 5000,
        options: '-c search_path=public',
      });
      expect((await withParams.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one).toBe(1);
      await withParams.end();

      // TLS to clients is offered and verifies against the same CA; plain connections work too.
      const tlsClient = await connect({ ...bouncer.clientConfig(db.name), ssl: bouncer.tls() });
      await tlsClient.query('SELECT 1');
      await tlsClient.end();
      await expect(connect({ ...bouncer.clientConfig(db.name), ssl: bouncer.tls({ wrongCa: true }) })).rejects.toThrow();
      await expect(connect(bouncer.clientConfig(db.name, { password: 'wrong' }))).rejects.toThrow(/authentication failed/);

      // The app role works through PgBouncer as well.
      const app = await connect({ connectionString: bouncer.url(db.name, undefined, { user: 'app' }) });
      expect((await app.query<{ u: string }>('SELECT current_user AS u')).rows[0]?.u).toBe('app');
      await app.end();
    } finally {
      await bouncer.stop();
      await db.drop();
    }
    expect(fs.existsSync(bouncer.dir)).toBe(false);
  });
});
