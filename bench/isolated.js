// One variant in a process of its own, serving batches of operations to the bench
// (bench/workloads.ts isolatedLatency) over the IPC channel of child_process.fork. As in an
// application, the process holds one client only: no JIT, heap or AsyncLocalStorage is
// shared with another variant. Plain JavaScript on the compiled build, as bench/cold-start.js.
//
//   forked as: bench/isolated.js <variant>   env: as bench/cold-start.js
//   message in:  { op: 'point' | 'unit' | 'burst', n, from }   (from: the first operation's index)
//   message out: { ready: true } once, then per batch { ms: number[], cpuUs: number, errors, firstError? }
//   'point' and 'unit' run n operations one after another (ms: each one's latency); 'burst'
//   starts n units at once and waits for all (ms: one figure, the burst's wall time, scaled
//   to n committed units when some failed).
'use strict';
const { makeClient, operation } = require('./clients.js');

const variant = process.argv[2];
const client = makeClient(variant, process.env);
const prefix = `iso-${variant}-${process.pid}`;

process.on('message', ({ op, n, from }) => {
  void (op === 'burst' ? burst(n, from) : batch(op, n, from)).then((reply) => process.send(reply));
});

async function batch(op, n, from) {
  const ms = [];
  let errors = 0;
  let firstError;
  const cpu = process.cpuUsage();
  for (let i = from; i < from + n; i++) {
    const started = performance.now();
    try {
      await operation(client, op, i, prefix);
      ms.push(performance.now() - started);
    } catch (err) {
      errors++;
      firstError ??= String(err && err.message ? err.message : err).slice(0, 300);
    }
  }
  const used = process.cpuUsage(cpu);
  return { ms, cpuUs: (used.user + used.system) / n, errors, ...(firstError ? { firstError } : {}) };
}

/** n units started at once (a throughput round); rejected ones are counted, not retried. */
async function burst(n, from) {
  const cpu = process.cpuUsage();
  const started = performance.now();
  const settled = await Promise.allSettled(Array.from({ length: n }, (_, k) => operation(client, 'unit', from + k, prefix)));
  const wallMs = performance.now() - started;
  const used = process.cpuUsage(cpu);
  const failed = settled.filter((s) => s.status === 'rejected');
  const firstError = failed[0] ? String(failed[0].reason && failed[0].reason.message ? failed[0].reason.message : failed[0].reason).slice(0, 300) : undefined;
  // Throughput counts committed units: a unit that gave up (bare Prisma's 2 s wait for a
  // connection, on a slow machine) did no work and must not make the burst look faster.
  // The wall time is reported scaled to n committed units (n / scaled = committed / wall).
  const committed = n - failed.length;
  const scaledMs = committed === 0 ? Infinity : (wallMs * n) / committed;
  return { ms: [scaledMs], cpuUs: (used.user + used.system) / n, errors: failed.length, ...(firstError ? { firstError } : {}) };
}

process.send({ ready: true });
