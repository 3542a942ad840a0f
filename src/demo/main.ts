// `npm start`: the library end to end on a real PostgreSQL wire connection.
//
//   no DATABASE_URL  -> an embedded PGlite server on a free 127.0.0.1 port (nothing to install)
//   DATABASE_URL set -> that database (its DB_* settings apply as in any application)
//
// Steps: apply the committed migrations with deploy(), open two accounts, run one
// transfer that commits and one that throws inside its unit of work and rolls back,
// print balances and a health summary, then close everything. The process ends because
// nothing is left open, not because of process.exit().

import { createDb } from '../client.ts';
import { loadConfig, toUrl, type DbConfig, type DbOptions } from '../config.ts';
import { DatalayerError } from '../errors.ts';
import { PrismaClient } from '../generated/prisma/client.ts';
import { deploy, type DeployResult } from '../migrate.ts';
import { redact } from '../secrets.ts';
import { sslPlan } from '../ssl.ts';
import { accountsRepository, cents, InsufficientFundsError, transfer, type DemoDb } from './bank.ts';
import { startEmbedded, type EmbeddedDatabase } from './embedded.ts';

const log = (line = ''): void => console.log(line);
const step = (title: string): void => log(`\n== ${title}`);

/**
 * Applies the committed migrations with the same TLS settings the pool will use, so a
 * server that only accepts verified TLS gets it for migrations too. Uses DIRECT_URL when
 * set: the schema engine needs session state a transaction-mode pooler cannot keep.
 */
async function migrate(config: DbConfig): Promise<DeployResult> {
  const url = config.directUrl ?? toUrl(config);
  const plan = sslPlan(config);
  try {
    return await deploy({ url, ssl: plan.first });
  } catch (err) {
    // libpq's prefer/allow: one attempt on the other side of the TLS choice.
    const sslRefused = err instanceof Error && /does not support SSL|no encryption/i.test(err.message);
    if (plan.fallback === undefined || !sslRefused) throw err;
    return deploy({ url, ssl: plan.fallback });
  }
}

async function printHealth(db: DemoDb): Promise<void> {
  const health = await db.health({ timeoutMs: 5_000 });
  const { counters } = db.stats();
  const { pool } = health;
  log(`status     ${health.status} (${health.latencyMs} ms)${health.error ? `: ${health.error}` : ''}`);
  if (health.status === 'healthy') {
    log(`server     PostgreSQL ${health.serverVersion ?? '?'}${health.isReplica ? ' (replica)' : ''}, clock ${health.serverTime ?? '?'}`);
    // PGlite keeps no pg_stat_ssl row; a real server reports this backend's TLS.
    const tls = health.ssl;
    log(`tls        ${tls?.active ? `yes (${tls.version ?? '?'}, ${tls.cipher ?? '?'})` : `no (sslmode=${db.config.ssl.mode})`}`);
  }
  log(`pool       open ${pool.open}, idle ${pool.idle}, in use ${pool.inUse}, waiting ${pool.waiting}, max ${pool.max}`);
  log(`units      ${counters.transactions} run, ${counters.commits} committed, ${counters.rollbacks} rolled back, ${counters.retries} retried`);
  log(`statements ${counters.queries} sent, ${counters.queryErrors} failed; connections opened ${counters.connectionsOpened}, pool timeouts ${counters.poolTimeouts}`);
}

async function run(): Promise<void> {
  // Unique owners and references per run, so the demo can run repeatedly on one database.
  const runId = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  let embedded: EmbeddedDatabase | undefined;
  let db: DemoDb | undefined;

  try {
    let options: DbOptions = {};
    step('Database');
    if (process.env.DATABASE_URL) {
      log('DATABASE_URL is set: using that database (DB_* variables apply).');
    } else {
      log('DATABASE_URL is not set: starting an embedded PostgreSQL (PGlite)...');
      embedded = await startEmbedded();
      log(`embedded server listening on ${embedded.host}:${embedded.port} (ready in ${(embedded.startupMs / 1000).toFixed(1)} s)`);
      // One backend serves every connection, so a bigger pool would only queue. The
      // socket server speaks no TLS. Explicit options win over any DB_* variable.
      options = { url: embedded.url, ssl: { mode: 'disable' }, pool: { size: 1, maxOverflow: 1 } };
    }
    const config = loadConfig(options);

    step('Migrations (deploy)');
    const { applied } = await migrate(config);
    log(applied.length > 0 ? `applied: ${applied.join(', ')}` : 'up to date: no pending migration');

    db = createDb({ PrismaClient, ...options });
    log(`\nconnected  ${db.describe()}`);
    log(`pool       size ${db.config.pool.size} + overflow ${db.config.pool.maxOverflow}, acquire timeout ${db.config.pool.timeoutMs} ms`);

    const accounts = accountsRepository(db);
    step('Open two accounts');
    const alice = await accounts.open(`alice-${runId}`, 100_00);
    const bob = await accounts.open(`bob-${runId}`, 20_00);
    for (const a of [alice, bob]) log(`#${a.id}  ${a.owner.padEnd(20)} ${cents(a.balance).padStart(10)}`);

    step(`Transfer ${cents(30_00)} from ${alice.owner} to ${bob.owner}`);
    await transfer(db, alice.id, bob.id, 30_00, `demo-${runId}-1`);
    log('committed');

    step(`Transfer ${cents(500_00)} from ${bob.owner} to ${alice.owner} (more than the balance)`);
    try {
      await transfer(db, bob.id, alice.id, 500_00, `demo-${runId}-2`);
      throw new Error('the second transfer should have been rolled back');
    } catch (err) {
      // The unit threw after its debit UPDATE: the whole unit was rolled back, and its
      // own error comes back unchanged.
      if (!(err instanceof InsufficientFundsError)) throw err;
      log(`rolled back: ${err.name}`);
      log(`  message        ${err.message}`);
    }

    step('Balances');
    for (const a of await accounts.balances([alice.id, bob.id])) {
      log(`balance ${a.owner.padEnd(20)} ${cents(a.balance).padStart(10)}`);
    }
    log(`transfers recorded: ${await accounts.transfersBetween([alice.id, bob.id])}`);

    step('Health');
    await printHealth(db);
  } finally {
    // Pool first (its sockets point at the embedded server), then the server.
    await db?.close();
    await embedded?.stop();
  }
  step('Closed: pool ended' + (embedded ? ', embedded server stopped' : ''));
}

run().then(
  () => {
    log('done');
  },
  (err: unknown) => {
    // Library errors are already redacted; anything else may carry a URL.
    const text = err instanceof DatalayerError ? `${err.name}: ${err.message}` : redact(err instanceof Error ? `${err.name}: ${err.message}` : String(err));
    console.error(`\ndemo failed: ${text}`);
    process.exitCode = 1;
  },
);
