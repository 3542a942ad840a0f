// The workloads. Each one runs every variant in the same run, alternating (rounds of
// ABCD, BCDA, CDAB, … after warm-up rounds that are thrown away), so that the drift of a
// noisy two-core machine hits every variant alike.
import { execFile, fork, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { Session } from 'node:inspector/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { Cluster } from '../test/support/cluster';
import { collectGarbage, median, rotation, sleep } from './stats';
import type { HandlerVariant, Target, UnitArgs, Variant } from './variants';

// ---- sequential latency ------------------------------------------------------------------

export interface LatencyResult {
  /** Per-operation latency in ms, measured rounds only. */
  samples: number[];
  /** Median of each measured round (for paired, per-round ratios). */
  roundMedians: number[];
  /** Client-side CPU (user + system of this process) per operation in µs, one figure per measured round. */
  cpuUsPerOp: number[];
  errors: number;
  firstError?: string;
}

export type Op = (v: Variant<string>, i: number) => Promise<unknown>;

export async function sequentialLatency(
  variants: Variant<string>[],
  opts: { rounds: number; warmupRounds: number; opsPerRound: (v: Variant<string>) => number; op: Op },
): Promise<Map<string, LatencyResult>> {
  const results = new Map<string, LatencyResult>(variants.map((v) => [v.key, { samples: [], roundMedians: [], cpuUsPerOp: [], errors: 0 }]));
  let i = 0;
  for (let r = 0; r < opts.warmupRounds + opts.rounds; r++) {
    const measured = r >= opts.warmupRounds;
    for (const v of rotation(variants, r)) {
      const res = results.get(v.key)!;
      const round: number[] = [];
      const n = opts.opsPerRound(v);
      // Start each batch from the same state: the previous one's garbage collected, the
      // server done with its backends (serverless connections exit after each operation).
      collectGarbage();
      await sleep(20);
      const cpu = process.cpuUsage();
      for (let k = 0; k < n; k++) {
        const started = performance.now();
        try {
          await opts.op(v, i++);
        } catch (err) {
          res.errors++;
          res.firstError ??= describe(err);
          continue;
        }
        round.push(performance.now() - started);
      }
      const used = process.cpuUsage(cpu);
      if (measured) {
        res.cpuUsPerOp.push((used.user + used.system) / n);
        res.samples.push(...round);
        res.roundMedians.push(median(round));
      }
    }
  }
  return results;
}

// ---- the same, each variant in a process of its own -------------------------------------------

/**
 * What a per-process round runs (bench/isolated.js): `ops` point reads or units one after
 * another (a sample per operation), or a burst of `ops` units started at once (a sample per
 * burst: its wall time; throughput is ops / wall time).
 */
export type IsolatedOp = 'point' | 'unit' | 'burst';

/** The per-process rounds' results: pooled over the process sets, plus each set's median. */
export interface IsolatedResult extends LatencyResult {
  /** Median latency of each process set, in set order (for per-set ratios). */
  setMedians: number[];
}

/**
 * Sequential latency with every variant in a process of its own (bench/isolated.js), as
 * applications run them: no variant shares a JIT, a heap or an AsyncLocalStorage with
 * another. Two processes running the same code differ by a few percent in median latency
 * (their JIT's timing and decisions, their memory layout): measured, two bare Prisma
 * processes were 0.93–1.05× apart. So the rounds run in `sets` process sets, each a fresh
 * process per variant, warmed up, then measured in batches that alternate between the
 * processes in rotating order, as above. A ratio is then the median of the sets' ratios.
 */
export async function isolatedLatency(
  keys: string[],
  target: Target,
  opts: { op: IsolatedOp; sets: number; rounds: number; warmupRounds: number; ops: number; node: string },
): Promise<Map<string, IsolatedResult>> {
  const results = new Map<string, IsolatedResult>(keys.map((k) => [k, { samples: [], roundMedians: [], cpuUsPerOp: [], errors: 0, setMedians: [] }]));
  let from = 0;
  for (let set = 0; set < opts.sets; set++) {
    // Forked in rotating order too, so that no variant is always its set's first (or last) process.
    const procs = await forkVariants(rotation(keys, set), target, opts.node);
    const inSet = new Map<string, number[]>(keys.map((k) => [k, []]));
    try {
      for (let r = 0; r < opts.warmupRounds + opts.rounds; r++) {
        for (const key of rotation(keys, r)) {
          const batch = await runBatch(procs.get(key)!, { op: opts.op, n: opts.ops, from });
          from += opts.ops;
          if (r < opts.warmupRounds) continue;
          addBatch(results.get(key)!, batch);
          inSet.get(key)!.push(...batch.ms);
        }
      }
    } finally {
      stopAll(procs.values());
    }
    for (const key of keys) results.get(key)!.setMedians.push(median(inSet.get(key)!));
  }
  return results;
}

interface Batch {
  ms: number[];
  cpuUs: number;
  errors: number;
  firstError?: string;
}

/**
 * One batch of a forked worker, after a pause: the server done with the previous batch
 * (20 ms), or after a burst's 500 commits, with its backends and WAL writer idle again
 * (200 ms, as between the shared-process concurrency rounds).
 */
async function runBatch(child: ChildProcess, message: { op: IsolatedOp; n: number; from: number }): Promise<Batch> {
  await sleep(message.op === 'burst' ? 200 : 20);
  const answer = reply(child);
  child.send(message);
  return (await answer) as Batch;
}

function addBatch(res: LatencyResult, batch: Batch): void {
  res.samples.push(...batch.ms);
  res.roundMedians.push(median(batch.ms));
  res.cpuUsPerOp.push(batch.cpuUs);
  res.errors += batch.errors;
  res.firstError ??= batch.firstError;
}

/** One forked bench/isolated.js per variant, each ready (connected, its client created). */
async function forkVariants(keys: string[], target: Target, node: string): Promise<Map<string, ChildProcess>> {
  const script = path.join(__dirname, 'isolated.js');
  const procs = new Map<string, ChildProcess>();
  try {
    for (const key of keys) {
      const child = fork(script, [key], { execPath: node, env: childEnv(target, `bench-iso-${key.replace(/[^a-z0-9]/g, '')}`), cwd: path.resolve(__dirname, '..'), stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      children.add(child);
      procs.set(key, child);
      await reply(child);
    }
    return procs;
  } catch (err) {
    stopAll(procs.values());
    throw err;
  }
}

function stopAll(procs: Iterable<ChildProcess>): void {
  for (const child of procs) {
    child.kill();
    children.delete(child);
  }
}

/** The next message of a forked worker (rejects if it exits first, or after 5 minutes). */
function reply(child: ChildProcess): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error('no answer in 5 minutes')), 300_000);
    const onMessage = (msg: unknown): void => done(undefined, msg);
    const onExit = (code: number | null): void => done(new Error(`worker exited (${code})`));
    const done = (err: Error | undefined, msg?: unknown): void => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(msg);
    };
    child.once('message', onMessage);
    child.once('exit', onExit);
  });
}

