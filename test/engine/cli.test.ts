// The real prisma CLI driving bin/prisma-datalayer-schema-engine.js through
// PRISMA_SCHEMA_ENGINE_BINARY, against a real PostgreSQL (TLS + password auth).
// Each CLI run costs ~1.5 s, so the scenarios are grouped into few runs.
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { Client } from 'pg';
import path from 'node:path';

import { createTestDatabase, testServer } from '../support/db';
import { startPgBouncer } from '../support/pgbouncer';
import { startTcpProxy } from '../support/tcp-proxy';

const ROOT = path.resolve(__dirname, '..', '..');
const ENGINE = path.join(ROOT, 'bin', 'prisma-datalayer-schema-engine.js');
const PRISMA = path.join(ROOT, 'node_modules', 'prisma', 'build', 'index.js');
const MIGRATIONS = path.join(ROOT, 'prisma', 'migrations');

const committed = readdirSync(MIGRATIONS, { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .map((entry) => entry.name)
  .sort();

type TestDb = Awaited<ReturnType<typeof createTestDatabase>>;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout + stderr, for messages the CLI prints on either. */
  output: string;
}

function run(
  command: string,
  args: string[],
  options: { url: string; cwd?: string; input?: string; env?: Record<string, string> },
): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // Only this test's database: prisma.config.ts reads DIRECT_URL before DATABASE_URL.
  for (const key of Object.keys(env)) if (/^(DATABASE_URL|DIRECT_URL|SHADOW_DATABASE_URL|PRISMA_)/.test(key)) delete env[key];
  Object.assign(env, {
    DATABASE_URL: options.url,
    DIRECT_URL: options.url,
    PRISMA_SCHEMA_ENGINE_BINARY: ENGINE,
    // No network: no update check, no telemetry.
    CHECKPOINT_DISABLE: '1',
    PRISMA_HIDE_UPDATE_MESSAGE: '1',
    NO_COLOR: '1',
    ...options.env,
  });
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd ?? ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, output: `${stdout}\n${stderr}` }));
    child.stdin.end(options.input ?? '');
  });
}

const prisma = (args: string[], options: Parameters<typeof run>[2]): Promise<Run> =>
  run(process.execPath, [PRISMA, ...args], options);

/** A copy of the project (schema, config, migrations) whose files a test may change. */
function projectCopy(name: string): string {
  const dir = path.join(tmp, name);
  cpSync(path.join(ROOT, 'prisma'), path.join(dir, 'prisma'), { recursive: true });
  cpSync(path.join(ROOT, 'prisma.config.ts'), path.join(dir, 'prisma.config.ts'));
  cpSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  return dir;
}

let tmp: string;
const databases: TestDb[] = [];

async function database(): Promise<TestDb> {
  const db = await createTestDatabase({ migrated: false });
  databases.push(db);
  return db;
}

beforeAll(() => {
  if (!existsSync(path.join(ROOT, 'dist', 'engine', 'cli.js'))) {
    throw new Error('dist/ is missing: run `npx tsc -p tsconfig.build.json` (npm test does) before these tests');
  }
  tmp = mkdtempSync(path.join(os.tmpdir(), 'engine-cli-test-'));
});

afterAll(async () => {
  rmSync(tmp, { recursive: true, force: true });
  await Promise.all(databases.map((db) => db.drop()));
});

test('--version reports the engines commit the prisma CLI was built for', async () => {
  const result = await run(process.execPath, [ENGINE, '--version'], { url: '' });
  const { enginesVersion } = require('@prisma/engines-version') as { enginesVersion: string };
  expect(result.code).toBe(0);
  expect(result.stdout.trim()).toBe(`schema-engine-cli ${enginesVersion}`);
});

test('migrate status / deploy / deploy / status on an empty database', async () => {
  const db = await database();

  const before = await prisma(['migrate', 'status'], { url: db.url });
  expect(before.code).toBe(1);
  expect(before.output).toContain('have not yet been applied');
  for (const name of committed) expect(before.output).toContain(name);

  const first = await prisma(['migrate', 'deploy'], { url: db.url });
  expect(first.output).toContain('All migrations have been successfully applied.');
  expect(first.code).toBe(0);
  for (const name of committed) expect(first.output).toContain(name);
  const rows = await db.query<{ migration_name: string }>(
    'SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL ORDER BY started_at',
  );
  expect(rows.map((row) => row.migration_name)).toEqual(committed);
  await expect(db.query(`SELECT to_regclass('public.transfers')::text AS t`)).resolves.toEqual([{ t: 'transfers' }]);

  const second = await prisma(['migrate', 'deploy'], { url: db.url });
  expect(second.code).toBe(0);
  expect(second.output).toContain('No pending migrations to apply.');

  const after = await prisma(['migrate', 'status'], { url: db.url });
  expect(after.code).toBe(0);
  expect(after.output).toContain('Database schema is up to date!');
});

