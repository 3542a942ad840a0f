// `db.verify()` (issue 17) against real servers: a healthy setup passes and reports what
// it checked; a stopped server, a server without SSL under sslmode=require, a pending
// migration, a too-old server and a fleet too large for max_connections each fail, all
// at once in one VerificationError carrying the advice `doctor` gives for the same problem.
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { DoctorReport } from '../src/cli/index';
import { PrismaClient } from '../src/generated/prisma/client';
import { ConfigError, createDb, VerificationError, type Db } from '../src/index';
import { rejectionOf } from './support/async';
import { runCli } from './cli/run';
import { buildExamples, type Build } from './support/build';
import { startCluster, type Cluster } from './support/cluster';
import { createTestDatabase, type TestDatabase } from './support/db';
import { startTcpProxy } from './support/tcp-proxy';

const MIGRATIONS = path.resolve(__dirname, '..', 'prisma', 'migrations');
const EXTRA = '20990101000000_verify_extra';

let testDb: TestDatabase;
let plain: Cluster;
let withExtra: string;
const dbs: Array<Db<PrismaClient>> = [];

beforeAll(async () => {
  [testDb, plain] = await Promise.all([createTestDatabase({ prefix: 'verify' }), startCluster({ name: 'verify-plain', ssl: false })]);
  // The committed migrations plus one the database has never seen.
  withExtra = mkdtempSync(path.join(os.tmpdir(), 'verify-migrations-'));
  cpSync(MIGRATIONS, withExtra, { recursive: true });
  mkdirSync(path.join(withExtra, EXTRA));
  writeFileSync(path.join(withExtra, EXTRA, 'migration.sql'), 'CREATE TABLE verify_extra (id integer PRIMARY KEY);\n');
}, 120_000);

afterAll(async () => {
  await Promise.all(dbs.splice(0).map((db) => db.close()));
  await Promise.all([testDb?.drop(), plain?.destroy()]);
  if (withExtra) rmSync(withExtra, { recursive: true, force: true });
});

/** A Db configured from an environment, as an application (and doctor) would load it. */
function dbFromEnv(env: Record<string, string>): Db<PrismaClient> {
  const db = createDb({ PrismaClient, env });
  dbs.push(db);
  return db;
}

async function verificationError(p: Promise<unknown>): Promise<VerificationError> {
  const err = await rejectionOf(p);
  expect(err).toBeInstanceOf(VerificationError);
  return err as VerificationError;
}

/** doctor's findings for the same environment. */
async function doctorFindings(env: Record<string, string>): Promise<DoctorReport['findings']> {
  const run = await runCli(['doctor', '--json'], env);
  return (JSON.parse(run.out) as DoctorReport).findings;
}