// ---- peak server connections ---------------------------------------------------------------

/** Samples pg_stat_activity (client backends by application_name) until stopped; returns the peak. */
export function connectionSampler(admin: pg.Client, appName: string, everyMs = 10): { stop(): Promise<number> } {
  let peak = 0;
  let running = true;
  const sample = async (): Promise<void> => {
    const { rows } = await admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name = $1`,
      [appName],
    );
    peak = Math.max(peak, rows[0]?.n ?? 0);
  };
  const loop = (async () => {
    while (running) {
      await sample();
      await sleep(everyMs);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      await sample();
      return peak;
    },
  };
}

// ---- concurrent units of work --------------------------------------------------------------

export interface ConcurrencyRound {
  unitsPerSecond: number;
  wallMs: number;
  errors: number;
  peakConnections: number;
  firstError?: string;
}

export async function concurrentUnits(
  variants: Variant[],
  admin: pg.Client,
  opts: { units: number; rounds: number; warmupRounds: number; unitArgs: (key: string, i: number) => UnitArgs },
): Promise<Map<string, ConcurrencyRound[]>> {
  const results = new Map<string, ConcurrencyRound[]>(variants.map((v) => [v.key, []]));
  for (let r = 0; r < opts.warmupRounds + opts.rounds; r++) {
    for (const v of rotation(variants, r)) {
      collectGarbage();
      const sampler = connectionSampler(admin, v.appName);
      const started = performance.now();
      const settled = await Promise.allSettled(Array.from({ length: opts.units }, (_, i) => v.unit(opts.unitArgs(`${v.key}-r${r}`, i))));
      const wallMs = performance.now() - started;
      const peakConnections = await sampler.stop();
      const failed = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (r >= opts.warmupRounds) {
        results.get(v.key)!.push({
          unitsPerSecond: (opts.units / wallMs) * 1000,
          wallMs,
          errors: failed.length,
          peakConnections,
          ...(failed[0] ? { firstError: describe(failed[0].reason) } : {}),
        });
      }
      // Let the server and the pools settle (serverless backends exiting) before the next variant.
      await sleep(200);
    }
  }
  return results;
}

// ---- recovery after a server restart -------------------------------------------------------

interface ReadEvent {
  start: number;
  end: number;
  ok: boolean;
  error?: string;
}

export interface RecoveryRun {
  /** From start() resolving to the end of the first successful read after it (ms). */
  firstSuccessMs: number;
  /** Errors of reads issued from stop() starting until start() resolved (the server was down). */
  errorsWhileDown: number;
  /** Errors of reads issued after start() resolved. */
  errorsAfterBack: number;
  /** A few distinct error messages of each phase. */
  errorMessages: string[];
  afterBackMessages: string[];
}

export interface RecoveryResult {
  runs: RecoveryRun[];
  reads: number;
}

/**
 * Every variant runs a steady sequential read loop (one point read, then `intervalMs`
 * pause) at the same time; the server is stopped (fast shutdown), left down for
 * `downMs`, started again. Repeated `restarts` times.
 */
export async function recovery(
  variants: Variant[],
  cluster: Cluster,
  opts: { restarts: number; downMs: number; intervalMs: number; settleMs: number; timeoutMs: number; ids: () => number },
): Promise<{ results: Map<string, RecoveryResult>; downtimes: { stopMs: number; startMs: number }[] }> {
  const events = new Map<string, ReadEvent[]>(variants.map((v) => [v.key, []]));
  let running = true;
  const loops = variants.map(async (v) => {
    const log = events.get(v.key)!;
    while (running) {
      const start = performance.now();
      try {
        await v.pointRead(opts.ids());
        log.push({ start, end: performance.now(), ok: true });
      } catch (err) {
        log.push({ start, end: performance.now(), ok: false, error: describe(err) });
      }
      await sleep(opts.intervalMs);
    }
  });

  const windows: { stopAt: number; stopped: number; backAt: number; until: number }[] = [];
  const downtimes: { stopMs: number; startMs: number }[] = [];
  try {
    await sleep(opts.settleMs);
    for (let k = 0; k < opts.restarts; k++) {
      const stopAt = performance.now();
      await cluster.stop();
      const stopped = performance.now();
      await sleep(opts.downMs);
      const startAt = performance.now();
      await cluster.start();
      const backAt = performance.now();
      downtimes.push({ stopMs: stopped - stopAt, startMs: backAt - startAt });
      // Wait until every reader has succeeded again (or the timeout), then let it run steadily.
      const deadline = backAt + opts.timeoutMs;
      while (performance.now() < deadline && !variants.every((v) => events.get(v.key)!.some((e) => e.ok && e.end >= backAt))) {
        await sleep(20);
      }
      await sleep(opts.settleMs);
      windows.push({ stopAt, stopped, backAt, until: performance.now() });
    }
  } finally {
    running = false;
    await Promise.all(loops);
  }

  const results = new Map<string, RecoveryResult>();
  for (const v of variants) {
    const log = events.get(v.key)!;
    const runs = windows.map((w, k): RecoveryRun => {
      const nextStop = windows[k + 1]?.stopAt ?? Infinity;
      // While down: reads in flight at some point of the outage [stopAt, backAt).
      const down = log.filter((e) => !e.ok && e.end >= w.stopAt && e.start < w.backAt);
      // After back: reads issued once start() resolved and finished before the next stop.
      const after = log.filter((e) => !e.ok && e.start >= w.backAt && e.end < nextStop);
      const firstOk = log.find((e) => e.ok && e.end >= w.backAt);
      return {
        firstSuccessMs: firstOk && firstOk.end < w.until ? firstOk.end - w.backAt : NaN,
        errorsWhileDown: down.length,
        errorsAfterBack: after.length,
        errorMessages: [...new Set(down.map((e) => e.error!))].slice(0, 4),
        afterBackMessages: [...new Set(after.map((e) => e.error!))].slice(0, 4),
      };
    });
    results.set(v.key, { runs, reads: log.length });
  }
  return { results, downtimes };
}

// ---- cold start ----------------------------------------------------------------------------

export interface ColdStartSample {
  /** Node's own start-up, before the script's first line. */
  bootMs: number;
  importMs: number;
  createMs: number;
  firstQueryMs: number;
  /** import + create + first query. */
  totalMs: number;
  /** From the parent's spawn() to the child's exit. */
  processMs: number;
}

const children = new Set<ChildProcess>();

/** Kills cold-start children still running (cleanup on failure). */
export function killChildren(): void {
  for (const c of children) {
    if (c.pid !== undefined && c.exitCode === null) c.kill('SIGKILL');
  }
}

/** The environment bench/cold-start.js and bench/instructions.js read their target from. */
function childEnv(target: Target, app: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    BENCH_HOST: target.host,
    BENCH_PORT: String(target.port),
    BENCH_USER: target.user,
    BENCH_PASSWORD: target.password,
    BENCH_DB: target.database,
    BENCH_CA_FILE: target.caFile,
    BENCH_URL: target.url,
    BENCH_APP: app,
  };
}

function coldStartOnce(key: string, target: Target, run: number): Promise<ColdStartSample> {
  const script = path.join(__dirname, 'cold-start.js');
  const env = childEnv(target, `bench-cold-${key}-${run}`);
  return new Promise((resolve, reject) => {
    const spawned = performance.now();
    const child = execFile(process.execPath, [script, key], { env, timeout: 60_000, cwd: path.resolve(__dirname, '..') }, (err, stdout, stderr) => {
      children.delete(child);
      const processMs = performance.now() - spawned;
      if (err) {
        reject(new Error(`cold start ${key} failed: ${err.message}\n${stderr}`));
        return;
      }
      try {
        const t = JSON.parse(stdout.trim().split('\n').pop()!) as { booted: number; imported: number; created: number; queried: number };
        resolve({
          bootMs: t.booted,
          importMs: t.imported - t.booted,
          createMs: t.created - t.imported,
          firstQueryMs: t.queried - t.created,
          totalMs: t.queried - t.booted,
          processMs,
        });
      } catch (e) {
        reject(new Error(`cold start ${key}: unreadable output ${JSON.stringify(stdout)} (${(e as Error).message})`));
      }
    });
    children.add(child);
  });
}

export async function coldStarts(keys: string[], target: Target, opts: { runs: number; warmupRuns: number }): Promise<Map<string, ColdStartSample[]>> {
  const results = new Map<string, ColdStartSample[]>(keys.map((k) => [k, []]));
  for (let r = 0; r < opts.warmupRuns + opts.runs; r++) {
    for (const key of rotation(keys, r)) {
      const sample = await coldStartOnce(key, target, r);
      if (r >= opts.warmupRuns) results.get(key)!.push(sample);
    }
  }
  return results;
}

// ---- CPU instructions per operation -----------------------------------------------------------

export type InstructionOp = 'point' | 'unit' | 'burst';

export interface InstructionCounts {
  /** Instructions per operation on the main thread, one figure per run. */
  perOp: number[];
}

/**
 * Instructions the main thread executed per operation in one `node bench/instructions.js`
 * run under callgrind: the worker counts only its measured operations (callgrind_control
 * turns counting on after its warm-up and off after them), and only the first thread's
 * count is read. The main thread is the one a request waits for; V8's background threads
 * (concurrent compilation, parallel GC) are left out, as their share moves from run to run.
 */
function countInstructions(node: string, key: string, op: InstructionOp, warm: number, ops: number, target: Target): Promise<number> {
  const script = path.join(__dirname, 'instructions.js');
  const out = path.join(os.tmpdir(), `bench-callgrind-${process.pid}-${key}-${op}.out`);
  const args = ['--tool=callgrind', '--instr-atstart=no', '--separate-threads=yes', `--callgrind-out-file=${out}`, node, script, key, op, String(warm), String(ops)];
  const cleanup = (): void => {
    for (const f of fs.readdirSync(os.tmpdir())) if (f.startsWith(path.basename(out))) fs.rmSync(path.join(os.tmpdir(), f), { force: true });
  };
  return new Promise((resolve, reject) => {
    const child = execFile('valgrind', args, { env: childEnv(target, `bench-ir-${key}`), timeout: 900_000, cwd: path.resolve(__dirname, '..') }, (err, _stdout, stderr) => {
      children.delete(child);
      let total: number | undefined;
      try {
        const main = fs.readFileSync(`${out}-01`, 'utf8');
        const m = /^totals:\s*(\d+)/m.exec(main);
        total = m ? Number(m[1]) : undefined;
      } catch {
        total = undefined;
      }
      cleanup();
      if (err || total === undefined) {
        reject(new Error(`instructions ${key} ${op}: ${err?.message ?? 'no count'}\n${stderr.slice(-2000)}`));
        return;
      }
      resolve(total / ops);
    });
    children.add(child);
  });
}

/** Instructions per operation for each variant, `runs` fresh processes each, alternating. */
export async function instructionCounts(
  keys: string[],
  target: Target,
  opts: { node: string; op: InstructionOp; warm: number; ops: number; runs: number; progress?: (line: string) => void },
): Promise<Map<string, InstructionCounts>> {
  const results = new Map<string, InstructionCounts>(keys.map((k) => [k, { perOp: [] }]));
  for (let r = 0; r < opts.runs; r++) {
    for (const key of rotation(keys, r)) {
      const perOp = await countInstructions(opts.node, key, opts.op, opts.warm, opts.ops, target);
      results.get(key)!.perOp.push(perOp);
      opts.progress?.(`${key} ${opts.op}: ${Math.round(perOp)} instructions per operation`);
    }
  }
  return results;
}

// ---- round trips on a hot pool ---------------------------------------------------------------

export interface RoundTrips {
  /** Statements the server executed (pg_stat_statements). */
  perPointRead: number;
  perUnit: number;
  /** Round trips the client asked for (node-postgres' Sync and Query messages). */
  tripsPerPointRead: number;
  tripsPerUnit: number;
  /** The statements seen for the point reads, most frequent first (text shortened). */
  pointStatements: { query: string; calls: number }[];
  unitStatements: { query: string; calls: number }[];
}

/**
 * Round trips this process's node-postgres connections ask for: Sync (extended protocol)
 * and Query (simple protocol) messages, each answered by one ReadyForQuery that the client
 * waits for. Counted on node-postgres' Connection, which bare Prisma's pool and the layer's
 * share; the server's statement count cannot see a statement that travels with another.
 */
function wireRoundTrips(): { count(): number; stop(): void } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const proto = (require('pg/lib/connection') as { prototype: Record<'sync' | 'query', (this: unknown, ...args: unknown[]) => unknown> }).prototype;
  const { sync, query } = proto;
  let n = 0;
  proto.sync = function countedSync(...args) {
    n++;
    return sync.apply(this, args);
  };
  proto.query = function countedQuery(...args) {
    n++;
    return query.apply(this, args);
  };
  return {
    count: () => n,
    stop: () => Object.assign(proto, { sync, query }),
  };
}

/**
 * Statements the server executed, counted by pg_stat_statements for the bench database,
 * and the round trips the client asked for (wireRoundTrips: the layer sends a unit's BEGIN
 * with its first statement, one statement more than round trips). The variant's pool is
 * made hot first; nothing else runs in the bench database meanwhile.
 */
export async function roundTrips(v: Variant<string>, admin: pg.Client, database: string, opts: { queries: number; units: number; unitArgs: (key: string, i: number) => UnitArgs }): Promise<RoundTrips> {
  for (let i = 0; i < 20; i++) await v.pointRead((i % 100) + 1);
  for (let i = 0; i < 5; i++) await v.unit(opts.unitArgs(`${v.key}-rt-warm`, i));
  const count = async (): Promise<{ total: number; statements: { query: string; calls: number }[] }> => {
    const { rows } = await admin.query<{ query: string; calls: string }>(
      `SELECT query, calls FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1) ORDER BY calls DESC`,
      [database],
    );
    const statements = rows.map((r) => ({ query: r.query.replace(/\s+/g, ' ').slice(0, 90), calls: Number(r.calls) }));
    return { total: statements.reduce((s, r) => s + r.calls, 0), statements };
  };
  // The admin connection's statements go through node-postgres too: only the loops are counted.
  const wire = wireRoundTrips();
  let reads: Awaited<ReturnType<typeof count>>;
  let units: Awaited<ReturnType<typeof count>>;
  let readTrips = 0;
  let unitTrips = 0;
  try {
    await admin.query('SELECT pg_stat_statements_reset()');
    let from = wire.count();
    for (let i = 0; i < opts.queries; i++) await v.pointRead((i % 1000) + 1);
    readTrips = wire.count() - from;
    reads = await count();
    await admin.query('SELECT pg_stat_statements_reset()');
    from = wire.count();
    for (let i = 0; i < opts.units; i++) await v.unit(opts.unitArgs(`${v.key}-rt`, i));
    unitTrips = wire.count() - from;
    units = await count();
  } finally {
    wire.stop();
  }
  return {
    perPointRead: reads.total / opts.queries,
    perUnit: units.total / opts.units,
    tripsPerPointRead: readTrips / opts.queries,
    tripsPerUnit: unitTrips / opts.units,
    pointStatements: reads.statements.slice(0, 4),
    unitStatements: units.statements.slice(0, 8),
  };
}

export function describe(err: unknown): string {
  const e = err as { name?: string; message?: string; code?: string } | null;
  let message = String(e?.message ?? err);
  // Prisma's messages start with the call site; the reason is the last line.
  if (/invocation/.test(message)) message = message.trim().split('\n').filter((l) => l.trim()).pop() ?? message;
  const text = `${e?.name ?? 'Error'}${e?.code ? ` [${e.code}]` : ''}: ${message}`;
  return text.replace(/\s+/g, ' ').slice(0, 160);
}

// ---- where the CPU goes -------------------------------------------------------------------

export interface CpuProfileShare {
  ops: number;
  /** Share of all non-idle samples whose own (self) frame is in each group. */
  groups: { group: string; share: number; usPerOp: number }[];
  busyUsPerOp: number;
  /** The layer's own functions with the most self time. */
  layerFunctions: { fn: string; usPerOp: number }[];
}

const GROUPS: [string, RegExp][] = [
  ['this layer (dist/*.js, not generated)', new RegExp(`^file://${path.resolve(__dirname, '..', 'dist').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/(?!generated/)`)],
  ['@prisma/client runtime (query compiler, extensions, result mapping)', /node_modules\/@prisma\/client\//],
  ['@prisma/adapter-pg + driver-adapter-utils + debug', /node_modules\/@prisma\/(adapter-pg|driver-adapter-utils|debug)\//],
  ['pg, pg-pool, pg-protocol', /node_modules\/(pg|pg-pool|pg-protocol|pg-types)\//],
];

/** Samples the V8 profiler while `op` runs `ops` times (after 200 unmeasured); attributes self time by package. */
export async function profileOps(ops: number, op: (i: number) => Promise<unknown>): Promise<CpuProfileShare> {
  const session = new Session();
  session.connect();
  try {
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 100 });
    for (let i = 0; i < 200; i++) await op(-1 - i);
    collectGarbage();
    await session.post('Profiler.start');
    for (let i = 0; i < ops; i++) await op(i);
    const { profile } = await session.post('Profiler.stop');
    const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
    const deltas = profile.timeDeltas ?? [];
    const spent = new Map<string, number>();
    const own = new Map<string, number>();
    let busy = 0;
    profile.samples?.forEach((id, i) => {
      const frame = nodes.get(id)!.callFrame;
      if (frame.functionName === '(idle)') return;
      const us = deltas[i] ?? 0;
      busy += us;
      const group = GROUPS.find(([, re]) => re.test(frame.url))?.[0] ?? 'other (node core, TLS, GC, bench loop)';
      spent.set(group, (spent.get(group) ?? 0) + us);
      if (group === GROUPS[0]![0]) {
        const fn = `${frame.functionName || '(anonymous)'} (${path.basename(frame.url)}:${frame.lineNumber + 1})`;
        own.set(fn, (own.get(fn) ?? 0) + us);
      }
    });
    return {
      ops,
      busyUsPerOp: busy / ops,
      groups: [...spent].sort((a, b) => b[1] - a[1]).map(([group, us]) => ({ group, share: us / busy, usPerOp: us / ops })),
      layerFunctions: [...own].sort((a, b) => b[1] - a[1]).slice(0, 10).map(([fn, us]) => ({ fn, usPerOp: us / ops })),
    };
  } finally {
    await session.post('Profiler.disable').catch(() => undefined);
    session.disconnect();
  }
}

// ---- serverless handlers: inside db.scope vs outside ----------------------------------------

export interface ScopeResult {
  latency: Map<string, LatencyResult>;
  /** Connections opened per invocation (the Db's connectionsOpened over `ops` invocations). */
  perInvocation: Map<string, number>;
  /** Peak server connections (pg_stat_activity) while those invocations ran one after another. */
  peak: Map<string, number>;
  /** Server connections of the variant left 2 s after its last invocation. */
  left: Map<string, number>;
}

export async function scopedHandlers(
  variants: HandlerVariant[],
  admin: pg.Client,
  opts: { rounds: number; warmupRounds: number; ops: number; ids: () => number },
): Promise<ScopeResult> {
  const latency = await sequentialLatency(variants, { rounds: opts.rounds, warmupRounds: opts.warmupRounds, opsPerRound: () => opts.ops, op: (v) => v.pointRead(opts.ids()) });
  const perInvocation = new Map<string, number>();
  const peak = new Map<string, number>();
  const left = new Map<string, number>();
  for (const v of variants) {
    const sampler = connectionSampler(admin, v.appName, 5);
    const before = v.opened();
    for (let i = 0; i < opts.ops; i++) await v.pointRead(opts.ids());
    perInvocation.set(v.key, (v.opened() - before) / opts.ops);
    peak.set(v.key, await sampler.stop());
    await sleep(2000);
    const { rows } = await admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name = $1`, [v.appName]);
    left.set(v.key, rows[0]?.n ?? -1);
  }
  return { latency, perInvocation, peak, left };
}

// ---- a fleet of processes ----------------------------------------------------------------------

export interface FleetResult {
  mode: 'serverless' | 'pooled';
  via: string;
  procs: number;
  concurrency: number;
  invocations: number;
  latencies: number[];
  errors: number;
  firstErrors: string[];
  /** Peak client backends on the server in the bench database (sampled every 10 ms). */
  peakServerConnections: number;
  /** Connections the processes opened (to PgBouncer or the server), summed. */
  opened: number;
  wallMs: number;
}

interface WorkerReport {
  latencies: number[];
  errors: number;
  firstError?: string;
  wallMs: number;
  opened: number;
}

/** Server connections to `database` (client backends), peak until stopped. */
function databaseSampler(admin: pg.Client, database: string, everyMs = 10): { stop(): Promise<number> } {
  let peak = 0;
  let running = true;
  const sample = async (): Promise<void> => {
    const { rows } = await admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = $1`, [database]);
    peak = Math.max(peak, rows[0]?.n ?? 0);
  };
  const loop = (async () => {
    while (running) {
      await sample().catch(() => undefined);
      await sleep(everyMs);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return peak;
    },
  };
}

/**
 * `procs` separate node processes (bench/fleet-worker.js), each a cold instance of the
 * layer with `concurrency` invocations at once, started together once every one is ready.
 */
export async function fleet(
  opts: { url: string; mode: 'serverless' | 'pooled'; via: string; procs: number; concurrency: number; invocations: number; rows: number; admin: pg.Client; database: string; timeoutMs: number },
): Promise<FleetResult> {
  const script = path.join(__dirname, 'fleet-worker.js');
  const workers = Array.from({ length: opts.procs }, (_, i) => {
    const child = spawn(process.execPath, [script], {
      cwd: path.resolve(__dirname, '..'),
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        BENCH_URL: opts.url,
        BENCH_APP: `bench-fleet-${opts.mode}-${i}`,
        FLEET_MODE: opts.mode,
        FLEET_CONCURRENCY: String(opts.concurrency),
        FLEET_INVOCATIONS: String(opts.invocations),
        FLEET_ROWS: String(opts.rows),
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    children.add(child);
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    const exited = new Promise<WorkerReport>((resolve, reject) => {
      child.on('exit', (code) => {
        children.delete(child);
        const line = out.trim().split('\n').pop() ?? '';
        if (code !== 0 || !line.startsWith('{')) reject(new Error(`fleet worker ${i} exited ${code}: ${err.slice(-500)}`));
        else resolve(JSON.parse(line) as WorkerReport);
      });
    });
    exited.catch(() => undefined);
    const ready = async (): Promise<void> => {
      const until = Date.now() + opts.timeoutMs;
      while (!out.includes('ready\n')) {
        if (Date.now() > until || child.exitCode !== null) throw new Error(`fleet worker ${i} not ready: ${err.slice(-500)}`);
        await sleep(20);
      }
    };
    return { child, exited, ready };
  });
  try {
    await Promise.all(workers.map((w) => w.ready()));
    const sampler = databaseSampler(opts.admin, opts.database);
    const started = performance.now();
    for (const w of workers) w.child.stdin!.write('go\n');
    let timer: NodeJS.Timeout | undefined;
    const reports = await Promise.race([
      Promise.all(workers.map((w) => w.exited)),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`fleet did not finish within ${opts.timeoutMs} ms`)), opts.timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
    const wallMs = performance.now() - started;
    const peakServerConnections = await sampler.stop();
    return {
      mode: opts.mode,
      via: opts.via,
      procs: opts.procs,
      concurrency: opts.concurrency,
      invocations: opts.invocations,
      latencies: reports.flatMap((r) => r.latencies),
      errors: reports.reduce((n, r) => n + r.errors, 0),
      firstErrors: [...new Set(reports.flatMap((r) => (r.firstError ? [r.firstError] : [])))].slice(0, 3),
      peakServerConnections,
      opened: reports.reduce((n, r) => n + r.opened, 0),
      wallMs,
    };
  } finally {
    for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGKILL');
  }
}