test('migrate diff --from-empty prints the committed first migration', async () => {
  // Needs no database, but the engine still connects to the configured one.
  const db = await database();
  const result = await prisma(['migrate', 'diff', '--from-empty', '--to-schema', 'prisma/schema.prisma', '--script'], {
    url: db.url,
  });
  expect(result.code).toBe(0);
  const first = committed[0] ?? '';
  const migration = readFileSync(path.join(MIGRATIONS, first, 'migration.sql'), 'utf8');
  // `migrate dev` (which wrote the migration) replays into a shadow database that already has
  // the public schema; a diff from nothing also creates it.
  const createSchema = '-- CreateSchema\nCREATE SCHEMA IF NOT EXISTS "public";\n\n';
  expect(result.stdout.trim()).toBe(`${createSchema}${migration}`.trim());
});

test('db execute runs scripts from --stdin and --file', async () => {
  const db = await database();
  const viaStdin = await prisma(['db', 'execute', '--stdin'], {
    url: db.url,
    input: 'CREATE TABLE cli_probe (id int PRIMARY KEY, note text);\nINSERT INTO cli_probe VALUES (1, $$stdin$$);',
  });
  expect(viaStdin.output).toContain('Script executed successfully.');
  expect(viaStdin.code).toBe(0);

  const file = path.join(tmp, 'script.sql');
  writeFileSync(file, "INSERT INTO cli_probe VALUES (2, 'file');\n");
  const viaFile = await prisma(['db', 'execute', '--file', file], { url: db.url });
  expect(viaFile.code).toBe(0);

  await expect(db.query('SELECT id, note FROM cli_probe ORDER BY id')).resolves.toEqual([
    { id: 1, note: 'stdin' },
    { id: 2, note: 'file' },
  ]);

  const failing = await prisma(['db', 'execute', '--stdin'], { url: db.url, input: 'SELECT * FROM no_such_table;' });
  expect(failing.code).toBe(1);
  expect(failing.output).toContain('no_such_table');
});

