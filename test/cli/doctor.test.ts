// `prisma-datalayer doctor` against real servers: a correct setup passes; a plaintext
// server with a pool too large for its max_connections fails, naming each problem.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { DoctorReport } from '../../src/cli/index';
import { startCluster, type Cluster } from '../support/cluster';
import { createDb } from '../../src/index';
import { PrismaClient } from '../../src/generated/prisma/client';
import { adminQuery, createTestDatabase, dbVarsFrom, testServer, type TestDatabase } from '../support/db';
import { startPgBouncer } from '../support/pgbouncer';
import { eventually, sleep } from '../support/async';
import { startTcpProxy } from '../support/tcp-proxy';
import { runCli } from './run';

let testDb: TestDatabase;
let small: Cluster;
let maxConnections: number;
beforeAll(async () => {
  const [row] = await adminQuery<{ max_connections: string }>('SHOW max_connections');
  maxConnections = Number(row!.max_connections);
  [testDb, small] = await Promise.all([
    createTestDatabase(),
    // No SSL at all, and a max_connections a default-sized fleet cannot fit into.
    startCluster({ name: 'doctor', ssl: false, maxConnections: 20 }),
  ]);
}, 120_000);
afterAll(async () => {
  await Promise.all([testDb?.drop(), small?.destroy()]);
});

const goodEnv = (): Record<string, string> => ({
  DATABASE_URL: testDb.appUrl,
  DB_APPLICATION_NAME: 'doctor-test',
});

function finding(report: DoctorReport, check: string): DoctorReport['findings'][number] {
  const found = report.findings.filter((f) => f.check === check && f.status !== 'info');
  expect(found).toHaveLength(1);
  return found[0]!;
}

