// Programmatic migrations against a real PostgreSQL (TLS + password auth, from the harness).
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { inspect } from 'node:util';
import { Client } from 'pg';

import { DatalayerError } from '../src/errors';
import { deploy, drift, MigrationError, status, type MigrateOptions } from '../src/migrate';
import { eventually } from './support/async';
import { createTestDatabase } from './support/db';
import { startTcpProxy } from './support/tcp-proxy';

const ROOT = path.resolve(__dirname, '..');
const MIGRATIONS = path.join(ROOT, 'prisma', 'migrations');
const SCHEMA = path.join(ROOT, 'prisma', 'schema.prisma');

const committed = readdirSync(MIGRATIONS, { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .map((entry) => entry.name)
  .sort();

type TestDb = Awaited<ReturnType<typeof createTestDatabase>>;

let db: TestDb;
let options: MigrateOptions;
let tmp: string;
let apps: string;

beforeAll(async () => {
  db = await createTestDatabase({ migrated: false });
  // TLS verified against the harness CA: the options must reach every pool the engine opens.
  // The repository's own migrations and schema are named explicitly: by default deploy()
  // and friends use the application's (the current directory's), never the package's.
  options = { url: db.url, ssl: db.ssl, migrationsDir: MIGRATIONS, schemaPath: SCHEMA };
  tmp = mkdtempSync(path.join(os.tmpdir(), 'migrate-test-'));
  // Applications with a prisma.config.ts live inside the repository, so that the config's
  // `import 'prisma/config'` and the prisma package (its loader) resolve as in an app.
  mkdirSync(path.join(ROOT, '.tmp'), { recursive: true });
  apps = mkdtempSync(path.join(ROOT, '.tmp', 'migrate-apps-'));
});

afterAll(async () => {
  rmSync(tmp, { recursive: true, force: true });
  rmSync(apps, { recursive: true, force: true });
  await db?.drop();
});

function query<T extends Record<string, unknown>>(sql: string): Promise<T[]> {
  return db.query<T>(sql);
}

/** A copy of the committed migrations plus extra ones, in a temp dir. */
function migrationsWith(name: string, extra: Record<string, string>): string {
  const dir = path.join(tmp, name);
  cpSync(MIGRATIONS, dir, { recursive: true });
  for (const [migration, sql] of Object.entries(extra)) {
    mkdirSync(path.join(dir, migration));
    writeFileSync(path.join(dir, migration, 'migration.sql'), sql);
  }
  return dir;
}

function schemaWith(name: string, edit: (schema: string) => string): string {
  const file = path.join(tmp, `${name}.prisma`);
  writeFileSync(file, edit(readFileSync(SCHEMA, 'utf8')));
  return file;
}

const addNickname = (schema: string): string => schema.replace(/(\n\s+name\s+String\?)/, '$1\n  nickname  String?');

test('there is at least one committed migration and a postgresql lockfile', () => {
  expect(committed.length).toBeGreaterThan(0);
  expect(committed.every((name) => /^\d{14}_[a-z0-9_]+$/.test(name))).toBe(true);
  expect(readFileSync(path.join(MIGRATIONS, 'migration_lock.toml'), 'utf8')).toMatch(/^provider = "postgresql"$/m);
});

test('status on an empty database reports every migration pending', async () => {
  await expect(status(options)).resolves.toEqual({
    applied: [],
    pending: committed,
    failed: [],
    edited: [],
    missingLocally: [],
    upToDate: false,
  });
});

test('deploy applies every migration with prisma migrate deploy bookkeeping', async () => {
  await expect(deploy(options)).resolves.toEqual({ applied: committed });

  const tables = await query<{ t: string | null }>(
    `SELECT to_regclass('public.accounts')::text AS t UNION ALL SELECT to_regclass('public.transfers')::text
     UNION ALL SELECT to_regclass('public.users')::text`,
  );
  expect(tables.map((row) => row.t)).toEqual(['accounts', 'transfers', 'users']);

  const rows = await query<{ migration_name: string; checksum: string; finished: boolean; steps: number }>(
    `SELECT migration_name, checksum, finished_at IS NOT NULL AS finished, applied_steps_count AS steps
     FROM _prisma_migrations ORDER BY started_at`,
  );
  expect(rows).toEqual(
    committed.map((name) => ({
      migration_name: name,
      checksum: createHash('sha256').update(readFileSync(path.join(MIGRATIONS, name, 'migration.sql'))).digest('hex'),
      finished: true,
      steps: 1,
    })),
  );
});

test('a second deploy applies nothing and status is up to date', async () => {
  await expect(deploy(options)).resolves.toEqual({ applied: [] });
  await expect(status(options)).resolves.toMatchObject({ applied: committed, pending: [], failed: [], upToDate: true });
  const [count] = await query<{ n: string }>('SELECT count(*) AS n FROM _prisma_migrations');
  expect(Number(count?.n)).toBe(committed.length);
});

test('status reports a new migration as pending until it is deployed', async () => {
  const migrationsDir = migrationsWith('with-nickname', {
    '29990101000000_add_nickname': 'ALTER TABLE "users" ADD COLUMN "nickname" TEXT;\n',
  });
  const withNew = { ...options, migrationsDir };

  await expect(status(withNew)).resolves.toEqual({
    applied: committed,
    pending: ['29990101000000_add_nickname'],
    failed: [],
    edited: [],
    missingLocally: [],
    upToDate: false,
  });
  await expect(deploy(withNew)).resolves.toEqual({ applied: ['29990101000000_add_nickname'] });
  await expect(query(`SELECT nickname FROM users`)).resolves.toEqual([]);

  // The committed directory now lacks a migration the database has.
  await expect(status(options)).resolves.toMatchObject({
    pending: [],
    missingLocally: ['29990101000000_add_nickname'],
    upToDate: false,
  });
});

test('a failing migration is reported as failed and blocks later deploys', async () => {
  const migrationsDir = migrationsWith('with-broken', {
    '29990101000000_add_nickname': 'ALTER TABLE "users" ADD COLUMN "nickname" TEXT;\n',
    '29990102000000_broken': 'ALTER TABLE "no_such_table" ADD COLUMN "x" INTEGER;\n',
  });
  const withBroken = { ...options, migrationsDir };

  const failure = await deploy(withBroken).catch((error: unknown) => error);
  expect(failure).toBeInstanceOf(MigrationError);
  expect((failure as MigrationError).message).toContain('29990102000000_broken');
  expect((failure as MigrationError).message).toContain('no_such_table');

  await expect(status(withBroken)).resolves.toMatchObject({ failed: ['29990102000000_broken'], upToDate: false });
  await expect(deploy(withBroken)).rejects.toThrow(/29990102000000_broken/);
});

test('drift is empty when the migrations produce schema.prisma', async () => {
  await expect(drift(options)).resolves.toEqual({ hasDrift: false, sql: '', summary: '' });
});

test('drift shows the SQL and a summary when schema.prisma moved on', async () => {
  const schemaPath = schemaWith('nickname', addNickname);
  const result = await drift({ ...options, schemaPath });
  expect(result.hasDrift).toBe(true);
  expect(result.sql).toContain('ALTER TABLE "users" ADD COLUMN     "nickname" TEXT;');
  expect(result.summary).toContain('users');
  expect(result.summary).toContain('nickname');

  // ...and empty again once a migration for it exists.
  const migrationsDir = migrationsWith('drift-fixed', {
    '29990101000000_add_nickname': 'ALTER TABLE "users" ADD COLUMN "nickname" TEXT;\n',
  });
  await expect(drift({ ...options, schemaPath, migrationsDir })).resolves.toEqual({
    hasDrift: false,
    sql: '',
    summary: '',
  });
});

test("with the URL's ?schema=, the tables and the bookkeeping go to that schema, as prisma migrate deploy puts them", async () => {
  const other = await createTestDatabase({ migrated: false });
  try {
    await other.query(`CREATE SCHEMA "billing dept" AUTHORIZATION ${other.appUser}`);
    const url = new URL(other.appUrl);
    url.searchParams.set('schema', 'billing dept');
    // The URL's own startup options are kept beside the search_path.
    url.searchParams.set('options', '-c lock_timeout=5s');
    expect(await deploy({ url: url.toString(), migrationsDir: MIGRATIONS })).toEqual({ applied: committed });
    expect(await other.query(`SELECT DISTINCT table_schema FROM information_schema.tables WHERE table_name IN ('users', '_prisma_migrations')`)).toEqual([{ table_schema: 'billing dept' }]);
    expect(await status({ url: url.toString(), migrationsDir: MIGRATIONS })).toMatchObject({ upToDate: true, applied: committed });
  } finally {
    await other.drop();
  }
});

test("channel_binding=require in the URL holds for the engine's connections too: no plaintext migration, no password sent", async () => {
  const other = await createTestDatabase({ migrated: false });
  try {
    const url = new URL(other.appUrl);
    url.searchParams.set('sslmode', 'disable');
    url.searchParams.set('channel_binding', 'require');
    const err = await deploy({ url: url.toString(), migrationsDir: MIGRATIONS }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationError);
    expect((err as MigrationError).message).toMatch(/channel_binding=require: the server asked for SCRAM on a connection without SSL/);
    expect((err as MigrationError).message).not.toContain(other.appPassword);
    expect(await other.query(`SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name = '_prisma_migrations'`)).toEqual([{ n: 0 }]);
    // Over SSL the binding holds and the migrations apply.
    url.searchParams.set('sslmode', 'require');
    expect(await deploy({ url: url.toString(), migrationsDir: MIGRATIONS })).toEqual({ applied: committed });
  } finally {
    await other.drop();
  }
});

test('a wrong password fails with P1000 and never prints a password', async () => {
  const url = new URL(db.url);
  const realPassword = decodeURIComponent(url.password);
  url.password = 'wrong-Secret-4711';
  const failure = await status({ ...options, url: url.toString() }).catch((error: unknown) => error);

  expect(failure).toBeInstanceOf(MigrationError);
  const error = failure as MigrationError;
  expect(error).toBeInstanceOf(DatalayerError);
  expect(error).toMatchObject({ kind: 'migration', code: 'P1000', prismaCode: 'P1000', retryable: false });
  expect(error.message).toMatch(/Authentication failed/);
  const printed = `${error.message}\n${error.stack ?? ''}\n${inspect(error, { depth: 10 })}\n${JSON.stringify(error)}`;
  expect(printed).not.toContain('wrong-Secret-4711');
  expect(printed).not.toContain(realPassword);
});

test('a missing schema file is a MigrationError naming the file', async () => {
  const schemaPath = path.join(tmp, 'does-not-exist.prisma');
  await expect(drift({ ...options, schemaPath })).rejects.toThrow(MigrationError);
  await expect(drift({ ...options, schemaPath })).rejects.toThrow(/does-not-exist\.prisma/);
});

test('deploy() on a transaction-pooler URL (pgbouncer=true) is refused before connecting: nothing is applied, the lock is not left behind', async () => {
  const empty = await createTestDatabase({ migrated: false });
  try {
    const failure: unknown = await deploy({ url: empty.urlWith({ pgbouncer: 'true', sslmode: 'disable' }), migrationsDir: MIGRATIONS }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(MigrationError);
    expect((failure as Error).message).toMatch(/transaction-mode pooler.*Set DIRECT_URL/);
    expect((failure as Error).message).not.toContain(empty.password);
    await expect(empty.query("SELECT to_regclass('public._prisma_migrations')::text AS t")).resolves.toEqual([{ t: null }]);
  } finally {
    await empty.drop();
  }
});

describe("defaults: the application's migrations and schema, never the package's", () => {
  /** An application directory with the given files (relative path → content). */
  function app(name: string, files: Record<string, string>): string {
    const dir = path.join(apps, name);
    for (const [file, content] of Object.entries(files)) {
      mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
      writeFileSync(path.join(dir, file), content);
    }
    mkdirSync(dir, { recursive: true });
    return dir;
  }
  let fresh: TestDb;
  beforeEach(async () => {
    fresh = await createTestDatabase({ migrated: false, prefix: 'appmig' });
  });
  afterEach(async () => {
    await fresh?.drop();
  });
  const base = (): MigrateOptions => ({ url: fresh.url, ssl: fresh.ssl });
  const migrationsTable = async (target: TestDb): Promise<string | null> =>
    (await target.query<{ t: string | null }>(`SELECT to_regclass('public._prisma_migrations')::text AS t`))[0]!.t;

  test('with no migrations directory: a MigrationError naming where it looked, and nothing created', async () => {
    {
      const dir = app('empty', { 'package.json': '{}' });
      const options = { ...base(), projectDir: dir };
      for (const run of [deploy, status]) {
        const failure = await run(options).catch((error: unknown) => error);
        expect(failure).toBeInstanceOf(MigrationError);
        expect((failure as Error).message).toContain(path.join(dir, 'prisma', 'migrations'));
      }
      await expect(drift(options)).rejects.toThrow(/no Prisma schema found/);
      // An explicit directory that does not exist is refused the same way.
      await expect(deploy({ ...options, migrationsDir: path.join(dir, 'nope') })).rejects.toThrow(/nope does not exist/);
      expect(await migrationsTable(fresh)).toBeNull();
    }
  });

  test('without a config file: ./prisma/migrations and ./prisma/schema.prisma of projectDir', async () => {
    const dir = app('plain', { 'prisma/schema.prisma': readFileSync(SCHEMA, 'utf8') });
    cpSync(MIGRATIONS, path.join(dir, 'prisma', 'migrations'), { recursive: true });
    const plain = { ...base(), projectDir: dir };
    await expect(status(plain)).resolves.toMatchObject({ applied: [], pending: committed });
    await expect(deploy(plain)).resolves.toEqual({ applied: committed });
    await expect(status(plain)).resolves.toMatchObject({ applied: committed, pending: [], upToDate: true });
    await expect(drift(plain)).resolves.toMatchObject({ hasDrift: false });
  });

  test("with a prisma.config.ts: its migrations.path and schema, relative to the config file", async () => {
    const dir = app('configured', {
      'prisma.config.ts': [
        "import { defineConfig } from 'prisma/config';",
        "export default defineConfig({ schema: 'db/schema.prisma', migrations: { path: 'db/history' } });",
        '',
      ].join('\n'),
      // Decoys where the defaults would look: they must not be read.
      'prisma/schema.prisma': 'this is not a schema',
      'db/schema.prisma': addNickname(readFileSync(SCHEMA, 'utf8')),
    });
    cpSync(MIGRATIONS, path.join(dir, 'db', 'history'), { recursive: true });
    const withConfig = { ...base(), projectDir: dir };
    await expect(deploy(withConfig)).resolves.toEqual({ applied: committed });
    await expect(status(withConfig)).resolves.toMatchObject({ applied: committed, upToDate: true });
    // The configured schema (with nickname) differs from what those migrations build.
    const result = await drift(withConfig);
    expect(result.hasDrift).toBe(true);
    expect(result.sql).toContain('"nickname"');
  });

  test('an unloadable prisma.config.ts is a MigrationError, not a silent fallback', async () => {
    const dir = app('broken-config', { 'prisma.config.ts': 'export default {{ not typescript', 'prisma/migrations/.keep': '' });
    const failure = await status({ ...base(), projectDir: dir }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(MigrationError);
    expect((failure as Error).message).toContain(path.join(dir, 'prisma.config.ts'));
  });
});

describe('a migration script is sent whole, as prisma migrate deploy sends it', () => {
  let empty: TestDb;
  beforeEach(async () => {
    empty = await createTestDatabase({ migrated: false });
  });
  afterEach(async () => empty?.drop());

  /** A migrations directory holding only these migrations. */
  function only(name: string, migrations: Record<string, string>): string {
    const dir = path.join(tmp, name);
    mkdirSync(dir, { recursive: true });
    cpSync(path.join(MIGRATIONS, 'migration_lock.toml'), path.join(dir, 'migration_lock.toml'));
    for (const [migration, sql] of Object.entries(migrations)) {
      mkdirSync(path.join(dir, migration));
      writeFileSync(path.join(dir, migration, 'migration.sql'), sql);
    }
    return dir;
  }

  test('semicolons inside a plpgsql body, a string literal and a comment are not statement ends', async () => {
    const migrationsDir = only('semicolons', {
      '20000101000000_semicolons': [
        '-- adds a function; see ticket 42',
        'CREATE FUNCTION one() RETURNS integer LANGUAGE plpgsql AS $$',
        'BEGIN',
        '  RETURN 1;',
        'END;',
        '$$;',
        'CREATE TABLE notes (v text);',
        "INSERT INTO notes VALUES ('a;b');",
        '',
      ].join('\n'),
    });
    await expect(deploy({ url: empty.url, ssl: empty.ssl, migrationsDir })).resolves.toEqual({ applied: ['20000101000000_semicolons'] });
    await expect(empty.query('SELECT one() AS v')).resolves.toEqual([{ v: 1 }]);
    await expect(empty.query('SELECT v FROM notes')).resolves.toEqual([{ v: 'a;b' }]);
  });

  test('a migration failing at its second statement leaves nothing of its first behind', async () => {
    const migrationsDir = only('half', {
      '20000101000000_half': 'CREATE TABLE half_a (id int);\nCREATE TABLE half_b (id no_such_type);\n',
    });
    const failure = await deploy({ url: empty.url, ssl: empty.ssl, migrationsDir }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(MigrationError);
    expect((failure as MigrationError).message).toContain('no_such_type');
    await expect(empty.query("SELECT tablename FROM pg_tables WHERE tablename LIKE 'half_%'")).resolves.toEqual([]);
  });

  test("a failing migration is P3018 as the native engine reports it: the migration's name, the SQLSTATE and the database's message, no engine internals", async () => {
    const migrationsDir = only('p3018', {
      '20000101000000_fine': 'CREATE TABLE fine_a (id int);\n',
      '20000102000000_divides': 'CREATE TABLE fine_b (id int);\nSELECT 1/0;\n',
    });
    const failure = await deploy({ url: empty.url, ssl: empty.ssl, migrationsDir }).catch((error: unknown) => error);
    // Before: code undefined and 'migrate deploy failed: external connector error\nError querying the
    // database: ERROR: division by zero\n   0: sql_schema_connector::apply_migration::apply_script ...'.
    expect(failure).toMatchObject({ name: 'MigrationError', code: 'P3018', prismaCode: 'P3018', retryable: false });
    const message = (failure as MigrationError).message;
    expect(message).toContain('Migration name: 20000102000000_divides');
    expect(message).toContain('Database error code: 22012');
    expect(message).toContain('division by zero');
    expect(message).not.toMatch(/external connector error|sql_schema_connector|\.rs:\d/);
  });
});

/** Settles with what `work` settled with, or with 'still waiting' after `ms`. */
function within(work: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise((resolve) => (timer = setTimeout(() => resolve('still waiting'), ms)));
  return Promise.race([work.then((value) => value, (error: unknown) => error), late]).finally(() => clearTimeout(timer));
}

describe('waits that end', () => {
  let empty: TestDb;
  beforeEach(async () => {
    empty = await createTestDatabase({ migrated: false });
  });
  afterEach(async () => empty?.drop());

  test('while another session holds the migration lock, deploy fails after the lock timeout, saying so, and applies nothing', async () => {
    const holder = new Client({ connectionString: empty.urlWith(), ssl: empty.ssl, application_name: 'other-deploy' });
    await holder.connect();
    try {
      await holder.query('SELECT pg_advisory_lock(72707369)');
      const [{ pid }] = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows as [{ pid: number }];
      // The engine gives up on the lock after about 10 s; before, the pool's end waited for it forever.
      const failure = await within(deploy({ url: empty.url, ssl: empty.ssl, migrationsDir: MIGRATIONS }), 45_000);
      expect(failure).toBeInstanceOf(MigrationError);
      const message = (failure as MigrationError).message;
      expect(failure).toMatchObject({ retryable: true });
      // What happened, who holds it and what to do; not Prisma's "server timed out, make sure it is running".
      expect(message).toContain(`the migration lock (pg_advisory_lock(72707369)) is held by another session (pid ${pid}, application "other-deploy", `);
      expect(message).toContain(`SELECT pg_terminate_backend(${pid})`);
      expect(message).not.toMatch(/P1002|timed out|make sure your database server is running/i);
      expect(message).not.toContain(empty.password);
      expect((failure as MigrationError).outcome).toBeUndefined();
      await expect(empty.query("SELECT to_regclass('public._prisma_migrations')::text AS t")).resolves.toEqual([{ t: null }]);
    } finally {
      await holder.end();
    }
  }, 60_000);

  test('a network black hole while a migration runs: deploy fails after its deadline, saying the outcome is unknown', async () => {
    const proxy = await startTcpProxy({ host: empty.host, port: empty.port });
    try {
      const migrationsDir = path.join(tmp, `blackhole-${Date.now()}`);
      mkdirSync(path.join(migrationsDir, '20000101000000_slow'), { recursive: true });
      cpSync(path.join(MIGRATIONS, 'migration_lock.toml'), path.join(migrationsDir, 'migration_lock.toml'));
      writeFileSync(path.join(migrationsDir, '20000101000000_slow', 'migration.sql'), 'SELECT pg_sleep(1);\nCREATE TABLE slow (id int);\n');
      // socket_timeout: Prisma's per-statement limit (seconds), the engine connections' statement deadline.
      const url = empty.urlWith({ sslmode: 'disable', connect_timeout: '2', socket_timeout: '4' }, { port: proxy.port });
      const deploying = within(deploy({ url, migrationsDir }), 60_000);
      // Black-holed while the migration's script runs: its answer never arrives.
      const running = async (): Promise<boolean> => (await empty.query(`SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(1)%' AND state = 'active'`)).length > 0;
      expect(await eventually(running, 30_000, 10)).toBe(true);
      proxy.blackhole();
      const failure = await deploying;
      expect(failure).toBeInstanceOf(MigrationError);
      expect(failure).toMatchObject({ outcome: 'unknown', retryable: false, message: expect.stringContaining('outcome of the migration in flight is unknown') });
    } finally {
      proxy.close();
    }
  }, 90_000);

  /** A migrations directory whose one migration runs `sql`. */
  function oneMigration(name: string, sql: string): string {
    const migrationsDir = path.join(tmp, `${name}-${Date.now()}`);
    mkdirSync(path.join(migrationsDir, `20000101000000_${name}`), { recursive: true });
    cpSync(path.join(MIGRATIONS, 'migration_lock.toml'), path.join(migrationsDir, 'migration_lock.toml'));
    writeFileSync(path.join(migrationsDir, `20000101000000_${name}`, 'migration.sql'), sql);
    return migrationsDir;
  }

  /**
   * deploy() through the proxy at `port` (connect_timeout 2 s) of one migration, `sleep` then
   * `then`; resolves once the server runs `sleep`, with the deploy still under way.
   */
  async function deployRunning(port: number, name: string, sleep: string, then: string): Promise<{ deploying: Promise<unknown> }> {
    const migrationsDir = oneMigration(name, `${sleep};\n${then}\n`);
    const url = empty.urlWith({ sslmode: 'disable', connect_timeout: '2' }, { port });
    const deploying = deploy({ url, migrationsDir });
    const running = async (): Promise<boolean> => (await empty.query(`SELECT 1 FROM pg_stat_activity WHERE query LIKE '${sleep}%' AND state = 'active'`)).length > 0;
    expect(await eventually(running, 30_000, 10)).toBe(true);
    // In an object: an async function returning the promise itself would wait for it.
    return { deploying };
  }

  test('a black hole during a migration with no socket_timeout ends in tens of seconds with a typed, redacted MigrationError, not at the 600 s statement deadline', async () => {
    const proxy = await startTcpProxy({ host: empty.host, port: empty.port });
    try {
      const { deploying } = await deployRunning(proxy.port, 'silent', 'SELECT pg_sleep(120)', 'CREATE TABLE silent (id int);');
      proxy.blackhole();
      const failure = await within(deploying, 60_000);
      expect(failure).toBeInstanceOf(MigrationError);
      expect(failure).toMatchObject({ outcome: 'unknown', retryable: false, message: expect.stringContaining('went silent') });
      expect((failure as Error).message).not.toContain(empty.password);
      expect(inspect(failure)).not.toContain(empty.password);
    } finally {
      proxy.close();
    }
  }, 120_000);

  test("a black hole only on the migration's connection (new connections work): once the server has finished the statement and no answer came, deploy fails with outcome unknown", async () => {
    const proxy = await startTcpProxy({ host: empty.host, port: empty.port });
    try {
      const { deploying } = await deployRunning(proxy.port, 'lost', 'SELECT pg_sleep(3)', 'CREATE TABLE lost_answer (id int);');
      proxy.blackholeExisting();
      const failure = await within(deploying, 60_000);
      expect(failure).toBeInstanceOf(MigrationError);
      expect(failure).toMatchObject({ outcome: 'unknown', retryable: false, message: expect.stringContaining('the server had finished the statement but its answer never arrived') });
      // The server did run it: the table is there, which is why the outcome is 'unknown'.
      await expect(empty.query("SELECT to_regclass('public.lost_answer')::text AS t")).resolves.toEqual([{ t: 'lost_answer' }]);
    } finally {
      proxy.close();
    }
  }, 120_000);

  test('a statement running longer than the silent-network detection on a healthy connection is not cut', async () => {
    // connect_timeout 2 s: the connection is looked at every 4 s, given up after two silent looks.
    const migrationsDir = oneMigration('long', 'SELECT pg_sleep(14);\nCREATE TABLE long_one (id int);\n');
    const url = empty.urlWith({ sslmode: 'disable', connect_timeout: '2' });
    await expect(deploy({ url, migrationsDir })).resolves.toEqual({ applied: ['20000101000000_long'] });
    await expect(empty.query("SELECT to_regclass('public.long_one')::text AS t")).resolves.toEqual([{ t: 'long_one' }]);
  }, 90_000);
});
