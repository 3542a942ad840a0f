// CPU instructions per operation, for one variant in a process of its own, counted by
// `valgrind --tool=callgrind` (instructions, not seconds: the count does not move with
// what else the machine is doing, which the latency rounds on a shared 2-core machine do).
// The worker runs `warm` operations, then asks callgrind to count (callgrind_control) while
// it runs `ops` more: loading, connecting and the JIT's warm-up are not in the count.
// Plain JavaScript on purpose, as bench/cold-start.js.
//
//   valgrind --tool=callgrind --instr-atstart=no node bench/instructions.js <variant> <point|unit|burst> <warm> <ops>
//   burst: units started BURST_WIDTH at a time (the throughput rows' situation: a queue for
//   the pool's connections, many units in flight), counted per unit
//   variants: prisma, prisma+als (bare Prisma with an AsyncLocalStorage in use), layer,
//             prisma+driver and prisma+instrumented (the overhead breakdown's partial variants)
//   env: as bench/cold-start.js (BENCH_HOST, ..., BENCH_URL, BENCH_APP)
'use strict';
const { execFile } = require('node:child_process');
const { makeClient, operation } = require('./clients.js');

const [variant, op, warmArg, opsArg] = process.argv.slice(2);
const warm = Number(warmArg);
const ops = Number(opsArg);
const env = process.env;


/** Turns callgrind's counting on or off for this process (valgrind --instr-atstart=no). */
function count(on) {
  return new Promise((resolve, reject) => {
    execFile('callgrind_control', ['--instr=' + (on ? 'on' : 'off'), String(process.pid)], (err) => (err ? reject(err) : resolve()));
  });
}

async function main() {
  const c = makeClient(variant, env, { underValgrind: true });
  const prefix = `${variant}-${process.pid}-${Date.now()}`;
  // Connected before the first unit, in every run alike.
  await c.point(1);
  await run(c, prefix, 0, warm);
  await count(true);
  await run(c, prefix, warm, warm + ops);
  await count(false);
  await c.close();
}

/** Units in flight at once in a 'burst' run: wider than the pool (15), as in the throughput rounds. */
const BURST_WIDTH = 100;

async function run(c, prefix, from, to) {
  if (op !== 'burst') {
    for (let i = from; i < to; i++) await operation(c, op, i, prefix);
    return;
  }
  for (let i = from; i < to; i += BURST_WIDTH) {
    const width = Math.min(BURST_WIDTH, to - i);
    await Promise.all(Array.from({ length: width }, (_, k) => operation(c, 'unit', i + k, prefix)));
  }
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
