// The driver adapter the Prisma client gets: the driver's own, with what a running service
// needs to see and control added around each call — statement counters, the slow-query
// event, and the close gate. Plain delegating classes, no Proxy: this is the hot path.
// Nothing here ever logs statement parameters: the adapter hands over the SQL text with
// $1 placeholders and the values separately, and only the text is used, secrets removed.

import type {
  ConnectionInfo,
  IsolationLevel,
  SqlDriverAdapter,
  SqlDriverAdapterFactory,
  SqlQuery,
  SqlResultSet,
  Transaction,
  TransactionOptions,
} from '@prisma/driver-adapter-utils';
import { DatabaseClosedError, DatabaseTransactionError } from './errors.ts';
import type { EventHub, SlowQueryInfo } from './events.ts';
import type { DbLogger, Lifecycle } from './lifecycle.ts';
import { redactSql } from './secrets.ts';
import type { DbCounters } from './stats.ts';
import { savepointInTheWay } from './unit-of-work.ts';

const MAX_SQL_LENGTH = 2_000;

/** What the wrappers share: counting, timing and the gate. */
export class Instrumentation {
  constructor(
    private readonly counters: DbCounters,
    private readonly hub: EventHub,
    private readonly lifecycle: Lifecycle,
    private readonly thresholdMs: number,
    private readonly logger: DbLogger | undefined,
    private readonly record: (err: unknown) => void,
    /** The Db's identity (UnitsHome.db): its transactions wait only for its own units' savepoints. */
    readonly db: object,
  ) {}

