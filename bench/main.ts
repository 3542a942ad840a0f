// `npm run bench` (GitHub issue 7): the layer against raw pg, bare Prisma on the same
// adapter, and itself in serverless mode, on a throwaway PostgreSQL 15 (TLS + SCRAM)
// started by the test harness. Prints the tables and writes BENCHMARKS.md.
//
// Sizes (environment, defaults in brackets):
//   BENCH_ROUNDS [20]            measured rounds of the sequential workloads (after BENCH_WARMUP_ROUNDS [2])
//   BENCH_POINT_OPS [150]        point reads per variant per round (serverless: a quarter)
//   BENCH_UNIT_OPS [60]          units of work per variant per round (serverless: a quarter)
//   BENCH_CONCURRENT_UNITS [500] units started at once; BENCH_CONCURRENT_ROUNDS [3] (+1 warm-up)
//   BENCH_RESTARTS [3]           server restarts under read load; BENCH_DOWN_MS [500] down time each
//   BENCH_COLD_RUNS [7]          fresh processes per variant (+1 warm-up run)
//   BENCH_RT_QUERIES [1000]      point reads counted for round trips; BENCH_RT_UNITS [100]
//   BENCH_ABLATION_ROUNDS [12]   rounds of the overhead breakdown (0 = skip)
//   BENCH_SCOPE_OPS [20]         5-statement handlers per variant per round, serverless, inside / outside db.scope;
//                                BENCH_SCOPE_ROUNDS [6] measured rounds (+1 warm-up)
//   BENCH_FLEET_PROCS [20]       fleet: separate node processes; BENCH_FLEET_CONCURRENCY [10] invocations at once
//                                in each; BENCH_FLEET_INVOCATIONS [20] sequential invocations per slot
//   BENCH_ISO_SETS [7]           the per-process rounds (bench/isolated.js): fresh process sets, each warmed up by
//                                BENCH_ISO_WARMUP_ROUNDS [8] rounds, then BENCH_ISO_ROUNDS [6] measured rounds
//   BENCH_ISO_BURST_ROUNDS [4]   throughput with a process per variant: bursts of BENCH_CONCURRENT_UNITS units in each
//                                of the BENCH_ISO_SETS process sets, after BENCH_ISO_BURST_WARMUP_ROUNDS [2]
//   BENCH_IR_RUNS [2]            CPU instruction counts (callgrind): fresh processes per variant; BENCH_IR_POINT_WARM [500],
//                                BENCH_IR_POINT_OPS [600], BENCH_IR_UNIT_WARM [300], BENCH_IR_UNIT_OPS [400];
//                                units 100 at a time: BENCH_IR_BURST_WARM [200], BENCH_IR_BURST_OPS [300]
//   BENCH_NODES                  more node binaries, comma-separated (e.g. a Node 24): the per-process latency rounds,
//                                the per-process throughput and the instruction counts also run under each
//   BENCH_ONLY                   comma list of: point,unit,isolated,throughput,concurrency,recovery,cold,roundtrips,ablation,scope,fleet,instructions
//   BENCH_OUT [BENCHMARKS.md]    report path ('-' = do not write)
//   BENCH_JSON                   also write every target (name, goal, measured value, pass) as JSON to this file
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startCluster, type Cluster } from '../test/support/cluster';
import { buildTemplate } from '../test/support/template';
import { renderReport, type BenchResults } from './report';
import { envInt, sleep } from './stats';
import { startPgBouncer } from '../test/support/pgbouncer';
import { makeAblation, makeVariant, layer, serverlessHandler, MAX_CONNECTIONS, type AblationKey, type Target, type UnitArgs, type Variant, type VariantKey } from './variants';
import { coldStarts, concurrentUnits, instructionCounts, isolatedLatency, fleet, killChildren, profileOps, recovery, roundTrips, scopedHandlers, sequentialLatency, type FleetResult, type RoundTrips } from './workloads';

