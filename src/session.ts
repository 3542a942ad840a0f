// Units of work. A unit commits when its function resolves and rolls back when it
// throws anything; it re-runs on serialization failures and deadlocks; its client is
// ambient (AsyncLocalStorage) so repository code needs no parameter threading.
// A connection lost during COMMIT is never re-run: the outcome is unknown.

import { AsyncLocalStorage } from 'node:async_hooks';
import type { DbConfig, IsolationLevel } from './config.ts';
import { DatabaseConnectionError, DatabaseTransactionError, DatalayerError, PoolTimeoutError } from './errors.ts';
import { isConnectionFailure, type PoolMonitor } from './pool.ts';
import { RETRYABLE_SQLSTATES, toDatalayerError } from './prisma-errors.ts';

/** The members Prisma removes from the client it hands to an interactive transaction. */
type TxDenied = '$connect' | '$disconnect' | '$on' | '$use' | '$extends' | '$transaction';
export type TxClient<C> = Omit<C, TxDenied>;

export interface TransactionOptions {
  isolationLevel?: IsolationLevel;
  readOnly?: boolean;
  /** How long the unit may run before it is rolled back (Prisma's `timeout`). */
  timeoutMs?: number;
  /** How long to wait for a connection (Prisma's `maxWait`). */
  maxWaitMs?: number;
  /** Re-runs after 40001 / 40P01 / P2034. */
  retries?: number;
  /** Inside another unit: `join` it (default) or open a SAVEPOINT that can roll back alone. */
  nested?: 'join' | 'savepoint';
  /** Travels into every error this unit raises. */
  correlationId?: string;
}

export interface SessionOptions {
  correlationId?: string;
}

interface UnitContext {
  tx: unknown;
  correlationId: string | undefined;
  savepoints: number;
}

/** What the session module needs from the Prisma client. */
export interface TransactionalClient {
  $transaction<T>(
    fn: (tx: never) => Promise<T>,
    options?: { isolationLevel?: IsolationLevel; maxWait?: number; timeout?: number },
  ): Promise<T>;
  $executeRawUnsafe(query: string, ...values: unknown[]): Promise<number>;
  $connect(): Promise<void>;
}

const units = new AsyncLocalStorage<UnitContext>();
const correlations = new AsyncLocalStorage<string>();

/** Is the caller inside a unit of work? */
export function inUnitOfWork(): boolean {
  return units.getStore() !== undefined;
}

/** The correlation id of the unit of work or session the caller is running in. */
export function currentCorrelationId(): string | undefined {
  return units.getStore()?.correlationId ?? correlations.getStore();
}

