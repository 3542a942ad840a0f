// `npm start` as a user runs it: the built demo in its own process, once on the embedded
// PGlite server and twice on a real PostgreSQL (TLS + SCRAM, from the harness). Each run
// must exit by itself with code 0: a handle left open would keep the child alive until
// the timeout kills it, so "it exited" is itself the leak check.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

import { createTestDatabase, type TestDatabase } from './support/db';

const ROOT = path.resolve(__dirname, '..');
const MAIN = path.join(ROOT, 'demo', '.build', 'demo', 'main.js');
const INIT_MIGRATION = '20261123113032_init';
// PGlite needs a few seconds to start; a hang shows up as a timeout well past that.
const CHILD_TIMEOUT_MS = 90_000;

interface DemoRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

/** The environment of a user's shell: none of the harness' or the CI's DB_* settings. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key === 'DATABASE_URL' || key === 'DIRECT_URL' || key.startsWith('DB_')) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

function runDemo(env: NodeJS.ProcessEnv): Promise<DemoRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, CHILD_TIMEOUT_MS);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, timedOut, stdout, stderr });
    });
  });
}

/** What every successful run prints; returns the run's two account owners. */
function expectSuccessfulRun(run: DemoRun): { alice: string; bob: string } {
  const transcript = `--- stdout\n${run.stdout}\n--- stderr\n${run.stderr}`;
  if (run.timedOut) throw new Error(`the demo did not exit within ${CHILD_TIMEOUT_MS} ms (an open handle?)\n${transcript}`);
  if (run.code !== 0) throw new Error(`the demo exited with ${run.code ?? run.signal}\n${transcript}`);

  // 100.00 - 30.00 committed; the 500.00 transfer back was rolled back.
  const alice = /^balance (alice-\S+)\s+70\.00$/m.exec(run.stdout);
  const bob = /^balance (bob-\S+)\s+50\.00$/m.exec(run.stdout);
  expect({ alice: alice?.[0], bob: bob?.[0] }).toEqual({ alice: expect.any(String), bob: expect.any(String) });
  expect(run.stdout).toMatch(/^transfers recorded: 1$/m);
  expect(run.stdout).toMatch(/^rolled back: InsufficientFundsError$/m);
  expect(run.stdout).toMatch(/message\s+insufficient funds/);
  expect(run.stdout).toMatch(/^status\s+healthy/m);
  expect(run.stdout).toMatch(/^done$/m);
  expect(run.stderr).not.toMatch(/demo failed/);
  return { alice: alice![1]!, bob: bob![1]! };
}

beforeAll(() => {
  // `npm test` builds the demo first; a bare `jest` run may not have. It is compiled with
  // its own config (demo/tsconfig.json): the demo is not part of the package's dist/.
  if (existsSync(MAIN)) return;
  const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'demo'], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  if (tsc.status !== 0) throw new Error(`build failed:\n${tsc.stdout}${tsc.stderr}`);
}, 120_000);

test('the demo is not part of the library build', () => {
  expect(existsSync(path.join(ROOT, 'dist', 'demo'))).toBe(false);
  expect(existsSync(path.join(ROOT, 'dist', 'generated'))).toBe(false);
});

test('without DATABASE_URL: embedded PGlite, migrations applied, one commit, one rollback, clean exit', async () => {
  const run = await runDemo(cleanEnv());
  expectSuccessfulRun(run);
  expect(run.stdout).toMatch(/^embedded server listening on 127\.0\.0\.1:\d+/m);
  expect(run.stdout).toContain(`applied: ${INIT_MIGRATION}`);
  expect(run.stdout).toMatch(/^connected\s+pg pooled postgresql:\/\/127\.0\.0\.1:\d+\/postgres ssl=disable$/m);
  expect(run.stdout).toMatch(/Closed: pool ended, embedded server stopped/);
}, 120_000);

describe('with DATABASE_URL', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    // Empty database: the demo's deploy() has the migration to apply.
    db = await createTestDatabase({ migrated: false, prefix: 'demo' });
  });
  afterAll(async () => {
    await db?.drop();
  });

  test('migrates, runs the units of work over verified TLS, and can run again', async () => {
    // db.url: sslmode=require with the harness CA as sslrootcert (libpq: verify-ca).
    const env = cleanEnv({ DATABASE_URL: db.url });

    const first = await runDemo(env);
    const owners1 = expectSuccessfulRun(first);
    expect(first.stdout).toContain(`applied: ${INIT_MIGRATION}`);
    expect(first.stdout).toMatch(/^tls\s+yes/m);

    // Unique owners per run: a second run on the same database works too.
    const second = await runDemo(env);
    const owners2 = expectSuccessfulRun(second);
    expect(second.stdout).toContain('up to date: no pending migration');
    expect(owners2.alice).not.toBe(owners1.alice);

    // What the database holds, not what the demo says it holds.
    const migrations = await db.query<{ migration_name: string; finished: boolean }>(
      'SELECT migration_name, finished_at IS NOT NULL AS finished FROM _prisma_migrations',
    );
    expect(migrations).toEqual([{ migration_name: INIT_MIGRATION, finished: true }]);
    const balances = await db.query<{ owner: string; balance: number }>('SELECT owner, balance FROM accounts ORDER BY id');
    expect(balances).toEqual([
      { owner: owners1.alice, balance: 70_00 },
      { owner: owners1.bob, balance: 50_00 },
      { owner: owners2.alice, balance: 70_00 },
      { owner: owners2.bob, balance: 50_00 },
    ]);
    const transfers = await db.query<{ amount: number }>('SELECT amount FROM transfers ORDER BY id');
    expect(transfers).toEqual([{ amount: 30_00 }, { amount: 30_00 }]);
  }, 180_000);
});