const ROOT = path.resolve(__dirname, '..');
const KEYS: VariantKey[] = ['pg', 'prisma', 'layer', 'serverless'];
/** The instruction counts' variants (bench/instructions.js). */
const IR_KEYS = ['prisma', 'prisma+als', 'layer'];
/**
 * The latency rounds with a process per variant (bench/isolated.js): A/A control included,
 * and bare Prisma in a process with an AsyncLocalStorage in use, the layer's own situation.
 */
const ISOLATED_KEYS = ['prisma', 'prisma+als', 'layer', 'prisma2'];
const ABLATION: AblationKey[] = ['prisma', 'prisma+driver', 'prisma+instrumented', 'layer'];
const ROWS = 1000;
const DB = 'bench';

function settings() {
  const only = (process.env.BENCH_ONLY ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  return {
    rounds: envInt('BENCH_ROUNDS', 20),
    warmupRounds: envInt('BENCH_WARMUP_ROUNDS', 2),
    pointOps: envInt('BENCH_POINT_OPS', 150),
    unitOps: envInt('BENCH_UNIT_OPS', 60),
    concurrentUnits: envInt('BENCH_CONCURRENT_UNITS', 500),
    concurrentRounds: envInt('BENCH_CONCURRENT_ROUNDS', 3),
    restarts: envInt('BENCH_RESTARTS', 3),
    downMs: envInt('BENCH_DOWN_MS', 500),
    coldRuns: envInt('BENCH_COLD_RUNS', 7),
    rtQueries: envInt('BENCH_RT_QUERIES', 1000),
    rtUnits: envInt('BENCH_RT_UNITS', 100),
    ablationRounds: envInt('BENCH_ABLATION_ROUNDS', 12),
    scopeOps: envInt('BENCH_SCOPE_OPS', 20),
    scopeRounds: envInt('BENCH_SCOPE_ROUNDS', 6),
    isoSets: envInt('BENCH_ISO_SETS', 7),
    isoRounds: envInt('BENCH_ISO_ROUNDS', 6),
    isoWarmupRounds: envInt('BENCH_ISO_WARMUP_ROUNDS', 8),
    isoBurstRounds: envInt('BENCH_ISO_BURST_ROUNDS', 4),
    isoBurstWarmupRounds: envInt('BENCH_ISO_BURST_WARMUP_ROUNDS', 2),
    irRuns: envInt('BENCH_IR_RUNS', 2),
    irPointWarm: envInt('BENCH_IR_POINT_WARM', 500),
    irPointOps: envInt('BENCH_IR_POINT_OPS', 600),
    irUnitWarm: envInt('BENCH_IR_UNIT_WARM', 300),
    irUnitOps: envInt('BENCH_IR_UNIT_OPS', 400),
    irBurstWarm: envInt('BENCH_IR_BURST_WARM', 200),
    irBurstOps: envInt('BENCH_IR_BURST_OPS', 300),
    nodes: (process.env.BENCH_NODES ?? '').split(',').map((n) => n.trim()).filter(Boolean),
    fleetProcs: envInt('BENCH_FLEET_PROCS', 20),
    fleetConcurrency: envInt('BENCH_FLEET_CONCURRENCY', 10),
    fleetInvocations: envInt('BENCH_FLEET_INVOCATIONS', 20),
    out: process.env.BENCH_OUT ?? 'BENCHMARKS.md',
    json: process.env.BENCH_JSON,
    runs: (name: string): boolean => only.length === 0 || only.includes(name),
  };
}
export type Settings = ReturnType<typeof settings>;

function hasValgrind(): boolean {
  try {
    execFileSync('valgrind', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The node binaries the per-process workloads run under: the bench's own, then BENCH_NODES. */
function nodeBinaries(s: Settings): { node: string; version: string }[] {
  return [process.execPath, ...s.nodes].map((node) => ({ node, version: execFileSync(node, ['--version'], { encoding: 'utf8' }).trim() }));
}

/** The commit measured (and whether the working tree differed from it): what the report's figures belong to. */
function codeRevision(): string {
  try {
    return execFileSync('git', ['describe', '--always', '--dirty'], { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown (not a git checkout)';
  }
}

const log = (msg: string): void => console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);

export async function main(): Promise<number> {
  const s = settings();
  const began = Date.now();
  let cluster: Cluster | undefined;
  const open: Variant<string>[] = [];
  let admin: pg.Client | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`${signal}: cleaning up`);
    killChildren();
    void (cluster?.destroy() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    log('starting PostgreSQL 15 (TLS, SCRAM) and building the migrated template');
    cluster = await startCluster({
      name: 'bench',
      maxConnections: 150,
      extraConf: { shared_preload_libraries: 'pg_stat_statements', 'pg_stat_statements.track_utility': 'on' },
    });
    await buildTemplate(cluster.info());
    await cluster.query(`CREATE DATABASE ${DB} OWNER app TEMPLATE template_app`);
    // The admin connection (database postgres) reads and resets the counters.
    await cluster.query('CREATE EXTENSION pg_stat_statements');
    await cluster.query(
      `INSERT INTO users (email, name) SELECT 'user' || g || '@example.com', 'User ' || g FROM generate_series(1, ${ROWS}) g;
       INSERT INTO accounts (owner, balance) SELECT 'owner ' || g, 1000000000 FROM generate_series(1, ${ROWS}) g;
       ANALYZE`,
      [],
      { db: DB },
    );
    const [version] = await cluster.query<{ v: string }>('SELECT version() AS v');

    const target: Target = {
      host: cluster.host,
      port: cluster.port,
      user: cluster.appUser,
      password: cluster.appPassword,
      database: DB,
      caFile: cluster.caFile,
      ca: fs.readFileSync(cluster.caFile, 'utf8'),
      url: cluster.url(DB, { sslmode: 'verify-full', sslrootcert: cluster.caFile }, { user: cluster.appUser }),
    };
    admin = new pg.Client(cluster.clientConfig('postgres', { applicationName: 'bench-admin' }));
    admin.on('error', () => {});
    await admin.connect();

    const runId = crypto.randomBytes(3).toString('hex');
    const unitArgs = (key: string, i: number): UnitArgs => {
      const fromId = 1 + ((i * 7919) % ROWS);
      return { fromId, toId: 1 + ((fromId + 1) % ROWS), amount: 1, reference: `${runId}-${key}-${i}-${crypto.randomUUID()}` };
    };
    const randomId = (): number => 1 + Math.floor(Math.random() * ROWS);

    const variants = KEYS.map((k) => makeVariant(k, target));
    // The sequential latency rounds also run an A/A control: a second bare Prisma client.
    const control = makeVariant('prisma2', target);
    const sequential = [...variants, control];
    open.push(...sequential);
    const results: BenchResults = {
      settings: s,
      machine: {
        nproc: os.availableParallelism?.() ?? os.cpus().length,
        cpu: os.cpus()[0]?.model ?? 'unknown',
        memGb: Math.round(os.totalmem() / 2 ** 30),
        node: process.version,
        postgres: version?.v ?? 'unknown',
        prisma: pkgVersion('@prisma/client'),
        pg: pkgVersion('pg'),
        platform: `${os.type()} ${os.release()} ${os.arch()}`,
        code: codeRevision(),
      },
      labels: Object.fromEntries(sequential.map((v) => [v.key, v.label])),
      date: new Date().toISOString(),
      durationMs: 0,
    };
    const perRound = (ops: number) => (v: Variant<string>) => (v.key === 'serverless' ? Math.max(1, Math.round(ops / 4)) : ops);

    if (s.runs('point')) {
      log(`point read: ${s.warmupRounds}+${s.rounds} rounds × ${s.pointOps} reads per variant`);
      results.point = await sequentialLatency(sequential, { rounds: s.rounds, warmupRounds: s.warmupRounds, opsPerRound: perRound(s.pointOps), op: (v) => v.pointRead(randomId()) });
    }
    if (s.runs('unit')) {
      log(`unit of work: ${s.warmupRounds}+${s.rounds} rounds × ${s.unitOps} units per variant`);
      results.unit = await sequentialLatency(sequential, { rounds: s.rounds, warmupRounds: s.warmupRounds, opsPerRound: perRound(s.unitOps), op: (v, i) => v.unit(unitArgs(`${v.key}-seq`, i)) });
    }
    if (s.runs('isolated') || s.runs('throughput')) {
      results.isolated = [];
      for (const { node, version } of nodeBinaries(s)) {
        const run: NonNullable<BenchResults['isolated']>[number] = { node: version };
        const common = { node, sets: s.isoSets, rounds: s.isoRounds, warmupRounds: s.isoWarmupRounds };
        if (s.runs('isolated')) {
          log(`a process per variant (node ${version}): ${s.isoSets} process sets, each ${s.isoWarmupRounds}+${s.isoRounds} rounds × ${s.pointOps} point reads, then × ${s.unitOps} units`);
          run.point = await isolatedLatency(ISOLATED_KEYS, target, { ...common, op: 'point', ops: s.pointOps });
          run.unit = await isolatedLatency(ISOLATED_KEYS, target, { ...common, op: 'unit', ops: s.unitOps });
        }
        if (s.runs('throughput')) {
          log(`throughput, a process per variant (node ${version}): ${s.isoSets} process sets, each ${s.isoBurstWarmupRounds}+${s.isoBurstRounds} bursts of ${s.concurrentUnits} units`);
          run.burst = await isolatedLatency(ISOLATED_KEYS, target, { ...common, op: 'burst', ops: s.concurrentUnits, rounds: s.isoBurstRounds, warmupRounds: s.isoBurstWarmupRounds });
        }
        results.isolated.push(run);
      }
    }
    if (s.runs('instructions') && s.irRuns > 0 && !hasValgrind()) log('CPU instructions: skipped (valgrind is not installed; `apt-get install valgrind`)');
    else if (s.runs('instructions') && s.irRuns > 0) {
      results.instructions = [];
      for (const { node, version } of nodeBinaries(s)) {
        log(`CPU instructions (callgrind, node ${version}): ${s.irRuns} run(s) per variant; point reads ${s.irPointWarm} warm-up + ${s.irPointOps} counted, units ${s.irUnitWarm} + ${s.irUnitOps}`);
        const common = { node, runs: s.irRuns, progress: log };
        const point = await instructionCounts(IR_KEYS, target, { ...common, op: 'point', warm: s.irPointWarm, ops: s.irPointOps });
        const unit = await instructionCounts(IR_KEYS, target, { ...common, op: 'unit', warm: s.irUnitWarm, ops: s.irUnitOps });
        const burst = await instructionCounts(IR_KEYS, target, { ...common, op: 'burst', warm: s.irBurstWarm, ops: s.irBurstOps });
        results.instructions.push({ node: version, point, unit, burst });
      }
    }
    if (s.runs('scope')) {
      log(`serverless handlers: 1+${s.scopeRounds} rounds × ${s.scopeOps} five-statement invocations, inside db.scope and outside`);
      const handlers = [serverlessHandler(target, 'scope'), serverlessHandler(target, 'no-scope')];
      open.push(...handlers);
      results.scope = await scopedHandlers(handlers, admin, { rounds: s.scopeRounds, warmupRounds: 1, ops: s.scopeOps, ids: randomId });
      for (const h of handlers) await h.close();
      open.splice(open.length - handlers.length, handlers.length);
    }
    if (s.runs('ablation') && s.ablationRounds > 0) {
      log(`overhead breakdown: ${s.ablationRounds} rounds (point read, unit of work)`);
      const parts = ABLATION.map((k) => makeAblation(k, target));
      open.push(...parts);
      const point = await sequentialLatency(parts, { rounds: s.ablationRounds, warmupRounds: 1, opsPerRound: () => s.pointOps, op: (v) => v.pointRead(randomId()) });
      const unit = await sequentialLatency(parts, { rounds: s.ablationRounds, warmupRounds: 1, opsPerRound: () => s.unitOps, op: (v, i) => v.unit(unitArgs(`${v.key}-abl`, i)) });
      const layerPart = parts.find((p) => p.key === 'layer')!;
      const profile = await profileOps(s.pointOps * 10, () => layerPart.pointRead(randomId()));
      const unitProfile = await profileOps(s.unitOps * 10, (i) => layerPart.unit(unitArgs('layer-prof', i + 1000)));
      results.ablation = { point, unit, profile, unitProfile, labels: Object.fromEntries(parts.map((v) => [v.key, v.label])) };
      for (const p of parts) await p.close();
      open.splice(open.length - parts.length, parts.length);
    }
    if (s.runs('concurrency')) {
      log(`concurrency: ${s.concurrentUnits} units at once, ≤ ${MAX_CONNECTIONS} connections, 1+${s.concurrentRounds} rounds`);
      results.concurrency = await concurrentUnits(variants, admin, { units: s.concurrentUnits, rounds: s.concurrentRounds, warmupRounds: 1, unitArgs });
    }
    if (s.runs('roundtrips')) {
      log(`round trips: ${s.rtQueries} point reads and ${s.rtUnits} units per variant (pg_stat_statements)`);
      const rt = new Map<string, RoundTrips>();
      for (const v of variants) rt.set(v.key, await roundTrips(v, admin, DB, { queries: s.rtQueries, units: s.rtUnits, unitArgs }));
      // What the stale-connection check would cost if it ran on every checkout (pool_pre_ping).
      const ping = layer(target, 'pooled', { validateAfterIdleMs: 0 });
      open.push(ping);
      rt.set('layer-preping', await roundTrips(ping, admin, DB, { queries: s.rtQueries, units: s.rtUnits, unitArgs }));
      await ping.close();
      open.pop();
      for (const [key, r] of await pooledRoundTrips(cluster, target, admin, s, unitArgs)) rt.set(key, r);
      results.roundTrips = rt;
    }
    if (s.runs('cold')) {
      log(`cold start: ${s.coldRuns} fresh processes per variant (+1 warm-up)`);
      results.cold = await coldStarts(KEYS, target, { runs: s.coldRuns, warmupRuns: 1 });
    }
    if (s.runs('fleet') && s.fleetProcs > 0) {
      log(`fleet: ${s.fleetProcs} processes × ${s.fleetConcurrency} concurrent invocations × ${s.fleetInvocations}, serverless through PgBouncer and pooled without it`);
      results.fleet = await runFleet(s);
    }
    if (s.runs('recovery') && s.restarts > 0) {
      log(`recovery: ${s.restarts} restarts (down ${s.downMs} ms) under a steady read load`);
      await admin.end().catch(() => undefined);
      admin = undefined;
      results.recovery = await recovery(variants, cluster, { restarts: s.restarts, downMs: s.downMs, intervalMs: 10, settleMs: 1000, timeoutMs: 15_000, ids: randomId });
    }

    results.durationMs = Date.now() - began;
    const report = renderReport(results);
    console.log(`\n${report.console}\n`);
    if (s.out !== '-') {
      const file = path.resolve(ROOT, s.out);
      fs.writeFileSync(file, report.markdown);
      log(`wrote ${path.relative(process.cwd(), file) || file}`);
    }
    if (s.json) {
      const file = path.resolve(process.cwd(), s.json);
      const summary = {
        date: results.date,
        durationMs: results.durationMs,
        machine: results.machine,
        targets: report.targets.map((t) => ({ name: t.name, goal: t.goal, measured: t.measured, value: t.value ?? null, result: t.pass === undefined ? 'n/a' : t.pass ? 'pass' : 'miss' })),
      };
      fs.writeFileSync(file, `${JSON.stringify(summary, null, 2)}\n`);
      log(`wrote ${path.relative(process.cwd(), file) || file}`);
    }
    log(`done in ${Math.round((Date.now() - began) / 1000)} s`);
    return 0;
  } finally {
    killChildren();
    for (const v of open) await v.close().catch(() => undefined);
    await admin?.end().catch(() => undefined);
    await cluster?.destroy().catch(() => undefined);
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

/**
 * The fleet on a server of its own with max_connections 100: serverless mode through
 * PgBouncer in transaction mode (default_pool_size 20), then pooled mode straight to the server.
 */
async function runFleet(s: Settings): Promise<FleetResult[]> {
  const server = await startCluster({ name: 'bench-fleet', maxConnections: 100 });
  let admin: pg.Client | undefined;
  let bouncer: Awaited<ReturnType<typeof startPgBouncer>> | undefined;
  try {
    await buildTemplate(server.info());
    await server.query(`CREATE DATABASE ${DB} OWNER app TEMPLATE template_app`);
    await server.query(
      `INSERT INTO users (email, name) SELECT 'user' || g || '@example.com', 'User ' || g FROM generate_series(1, ${ROWS}) g;
       INSERT INTO accounts (owner, balance) SELECT 'owner ' || g, 1000000000 FROM generate_series(1, ${ROWS}) g;
       ANALYZE`,
      [],
      { db: DB },
    );
    bouncer = await startPgBouncer(server.info(), { name: 'bench-fleet-bouncer', poolMode: 'transaction', defaultPoolSize: 20, maxClientConn: 2000 });
    admin = new pg.Client(server.clientConfig('postgres', { applicationName: 'bench-fleet-admin' }));
    admin.on('error', () => {});
    await admin.connect();
    const common = { procs: s.fleetProcs, concurrency: s.fleetConcurrency, invocations: s.fleetInvocations, rows: ROWS, admin, database: DB, timeoutMs: 300_000 };
    const viaBouncer = bouncer.url(DB, { sslmode: 'require', sslrootcert: bouncer.caFile, pgbouncer: 'true' }, { user: server.appUser });
    const direct = server.url(DB, { sslmode: 'verify-full', sslrootcert: server.caFile }, { user: server.appUser });
    const results = [await fleet({ ...common, url: viaBouncer, mode: 'serverless', via: 'PgBouncer (transaction mode, default_pool_size 20)' })];
    await sleep(1000);
    results.push(await fleet({ ...common, url: direct, mode: 'pooled', via: 'straight to the server (no pooler)' }));
    return results;
  } finally {
    await admin?.end().catch(() => undefined);
    await bouncer?.stop().catch(() => undefined);
    await server.destroy().catch(() => undefined);
  }
}

/**
 * Round trips of bare Prisma and the layer behind PgBouncer in transaction mode (the
 * README's topology for many processes), where every unit of the layer also sets its
 * server-side timeouts (`pgbouncer=true`): they travel with BEGIN and the first statement.
 */
async function pooledRoundTrips(cluster: Cluster, target: Target, admin: pg.Client, s: Settings, unitArgs: (key: string, i: number) => UnitArgs): Promise<Map<string, RoundTrips>> {
  const bouncer = await startPgBouncer(cluster.info(), { name: 'bench-rt-bouncer', poolMode: 'transaction', defaultPoolSize: 20, maxClientConn: 200 });
  const via: Target = {
    ...target,
    host: bouncer.host,
    port: bouncer.port,
    caFile: bouncer.caFile,
    ca: fs.readFileSync(bouncer.caFile, 'utf8'),
    url: bouncer.url(DB, { sslmode: 'verify-full', sslrootcert: bouncer.caFile, pgbouncer: 'true' }, { user: cluster.appUser }),
  };
  const variants = [makeVariant('prisma', via), layer(via, 'pooled')];
  const out = new Map<string, RoundTrips>();
  try {
    for (const v of variants) out.set(`${v.key}-pgbouncer`, await roundTrips(v, admin, DB, { queries: s.rtQueries, units: s.rtUnits, unitArgs }));
  } finally {
    for (const v of variants) await v.close().catch(() => undefined);
    await bouncer.stop().catch(() => undefined);
  }
  return out;
}

function pkgVersion(name: string): string {
  try {
    const file = require.resolve(`${name}/package.json`, { paths: [ROOT] });
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