export interface Sessions<C> {
  transaction<T>(fn: (tx: TxClient<C>) => Promise<T>, options?: TransactionOptions): Promise<T>;
  session<T>(fn: (client: TxClient<C>) => Promise<T>, options?: SessionOptions): Promise<T>;
  current(): TxClient<C>;
  /** Counters the operations module reports. */
  readonly counters: { transactions: number; commits: number; rollbacks: number; retries: number };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Full-jitter exponential backoff: spreads competing retries apart. */
function backoffMs(attempt: number): number {
  const cap = Math.min(1000, 25 * 2 ** attempt);
  return Math.floor(Math.random() * cap);
}

function isRetryableConflict(err: DatalayerError): boolean {
  return err.prismaCode === 'P2034' || (err.sqlState !== undefined && RETRYABLE_SQLSTATES.has(err.sqlState));
}

/** Did this come from the database or the layer, rather than from the unit's own code? */
function isDatabaseFailure(err: unknown): boolean {
  if (err instanceof DatalayerError) return true;
  const name = (err as { name?: unknown } | null)?.name;
  // A failed COMMIT (e.g. a serialization failure) reaches us as the adapter's bare error.
  return typeof name === 'string' && (name.startsWith('PrismaClient') || name === 'DriverAdapterError');
}

export function createSessions<C>(client: C & TransactionalClient, config: DbConfig, monitor: PoolMonitor): Sessions<C> {
  const counters = { transactions: 0, commits: 0, rollbacks: 0, retries: 0 };
  const defaults = config.transaction;

  /**
   * The unit's own settings, all in one statement right after BEGIN (nothing at all when
   * there are none): read-only mode; behind a transaction-mode pooler, where startup
   * parameters are unusable, the server-side timeouts; and an explicit `timeoutMs`
   * shorter than the statement timeout, so a statement running at the unit's deadline is
   * cancelled by the server instead of outliving the unit. `true` = local to this
   * transaction. Values are validated numbers.
   */
  function preludeFor(opts: TransactionOptions): string | undefined {
    const settings = new Map<string, string | number>();
    if (opts.readOnly) settings.set('transaction_read_only', 'on');
    if (config.pooler) {
      settings.set('statement_timeout', config.timeouts.statementMs);
      settings.set('lock_timeout', config.timeouts.lockMs);
      settings.set('idle_in_transaction_session_timeout', config.timeouts.idleInTransactionMs);
    }
    const { statementMs } = config.timeouts;
    if (opts.timeoutMs !== undefined && (statementMs === 0 || opts.timeoutMs < statementMs)) {
      settings.set('statement_timeout', opts.timeoutMs);
    }
    if (settings.size === 0) return undefined;
    return `SELECT ${[...settings].map(([name, value]) => `set_config('${name}', '${value}', true)`).join(', ')}`;
  }

  /** Thrown when BEGIN failed on a connection: nothing of the unit reached the server. */
  class NotStarted extends Error {}

  async function runOnce<T>(fn: (tx: TxClient<C>) => Promise<T>, opts: TransactionOptions, correlationId: string | undefined): Promise<T> {
    let bodyStarted = false;
    let bodyDone = false;
    try {
      const result = await client.$transaction(
        async (tx: never) => {
          bodyStarted = true;
          const prelude = preludeFor(opts);
          if (prelude) await (tx as TransactionalClient).$executeRawUnsafe(prelude);
          const value = await units.run({ tx, correlationId, savepoints: 0 }, () => fn(tx as TxClient<C>));
          bodyDone = true;
          return value;
        },
        {
          maxWait: opts.maxWaitMs ?? defaults.maxWaitMs,
          timeout: opts.timeoutMs ?? defaults.timeoutMs,
          ...((opts.isolationLevel ?? defaults.isolationLevel) ? { isolationLevel: opts.isolationLevel ?? defaults.isolationLevel } : {}),
        },
      );
      counters.commits++;
      return result;
    } catch (err) {
      // A connection the pool handed over, dead before BEGIN got through. (A failure to
      // connect at all arrives already typed by the pool, which has done what it can.)
      if (!bodyStarted && !(err instanceof DatalayerError) && toDatalayerError(err) instanceof DatabaseConnectionError) {
        throw new NotStarted('BEGIN failed', { cause: err });
      }
      counters.rollbacks++;
      if (bodyDone && (isConnectionFailure(rootCause(err)) || toDatalayerError(err) instanceof DatabaseConnectionError)) {
        // The body finished and COMMIT was under way when the connection went: the
        // server may have committed. Re-running could apply the work twice.
        throw new DatabaseTransactionError('The connection was lost during COMMIT: the transaction may or may not have committed', {
          cause: err,
          outcome: 'unknown',
          retryable: false,
          ...(correlationId === undefined ? {} : { correlationId }),
        });
      }
      throw err;
    }
  }

  async function transaction<T>(fn: (tx: TxClient<C>) => Promise<T>, opts: TransactionOptions = {}): Promise<T> {
    const outer = units.getStore();
    if (outer) return nested(outer, fn, opts);

    const correlationId = opts.correlationId ?? currentCorrelationId();
    const retries = opts.retries ?? defaults.retries;
    counters.transactions++;
    let reconnects = 0;
    for (let attempt = 0; ; attempt++) {
      try {
        return await runOnce(fn, opts, correlationId);
      } catch (thrown) {
        let err = thrown;
        if (err instanceof NotStarted) {
          // The connection died before BEGIN got through (typically: it was dropped
          // while idle in the pool, and a restart drops them all). Nothing was sent for
          // this unit: run it again, at most once per pooled connection.
          if (reconnects < config.pool.size + config.pool.maxOverflow) {
            reconnects++;
            monitor.counters.connectionsRecovered++;
            attempt--;
            continue;
          }
          err = err.cause;
        }
        if (!isDatabaseFailure(err)) {
          throw new DatabaseTransactionError(`Unit of work rolled back: ${describeThrown(err)}`, {
            cause: err,
            outcome: 'rolled-back',
            attempts: attempt + 1,
            ...(correlationId === undefined ? {} : { correlationId }),
          });
        }
        const mapped = toDatalayerError(err, { correlationId });
        if (mapped instanceof DatabaseTransactionError && mapped.outcome === 'unknown') throw mapped;
        if (mapped instanceof PoolTimeoutError && Number.isNaN(mapped.waitedMs)) {
          // Prisma's maxWait error says neither how long it waited nor for how many connections.
          throw new PoolTimeoutError(opts.maxWaitMs ?? defaults.maxWaitMs, {
            cause: mapped.cause,
            max: config.pool.size + config.pool.maxOverflow,
            ...(correlationId === undefined ? {} : { correlationId }),
          });
        }
        if (isRetryableConflict(mapped)) {
          if (attempt < retries) {
            counters.retries++;
            await sleep(backoffMs(attempt));
            continue;
          }
          throw new DatabaseTransactionError(`Unit of work failed after ${attempt + 1} attempts: ${mapped.message}`, {
            cause: mapped,
            outcome: 'rolled-back',
            retryable: true,
            attempts: attempt + 1,
            ...(mapped.sqlState ? { sqlState: mapped.sqlState } : {}),
            ...(mapped.prismaCode ? { prismaCode: mapped.prismaCode } : {}),
            ...(correlationId === undefined ? {} : { correlationId }),
          });
        }
        throw mapped;
      }
    }
  }

  async function nested<T>(outer: UnitContext, fn: (tx: TxClient<C>) => Promise<T>, opts: TransactionOptions): Promise<T> {
    if (opts.nested !== 'savepoint') return fn(outer.tx as TxClient<C>);
    const tx = outer.tx as TransactionalClient;
    const name = `datalayer_sp_${++outer.savepoints}`;
    await tx.$executeRawUnsafe(`SAVEPOINT ${name}`);
    try {
      const value = await units.run({ ...outer, savepoints: 0 }, () => fn(outer.tx as TxClient<C>));
      await tx.$executeRawUnsafe(`RELEASE SAVEPOINT ${name}`);
      return value;
    } catch (err) {
      await tx.$executeRawUnsafe(`ROLLBACK TO SAVEPOINT ${name}`);
      throw err;
    }
  }

  async function session<T>(fn: (c: TxClient<C>) => Promise<T>, opts: SessionOptions = {}): Promise<T> {
    const outer = units.getStore();
    if (outer) return fn(outer.tx as TxClient<C>);
    const correlationId = opts.correlationId ?? currentCorrelationId();
    // The Neon adapter creates its pool when Prisma connects; no query is sent here.
    await client.$connect();
    const run = (): Promise<T> => monitor.withConnection(() => fn(client as unknown as TxClient<C>));
    try {
      return correlationId === undefined ? await run() : await correlations.run(correlationId, run);
    } catch (err) {
      throw isDatabaseFailure(err) ? toDatalayerError(err, { correlationId }) : err;
    }
  }

  return {
    transaction,
    session,
    current: () => (units.getStore()?.tx ?? client) as TxClient<C>,
    counters,
  };
}

function rootCause(err: unknown): unknown {
  let e = err;
  for (let i = 0; i < 5 && e instanceof Error && e.cause !== undefined; i++) e = e.cause;
  return e;
}

function describeThrown(err: unknown): string {
  if (err instanceof Error) return err.message;
  try {
    return `non-Error value thrown: ${JSON.stringify(err)}`;
  } catch {
    return 'non-Error value thrown';
  }
}
