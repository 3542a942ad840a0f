// Turns the measurements into the console tables and BENCHMARKS.md (method, machine,
// figures, each target PASS/MISS with the margin and the reason).
import type { Settings } from './main';
import { fmt, median, percentile, ratio, table } from './stats';
import type { ColdStartSample, ConcurrencyRound, CpuProfileShare, LatencyResult, RecoveryResult, RoundTrips } from './workloads';

export interface BenchResults {
  settings: Settings;
  machine: { nproc: number; cpu: string; memGb: number; node: string; postgres: string; prisma: string; pg: string; platform: string };
  labels: Record<string, string>;
  date: string;
  durationMs: number;
  point?: Map<string, LatencyResult>;
  unit?: Map<string, LatencyResult>;
  ablation?: { point: Map<string, LatencyResult>; unit: Map<string, LatencyResult>; profile: CpuProfileShare; labels: Record<string, string> };
  concurrency?: Map<string, ConcurrencyRound[]>;
  recovery?: { results: Map<string, RecoveryResult>; downtimes: { stopMs: number; startMs: number }[] };
  cold?: Map<string, ColdStartSample[]>;
  roundTrips?: Map<string, RoundTrips>;
}

interface Target {
  name: string;
  goal: string;
  measured: string;
  pass: boolean | undefined;
  missBy?: string;
  why?: string;
}

const pct = (r: number): string => `${r >= 1 ? '+' : ''}${fmt((r - 1) * 100, 1)}%`;
const us = (ms: number): string => fmt(ms * 1000, 0);
const verdict = (t: Target): string => (t.pass === undefined ? 'n/a' : t.pass ? 'PASS' : 'MISS');