test('migrate dev --create-only writes the next migration using a shadow database', async () => {
  const db = await database();
  const project = projectCopy('dev');

  const schemaFile = path.join(project, 'prisma', 'schema.prisma');
  const schema = readFileSync(schemaFile, 'utf8');
  writeFileSync(schemaFile, schema.replace(/(\n\s+name\s+String\?)/, '$1\n  nickname  String?'));

  // On an empty database: migrate dev first applies the committed migrations, then asks the
  // engine for the next one, the path where the wasm engine needs its shadow schema primed.
  const result = await prisma(['migrate', 'dev', '--create-only', '--name', 'add_nickname'], { url: db.url, cwd: project });
  expect(result.output).toContain('created the following migration without applying it');
  expect(result.code).toBe(0);
  const applied = await db.query<{ migration_name: string }>('SELECT migration_name FROM _prisma_migrations');
  expect(applied.map((row) => row.migration_name)).toEqual(committed);

  const created = readdirSync(path.join(project, 'prisma', 'migrations'), { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && !committed.includes(entry.name))
    .map((entry) => entry.name);
  expect(created).toEqual([expect.stringMatching(/^\d{14}_add_nickname$/)]);
  const sql = readFileSync(path.join(project, 'prisma', 'migrations', created[0] ?? '', 'migration.sql'), 'utf8');
  expect(sql).toBe('-- AlterTable\nALTER TABLE "users" ADD COLUMN     "nickname" TEXT;\n');
  // Created, not applied.
  await expect(
    db.query(`SELECT count(*)::int AS n FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'nickname'`),
  ).resolves.toEqual([{ n: 0 }]);
});

test('a wrong password is the CLI\'s P1000 error, without the password', async () => {
  const db = await database();
  const url = new URL(db.url);
  url.password = 'Wrong-Pass-8842';

  const result = await prisma(['migrate', 'deploy'], { url: url.toString() });
  expect(result.code).toBe(1);
  expect(result.output).toContain('P1000');
  expect(result.output).toContain('Authentication failed against database server');
  expect(result.output).not.toContain('Wrong-Pass-8842');
  expect(result.output).not.toContain(db.password);
});

test('migrate deploy on a transaction-pooler URL (pgbouncer=true) is refused: nothing applied, no migration lock left on the pooler', async () => {
  const bouncer = await startPgBouncer(testServer().info());
  try {
    const db = await database();
    const pooled = db.urlWith({ pgbouncer: 'true', sslmode: 'disable' }, { host: bouncer.host, port: bouncer.port });
    // Before: applied through PgBouncer, exit 0, and pg_advisory_lock(72707369) stayed held by
    // one of its server connections, so the next deploy on the direct URL failed after 10 s.
    const refused = await prisma(['migrate', 'deploy'], { url: pooled });
    expect(refused.code).toBe(1);
    expect(refused.output).toMatch(/transaction-mode pooler.*direct \(unpooled\) URL/);
    expect(refused.output).not.toContain(db.password);
    await expect(db.query("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = 72707369")).resolves.toEqual([]);
    await expect(db.query("SELECT to_regclass('public._prisma_migrations')::text AS t")).resolves.toEqual([{ t: null }]);
    // Reading the history takes no lock: status still answers through the pooler.
    const pending = await prisma(['migrate', 'status'], { url: pooled });
    expect(pending.output).toContain('have not yet been applied');
    const direct = await prisma(['migrate', 'deploy'], { url: db.url });
    expect(direct.code).toBe(0);
  } finally {
    await bouncer.stop();
  }
}, 120_000);

test("an unreachable server (a black hole) with sslmode=prefer is reported within the URL's connect_timeout, not after a fixed 10 s TLS probe", async () => {
  const db = await database();
  const proxy = await startTcpProxy({ host: db.host, port: db.port });
  try {
    proxy.blackhole();
    const timed = async (params: Record<string, string>): Promise<{ ms: number; run: Run }> => {
      const started = Date.now();
      const run = await prisma(['migrate', 'status'], { url: db.urlWith({ connect_timeout: '1', ...params }, { port: proxy.port }) });
      return { ms: Date.now() - started, run };
    };
    // sslmode=disable: no TLS probe, the same CLI and engine otherwise (the baseline).
    const plain = await timed({ sslmode: 'disable' });
    // No sslmode: prefer, which first asks the server whether it takes TLS.
    const prefer = await timed({});
    for (const { run } of [plain, prefer]) {
      expect(run.code).toBe(1);
      expect(run.output).toMatch(/No answer from the database within the connect deadline \(1000 ms\)/);
      expect(run.output).not.toContain(db.password);
    }
    // Before: the probe alone waited 10 s (about 9 s more than the baseline); now about the 1 s connect_timeout.
    expect(prefer.ms - plain.ms).toBeLessThan(5_000);
  } finally {
    proxy.close();
  }
}, 90_000);

test('migrate deploy while another session holds the migration lock says so, naming that session, not "make sure your database server is running"', async () => {
  const db = await database();
  const holder = new Client({ connectionString: db.urlWith(), ssl: db.ssl, application_name: 'other-deploy' });
  await holder.connect();
  try {
    await holder.query('SELECT pg_advisory_lock(72707369)');
    const pid = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const blocked = await prisma(['migrate', 'deploy'], { url: db.url });
    expect(blocked.code).toBe(1);
    expect(blocked.output).toContain(`the migration lock (pg_advisory_lock(72707369)) is held by another session (pid ${pid}, application "other-deploy"`);
    expect(blocked.output).toContain(`SELECT pg_terminate_backend(${pid})`);
    expect(blocked.output).not.toMatch(/make sure your database server is running/);
    expect(blocked.output).not.toContain(db.password);
  } finally {
    await holder.end();
  }
}, 90_000);

test('cli create-database through a black hole fails within the connect timeout instead of waiting for ever', async () => {
  const db = await database();
  const proxy = await startTcpProxy({ host: db.host, port: db.port });
  try {
    proxy.blackhole();
    const url = db.urlWith({ sslmode: 'disable', connect_timeout: '1' }, { port: proxy.port }).replace(/\/[^/?]+\?/, '/never_created?');
    const child = spawn(process.execPath, [ENGINE, '--datasource', JSON.stringify({ url }), 'cli', 'create-database'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    const timer = setTimeout(() => child.kill('SIGKILL'), 45_000);
    const code = await exited;
    clearTimeout(timer);
    // Before: still connecting when killed (no exit code).
    expect(code).toBe(1);
    expect(stderr).toMatch(/timeout|timed out/i);
    expect(stderr).not.toContain(db.password);
  } finally {
    proxy.close();
  }
}, 60_000);
