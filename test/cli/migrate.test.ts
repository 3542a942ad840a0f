// `prisma-datalayer migrate status|deploy` on an empty database, with the application's
// configuration from the environment (TLS verified against the harness CA).
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { deploy } from '../../src/migrate';
import { adminQuery, createTestDatabase, testServer, type TestDatabase } from '../support/db';
import { startPgBouncer } from '../support/pgbouncer';
import { startTcpProxy } from '../support/tcp-proxy';
import { runCli } from './run';

const MIGRATIONS = path.resolve(__dirname, '..', '..', 'prisma', 'migrations');
const committed = readdirSync(MIGRATIONS, { withFileTypes: true })
  .filter((e) => e.isDirectory())
  .map((e) => e.name)
  .sort();

let testDb: TestDatabase;
beforeAll(async () => {
  testDb = await createTestDatabase({ migrated: false });
});
afterAll(async () => {
  await testDb.drop();
});

describe('migrate', () => {
  it('status lists pending migrations and exits 1; deploy applies them; status then exits 0', async () => {
    // A pooled URL that migrations must not use, and the direct one they must.
    const env = { DATABASE_URL: 'postgresql://app:x@127.0.0.1:1/nowhere', DB_POOLER: 'true', DIRECT_URL: testDb.appUrl };

    // The repository's migrations, named explicitly (the default is the current directory's).
    const dir = ['--migrations-dir', MIGRATIONS];
    const before = await runCli(['migrate', 'status', ...dir], env);
    expect(before.err).toBe('');
    expect(before.code).toBe(1);
    expect(before.out).toContain(`Migration status of DIRECT_URL postgresql://127.0.0.1:${testDb.port}/${testDb.name}`);
    expect(before.out).toMatch(new RegExp(`pending: ${committed.length}\\n {4}- ${committed[0]}`));
    expect(before.out).toMatch(/→ run `prisma-datalayer migrate deploy`/);
    expect(before.out).toMatch(/Not up to date\.\n$/);

    const deploy = await runCli(['migrate', 'deploy', ...dir], env);
    expect(deploy.err).toBe('');
    expect(deploy.code).toBe(0);
    expect(deploy.out).toContain(`Applied ${committed.length} migration`);
    expect(deploy.out).toContain(`  - ${committed[0]}`);
    expect(await testDb.query(`SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL ORDER BY 1`)).toEqual(
      committed.map((migration_name) => ({ migration_name })),
    );

    const again = await runCli(['migrate', 'deploy', ...dir], env);
    expect(again.out).toMatch(/No pending migrations/);

    const after = await runCli(['migrate', 'status', '--json', ...dir], env);
    expect(after.code).toBe(0);
    expect(JSON.parse(after.out)).toMatchObject({ upToDate: true, pending: [], applied: committed });
    for (const run of [before, deploy, again, after]) expect(run.out + run.err).not.toContain(testDb.appPassword);
  });

  it("deploys into the URL's ?schema=, where the application's queries go", async () => {
    const other = await createTestDatabase({ migrated: false });
    try {
      const url = new URL(other.appUrl);
      url.searchParams.set('schema', 'billing');
      // No DIRECT_URL: the target is DATABASE_URL's configuration.
      const deploy = await runCli(['migrate', 'deploy', '--migrations-dir', MIGRATIONS], { DATABASE_URL: url.toString() });
      expect(deploy.err).toBe('');
      expect(deploy.code).toBe(0);
      expect(await other.query(`SELECT table_schema FROM information_schema.tables WHERE table_name = 'users'`)).toEqual([{ table_schema: 'billing' }]);
      // A DIRECT_URL without a schema of its own migrates the application's schema too.
      const direct = new URL(other.appUrl);
      const status = await runCli(['migrate', 'status', '--json', '--migrations-dir', MIGRATIONS], { DATABASE_URL: url.toString(), DIRECT_URL: direct.toString() });
      expect(JSON.parse(status.out)).toMatchObject({ upToDate: true, pending: [] });
    } finally {
      await other.drop();
    }
  });

  it('DB_CHANNEL_BINDING=require holds for migrations too: a plaintext connection is refused', async () => {
    const url = new URL(testDb.appUrl);
    url.searchParams.set('sslmode', 'disable');
    const run = await runCli(['migrate', 'status', '--migrations-dir', MIGRATIONS], { DATABASE_URL: url.toString(), DB_CHANNEL_BINDING: 'require' });
    expect(run.code).toBe(1);
    expect(run.err).toMatch(/channel_binding=require: the server asked for SCRAM on a connection without SSL/);
  });

  it('reports a failure readably, without the password, and exits 1', async () => {
    const run = await runCli(['migrate', 'status'], { DATABASE_URL: `postgresql://app:Sup3r-Secret@127.0.0.1:${testDb.port}/${testDb.name}`, DB_SSLMODE: 'require' });
    expect(run.code).toBe(1);
    expect(run.err).toMatch(/^prisma-datalayer: migrate status failed/);
    expect(run.err).not.toContain('Sup3r-Secret');
  });

  it("in a directory without migrations: exit 1 naming where it looked, and the database untouched", async () => {
    const empty = await createTestDatabase({ migrated: false, prefix: 'climig' });
    const cwd = mkdtempSync(path.join(os.tmpdir(), 'cli-migrate-'));
    try {
      for (const action of ['deploy', 'status']) {
        const run = await runCli(['migrate', action], { DATABASE_URL: empty.appUrl }, cwd);
        expect(run.code).toBe(1);
        expect(run.err).toContain(`no migrations directory at ${path.join(cwd, 'prisma', 'migrations')}`);
      }
      const [row] = await empty.query<{ t: string | null }>(`SELECT to_regclass('public._prisma_migrations')::text AS t`);
      expect(row?.t).toBeNull();
    } finally {
      rmSync(cwd, { recursive: true, force: true });
      await empty.drop();
    }
  });

  it('deploy through a transaction pooler without DIRECT_URL is refused, saying to set DIRECT_URL: no migration lock left behind on the pooler', async () => {
    const empty = await createTestDatabase({ migrated: false });
    const bouncer = await startPgBouncer(testServer().info());
    try {
      const server = testServer();
      const pooled = bouncer.url(empty.name, { pgbouncer: 'true', sslmode: 'disable' }, { user: server.appUser, password: server.appPassword });
      // Before: applied through PgBouncer, exit 0, and pg_advisory_lock(72707369) stayed held by one of
      // its server connections, so the next deploy on the direct URL failed after the 10 s lock timeout.
      const run = await runCli(['migrate', 'deploy', '--migrations-dir', MIGRATIONS], { DATABASE_URL: pooled });
      expect(run.code).toBe(1);
      expect(run.err).toMatch(/transaction-mode pooler.*Set DIRECT_URL/s);
      expect(run.err).not.toContain(server.appPassword);
      await expect(deploy({ url: pooled, migrationsDir: MIGRATIONS })).rejects.toMatchObject({ name: 'MigrationError', message: expect.stringContaining('DIRECT_URL') });
      const locks = await adminQuery("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = 72707369");
      expect(locks).toEqual([]);
      const [row] = await empty.query<{ t: string | null }>(`SELECT to_regclass('public._prisma_migrations')::text AS t`);
      expect(row?.t).toBeNull();
      // Reading the history takes no lock: status still answers through the pooler.
      const status = await runCli(['migrate', 'status', '--json', '--migrations-dir', MIGRATIONS], { DATABASE_URL: pooled });
      expect(JSON.parse(status.out)).toMatchObject({ pending: committed });
    } finally {
      await bouncer.stop();
      await empty.drop();
    }
  });

  describe("with DIRECT_URL, the migration connection's host and SSL settings are DIRECT_URL's own", () => {
    const dir = ['--migrations-dir', MIGRATIONS];

    it("verify-full checks the certificate against DIRECT_URL's host, not the pooled DATABASE_URL's", async () => {
      // The pooled endpoint has another name (a PgBouncer or Neon -pooler host); the certificate is DIRECT_URL's host's.
      const env = {
        DATABASE_URL: `postgresql://app:x@pooler.example.invalid:6432/${testDb.name}?sslmode=verify-full&sslrootcert=${encodeURIComponent(testDb.caFile)}`,
        DB_POOLER: 'true',
        DIRECT_URL: testDb.urlWith({ sslmode: 'verify-full', sslrootcert: testDb.caFile }, { user: testDb.appUser }),
      };
      const run = await runCli(['migrate', 'status', '--json', ...dir], env);
      expect(run.err).toBe('');
      expect(JSON.parse(run.out)).toMatchObject({ target: expect.stringMatching(/^DIRECT_URL /) });
    });

    it("DIRECT_URL's own sslmode=verify-full and sslrootcert are enforced: a certificate from another CA is refused", async () => {
      const env = {
        DATABASE_URL: `postgresql://app:x@127.0.0.1:1/${testDb.name}?sslmode=require`,
        DB_POOLER: 'true',
        DIRECT_URL: testDb.urlWith({ sslmode: 'verify-full', sslrootcert: testDb.wrongCaFile }, { user: testDb.appUser }),
      };
      const run = await runCli(['migrate', 'status', '--json', ...dir], env);
      expect(run.code).toBe(1);
      expect(run.out).toBe('');
      expect(run.err).toMatch(/certificate|self[- ]signed/i);
    });
  });

  it('runs over a unix socket (DB_HOST=/socket/dir), as the application connects', async () => {
    const server = testServer();
    const env = { DB_HOST: server.socketDir, DB_PORT: String(server.port), DB_USER: server.appUser, DB_PASSWORD: server.appPassword, DB_NAME: testDb.name, DB_SSLMODE: 'disable' };
    const run = await runCli(['migrate', 'status', '--json', '--migrations-dir', MIGRATIONS], env);
    expect(run.err).toBe('');
    expect(JSON.parse(run.out)).toMatchObject({ applied: committed });
  });

  it.each([
    ['DB_CONNECT_TIMEOUT', (url: string) => ({ DATABASE_URL: url, DB_CONNECT_TIMEOUT: '1' })],
    ["the URL's connect_timeout", (url: string) => ({ DATABASE_URL: `${url}&connect_timeout=1` })],
  ])('a server that never answers: the connect deadline is the configured one (%s)', async (_how, envOf) => {
    const proxy = await startTcpProxy({ host: testDb.host, port: testDb.port });
    try {
      proxy.blackhole();
      const run = await runCli(['migrate', 'status', '--migrations-dir', MIGRATIONS], envOf(testDb.urlWith({ sslmode: 'disable' }, { port: proxy.port })));
      expect(run.code).toBe(1);
      // Not Prisma's default of 5 s.
      expect(run.err).toContain('connect deadline (1000 ms)');
    } finally {
      proxy.close();
    }
  }, 60_000);

  it('rejects an unknown migrate action', async () => {
    expect((await runCli(['migrate', 'reset'], {})).code).toBe(2);
  });
});