function latencyTable(r: Map<string, LatencyResult>, labels: Record<string, string>, base = 'prisma'): string {
  const b = r.get(base)!;
  const bMed = median(b.samples);
  const bP99 = percentile(b.samples, 99);
  return table(
    ['variant', 'n', 'median ms', 'p99 ms', 'median vs bare Prisma', 'p99 vs bare Prisma', 'per-round ratio: median (min–max)', 'client CPU µs/op', 'errors'],
    [...r].map(([key, v]) => {
      const rounds = v.roundMedians.map((m, i) => m / b.roundMedians[i]!);
      return [
        labels[key] ?? key,
        v.samples.length,
        fmt(median(v.samples), 3),
        fmt(percentile(v.samples, 99), 3),
        `${fmt(ratio(median(v.samples), bMed), 3)}×`,
        `${fmt(ratio(percentile(v.samples, 99), bP99), 3)}×`,
        `${fmt(median(rounds), 3)}× (${fmt(Math.min(...rounds), 2)}–${fmt(Math.max(...rounds), 2)})`,
        fmt(median(v.cpuUsPerOp), 0),
        v.errors,
      ];
    }),
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
  const spread = a.get('layer')!.roundMedians.map((m, i) => m / a.get('prisma')!.roundMedians[i]!);
  const text =
    `In the breakdown rounds the full layer is ${w('layer')} µs (${d('layer')} µs of client CPU) slower per ${what} than bare Prisma; ` +
    `the partial variants differ from bare Prisma by ${w('prisma+driver')} µs (the layer's driver only: GuardedPool checkout/recovery in src/pool.ts, the guarded Client's statement deadline and typed errors in src/driver/client.ts) ` +
    `and ${w('prisma+instrumented')} µs (plus the instrumenting adapter of src/adapter.ts: counters, close gate, slow-query timing). ` +
    `These deltas are of the same size as the round-to-round noise (the layer/bare ratio of single rounds ranges ${fmt(Math.min(...spread), 2)}–${fmt(Math.max(...spread), 2)}× here), ` +
    `so they do not add up exactly; ` +
    (which === 'unit'
      ? `what only the full layer has is \`db.transaction\`'s own wrapping (close gate, option check, retry loop, the unit's limits and ambient client in AsyncLocalStorage), paid once per unit on top of the per-statement costs.`
      : `what only the full layer has for a point read is nothing: \`db.user\` is the Prisma client itself.`);
  return { rows, text };
}

export function renderReport(res: BenchResults): { console: string; markdown: string } {
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
    const prof = res.ablation?.profile;
    const profileSection = b && which === 'point' && prof ? profileText(prof, b) : undefined;
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
    const rounds = r.get('layer')!.roundMedians.map((m, i) => m / r.get('prisma')!.roundMedians[i]!);
    if (profileSection) sections.push(profileSection);
    targets.push({
      name: `Layer overhead, ${which === 'point' ? 'point read' : 'unit of work'}`,
      goal: '≤ 1.03× bare Prisma (median)',
      measured: `${fmt(q, 3)}× (${us(layer)} vs ${us(bare)} µs; per-round ${fmt(Math.min(...rounds), 2)}–${fmt(Math.max(...rounds), 2)}×)`,
      pass: q <= 1.03,
      ...(q <= 1.03
        ? {}
        : {
            missBy: `${fmt((q - 1.03) * 100, 1)} points over (${us(layer - bare)} µs per ${which === 'point' ? 'read' : 'unit'} over bare Prisma; ${us(layer - bare * 1.03)} µs over the allowance)`,
            why: b?.text ?? 'Run with BENCH_ABLATION_ROUNDS > 0 for the breakdown.',
          }),
    });
    if (breakdownSection) sections.push(breakdownSection);
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
      pass: ok,
      ...(ok ? {} : { missBy: `${errors} errors, ${Math.max(0, peak - 15)} connections over`, why: layerRounds.find((x) => x.firstError)?.firstError ?? '' }),
    });
    const q = ratio(tput('layer'), pgT);
    const bareQ = ratio(tput('prisma'), pgT);
    targets.push({
      name: 'Throughput at 500 concurrent units',
      goal: '≥ 0.8× raw pg Pool',
      measured: `${fmt(q, 3)}× (${fmt(tput('layer'), 0)} vs ${fmt(pgT, 0)} units/s; bare Prisma ${fmt(bareQ, 3)}×)`,
      pass: q >= 0.8,
      ...(q >= 0.8
        ? {}
        : {
            missBy: `${fmt((0.8 - q) * 100, 1)} points under (${fmt(0.8 * pgT - tput('layer'), 0)} units/s short of 0.8× raw pg)`,
            why:
              `Bare Prisma on the same adapter and pool already reaches only ${fmt(bareQ, 2)}× raw pg, and the layer is at ${fmt(ratio(tput('layer'), tput('prisma')), 2)}× bare Prisma. ` +
              `With 15 connections and two cores shared with PostgreSQL, throughput is CPU-bound in the Node process: each Prisma statement goes through the query compiler/interpreter ` +
              `(building the query plan, serialising arguments, mapping rows back to objects) and Prisma's interactive-transaction machinery (transaction id bookkeeping, per-transaction timeout timers), ` +
              `which raw pg skips. The layer's own share is the ${fmt((1 - ratio(tput('layer'), tput('prisma'))) * 100, 0)}% between bare Prisma and the layer. ` +
              `Meeting 0.8× raw pg would need Prisma itself to be at least that fast; it is not something the layer can recover.`,
          }),
    });
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
    for (const k of ['serverless', 'layer']) {
      const q = ratio(m(k, 'totalMs'), m('prisma', 'totalMs'));
      targets.push({
        name: `Cold start, ${k === 'serverless' ? 'serverless' : 'pooled'} mode`,
        goal: k === 'serverless' ? '≤ 1.5× bare Prisma (import + create + first query)' : '(reported; the target is for serverless mode)',
        measured: `${fmt(q, 3)}× (${fmt(m(k, 'totalMs'), 0)} vs ${fmt(m('prisma', 'totalMs'), 0)} ms)`,
        pass: k === 'serverless' ? q <= 1.5 : undefined,
        ...(k !== 'serverless' || q <= 1.5
          ? {}
          : {
              missBy: `${fmt((q - 1.5) * 100, 1)} points over`,
              why: `import ${fmt(m(k, 'importMs') - m('prisma', 'importMs'), 0)} ms, create ${fmt(m(k, 'createMs') - m('prisma', 'createMs'), 1)} ms, first query ${fmt(m(k, 'firstQueryMs') - m('prisma', 'firstQueryMs'), 0)} ms more than bare Prisma.`,
            }),
      });
    }
  }

  // ---- round trips
  if (res.roundTrips) {
    const rt = res.roundTrips;
    const base = rt.get('prisma')!;
    const label = (k: string): string => (k === 'layer-preping' ? 'layer, pooled, validateAfterIdleMs: 0 (ping on every checkout)' : (L[k] ?? k));
    sections.push(
      `### Round trips per query on a hot pool (server-side count: pg_stat_statements calls in the bench database)\n\n` +
        table(
          ['variant', 'statements per point read', 'extra vs bare Prisma', 'statements per unit of work', 'extra vs bare Prisma', 'statements seen per unit (calls over the run)'],
          [...rt].map(([k, r]) => [
            label(k),
            fmt(r.perPointRead, 3),
            fmt(r.perPointRead - base.perPointRead, 3),
            fmt(r.perUnit, 3),
            fmt(r.perUnit - base.perUnit, 3),
            r.unitStatements.map((x) => `${x.query.split(' ').slice(0, 3).join(' ')} ×${x.calls}`).join('; '),
          ]),
        ) +
        `\n\nWith node-postgres' extended protocol each statement is one round trip (Parse/Bind/Execute/Sync in one flight). ` +
        `Serverless mode additionally pays a TCP + TLS + SCRAM handshake per checkout, which no statement count shows. ` +
        `The last row shows what the stale-connection check costs when it runs: one \`SELECT 1\` per checkout; on a hot pool (idle < validateAfterIdleMs, 30 s by default) it does not run.`,
    );
    const layer = rt.get('layer')!;
    const extra = Math.max(layer.perPointRead - base.perPointRead, layer.perUnit - base.perUnit);
    targets.push({
      name: 'Extra round trips per query on a hot pool',
      goal: '0',
      measured: `${fmt(layer.perPointRead - base.perPointRead, 3)} per point read, ${fmt(layer.perUnit - base.perUnit, 3)} per unit of work`,
      pass: extra <= 0.0005,
      ...(extra <= 0.0005 ? {} : { missBy: `${fmt(extra, 3)} statements per query`, why: layer.pointStatements.map((x) => `${x.query} ×${x.calls}`).join('; ') }),
    });
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
      ['run', `${res.date}, ${fmt(res.durationMs / 1000, 0)} s`],
    ],
  );

  const consoleText = [`## Targets\n\n${targetTable}`, ...sections, `## Machine\n\n${machine}`].join('\n\n');
  const markdown = `# Benchmarks

Generated by \`npm run bench\` (GitHub issue 7); the figures below are from the latest run. Do not edit by hand: re-run instead.

## How to run

\`\`\`sh
npm run bench                                   # ~2 minutes on 2 cores
BENCH_ROUNDS=4 BENCH_COLD_RUNS=3 npm run bench   # quicker, noisier
BENCH_ONLY=point,unit BENCH_OUT=- npm run bench  # some workloads, no report file
\`\`\`

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
  per-round median ratios (a paired comparison that cancels slow drift of the machine).
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
- **Round trips**: \`pg_stat_statements\` (loaded in the bench server) counts every statement executed in the
  bench database. Each variant's pool is made hot (20 reads, 5 units), the counters are reset, then
  ${s.rtQueries} sequential point reads and, after another reset, ${s.rtUnits} units are counted.
- **Noise**: a 2-core machine running PostgreSQL, the client and the sampler together. Differences of a few
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
  return { console: consoleText, markdown };
}

/** The V8 profile of layer point reads; appends its summary to the breakdown's text. */
function profileText(prof: CpuProfileShare, b: { text: string }): string {
  const own = prof.groups.find((g) => g.group.startsWith('this layer'));
  b.text +=
    ` A V8 CPU profile of ${prof.ops} layer point reads (sampled every 100 µs, self time by package, idle excluded) puts ${fmt((own?.share ?? 0) * 100, 1)}% ` +
    `of the busy time (${fmt(own?.usPerOp ?? 0, 1)} µs per read) in the layer's own code.`;
  return (
    `#### Where the CPU of a layer point read goes (V8 profile, ${prof.ops} reads, ${fmt(prof.busyUsPerOp, 0)} µs busy per read)\n\n` +
    table(['code', 'share of busy time', 'µs per read'], prof.groups.map((g) => [g.group, `${fmt(g.share * 100, 1)}%`, fmt(g.usPerOp, 1)])) +
    `\n\nThe layer's functions with the most self time (compiled line numbers in dist/): ${prof.layerFunctions.map((f) => `\`${f.fn}\` ${fmt(f.usPerOp, 1)} µs`).join(', ')}.`
  );
}

function errorList(lines: string[], title = 'Errors seen (first of each)'): string {
  if (lines.length === 0) return '';
  return `\n\n${title}:\n\n${[...new Set(lines)].map((l) => `- ${l.replace(/\|/g, '\\|')}`).join('\n')}`;
}
