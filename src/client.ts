// The client factory: config → adapter → Prisma client → units of work, assembled once.
// Creating a Db validates the configuration and builds objects; it opens no socket,
// starts no timer and sends no query. The first query connects.

import type { SqlDriverAdapterFactory } from '@prisma/driver-adapter-utils';
import { createAdapter } from './adapter.ts';
import { loadConfig, type DbConfig, type DbOptions, type IsolationLevel } from './config.ts';
import type { PoolCounters, PoolEvents, PoolFigures } from './pool.ts';
import { toDatalayerError } from './prisma-errors.ts';
import { describeUrl } from './redact.ts';
import { createSessions, currentCorrelationId, type Sessions, type TransactionalClient, type TxClient } from './session.ts';

/** What createDb needs to build an application's own generated Prisma client. */
export interface PrismaClientOptions {
  adapter: SqlDriverAdapterFactory;
  transactionOptions?: { maxWait?: number; timeout?: number; isolationLevel?: IsolationLevel };
}
export type PrismaClientClass<C> = new (options: PrismaClientOptions) => C;

export interface CreateDbOptions<C> extends DbOptions {
  /** The application's generated `PrismaClient` class (from `prisma generate`). */
  PrismaClient: PrismaClientClass<C>;
  /** Environment to read instead of process.env. */
  env?: Record<string, string | undefined>;
}

export interface DbStats {
  pool: PoolFigures;
  counters: PoolCounters & { transactions: number; commits: number; rollbacks: number; retries: number };
}

export interface DatalayerApi<C> {
  /** Runs `fn` in a transaction: commit on success, rollback on any throw. */
  transaction: Sessions<C>['transaction'];
  /** Runs `fn` on one reserved connection without a transaction. */
  session: Sessions<C>['session'];
  /** The active unit of work's client, or the plain client outside one. */
  current(): TxClient<C>;
  stats(): DbStats;
  /** pg-pool's lifecycle events, with pids only: no credentials, no SQL. */
  on<E extends keyof PoolEvents>(event: E, listener: (...args: PoolEvents[E]) => void): () => void;
  /** Host, port, database, driver and mode: safe to log. */
  describe(): string;
  /** The resolved configuration (contains the password: do not log it). */
  readonly config: DbConfig;
  /** Closes every connection. Idempotent. */
  close(): Promise<void>;
}

export type Db<C> = C & DatalayerApi<C>;

interface ExtensibleClient extends TransactionalClient {
  $extends(extension: object): unknown;
  $disconnect(): Promise<void>;
}

export function createDb<C>(options: CreateDbOptions<C>): Db<C> {
  const { PrismaClient, env, ...dbOptions } = options;
  const config = loadConfig(dbOptions, env);
  const adapter = createAdapter(config);
  const base = new PrismaClient({
    adapter: adapter.factory,
    transactionOptions: { maxWait: config.transaction.maxWaitMs, timeout: config.transaction.timeoutMs },
  }) as unknown as ExtensibleClient;

  // Every query's failure becomes a typed error, inside or outside a unit of work.
  const mapped = base.$extends({
    query: {
      async $allOperations({ args, query }: { args: unknown; query: (a: unknown) => Promise<unknown> }) {
        try {
          return await query(args);
        } catch (err) {
          throw toDatalayerError(err, { correlationId: currentCorrelationId() });
        }
      },
    },
  }) as ExtensibleClient;

  const sessions = createSessions<C>(mapped as unknown as C & TransactionalClient, config, adapter.monitor);
  let closing: Promise<void> | undefined;

  const api: DatalayerApi<C> = {
    transaction: sessions.transaction,
    session: sessions.session,
    current: sessions.current,
    stats: () => ({
      pool: adapter.monitor.figures(),
      counters: { ...adapter.monitor.counters, ...sessions.counters },
    }),
    on(event, listener) {
      adapter.monitor.events.on(event, listener as never);
      return () => void adapter.monitor.events.off(event, listener as never);
    },
    describe: () =>
      `${config.driver} ${config.mode} ${describeUrl(`postgresql://${config.target.host}:${config.target.port}/${config.target.database}`)} ssl=${config.ssl.mode}`,
    config,
    close: () =>
      (closing ??= (async () => {
        await base.$disconnect();
        await adapter.close();
      })()),
  };

  return mapped.$extends({ client: api }) as Db<C>;
}

const GLOBAL_KEY = Symbol.for('prisma-datalayer.db');
type GlobalSlot = { [GLOBAL_KEY]?: unknown };

/**
 * The process-wide Db. Kept on globalThis so that a development server's module
 * reloads reuse the open pool instead of leaking a new one per reload.
 */
export function getDb<C>(options: CreateDbOptions<C>): Db<C> {
  const slot = globalThis as GlobalSlot;
  slot[GLOBAL_KEY] ??= createDb(options);
  return slot[GLOBAL_KEY] as Db<C>;
}

/** Forgets the process-wide Db (after closing it), so the next getDb creates a new one. */
export async function resetDb(): Promise<void> {
  const slot = globalThis as GlobalSlot;
  const db = slot[GLOBAL_KEY] as { close?: () => Promise<void> } | undefined;
  delete slot[GLOBAL_KEY];
  await db?.close?.();
}