describe('db.verify()', () => {
  it('passes on a healthy setup and reports what it checked', async () => {
    const db = dbFromEnv({ DATABASE_URL: testDb.appUrl, DB_APPLICATION_NAME: 'verify-ok' });
    const report = await db.verify({ migrations: { migrationsDir: MIGRATIONS }, instances: 2 });
    expect(report.findings.filter((f) => f.status === 'fail')).toEqual([]);
    const checks = new Map(report.findings.map((f) => [f.check, f.status]));
    expect(Object.fromEntries(checks)).toMatchObject({ 'server-version': 'ok', ssl: 'ok', 'application-name': 'ok', capacity: 'ok', migrations: 'ok' });
    expect(report.facts).toMatchObject({ serverVersion: expect.stringMatching(/^15\./), ssl: { active: true }, applicationName: { configured: 'verify-ok', seenByServer: 'verify-ok' } });
    expect(report.migrations).toMatchObject({ pending: [], failed: [], upToDate: true });
    expect(report.migrations!.applied.length).toBeGreaterThan(0);
    // It warmed the pool rather than opening a side connection.
    expect(db.stats().pool.open).toBeGreaterThanOrEqual(1);
    expect(JSON.stringify(report)).not.toContain(testDb.appPassword);
  });

  it('a non-ASCII application name, which the server shows with its bytes replaced, passes', async () => {
    const db = dbFromEnv({ DATABASE_URL: testDb.appUrl, DB_APPLICATION_NAME: 'verify-café' });
    const report = await db.verify();
    // PostgreSQL 15 keeps printable ASCII only: 'é' (two bytes) is shown as '??'. It was reported as replaced by a proxy.
    expect(report.facts.applicationName).toEqual({ configured: 'verify-café', seenByServer: 'verify-caf??' });
    expect(report.findings.find((f) => f.check === 'application-name')).toMatchObject({ status: 'ok' });
  });

  it('a stopped server: one connection failure, with the advice doctor gives, within the connect timeout', async () => {
    const env = { DATABASE_URL: plain.url('postgres', { sslmode: 'disable' }), DB_APPLICATION_NAME: 'verify-stopped', DB_CONNECT_TIMEOUT: '3000' };
    await plain.stop();
    try {
      const db = dbFromEnv(env);
      const started = performance.now();
      const err = await verificationError(db.verify({ migrations: { migrationsDir: MIGRATIONS } }));
      expect(performance.now() - started).toBeLessThan(20_000);
      expect(err.kind).toBe('verification');
      expect(err.failures.map((f) => f.check)).toEqual(['connection']);
      expect(err.failures[0]!.advice).toMatch(/reachable/);
      const doctor = (await doctorFindings(env)).find((f) => f.check === 'connection');
      expect(doctor?.status).toBe('fail');
      expect(err.failures[0]!.advice).toBe(doctor!.advice);
      expect(err.message).toContain(doctor!.advice!);
      expect(err.message).not.toContain(plain.password);
    } finally {
      await plain.start();
    }
  }, 60_000);

  it('statement timeout 0 and a server gone silent: verify fails at its deadline, the frozen connection is destroyed, not left holding a pool slot', async () => {
    const proxy = await startTcpProxy({ host: testDb.host, port: testDb.port });
    try {
      const db = createDb({
        PrismaClient,
        url: testDb.urlWith({ sslmode: 'disable' }, { user: testDb.appUser, port: proxy.port }),
        applicationName: 'verify-blackhole',
        timeouts: { statementMs: 0, connectMs: 2_000 },
        pool: { size: 1, maxOverflow: 0, timeoutMs: 5_000 },
      });
      dbs.push(db);
      await db.user.count();
      proxy.blackholeExisting();
      const started = performance.now();
      const err = await verificationError(db.verify());
      expect(performance.now() - started).toBeLessThan(30_000);
      expect(err.failures.map((f) => f.check)).toEqual(['connection']);
      // The silent connection was destroyed: no slot stays busy, and the next statement gets a new connection.
      expect(db.stats().pool.inUse).toBe(0);
      await expect(db.user.count()).resolves.toEqual(expect.any(Number));
    } finally {
      await proxy.close();
    }
  }, 60_000);

  it('the migrations check against a connection gone silent fails within the facts bound, not the engine\'s 600 s', async () => {
    const proxy = await startTcpProxy({ host: testDb.host, port: testDb.port });
    try {
      const db = createDb({
        PrismaClient,
        url: testDb.urlWith({ sslmode: 'disable' }, { user: testDb.appUser, port: proxy.port }),
        applicationName: 'verify-silent-status',
        timeouts: { connectMs: 2_000, statementMs: 3_000 },
      });
      dbs.push(db);
      // The status check's read of the migrations table goes out and nothing comes back.
      proxy.silenceOnStatement(/_prisma_migrations/);
      const started = performance.now();
      const outcome = await Promise.race([rejectionOf(db.verify({ migrations: { migrationsDir: MIGRATIONS } })), new Promise<'hung'>((r) => setTimeout(() => r('hung'), 45_000).unref())]);
      expect(outcome).not.toBe('hung');
      expect(performance.now() - started).toBeLessThan(40_000);
      expect(proxy.fired).toEqual([expect.objectContaining({ mode: 'silent' })]);
      expect(outcome).toBeInstanceOf(VerificationError);
      expect((outcome as VerificationError).failures).toEqual([{ check: 'migrations', summary: expect.stringMatching(/could not read the migration status/), advice: expect.any(String) }]);
    } finally {
      await proxy.close();
    }
  }, 90_000);

  it('a server without SSL under sslmode=require fails, with doctor\'s SSL advice', async () => {
    const env = { DATABASE_URL: plain.url('postgres', { sslmode: 'require' }), DB_APPLICATION_NAME: 'verify-nossl' };
    const db = dbFromEnv(env);
    const err = await verificationError(db.verify());
    expect(err.failures).toHaveLength(1);
    expect(err.failures[0]!.summary).toMatch(/SSL/);
    expect(err.failures[0]!.advice).toMatch(/sslmode=require/);
    const doctor = (await doctorFindings(env)).find((f) => f.status === 'fail');
    expect(err.failures[0]!.advice).toBe(doctor?.advice);
  });

  it('the same server under sslmode=disable passes: plaintext is what was configured (a warning only)', async () => {
    const db = dbFromEnv({ DATABASE_URL: plain.url('postgres', { sslmode: 'disable' }), DB_APPLICATION_NAME: 'verify-disable' });
    const report = await db.verify();
    expect(report.findings.find((f) => f.check === 'ssl')).toMatchObject({ status: 'warn' });
    expect(report.facts.ssl).toMatchObject({ active: false, mode: 'disable' });
  });

  it('a pending migration fails, named, with migrate status\'s advice', async () => {
    const db = dbFromEnv({ DATABASE_URL: testDb.appUrl, DB_APPLICATION_NAME: 'verify-pending' });
    const err = await verificationError(db.verify({ migrations: { migrationsDir: withExtra } }));
    expect(err.failures).toEqual([{ check: 'migrations', summary: expect.stringContaining(EXTRA), advice: 'run `prisma-datalayer migrate deploy`' }]);
    // Nothing was applied by checking.
    expect(await testDb.query("SELECT to_regclass('verify_extra') AS t")).toEqual([{ t: null }]);
  }, 60_000);

  it("the migrations check connects with DIRECT_URL's own SSL settings: its sslrootcert naming another CA is refused", async () => {
    const db = dbFromEnv({
      DATABASE_URL: testDb.appUrl,
      DB_APPLICATION_NAME: 'verify-direct-ca',
      DIRECT_URL: testDb.urlWith({ sslmode: 'verify-full', sslrootcert: testDb.wrongCaFile }, { user: testDb.appUser }),
    });
    const err = await verificationError(db.verify({ migrations: { migrationsDir: MIGRATIONS } }));
    expect(err.failures).toEqual([{ check: 'migrations', summary: expect.stringMatching(/certificate|self[- ]signed/i), advice: expect.any(String) }]);
  }, 60_000);

  it('lists every failed check at once: server version, capacity and a pending migration', async () => {
    const env = { DATABASE_URL: testDb.appUrl, DB_APPLICATION_NAME: 'verify-many' };
    const db = dbFromEnv(env);
    const err = await verificationError(db.verify({ minServerVersion: 99, instances: 10_000, migrations: { migrationsDir: withExtra } }));
    expect(err.failures.map((f) => f.check)).toEqual(['server-version', 'capacity', 'migrations']);
    for (const f of err.failures) {
      expect(err.message).toContain(f.summary);
      expect(err.message).toContain(f.advice!);
    }
    expect(err.failures[0]!.summary).toMatch(/older than the required 99/);
    // The capacity advice is doctor's, word for word, for the same instance count.
    const run = await runCli(['doctor', '--json', '--instances', '10000'], env);
    const doctor = (JSON.parse(run.out) as DoctorReport).findings.find((f) => f.check === 'capacity');
    expect(doctor?.status).toBe('fail');
    expect(err.failures[1]!.advice).toBe(doctor!.advice);
  }, 60_000);

  it('refuses invalid options before connecting', async () => {
    const db = dbFromEnv({ DATABASE_URL: plain.url('postgres', { sslmode: 'disable' }) });
    for (const bad of [{ instances: 0 }, { minServerVersion: Number.NaN }, { migrations: 'yes' }] as never[]) {
      const err = await rejectionOf(db.verify(bad));
      expect(err).toBeInstanceOf(ConfigError);
    }
    expect(db.stats().counters.connectionsOpened).toBe(0);
  });

  it('refuses an option it does not have (a misspelling), named, before connecting: not a check silently skipped', async () => {
    const db = dbFromEnv({ DATABASE_URL: plain.url('postgres', { sslmode: 'disable' }) });
    // Before: each passed, without the capacity, version or migrations-directory check asked for.
    const cases: Array<[unknown, string]> = [
      [{ instance: 10_000 }, 'verify option instance'],
      [{ minServerVerison: 99 }, 'verify option minServerVerison'],
      [{ migrations: { migrationDir: 'elsewhere/migrations' } }, 'verify migrations.migrationDir'],
    ];
    for (const [bad, setting] of cases) {
      const err = await rejectionOf(db.verify(bad as never));
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues).toEqual([{ setting, problem: expect.stringContaining('is not an option') }]);
    }
    expect(db.stats().counters.connectionsOpened).toBe(0);
  });

  it('after close: DatabaseClosedError, nothing checked', async () => {
    const db = dbFromEnv({ DATABASE_URL: testDb.appUrl });
    await db.close();
    const err = await rejectionOf(db.verify());
    expect((err as Error).name).toBe('DatabaseClosedError');
  });
});

