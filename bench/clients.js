// The variants the per-process workloads (bench/instructions.js, bench/isolated.js) run,
// each built as an application would: bare Prisma on PrismaPg, or createDb. Plain
// JavaScript on the compiled build, as bench/cold-start.js.
'use strict';
const fs = require('node:fs');

/** The bare variants' pg.Pool settings (also bench/cold-start.js's): the layer's target, as options. */
function poolConfig(env) {
  return {
    host: env.BENCH_HOST,
    port: Number(env.BENCH_PORT),
    user: env.BENCH_USER,
    password: env.BENCH_PASSWORD,
    database: env.BENCH_DB,
    ssl: { ca: fs.readFileSync(env.BENCH_CA_FILE, 'utf8'), rejectUnauthorized: true },
    max: 15,
    application_name: env.BENCH_APP,
  };
}

/**
 * A point read and a unit of work (read, update, insert) of one variant. `underValgrind`:
 * everything runs ~50 times slower, so bare Prisma's 2 s wait for a transaction's
 * connection would be too short (the layer sets its own, past its pool's); elsewhere bare
 * Prisma keeps its defaults.
 */
function makeClient(variant, env, { underValgrind = false } = {}) {
  const transactionOptions = underValgrind ? { transactionOptions: { maxWait: 300_000, timeout: 300_000 } } : {};
  const { PrismaClient } = require('./.build/generated/prisma/client.js');
  if (variant === 'prisma' || variant === 'prisma2' || variant === 'prisma+als') {
    if (variant === 'prisma+als') {
      // An application that uses AsyncLocalStorage anywhere (OpenTelemetry's context
      // manager, a request-context logger): once one has run, Node (before AsyncContextFrame,
      // the default from Node 24) propagates its store to every promise the process creates.
      const { AsyncLocalStorage } = require('node:async_hooks');
      new AsyncLocalStorage().run({}, () => {});
    }
    const pg = require('pg');
    const { PrismaPg } = require('@prisma/adapter-pg');
    const pool = new pg.Pool(poolConfig(env));
    pool.on('error', () => {});
    return bare(new PrismaClient({ adapter: new PrismaPg(pool), ...transactionOptions }), () => pool.end());
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
      adapter = new Instrumentation(counters, hub, new Lifecycle(undefined), config.slowQueryMs, undefined, () => {}, {}).factory(adapter);
    }
    return bare(new PrismaClient({ adapter, ...transactionOptions }), () => driver.close());
  }
  if (variant === 'layer') {
    const { createDb } = require('../dist/index.js');
    // Under valgrind (tens of times slower), as bare Prisma's: a unit's deadline and its wait
    // for a connection raised, and the statement timeout behind each statement's client
    // deadline too (at 30 s, a COMMIT queued behind 100 units was cut: "lost during COMMIT").
    const slow = underValgrind ? { transaction: { timeoutMs: 300_000, maxWaitMs: 300_000 }, timeouts: { statementMs: 300_000 }, pool: { size: 5, maxOverflow: 10, timeoutMs: 300_000 } } : {};
    const db = createDb({ PrismaClient, url: env.BENCH_URL, pool: { size: 5, maxOverflow: 10 }, applicationName: env.BENCH_APP, env: {}, ...slow });
    return { point: (id) => db.user.findUnique({ where: { id } }), unit: (fn) => db.transaction(fn), close: () => db.close() };
  }
  throw new Error(`unknown variant ${variant}`);
}

/** A bare Prisma client's point read and unit; `end` closes what it runs on, after Prisma disconnects. */
function bare(prisma, end) {
  return {
    point: (id) => prisma.user.findUnique({ where: { id } }),
    unit: (fn) => prisma.$transaction(fn),
    close: async () => {
      await prisma.$disconnect();
      await end();
    },
  };
}

/** The unit of work every variant runs: the same statements as the bench's sequential rounds. */
function unitOfWork(id, reference) {
  return async (tx) => {
    await tx.account.findUnique({ where: { id } });
    await tx.account.update({ where: { id }, data: { balance: { decrement: 1 } } });
    await tx.transfer.create({ data: { fromId: id, toId: 1 + (id % 1000), amount: 1, reference } });
  };
}

/**
 * Operation `i` of a per-process worker (bench/instructions.js, bench/isolated.js): the same
 * ids in every run of every variant; `prefix` keeps the units' transfer references unique.
 */
function operation(c, op, i, prefix) {
  const id = 1 + ((i * 7919) % 1000);
  return op === 'point' ? c.point(id) : c.unit(unitOfWork(id, `${prefix}-${i}`));
}

module.exports = { makeClient, operation, poolConfig, unitOfWork };
