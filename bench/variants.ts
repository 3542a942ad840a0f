// The four things compared side by side, each driving the same two operations:
//
//   pg          raw node-postgres Pool (hand-written SQL, same columns Prisma reads)
//   prisma      bare Prisma client on the same adapter: new PrismaClient({ adapter: new PrismaPg(pool) })
//   layer       this package, pooled:      createDb({ PrismaClient, url, pool: { size: 5, maxOverflow: 10 } })
//   serverless  this package, no pool:      createDb({ ..., mode: 'serverless' })
//
// plus, for the overhead breakdown only, bare Prisma with one piece of the layer added.
// Everything measured comes from the compiled build (dist/, and the test schema's client
// compiled to bench/.build by tsconfig.bench-client.json) and node_modules.
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { Instrumentation } from '../dist/adapter.js';
import { loadConfig } from '../dist/config.js';
import { createDriver } from '../dist/driver/index.js';
import { EventHub } from '../dist/events.js';
import { createDb } from '../dist/index.js';
import { Lifecycle } from '../dist/lifecycle.js';
import { newCounters } from '../dist/stats.js';
import { PrismaClient } from './.build/generated/prisma/client.js';

export type VariantKey = 'pg' | 'prisma' | 'layer' | 'serverless' | 'prisma2';
export type AblationKey = 'prisma' | 'prisma+driver' | 'prisma+instrumented' | 'layer';

/** Where and how to connect: the same server, database, role and TLS settings for every variant. */
export interface Target {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** CA file; TLS is verified (verify-full) by every variant. */
  caFile: string;
  ca: string;
  /** Same target as a URL for the layer (sslmode=verify-full&sslrootcert=…). */
  url: string;
}

export interface UnitArgs {
  fromId: number;
  toId: number;
  amount: number;
  reference: string;
}

export interface Variant<K extends string = VariantKey> {
  key: K;
  label: string;
  /** application_name of its connections (peak connections are counted by it). */
  appName: string;
  pointRead(id: number): Promise<unknown>;
  /** Read, update, insert in one transaction. */
  unit(args: UnitArgs): Promise<unknown>;
  close(): Promise<void>;
}

/** Connections at most, for every pooled variant: the layer's default size 5 + overflow 10. */
export const MAX_CONNECTIONS = 15;

export const LABELS: Record<VariantKey, string> = {
  pg: 'raw pg Pool',
  prisma: 'bare Prisma + PrismaPg(pool)',
  layer: 'layer, pooled (createDb)',
  serverless: "layer, mode: 'serverless'",
  prisma2: 'bare Prisma, a second client (A/A control)',
};

let seq = 0;
const appName = (key: string): string => `bench-${key.replace(/[^a-z]/g, '')}-${process.pid}-${++seq}`;

export function pgPool(target: Target, name: string): pg.Pool {
  const pool = new pg.Pool({
    host: target.host,
    port: target.port,
    user: target.user,
    password: target.password,
    database: target.database,
    ssl: { ca: target.ca, rejectUnauthorized: true },
    max: MAX_CONNECTIONS,
    application_name: name,
  });
  // An idle client's socket error (server restart) is emitted on the pool; unheard, it
  // would crash the process. Applications must do the same; it is not an error the caller sees.
  pool.on('error', () => {});
  return pool;
}

const POINT_SQL = 'SELECT id, email, name, created_at FROM users WHERE id = $1 LIMIT 1';

