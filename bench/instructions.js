// CPU instructions per operation, for one variant in a process of its own, counted by
// `valgrind --tool=callgrind` (instructions, not seconds: the count does not move with
// what else the machine is doing, which the latency rounds on a shared 2-core machine do).
// The worker runs `warm` operations, then asks callgrind to count (callgrind_control) while
// it runs `ops` more: loading, connecting and the JIT's warm-up are not in the count.
// Plain JavaScript on purpose, as bench/cold-start.js.
//
//   valgrind --tool=callgrind --instr-atstart=no node bench/instructions.js <variant> <point|unit> <warm> <ops>
//   variants: prisma, prisma+als (bare Prisma with an AsyncLocalStorage in use), layer,
//             prisma+driver and prisma+instrumented (the overhead breakdown's partial variants)
//   env: as bench/cold-start.js (BENCH_HOST, ..., BENCH_URL, BENCH_APP)
'use strict';
const fs = require('node:fs');

const { execFile } = require('node:child_process');

const [variant, op, warmArg, opsArg] = process.argv.slice(2);
const warm = Number(warmArg);
const ops = Number(opsArg);
const env = process.env;

function makeClient() {
  const { PrismaClient } = require('./.build/generated/prisma/client.js');
  if (variant === 'prisma' || variant === 'prisma+als') {
    if (variant === 'prisma+als') {
      // An application that uses AsyncLocalStorage anywhere (OpenTelemetry's context
      // manager, a request-context logger): once one has run, Node (before AsyncContextFrame,
      // the default from Node 24) propagates its store to every promise the process creates.
      const { AsyncLocalStorage } = require('node:async_hooks');
      new AsyncLocalStorage().run({}, () => {});
    }
    const pg = require('pg');
    const { PrismaPg } = require('@prisma/adapter-pg');
    const pool = new pg.Pool({
      host: env.BENCH_HOST,
      port: Number(env.BENCH_PORT),
      user: env.BENCH_USER,
      password: env.BENCH_PASSWORD,
      database: env.BENCH_DB,
      ssl: { ca: fs.readFileSync(env.BENCH_CA_FILE, 'utf8'), rejectUnauthorized: true },
      max: 15,
      application_name: env.BENCH_APP,
    });
    pool.on('error', () => {});
    // Under valgrind everything runs ~50 times slower: Prisma's default 2 s wait for a
    // transaction's connection would be too short (the layer sets its own, past its pool's).
    const prisma = new PrismaClient({ adapter: new PrismaPg(pool), transactionOptions: { maxWait: 60_000, timeout: 60_000 } });
    return {
      point: (id) => prisma.user.findUnique({ where: { id } }),
      unit: (fn) => prisma.$transaction(fn),
      close: async () => {
        await prisma.$disconnect();
        await pool.end();
      },
    };
  }
  if (variant === 'prisma+driver' || variant === 'prisma+instrumented') {
    // The overhead breakdown's partial variants (bench/variants.ts): the layer's driver,
    // then its instrumenting adapter too, under a bare Prisma client.
    const { loadConfig } = require('../dist/config.js');
    const { createDriver } = require('../dist/driver/index.js');
    const { EventHub } = require('../dist/events.js');
    const { newCounters } = require('../dist/stats.js');
    const config = loadConfig({ url: env.BENCH_URL, pool: { size: 5, maxOverflow: 10 }, applicationName: env.BENCH_APP }, {});
    const counters = newCounters();
    const hub = new EventHub();
    const driver = createDriver(config, counters, hub);
    let adapter = driver.factory;
    if (variant === 'prisma+instrumented') {
      const { Instrumentation } = require('../dist/adapter.js');
      const { Lifecycle } = require('../dist/lifecycle.js');
      adapter = new Instrumentation(counters, hub, new Lifecycle(undefined), config.slowQueryMs, undefined, () => {}).factory(adapter);
    }
    const prisma = new PrismaClient({ adapter, transactionOptions: { maxWait: 60_000, timeout: 60_000 } });
    return {
      point: (id) => prisma.user.findUnique({ where: { id } }),
      unit: (fn) => prisma.$transaction(fn),
      close: async () => {
        await prisma.$disconnect();
        await driver.close();
      },
    };
  }
  if (variant === 'layer') {
    const { createDb } = require('../dist/index.js');
    const db = createDb({ PrismaClient, url: env.BENCH_URL, pool: { size: 5, maxOverflow: 10 }, applicationName: env.BENCH_APP, env: {} });
    return { point: (id) => db.user.findUnique({ where: { id } }), unit: (fn) => db.transaction(fn), close: () => db.close() };
  }
  throw new Error(`unknown variant ${variant}`);
}

/** Turns callgrind's counting on or off for this process (valgrind --instr-atstart=no). */
function count(on) {
  return new Promise((resolve, reject) => {
    execFile('callgrind_control', ['--instr=' + (on ? 'on' : 'off'), String(process.pid)], (err) => (err ? reject(err) : resolve()));
  });
}

async function main() {
  const c = makeClient();
  const prefix = `${variant}-${process.pid}-${Date.now()}`;
  // Connected before the first unit, in every run alike.
  await c.point(1);
  await run(c, prefix, 0, warm);
  await count(true);
  await run(c, prefix, warm, warm + ops);
  await count(false);
  await c.close();
}

async function run(c, prefix, from, to) {
  // The same ids and values in every run, so both runs of a pair do the same work.
  for (let i = from; i < to; i++) {
    const id = 1 + ((i * 7919) % 1000);
    if (op === 'point') {
      await c.point(id);
    } else {
      await c.unit(async (tx) => {
        await tx.account.findUnique({ where: { id } });
        await tx.account.update({ where: { id }, data: { balance: { decrement: 1 } } });
        await tx.transfer.create({ data: { fromId: id, toId: 1 + (id % 1000), amount: 1, reference: `${prefix}-${i}` } });
      });
    }
  }
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