// ---------------------------------------------------------------------------------
// Cold start: an application that only queries never loads what db.verify() needs
// (doctor's checks, the migration code, the schema engine's wrapper). A child process on
// the compiled sources (Jest's module registry is its own), then require.cache.

describe('loading', () => {
  let build: Build;
  beforeAll(() => void (build = buildExamples()), 120_000);
  afterAll(() => build?.remove());

  const verifyCode = /[\\/]src[\\/](verify|audit|migrate|engine[\\/][^\\/]+)\.js$/;
  function loadedVerifyCode(script: string): Promise<string[]> {
    const program = `
      const { createDb } = require('./src/index.js');
      const { PrismaClient } = require('./src/generated/prisma/client.js');
      (async () => {
        const db = createDb({ PrismaClient, url: process.env.DATABASE_URL });
        ${script}
        await db.close();
        process.stdout.write(JSON.stringify(Object.keys(require.cache)));
      })().catch((err) => { console.error(err); process.exit(1); });`;
    return new Promise((resolve, reject) => {
      execFile(process.execPath, ['-e', program], { cwd: build.dir, env: { ...process.env, DATABASE_URL: testDb.url }, timeout: 30_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${err.message}\n${stderr}`));
        else resolve((JSON.parse(stdout) as string[]).filter((k) => verifyCode.test(k)).map((k) => path.basename(k)));
      });
    });
  }

  it('import, createDb, statements and a unit of work load none of it', async () => {
    expect(await loadedVerifyCode(`await db.user.count(); await db.transaction((tx) => tx.account.count());`)).toEqual([]);
  });

  it('db.verify() loads it on its first call (control)', async () => {
    const loaded = await loadedVerifyCode(`await db.verify({ migrations: false }).catch(() => undefined);`);
    expect(loaded).toEqual(expect.arrayContaining(['verify.js', 'audit.js', 'migrate.js']));
  });
});