export function rawPg(target: Target): Variant {
  const name = appName('pg');
  const pool = pgPool(target, name);
  return {
    key: 'pg',
    label: LABELS.pg,
    appName: name,
    pointRead: (id) => pool.query(POINT_SQL, [id]),
    async unit({ fromId, toId, amount, reference }) {
      const client = await pool.connect();
      let broken: Error | undefined;
      try {
        await client.query('BEGIN');
        await client.query('SELECT id, owner, balance, created_at FROM accounts WHERE id = $1 LIMIT 1', [fromId]);
        await client.query('UPDATE accounts SET balance = balance - $2 WHERE id = $1 RETURNING id, owner, balance, created_at', [fromId, amount]);
        await client.query('INSERT INTO transfers (from_id, to_id, amount, reference) VALUES ($1, $2, $3, $4) RETURNING id, from_id, to_id, amount, reference, created_at', [
          fromId,
          toId,
          amount,
          reference,
        ]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch((e: Error) => (broken = e));
        throw err;
      } finally {
        client.release(broken);
      }
    },
    close: () => pool.end(),
  };
}

type Client = InstanceType<typeof PrismaClient>;
type Tx = Pick<Client, 'account' | 'transfer'>;

const prismaUnit = async (tx: Tx, { fromId, toId, amount, reference }: UnitArgs): Promise<void> => {
  await tx.account.findUnique({ where: { id: fromId } });
  await tx.account.update({ where: { id: fromId }, data: { balance: { decrement: amount } } });
  await tx.transfer.create({ data: { fromId, toId, amount, reference } });
};

export function barePrisma(target: Target): Variant {
  const name = appName('prisma');
  const pool = pgPool(target, name);
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
  return {
    key: 'prisma',
    label: LABELS.prisma,
    appName: name,
    pointRead: (id) => prisma.user.findUnique({ where: { id } }),
    unit: (args) => prisma.$transaction((tx) => prismaUnit(tx, args)),
    async close() {
      await prisma.$disconnect();
      await pool.end();
    },
  };
}

export function layer(target: Target, mode: 'pooled' | 'serverless', extra: { validateAfterIdleMs?: number } = {}): Variant {
  const key = mode === 'pooled' ? 'layer' : 'serverless';
  const name = appName(key);
  const db = createDb({
    PrismaClient,
    url: target.url,
    mode,
    pool: { size: 5, maxOverflow: MAX_CONNECTIONS - 5, ...extra },
    applicationName: name,
    env: {},
  });
  return {
    key,
    label: LABELS[key],
    appName: name,
    pointRead: (id) => db.user.findUnique({ where: { id } }),
    unit: (args) => db.transaction((tx) => prismaUnit(tx, args)),
    close: () => db.close(),
  };
}

export function makeVariant(key: VariantKey, target: Target): Variant {
  switch (key) {
    case 'pg':
      return rawPg(target);
    case 'prisma':
      return barePrisma(target);
    case 'prisma2':
      // The same as 'prisma', measured as if it were another variant: how far two identical
      // clients drift apart in one run is the resolution of the latency ratios.
      return { ...barePrisma(target), key, label: LABELS.prisma2 };
    case 'layer':
      return layer(target, 'pooled');
    case 'serverless':
      return layer(target, 'serverless');
  }
}

// ---- overhead breakdown ----------------------------------------------------------------

/** The layer's pieces for one configuration, as client.ts buildStack assembles them. */
function layerParts(target: Target, name: string) {
  const config = loadConfig({ url: target.url, pool: { size: 5, maxOverflow: MAX_CONNECTIONS - 5 }, applicationName: name }, {});
  const counters = newCounters();
  const hub = new EventHub();
  const driver = createDriver(config, counters, hub);
  return { config, counters, hub, driver };
}

/**
 * Bare Prisma on the layer's driver only (src/driver: GuardedPool checkout/recovery, the
 * guarded Client's statement deadline and typed errors), without the instrumentation.
 */
function prismaOnLayerDriver(target: Target): Variant<AblationKey> {
  const name = appName('driver');
  const { driver } = layerParts(target, name);
  const prisma = new PrismaClient({ adapter: driver.factory });
  return {
    key: 'prisma+driver',
    label: "bare Prisma on the layer's driver (GuardedPool + guarded Client)",
    appName: name,
    pointRead: (id) => prisma.user.findUnique({ where: { id } }),
    unit: (args) => prisma.$transaction((tx) => prismaUnit(tx, args)),
    async close() {
      await prisma.$disconnect();
      await driver.close();
    },
  };
}

/** The same plus the instrumenting adapter (src/adapter.ts): what createDb builds, without db.transaction. */
function prismaInstrumented(target: Target): Variant<AblationKey> {
  const name = appName('instrumented');
  const { config, counters, hub, driver } = layerParts(target, name);
  const ins = new Instrumentation(counters, hub, new Lifecycle(undefined), config.slowQueryMs, undefined, () => {}, {});
  const prisma = new PrismaClient({ adapter: ins.factory(driver.factory) });
  return {
    key: 'prisma+instrumented',
    label: "bare Prisma on the layer's driver + instrumentation (adapter.ts)",
    appName: name,
    pointRead: (id) => prisma.user.findUnique({ where: { id } }),
    unit: (args) => prisma.$transaction((tx) => prismaUnit(tx, args)),
    async close() {
      await prisma.$disconnect();
      await driver.close();
    },
  };
}

export function makeAblation(key: AblationKey, target: Target): Variant<AblationKey> {
  switch (key) {
    case 'prisma':
      return { ...barePrisma(target), key };
    case 'prisma+driver':
      return prismaOnLayerDriver(target);
    case 'prisma+instrumented':
      return prismaInstrumented(target);
    case 'layer':
      return { ...layer(target, 'pooled'), key };
  }
}

// ---- serverless handlers: inside db.scope vs outside ---------------------------------------

export type HandlerKey = 'scope' | 'no-scope';

/** A 5-statement handler (3 reads, 1 update, 1 count) of one serverless Db, run inside db.scope or not. */
export interface HandlerVariant extends Variant<HandlerKey> {
  /** Connections this Db has opened so far (its stats counter). */
  opened(): number;
}

export function serverlessHandler(target: Target, key: HandlerKey): HandlerVariant {
  const name = appName(key);
  const db = createDb({ PrismaClient, url: target.url, mode: 'serverless', pool: { size: 5, maxOverflow: MAX_CONNECTIONS - 5 }, applicationName: name, env: {} });
  const five = async (id: number): Promise<void> => {
    await db.user.findUnique({ where: { id } });
    await db.account.findUnique({ where: { id } });
    await db.account.update({ where: { id }, data: { balance: { decrement: 1 } } });
    await db.transfer.count({ where: { fromId: id } });
    await db.user.findMany({ where: { id: { gte: id } }, take: 3 });
  };
  const handler = db.handler(five);
  const invoke = (id: number): Promise<void> => (key === 'scope' ? handler(id) : five(id));
  return {
    key,
    label: key === 'scope' ? "5-statement handler inside db.scope (mode: 'serverless')" : "the same 5 statements outside a scope (mode: 'serverless')",
    appName: name,
    pointRead: invoke,
    unit: (args) => invoke(args.fromId),
    opened: () => db.stats().counters.connectionsOpened,
    close: () => db.close(),
  };
}
