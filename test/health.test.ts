// db.health() against a dedicated server we can freeze and stop: one round trip when
// healthy, "unhealthy" within its timeout when the server hangs or is gone, never a throw,
// and no statement left running for nobody.
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createDb, type Db } from '../src/index';
import { PrismaClient } from '../src/generated/prisma/client';
import { startCluster, type Cluster } from './support/cluster';
import { holdConnection, waitFor } from './support/async';

let cluster: Cluster;
let db: Db<PrismaClient>;
const APP = `health-${process.pid}`;

beforeAll(async () => {
  // Every statement is logged with its application name: the round trips can be counted.
  cluster = await startCluster({ name: 'health', extraConf: { log_statement: 'all' } });
  db = createDb({
    PrismaClient,
    url: cluster.url('postgres', { sslmode: 'require', sslrootcert: cluster.caFile }),
    applicationName: APP,
    pool: { size: 1, maxOverflow: 0 },
    timeouts: { connectMs: 2000 },
  });
}, 120_000);

afterAll(async () => {
  await db?.close({ deadlineMs: 0 });
  await cluster?.destroy();
});

/** Statements the server logged for our application name. */
function loggedStatements(): string[] {
  return fs
    .readFileSync(cluster.logFile, 'utf8')
    .split('\n')
    .filter((line) => line.includes(`/${APP} `) && /LOG:\s+(statement|execute [^:]*):/.test(line));
}


