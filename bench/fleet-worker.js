// One process of the fleet workload: a serverless platform's instance. Creates its Db
// (cold: nothing connected), says `ready`, waits for `go` on stdin, then runs
// FLEET_CONCURRENCY invocations at once, FLEET_INVOCATIONS times each, every one a
// 5-statement handler wrapped in db.handler (one scope per invocation), and prints one
// JSON line: latencies (ms), errors, the first error. Plain JavaScript, as cold-start.js.
//
//   env: BENCH_URL, BENCH_APP, FLEET_MODE (serverless|pooled), FLEET_CONCURRENCY, FLEET_INVOCATIONS, FLEET_ROWS
'use strict';
const { createDb } = require('../dist/index.js');
const { PrismaClient } = require('./.build/generated/prisma/client.js');

const env = process.env;
const db = createDb({
  PrismaClient,
  url: env.BENCH_URL,
  mode: env.FLEET_MODE,
  pool: { size: 5, maxOverflow: 10 },
  applicationName: env.BENCH_APP,
  env: {},
});
const rows = Number(env.FLEET_ROWS);
const handler = db.handler(async (id) => {
  await db.user.findUnique({ where: { id } });
  await db.account.findUnique({ where: { id } });
  await db.account.update({ where: { id }, data: { balance: { decrement: 1 } } });
  await db.transfer.count({ where: { fromId: id } });
  await db.user.findMany({ where: { id: { gte: id } }, take: 3 });
});

async function slot(latencies, failures) {
  for (let i = 0; i < Number(env.FLEET_INVOCATIONS); i++) {
    const started = performance.now();
    try {
      await handler(1 + Math.floor(Math.random() * rows));
      latencies.push(performance.now() - started);
    } catch (err) {
      failures.push(`${err && err.name}: ${String(err && err.message).split('\n').filter(Boolean).pop()}`.slice(0, 200));
    }
  }
}

async function run() {
  const latencies = [];
  const failures = [];
  const started = performance.now();
  await Promise.all(Array.from({ length: Number(env.FLEET_CONCURRENCY) }, () => slot(latencies, failures)));
  const wallMs = performance.now() - started;
  const opened = db.stats().counters.connectionsOpened;
  await db.close();
  process.stdout.write(`${JSON.stringify({ latencies, errors: failures.length, firstError: failures[0], wallMs, opened })}\n`);
}

process.stdout.write('ready\n');
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  input += chunk;
  if (input.includes('go\n')) {
    process.stdin.pause();
    run().then(
      () => process.exit(0),
      (err) => {
        process.stderr.write(`${err && err.stack ? err.stack : String(err)}\n`);
        process.exit(1);
      },
    );
  }
});
