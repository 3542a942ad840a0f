// The package as a user gets it: `npm pack`, installed with its peers into a fresh
// application (ESM with Prisma 7's default generator output, and CommonJS with
// moduleFormat = "cjs"), set up only as the README says. In each app the plain prisma CLI
// runs offline through the one documented line in prisma.config.ts (validate, generate,
// migrate dev, migrate deploy), the Quick start type-checks under `strict`, and a real
// query runs against the harness' PostgreSQL.
//
// Installing needs the npm registry or a warm npm cache (--prefer-offline): the exact
// versions this repository tests are installed, so the cache from `npm ci` serves them.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { createTestDatabase, dbVarsFrom, type TestDatabase } from './support/db';

const ROOT = path.resolve(__dirname, '..');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const pkg = require('../package.json') as { name: string; version: string; devDependencies: Record<string, string> };
const STEP_TIMEOUT_MS = 180_000;

const PEERS = ['@prisma/client', '@prisma/adapter-pg', 'prisma', 'typescript', '@types/node'].map(
  (name) => `${name}@${pkg.devDependencies[name]}`,
);

let work: string;
let tarball: string;

/** The environment of a user's shell: nothing from the harness, no engine override, no telemetry. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key === 'DATABASE_URL' || key === 'DIRECT_URL' || key.startsWith('DB_') || key.startsWith('PRISMA_')) continue;
    if (key.startsWith('npm_')) continue; // jest may run under `npm test`: not the user's npm settings
    env[key] = value;
  }
  // The prisma CLI's update check would try a non-loopback host.
  return { ...env, CHECKPOINT_DISABLE: '1', PRISMA_HIDE_UPDATE_MESSAGE: '1', ...extra };
}

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = cleanEnv()): SpawnSyncReturns<string> {
  const result = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: STEP_TIMEOUT_MS });
  if (result.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) exited ${result.status ?? result.signal}\n${result.stdout}\n${result.stderr}`);
  }
  return result;
}

const npm = (args: string[], cwd: string, env?: NodeJS.ProcessEnv) => run('npm', args, cwd, env);
// Both apps sit in `work`, whose node_modules they resolve (one install serves both).
const bin = (app: string, name: string, args: string[], env?: NodeJS.ProcessEnv) =>
  run(process.execPath, [path.join(work, 'node_modules', '.bin', name), ...args], app, env);

function write(dir: string, files: Record<string, string>): void {
  for (const [file, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    writeFileSync(path.join(dir, file), content);
  }
}

beforeAll(() => {
  work = mkdtempSync(path.join(os.tmpdir(), 'package-test-'));
  // `npm test` has built dist/ already; --ignore-scripts so packing does not rebuild it
  // under other test files running the bin scripts at the same time.
  if (!existsSync(path.join(ROOT, 'dist', 'index.js'))) throw new Error('build first: npm run build');
  npm(['pack', '--ignore-scripts', '--pack-destination', work], ROOT);
  tarball = path.join(work, `${pkg.name}-${pkg.version}.tgz`);
  // The README's Install line (exact tested versions, from the npm cache when it has them).
  write(work, { 'package.json': JSON.stringify({ name: 'apps', version: '1.0.0', private: true }, null, 2) });
  npm(['install', '--prefer-offline', '--no-audit', '--no-fund', tarball, ...PEERS], work);
}, 2 * STEP_TIMEOUT_MS);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the tarball holds the library, the bin scripts and the user docs only', () => {
  const listing = npm(['pack', '--ignore-scripts', '--dry-run', '--json'], ROOT);
  const files = (JSON.parse(listing.stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
  expect(files.filter((f) => !f.startsWith('dist/')).sort()).toEqual(
    ['README.md', 'bin/prisma-datalayer-schema-engine.js', 'bin/prisma-datalayer.js', 'docs/neon-notes.md', 'docs/schema-engine.md', 'package.json'].sort(),
  );
  // Nothing of the repository's own schema, client, demo or tests.
  expect(files.filter((f) => /generated|demo|prisma\/|test|\.tsbuildinfo/.test(f))).toEqual([]);
  expect(files).toContain('dist/index.js');
  expect(files).toContain('dist/index.d.ts');
  expect(files).toContain('dist/engine/register.js');
});

const SCHEMA = (extra: string): string => `generator client {
  provider = "prisma-client"
  output   = "../src/generated/prisma"${extra}
}

datasource db {
  provider = "postgresql"
}

model Note {
  id   Int    @id @default(autoincrement())
  text String
}
`;

// The README's offline setup: one line on top of an ordinary prisma.config.ts.
const CONFIG = `import 'prisma-datalayer/schema-engine/register';
import { defineConfig } from 'prisma/config';

export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: { url: process.env.DIRECT_URL ?? process.env.DATABASE_URL ?? '' },
});
`;

// The README's Quick start db.ts, and a main that runs one unit of work.
const DB_TS = `import { createDb } from 'prisma-datalayer';
import { PrismaClient } from './generated/prisma/client.ts';

export const db = createDb({
  PrismaClient,
  pool: { size: 5, maxOverflow: 5 },
  applicationName: 'billing-api',
});
`;

const MAIN_TS = `import { DatabaseTransactionError } from 'prisma-datalayer';
import { db } from './db.ts';

async function main(): Promise<void> {
  const note = await db.transaction(async (tx) => tx.note.create({ data: { text: 'hello' } }));
  const rolledBack = await db
    .transaction(async (tx) => {
      await tx.note.create({ data: { text: 'never' } });
      throw new Error('changed my mind');
    })
    .catch((err: unknown) => err instanceof Error && !(err instanceof DatabaseTransactionError && err.outcome === 'unknown'));
  const texts = (await db.note.findMany({ orderBy: { id: 'asc' } })).map((n) => n.text);
  console.log(JSON.stringify({ id: note.id, rolledBack, texts, app: db.config.applicationName }));
  await db.close();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
`;

const TSCONFIG = JSON.stringify(
  {
    compilerOptions: {
      target: 'ES2022',
      module: 'nodenext',
      moduleResolution: 'nodenext',
      strict: true,
      rewriteRelativeImportExtensions: true,
      skipLibCheck: true,
      types: ['node'],
      rootDir: 'src',
      outDir: 'dist',
    },
    include: ['src'],
  },
  null,
  2,
);


describe.each([
  { variant: 'esm', type: 'module', generator: '' },
  { variant: 'cjs', type: 'commonjs', generator: '\n  moduleFormat = "cjs"' },
])('a fresh $variant application', ({ variant, type, generator }) => {
  let app: string;
  let devDb: TestDatabase;
  let prodDb: TestDatabase;

  beforeAll(async () => {
    [devDb, prodDb] = await Promise.all([
      createTestDatabase({ migrated: false, prefix: `pkg${variant}dev` }),
      createTestDatabase({ migrated: false, prefix: `pkg${variant}prod` }),
    ]);
    app = path.join(work, variant);
    write(app, {
      'package.json': JSON.stringify({ name: `app-${variant}`, version: '1.0.0', private: true, type }, null, 2),
      'prisma/schema.prisma': SCHEMA(generator),
      'prisma.config.ts': CONFIG,
      'src/db.ts': DB_TS,
      'src/main.ts': MAIN_TS,
      'tsconfig.json': TSCONFIG,
    });
  }, STEP_TIMEOUT_MS);

  afterAll(async () => {
    await Promise.all([devDb?.drop(), prodDb?.drop()]);
  });

  test('prisma validate, generate, migrate dev and migrate deploy run offline; the Quick start compiles and queries', () => {
    expect(bin(app, 'prisma', ['-v']).stdout).toMatch(/Schema Engine\s+: schema-engine-cli \w+ \(at .*prisma-datalayer-schema-engine\.js, resolved by PRISMA_SCHEMA_ENGINE_BINARY\)/);
    expect(bin(app, 'prisma', ['validate']).stdout).toMatch(/is valid/);
    bin(app, 'prisma', ['format']);
    bin(app, 'prisma', ['generate']);
    expect(existsSync(path.join(app, 'src', 'generated', 'prisma', 'client.ts'))).toBe(true);

    // migrate dev on the development database creates the first migration and applies it.
    bin(app, 'prisma', ['migrate', 'dev', '--name', 'init'], cleanEnv({ DATABASE_URL: devDb.appUrl }));
    const migrations = readdirSync(path.join(app, 'prisma', 'migrations')).filter((name) => name.endsWith('_init'));
    expect(migrations).toHaveLength(1);

    // migrate deploy on "production", then this package's own status command agrees.
    const deploy = bin(app, 'prisma', ['migrate', 'deploy'], cleanEnv({ DATABASE_URL: prodDb.appUrl }));
    expect(deploy.stdout).toContain(migrations[0]);
    const status = bin(app, 'prisma-datalayer', ['migrate', 'status', '--json'], cleanEnv({ DATABASE_URL: prodDb.appUrl }));
    expect(JSON.parse(status.stdout)).toMatchObject({ upToDate: true, applied: migrations });

    run(process.execPath, [path.join(work, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', '.'], app);
    const main = run(process.execPath, [path.join('dist', 'main.js')], app, cleanEnv({ DATABASE_URL: prodDb.appUrl }));
    expect(JSON.parse(main.stdout.trim())).toEqual({ id: 1, rolledBack: true, texts: ['hello'], app: 'billing-api' });

    // doctor audits the Db the app's module exports (its createDb options included), here
    // with the target in DB_* variables only: no DATABASE_URL anywhere in the report.
    const dbVars = dbVarsFrom(prodDb.appUrl);
    const doctor = bin(app, 'prisma-datalayer', ['doctor', '--module', './dist/db.js', '--json'], cleanEnv(dbVars));
    expect(doctor.stdout).not.toContain('DATABASE_URL');
    expect(doctor.stdout).not.toContain(dbVars.DB_PASSWORD);
    const report = JSON.parse(doctor.stdout) as {
      ok: boolean;
      facts: { applicationName: { configured: string; seenByServer: string }; capacity: { poolMaxPerInstance: number } };
      findings: { check: string; summary: string }[];
    };
    expect(report.ok).toBe(true);
    // 'billing-api' and 5 + 5 come from the module's createDb options, not the environment.
    expect(report.facts.applicationName).toEqual({ configured: 'billing-api', seenByServer: 'billing-api' });
    expect(report.facts.capacity.poolMaxPerInstance).toBe(10);
    expect(report.findings.find((f) => f.check === 'config')?.summary).toMatch(/target from DB_HOST.*the Db exported by \.\/dist\/db\.js#db/);
  }, 6 * STEP_TIMEOUT_MS);
});