describe('db.health()', () => {
  it('is healthy with the server facts, in one round trip', async () => {
    const before = loggedStatements().length;
    const report = await db.health();
    expect(report).toMatchObject({
      status: 'healthy',
      isReplica: false,
      ssl: { active: true },
      pool: { open: 1, max: 1 },
    });
    expect(report.error).toBeUndefined();
    expect(report.serverVersion).toMatch(/^15\./);
    expect(report.ssl?.version).toMatch(/^TLS/);
    expect(Math.abs(Date.parse(report.serverTime ?? '') - Date.now())).toBeLessThan(5000);
    expect(report.latencyMs).toBeGreaterThanOrEqual(0);
    // Exactly one statement reached the server for the whole check.
    await waitFor(() => loggedStatements().length > before);
    await new Promise((r) => setTimeout(r, 200));
    expect(loggedStatements().slice(before)).toHaveLength(1);
    // A probe is not application traffic.
    expect(db.stats().counters.queries).toBe(0);
  });

  it('is unhealthy at its timeout when the server stops answering, and drops that connection', async () => {
    await db.health();
    expect(db.stats().pool.open).toBe(1);
    const [row] = await cluster.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE application_name = $1`,
      [APP],
    );
    // Freeze the backend: the connection stays open but nothing answers.
    execFileSync('kill', ['-STOP', String(row!.pid)]);
    try {
      const started = Date.now();
      const report = await db.health({ timeoutMs: 400 });
      const elapsed = Date.now() - started;
      expect(report.status).toBe('unhealthy');
      expect(report.error).toMatch(/health deadline \(400 ms\)/);
      expect(elapsed).toBeGreaterThanOrEqual(380);
      expect(elapsed).toBeLessThan(5000); // answers at its timeout; a hang would be the failure
      // The connection with the statement still on it was destroyed, not left waiting.
      await waitFor(() => db.stats().pool.open === 0, 2000);
    } finally {
      execFileSync('kill', ['-CONT', String(row!.pid)]);
    }
    // And the next check gets a fresh connection.
    expect((await db.health()).status).toBe('healthy');
  });

  it('is unhealthy within its timeout once the server is gone, without throwing and without secrets', async () => {
    expect((await db.health()).status).toBe('healthy');
    await cluster.stop();
    const started = Date.now();
    const report = await db.health({ timeoutMs: 1500 });
    expect(Date.now() - started).toBeLessThan(1500 + 5000); // its timeout, plus a loaded machine's margin
    expect(report.status).toBe('unhealthy');
    expect(report.serverVersion).toBeNull();
    expect(report.error).toEqual(expect.any(String));
    expect(report.error).not.toContain(cluster.password);
    expect(report.pool.max).toBe(1);
    expect(db.stats().lastError).not.toBeNull();
    await cluster.start();
    // Recovers by itself once the server is back.
    await waitFor(async () => (await db.health()).status === 'healthy', 10_000);
  });

  it('a timeout that is not a number of milliseconds (NaN from an unset variable, Infinity, null options) is reported at once, never a check without a deadline', async () => {
    // A frozen backend: before, `timeoutMs: NaN` left the check waiting for it with no
    // deadline at all (statement_timeout 0 here), and `health(null)` threw a TypeError.
    const frozen = createDb({
      PrismaClient,
      url: cluster.url('postgres', { sslmode: 'require', sslrootcert: cluster.caFile }),
      applicationName: `${APP}-options`,
      pool: { size: 1, maxOverflow: 0 },
      timeouts: { connectMs: 2000, statementMs: 0 },
    });
    try {
      expect((await frozen.health()).status).toBe('healthy');
      const [row] = await cluster.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE application_name = $1`, [`${APP}-options`]);
      execFileSync('kill', ['-STOP', String(row!.pid)]);
      try {
        const bad: unknown[] = [{ timeoutMs: Number(process.env.UNSET_HEALTH_TIMEOUT_MS) }, { timeoutMs: Infinity }, { timeoutMs: '2000' }, null];
        for (const options of bad) {
          let timer: NodeJS.Timeout | undefined;
          const answer = await Promise.race([
            (async () => frozen.health(options as never))().catch((err: unknown) => ({ threw: String(err) })),
            new Promise((resolve) => (timer = setTimeout(() => resolve('no answer within 10 s'), 10_000))),
          ]);
          clearTimeout(timer);
          expect(answer).toMatchObject({ status: 'unhealthy', error: expect.stringMatching(/health option/) });
        }
      } finally {
        execFileSync('kill', ['-CONT', String(row!.pid)]);
      }
      // Nothing was sent on the frozen connection: it is still there and answers.
      expect((await frozen.health()).status).toBe('healthy');
    } finally {
      await frozen.close({ deadlineMs: 0 });
    }
  }, 60_000);

  it('with every connection held by the application, says the pool is busy (a pool timeout), not that the database did not answer', async () => {
    const busy = createDb({
      PrismaClient,
      url: cluster.url('postgres', { sslmode: 'require', sslrootcert: cluster.caFile }),
      applicationName: `${APP}-busy`,
      pool: { size: 1, maxOverflow: 0, timeoutMs: 30_000 },
    });
    try {
      const release = await holdConnection(busy);
      try {
        const report = await busy.health({ timeoutMs: 500 });
        expect(report.status).toBe('unhealthy');
        // Before: "No answer from the database within the health deadline (500 ms): the connection was closed".
        expect(report.error).toMatch(/waiting for a database connection \(all 1 connections in use\)/);
        expect(busy.stats().pool).toMatchObject({ open: 1, inUse: 1 });
      } finally {
        await release();
      }
      expect((await busy.health()).status).toBe('healthy');
    } finally {
      await busy.close({ deadlineMs: 0 });
    }
  });

  it("inside a serverless scope, checks use the scope's connection: healthy and verified with a pool of one, one connection opened", async () => {
    // connection_limit=1, the usual serverless advice: the scope keeps its one connection
    // between statements, so a check that asked the pool for another waited for it.
    const own = createDb({
      PrismaClient,
      url: cluster.url('postgres', { sslmode: 'require', sslrootcert: cluster.caFile }),
      applicationName: `${APP}-scope`,
      mode: 'serverless',
      pool: { size: 1, maxOverflow: 0, timeoutMs: 2000 },
      env: {},
    });
    try {
      const { report, verified } = await own.scope(async () => {
        await own.$queryRaw`SELECT 1`;
        const report = await own.health({ timeoutMs: 5000 });
        const verified = await own.verify().then(
          () => 'verified',
          (err: Error) => err.message,
        );
        return { report, verified };
      });
      expect(report.error).toBeUndefined();
      expect(report.status).toBe('healthy');
      expect(verified).toBe('verified');
      expect(own.stats().counters.connectionsOpened).toBe(1);
      expect(own.stats().pool.open).toBe(0);
    } finally {
      await own.close();
    }
  });

  it('reports a closed Db as unhealthy', async () => {
    const other = createDb({ PrismaClient, url: cluster.url(), applicationName: `${APP}-closed` });
    await other.close();
    expect(await other.health()).toMatchObject({ status: 'unhealthy', error: 'the database client is closed' });
  });
});
