// One cold start, in a fresh `node` process: import, create, first query, then exit.
// Plain JavaScript on purpose (no transpiling loader in the measured path). Prints one
// JSON line: milliseconds since the process started (performance.timeOrigin) at each step.
//
//   node bench/cold-start.js <pg|prisma|layer|serverless>
//   env: BENCH_HOST, BENCH_PORT, BENCH_USER, BENCH_PASSWORD, BENCH_DB, BENCH_CA_FILE, BENCH_URL, BENCH_APP
'use strict';
// The bare variants' pool settings; clients.js loads no driver at require (before `booted`,
// so it is in no variant's measured steps).
const settings = require('./clients.js');
const booted = performance.now();

const variant = process.argv[2];
const env = process.env;
const poolConfig = () => settings.poolConfig(env);

async function main() {
  let imported, created, queried;
  if (variant === 'pg') {
    const pg = require('pg');
    imported = performance.now();
    const pool = new pg.Pool(poolConfig());
    created = performance.now();
    await pool.query('SELECT id, email, name, created_at FROM users WHERE id = $1 LIMIT 1', [1]);
    queried = performance.now();
    await pool.end();
  } else if (variant === 'prisma') {
    const pg = require('pg');
    const { PrismaPg } = require('@prisma/adapter-pg');
    const { PrismaClient } = require('./.build/generated/prisma/client.js');
    imported = performance.now();
    const pool = new pg.Pool(poolConfig());
    const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
    created = performance.now();
    await prisma.user.findUnique({ where: { id: 1 } });
    queried = performance.now();
    await prisma.$disconnect();
    await pool.end();
  } else if (variant === 'layer' || variant === 'serverless') {
    const { createDb } = require('../dist/index.js');
    const { PrismaClient } = require('./.build/generated/prisma/client.js');
    imported = performance.now();
    const db = createDb({
      PrismaClient,
      url: env.BENCH_URL,
      mode: variant === 'layer' ? 'pooled' : 'serverless',
      pool: { size: 5, maxOverflow: 10 },
      applicationName: env.BENCH_APP,
      env: {},
    });
    created = performance.now();
    await db.user.findUnique({ where: { id: 1 } });
    queried = performance.now();
    await db.close();
  } else {
    throw new Error(`unknown variant ${variant}`);
  }
  process.stdout.write(`${JSON.stringify({ variant, booted, imported, created, queried })}\n`);
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