  /**
   * One statement: admitted by the gate, counted, timed only when slow queries are wanted.
   * Plain synchronous code around the driver's promise, plus one `then`: no async
   * function, no AsyncLocalStorage run (this is every statement's path).
   */
  statement<R>(query: SqlQuery, inTransaction: boolean, run: () => Promise<R>): Promise<R> {
    let leave: () => void;
    let pending: Promise<R>;
    try {
      leave = this.lifecycle.enter();
      this.counters.queries++;
      pending = run();
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const started = this.thresholdMs > 0 ? performance.now() : 0;
    return pending.then(
      (value) => {
        leave();
        if (started !== 0) this.slow(query, inTransaction, performance.now() - started);
        return value;
      },
      (err: unknown) => {
        this.counters.queryErrors++;
        this.record(err);
        leave();
        if (started !== 0) this.slow(query, inTransaction, performance.now() - started);
        throw err;
      },
    );
  }

  private slow(query: SqlQuery, inTransaction: boolean, elapsed: number): void {
    const durationMs = Math.round(elapsed);
    if (durationMs < this.thresholdMs) return;
    this.counters.slowQueries++;
    const info: SlowQueryInfo = { sql: safeSql(query.sql), durationMs, thresholdMs: this.thresholdMs, inTransaction, pool: this.hub.pool };
    this.hub.emit('slowQuery', info);
    const logger = this.logger;
    if (logger !== undefined) this.hub.guarded('the logger', () => logger.warn({ event: 'slowQuery', ...info }, `slow query: ${durationMs} ms (threshold ${this.thresholdMs} ms)`));
  }

  /** The factory Prisma connects through. */
  factory(inner: SqlDriverAdapterFactory): SqlDriverAdapterFactory {
    return {
      provider: inner.provider,
      adapterName: inner.adapterName,
      connect: async () => {
        // After close, Prisma reconnects on the next query: hand it an adapter that refuses
        // everything, so the caller gets DatabaseClosedError and no socket opens.
        if (this.lifecycle.refuses()) return closedAdapter(inner);
        return new InstrumentedAdapter(await inner.connect(), this);
      },
    };
  }

  admit(): () => void {
    return this.lifecycle.enter();
  }

  /** A transaction that could not start (no free connection in time, the connection lost): stats' lastError, as a statement's failure is. */
  failed(err: unknown): void {
    this.record(err);
  }
}

class InstrumentedAdapter implements SqlDriverAdapter {
  readonly provider: SqlDriverAdapter['provider'];
  readonly adapterName: string;
  constructor(
    private readonly inner: SqlDriverAdapter,
    private readonly ins: Instrumentation,
  ) {
    this.provider = inner.provider;
    this.adapterName = inner.adapterName;
  }
  queryRaw(q: SqlQuery): Promise<SqlResultSet> {
    return this.ins.statement(q, false, () => this.inner.queryRaw(q));
  }
  executeRaw(q: SqlQuery): Promise<number> {
    return this.ins.statement(q, false, () => this.inner.executeRaw(q));
  }
  async executeScript(script: string): Promise<void> {
    const leave = this.ins.admit();
    try {
      await this.inner.executeScript(script);
    } finally {
      leave();
    }
  }
  /** A transaction counts as work in flight until it commits or rolls back, like a unit of work. */
  async startTransaction(level?: IsolationLevel): Promise<Transaction> {
    const leave = this.ins.admit();
    try {
      return new InstrumentedTransaction(await this.inner.startTransaction(level), this.ins, leave);
    } catch (err) {
      leave();
      this.ins.failed(err);
      throw err;
    }
  }
  getConnectionInfo(): ConnectionInfo {
    return this.inner.getConnectionInfo?.() ?? { supportsRelationJoins: true };
  }
  dispose(): Promise<void> {
    return this.inner.dispose();
  }
  /** The driver's pool, for code that needs it (as the adapters offer). */
  underlyingDriver(): unknown {
    return (this.inner as { underlyingDriver?: () => unknown }).underlyingDriver?.();
  }
}

class InstrumentedTransaction implements Transaction {
  readonly provider: Transaction['provider'];
  readonly adapterName: string;
  readonly options: TransactionOptions;
  private done = false;
  constructor(
    private readonly inner: Transaction,
    private readonly ins: Instrumentation,
    private readonly leave: () => void,
  ) {
    this.provider = inner.provider;
    this.adapterName = inner.adapterName;
    this.options = inner.options;
  }
  // A statement sent beside a savepoint unit nested in the caller's unit goes after it (unit-of-work.ts).
  queryRaw(q: SqlQuery): Promise<SqlResultSet> {
    const wait = savepointInTheWay(this.ins.db);
    return wait === undefined || this.ends(q) ? this.ins.statement(q, true, () => this.inner.queryRaw(q)) : wait.then(() => this.afterWait(() => this.queryRaw(q)));
  }
  executeRaw(q: SqlQuery): Promise<number> {
    const wait = savepointInTheWay(this.ins.db);
    return wait === undefined || this.ends(q) ? this.ins.statement(q, true, () => this.inner.executeRaw(q)) : wait.then(() => this.afterWait(() => this.executeRaw(q)));
  }
  /** The transaction's COMMIT or ROLLBACK was sent while statements waited for a savepoint unit. */
  private ending = false;
  /**
   * Prisma's COMMIT or ROLLBACK (fn returned or threw, the unit's deadline passed, with a
   * savepoint unit still running) goes at once: Prisma holds the transaction for it, and the
   * savepoint unit's statements could not end it. Statements still waiting are then refused.
   */
  private ends(q: SqlQuery): boolean {
    if (q.sql !== 'COMMIT' && q.sql !== 'ROLLBACK') return false;
    this.ending = true;
    return true;
  }
  /** A statement that waited: never sent once the transaction ended (it would run on its own, outside it). */
  private afterWait<R>(send: () => Promise<R>): Promise<R> {
    if (!this.ending && !this.done) return send();
    return Promise.reject(
      new DatabaseTransactionError('The unit of work ended (committed or rolled back) while this statement waited for a savepoint unit nested in it: the statement was not sent', {
        outcome: 'rolled-back',
        retryable: false,
      }),
    );
  }
  commit(): Promise<void> {
    return this.settled(this.inner.commit());
  }
  rollback(): Promise<void> {
    return this.settled(this.inner.rollback());
  }
  createSavepoint(name: string): Promise<void> {
    return this.inner.createSavepoint?.(name) ?? this.executeRaw({ sql: `SAVEPOINT ${name}`, args: [], argTypes: [] }).then(() => {});
  }
  rollbackToSavepoint(name: string): Promise<void> {
    return this.inner.rollbackToSavepoint?.(name) ?? this.executeRaw({ sql: `ROLLBACK TO SAVEPOINT ${name}`, args: [], argTypes: [] }).then(() => {});
  }
  releaseSavepoint(name: string): Promise<void> {
    return this.inner.releaseSavepoint?.(name) ?? Promise.resolve();
  }
  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.leave();
  }
  /** `end`, then the transaction is over either way: `then` with both handlers (`finally` costs two more promises). */
  private settled(end: Promise<void>): Promise<void> {
    return end.then(
      () => this.finish(),
      (err: unknown) => {
        this.finish();
        throw err;
      },
    );
  }
}

function closedAdapter(factory: SqlDriverAdapterFactory): SqlDriverAdapter {
  const refuse = (): Promise<never> => Promise.reject(new DatabaseClosedError());
  return {
    provider: factory.provider,
    adapterName: factory.adapterName,
    queryRaw: refuse,
    executeRaw: refuse,
    executeScript: refuse,
    startTransaction: refuse,
    dispose: async () => {},
  };
}

function safeSql(sql: string): string {
  const text = redactSql(sql);
  return text.length > MAX_SQL_LENGTH ? `${text.slice(0, MAX_SQL_LENGTH)}…` : text;
}