describe('doctor', () => {
  it('exits 0 on a correct setup and reports what the server sees', async () => {
    const run = await runCli(['doctor', '--json'], goodEnv());
    expect(run.err).toBe('');
    const report = JSON.parse(run.out) as DoctorReport;
    expect(report.findings.filter((f) => f.status === 'fail')).toEqual([]);
    expect(run.code).toBe(0);
    expect(report.ok).toBe(true);
    expect(finding(report, 'ssl').status).toBe('ok');
    expect(report.facts.ssl).toMatchObject({ active: true, version: expect.stringMatching(/^TLS/) });
    expect(report.facts.applicationName).toEqual({ configured: 'doctor-test', seenByServer: 'doctor-test' });
    expect(report.facts.capacity).toMatchObject({ poolMaxPerInstance: 15, instances: 1, total: 15, maxConnections, superuserReserved: 3, available: maxConnections - 3 });
    expect(finding(report, 'capacity').status).toBe('ok');
    // The timeouts the library sets at connection start are the ones in force.
    expect(report.facts.timeouts?.server).toMatchObject({ statement_timeout: '30s', lock_timeout: '10s', idle_in_transaction_session_timeout: '1min' });
    expect(finding(report, 'timeouts').status).toBe('ok');
    expect(report.facts.serverVersion).toMatch(/^15\./);
    expect(report.facts.urls).toMatchObject({ appThroughPooler: false, direct: null, migrationsUse: 'DATABASE_URL' });
    expect(run.out).not.toContain(testDb.appPassword);
  });

  it('prints a readable report', async () => {
    const run = await runCli(['doctor'], goodEnv());
    expect(run.code).toBe(0);
    expect(run.out).toMatch(/^prisma-datalayer doctor: pg pooled postgresql:\/\/127\.0\.0\.1:\d+\//);
    expect(run.out).toMatch(/ok {4}ssl +SSL negotiated \(TLS/);
    expect(run.out).toMatch(new RegExp(`ok {4}capacity +15 per instance .* fits within max_connections ${maxConnections} `));
    expect(run.out).toMatch(/\nOK \(\d+ warnings?\)\n$/);
    expect(run.out).not.toContain(testDb.appPassword);
  });

  it('exits non-zero naming each problem: no SSL, pool too large for max_connections', async () => {
    const env = { DATABASE_URL: small.url('postgres', undefined, { user: small.appUser }), DB_POOL_SIZE: '15', DB_APPLICATION_NAME: 'doctor-bad' };
    const run = await runCli(['doctor', '--json', '--instances', '3'], env);
    expect(run.code).toBe(1);
    const report = JSON.parse(run.out) as DoctorReport;
    expect(report.ok).toBe(false);
    const ssl = finding(report, 'ssl');
    expect(ssl.status).toBe('fail');
    expect(ssl.summary).toMatch(/SSL was not negotiated/);
    expect(ssl.advice).toMatch(/verify-full/);
    const capacity = finding(report, 'capacity');
    expect(capacity.status).toBe('fail');
    // (15 + 10 overflow) × 3 = 75 against 20 − 3 reserved.
    expect(capacity.summary).toMatch(/25 per instance .* × 3 instances = 75 > max_connections 20 − superuser_reserved_connections 3 = 17/);
    expect(capacity.advice).toMatch(/≤ 5 per instance/);
    expect(report.failures).toBe(2);

    // The same, readable, with the instances from the environment.
    const text = await runCli(['doctor'], { ...env, DB_EXPECTED_INSTANCES: '3' });
    expect(text.code).toBe(1);
    expect(text.out).toMatch(/FAIL {2}ssl +SSL was not negotiated/);
    expect(text.out).toMatch(/FAIL {2}capacity +pool too large/);
    expect(text.out).toMatch(/\n2 problems, \d+ warnings?\n$/);
    expect(text.out).not.toContain(small.appPassword);

    // One instance of a small pool fits: the capacity problem goes away, the SSL one stays.
    const one = JSON.parse((await runCli(['doctor', '--json'], { ...env, DB_POOL_SIZE: '2', DB_MAX_OVERFLOW: '0' })).out) as DoctorReport;
    expect(finding(one, 'capacity').status).toBe('ok');
    expect(finding(one, 'ssl').status).toBe('fail');
  });

  it('fails when migrations would go through a transaction pooler', async () => {
    const run = await runCli(['doctor', '--json'], { ...goodEnv(), DB_POOLER: 'true' });
    const report = JSON.parse(run.out) as DoctorReport;
    expect(run.code).toBe(1);
    expect(finding(report, 'urls')).toMatchObject({ status: 'fail', summary: expect.stringMatching(/DIRECT_URL is not set/) });
    const fixed = await runCli(['doctor', '--json'], { ...goodEnv(), DB_POOLER: 'true', DIRECT_URL: testDb.appUrl });
    expect(finding(JSON.parse(fixed.out) as DoctorReport, 'urls').status).toBe('ok');
  });

  it('behind a pooler, asks for role defaults when statements outside units would run unbounded', async () => {
    const env = { ...goodEnv(), DB_POOLER: 'true', DIRECT_URL: testDb.appUrl };
    const before = JSON.parse((await runCli(['doctor', '--json'], env)).out) as DoctorReport;
    const warning = finding(before, 'timeouts');
    expect(warning.status).toBe('warn');
    expect(warning.advice).toContain(`ALTER ROLE "${testDb.appUser}" SET statement_timeout = '30000ms';`);
    expect(warning.advice).toContain('lock_timeout');
    // Scoped to this test's database so the shared server's other databases keep theirs.
    for (const [name, value] of [['statement_timeout', '30s'], ['lock_timeout', '10s'], ['idle_in_transaction_session_timeout', '1min']]) {
      await adminQuery(`ALTER ROLE ${testDb.appUser} IN DATABASE ${testDb.name} SET ${name} = '${value}'`);
    }
    const after = JSON.parse((await runCli(['doctor', '--json'], env)).out) as DoctorReport;
    expect(after.findings.filter((f) => f.check === 'timeouts' && f.status !== 'info')).toEqual([]);
  });

  it('reports an unreachable server and invalid configuration without secrets', async () => {
    const down = await runCli(['doctor'], { DATABASE_URL: 'postgresql://app:Sup3r-Secret@127.0.0.1:1/db', DB_CONNECT_TIMEOUT: '2' });
    expect(down.code).toBe(1);
    expect(down.out).toMatch(/FAIL {2}connection +could not query/);
    expect(down.out).toMatch(/reachable/);
    expect(down.out).not.toContain('Sup3r-Secret');

    const bad = await runCli(['doctor'], { DATABASE_URL: 'postgresql://app:Sup3r-Secret@db.example.com/db', DB_POOL_SIZE: 'lots' });
    expect(bad.code).toBe(1);
    expect(bad.out).toMatch(/FAIL {2}config +DB_POOL_SIZE: .*"lots"/);
    expect(bad.out).not.toContain('Sup3r-Secret');
  });

  it('statement timeout 0 and a server that goes silent once connected: doctor reports it within the connect timeout, it does not hang', async () => {
    const proxy = await startTcpProxy({ host: testDb.host, port: testDb.port });
    try {
      // The connection is made; the facts statement is swallowed, and nothing comes back.
      proxy.silenceOnStatement(/pg_stat_ssl/);
      const env = {
        DATABASE_URL: testDb.urlWith({ sslmode: 'disable' }, { user: testDb.appUser, port: proxy.port }),
        DB_APPLICATION_NAME: 'doctor-silent',
        DB_STATEMENT_TIMEOUT: '0',
        DB_CONNECT_TIMEOUT: '2',
      };
      const started = performance.now();
      const gaveUp = new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 40_000).unref());
      const run = await Promise.race([runCli(['doctor', '--json'], env), gaveUp]);
      expect(run).not.toBe('hung');
      if (run === 'hung') return;
      expect(performance.now() - started).toBeLessThan(30_000);
      expect(proxy.fired).toEqual([expect.objectContaining({ kind: 'statement', mode: 'silent' })]);
      expect(run.code).toBe(1);
      const report = JSON.parse(run.out) as DoctorReport;
      expect(finding(report, 'connection')).toMatchObject({ status: 'fail', advice: expect.stringMatching(/reachable/) });
      // Its socket was destroyed, not left open behind the report.
      expect(await eventually(() => proxy.open() === 0)).toBe(true);
    } finally {
      await proxy.close();
    }
  }, 60_000);

  it('names the real source of each value: with only DB_* variables it never mentions DATABASE_URL', async () => {
    const env = { ...dbVarsFrom(testDb.appUrl), DB_APPLICATION_NAME: 'doctor-db-vars' };
    for (const args of [['doctor', '--json'], ['doctor']]) {
      const run = await runCli(args, env);
      expect(run.err).toBe('');
      expect(run.code).toBe(0);
      expect(run.out).not.toContain('DATABASE_URL');
      expect(run.out).toContain('DB_HOST');
      expect(run.out).not.toContain(testDb.appPassword);
    }
    const report = JSON.parse((await runCli(['doctor', '--json'], env)).out) as DoctorReport;
    expect(finding(report, 'config').summary).toMatch(/target from DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME, sslmode from DB_SSLMODE/);
    expect(report.facts.urls?.migrationsUse).toBe('DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME');
  });

  it('SSL advice matches what happened: disable never asked, prefer fell back', async () => {
    // sslmode=disable against a server that has SSL: not a fallback, a choice.
    const off = JSON.parse((await runCli(['doctor', '--json'], { ...goodEnv(), DB_SSLMODE: 'disable' })).out) as DoctorReport;
    const offSsl = finding(off, 'ssl');
    expect(offSsl.status).toBe('fail');
    expect(offSsl.summary).toMatch(/sslmode=disable from DB_SSLMODE/);
    expect(offSsl.advice).toMatch(/turned SSL off: the server was never asked for it/);
    expect(offSsl.advice).not.toMatch(/fell back/);

    // sslmode=prefer against a server without SSL: that one is a fallback.
    const env = { DATABASE_URL: small.url('postgres', undefined, { user: small.appUser }), DB_SSLMODE: 'prefer', DB_POOL_SIZE: '2', DB_MAX_OVERFLOW: '0' };
    const fell = finding(JSON.parse((await runCli(['doctor', '--json'], env)).out) as DoctorReport, 'ssl');
    expect(fell.status).toBe('fail');
    expect(fell.advice).toMatch(/asked for SSL and the server refused it, so the connection fell back to plaintext/);
  });

  it('over a unix socket, SSL is not a finding: there is no network (and sslmode=require still connects)', async () => {
    // Before: require could not connect at all, and prefer was reported as a plaintext failure.
    const env = { ...dbVarsFrom(testDb.appUrl), DB_HOST: testServer().socketDir, DB_APPLICATION_NAME: 'doctor-test' };
    for (const mode of ['prefer', 'require']) {
      const run = await runCli(['doctor', '--json'], { ...env, DB_SSLMODE: mode });
      const report = JSON.parse(run.out) as DoctorReport;
      expect(finding(report, 'ssl')).toMatchObject({ status: 'ok', summary: expect.stringContaining('unix socket') });
      expect(report.facts.ssl).toMatchObject({ active: false });
    }
  });

  it("behind PgBouncer, judges SSL by the application's connection to the pooler, not the pooler's link to the server", async () => {
    // TLS from the application to PgBouncer (verify-full), plaintext from PgBouncer to the server.
    const bouncer = await startPgBouncer(testServer().info(), { name: 'doctor-ssl', extraConf: { server_tls_sslmode: 'disable' } });
    try {
      const url = (sslmode: string): string => bouncer.url(testDb.name, { pgbouncer: 'true', sslmode, sslrootcert: testDb.caFile }, { user: testDb.appUser, password: testDb.appPassword });
      const env = { DATABASE_URL: url('verify-full'), DIRECT_URL: testDb.appUrl, DB_APPLICATION_NAME: 'doctor-test' };
      const run = await runCli(['doctor', '--json'], env);
      const ssl = finding(JSON.parse(run.out) as DoctorReport, 'ssl');
      expect(ssl).toMatchObject({ status: 'ok', summary: expect.stringMatching(/^SSL to the pooler \(sslmode=verify-full refuses plaintext\); the pooler's own link to the server is plaintext/) });
      expect(run.code).toBe(0);
      // db.verify() shares the check: a verify-full application behind the pooler starts.
      const db = createDb({ PrismaClient, url: url('verify-full'), applicationName: 'doctor-test' });
      try {
        await expect(db.verify()).resolves.toMatchObject({ facts: { ssl: { active: true, mode: 'verify-full', serverLink: { active: false } } } });
      } finally {
        await db.close();
      }
      // prefer may have fallen back: the server cannot say, so doctor says it cannot tell.
      const prefer = finding(JSON.parse((await runCli(['doctor', '--json'], { ...env, DATABASE_URL: url('prefer') })).out) as DoctorReport, 'ssl');
      expect(prefer).toMatchObject({ status: 'warn', summary: expect.stringMatching(/^cannot tell whether the connection to the pooler uses SSL: sslmode=prefer/) });
    } finally {
      await bouncer.stop();
    }
  });

  it('rejects wrong usage with exit code 2', async () => {
    expect((await runCli(['doctor', '--instances', '0'], goodEnv())).code).toBe(2);
    expect((await runCli(['doctor', '--bogus'], goodEnv())).code).toBe(2);
    expect((await runCli(['frobnicate'], goodEnv())).code).toBe(2);
    expect((await runCli([], goodEnv())).code).toBe(2);
    expect((await runCli(['doctor', '--export', 'db'], goodEnv())).code).toBe(2);
    const help = await runCli(['help'], {});
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/Usage: prisma-datalayer/);
  });

  it('--module whose top-level await never settles: exit code 1 within the bound, saying what held it', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'doctor-module-'));
    try {
      writeFileSync(path.join(dir, 'db.mjs'), 'await new Promise(() => {});\nexport default {};\n');
      const started = Date.now();
      const run = await Promise.race([runCli(['doctor', '--module', './db.mjs'], goodEnv(), dir), sleep(60_000).then(() => 'still loading' as const)]);
      expect(run).not.toBe('still loading');
      const { code, err } = run as Exclude<typeof run, 'still loading'>;
      expect(code).toBe(1);
      expect(err).toMatch(/loading \.\/db\.mjs did not finish within 30 s: a top-level await/);
      expect(Date.now() - started).toBeLessThan(55_000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);

  it('runs through the installed bin script (built dist)', () => {
    const bin = path.resolve(__dirname, '..', '..', 'bin', 'prisma-datalayer.js');
    const result = spawnSync(process.execPath, [bin, 'doctor', '--json'], { env: { ...process.env, ...goodEnv() }, encoding: 'utf8', timeout: 30_000 });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect((JSON.parse(result.stdout) as DoctorReport).ok).toBe(true);
  });
});
