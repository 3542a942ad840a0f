// Every public error class of the layer, in one module (as SQLAlchemy's exc.py).
//
// Every error carries a `retryable` flag and has had secrets removed from its message.
// None has a `code` property on purpose: Prisma turns an error with a string `code`
// thrown by a driver adapter into a PrismaClientKnownRequestError and drops the original.
// Without `code`, an instance raised in the pool reaches the caller unchanged. The
// SQLSTATE lives in `sqlState`, Prisma's code in `prismaCode`.
//
// Prisma's own errors (P2002, P2025, ...) are not replaced: they reach the caller as
// Prisma raised them, so `instanceof Prisma.PrismaClientKnownRequestError`, `code` and
// `meta` keep working. `classifyError()` (failures.ts) gives the layer's view of them.

import { redact } from './secrets.ts';

export type ErrorKind = 'config' | 'connection' | 'pool-timeout' | 'query' | 'statement-timeout' | 'transaction' | 'verification' | 'migration';

/** `rolled-back`: the database certainly did not keep the work. `unknown`: it may have committed. */
export type TransactionOutcome = 'rolled-back' | 'unknown';

export interface DatalayerErrorDetails {
  cause?: unknown;
  retryable?: boolean;
  sqlState?: string;
  prismaCode?: string;
  correlationId?: string;
  /** Set by a unit of work: what became of its transaction. */
  outcome?: TransactionOutcome;
}

export abstract class DatalayerError extends Error {
  abstract readonly kind: ErrorKind;
  readonly retryable: boolean;
  readonly sqlState?: string;
  readonly prismaCode?: string;
  correlationId?: string;
  outcome?: TransactionOutcome;

  constructor(message: string, details: DatalayerErrorDetails = {}) {
    super(redact(message), details.cause === undefined ? undefined : { cause: details.cause });
    this.name = new.target.name;
    this.retryable = details.retryable ?? false;
    if (details.sqlState !== undefined) this.sqlState = details.sqlState;
    if (details.prismaCode !== undefined) this.prismaCode = details.prismaCode;
    if (details.correlationId !== undefined) this.correlationId = details.correlationId;
    if (details.outcome !== undefined) this.outcome = details.outcome;
  }
}

export interface ConfigIssue {
  /** Where the value came from, as the user spells it: `DB_POOL_SIZE`, `DATABASE_URL parameter sslmode`, `pool.size`, ... */
  setting: string;
  problem: string;
}

/** One error for every invalid setting at once, so a deploy fails with the whole list. */
export class ConfigError extends DatalayerError {
  readonly kind = 'config';
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[]) {
    const clean = issues.map((i) => ({ setting: i.setting, problem: redact(i.problem) }));
    super(`Invalid database configuration:\n${clean.map((i) => `  - ${i.setting}: ${i.problem}`).join('\n')}`);
    this.issues = clean;
  }
}

/** The server could not be reached, refused us, or dropped the connection. */
export class DatabaseConnectionError extends DatalayerError {
  readonly kind = 'connection';
  constructor(message: string, details: DatalayerErrorDetails = {}) {
    super(message, { retryable: true, ...details });
  }
}

/** Which client-side deadline passed. */
export type Deadline = 'connect' | 'statement' | 'unit' | 'health' | 'validation' | 'scope';

/**
 * A client-side deadline passed while the database did not answer (a black-holed
 * network, a frozen server). The connection was destroyed, never returned to the pool.
 */
export class DeadlineExceededError extends DatabaseConnectionError {
  readonly deadline: Deadline;
  readonly timeoutMs: number;
  constructor(deadline: Deadline, timeoutMs: number, details: DatalayerErrorDetails = {}) {
    super(`No answer from the database within the ${deadline} deadline (${timeoutMs} ms): the connection was closed`, details);
    this.deadline = deadline;
    this.timeoutMs = timeoutMs;
  }
}

/**
 * Raised to work started after `db.close()`: the Db accepts nothing new. Not retryable.
 * Also to work that was still waiting for a connection when close() ended the pool
 * (`waited`): it never started, so its outcome is `rolled-back`.
 */
export class DatabaseClosedError extends DatabaseConnectionError {
  constructor(details: { correlationId?: string | undefined; whileWaiting?: boolean; cause?: unknown } = {}) {
    const { correlationId, whileWaiting = false, cause } = details;
    super(whileWaiting ? 'db.close() ended the pool while this work waited for a connection: it did not start' : 'The database client is closed (db.close() was called): no new work is accepted', {
      retryable: false,
      ...(correlationId === undefined ? {} : { correlationId }),
      // Work that waited for a connection never started: nothing of it ran.
      ...(whileWaiting ? { cause, outcome: 'rolled-back' as const } : {}),
    });
  }
}

/**
 * Raised to a statement sent after its db.scope() had ended (the function did not await
 * it), and to a statement still running then: the scope's connections are closed with it.
 */
export class ScopeEndedError extends DatabaseConnectionError {
  constructor() {
    super('The db.scope() this statement belongs to has ended: await every statement inside the scope', { retryable: false });
  }
}

/** Waited longer than the pool timeout for a free connection. */
export class PoolTimeoutError extends DatalayerError {
  readonly kind = 'pool-timeout';
  readonly waitedMs: number;
  constructor(waitedMs: number, details: DatalayerErrorDetails & { max?: number } = {}) {
    const limit = details.max === undefined ? '' : ` (all ${details.max} connections in use)`;
    // NaN: Prisma's own wait gave up (P2028), which does not say how long it waited.
    const after = Number.isNaN(waitedMs) ? '' : ` after ${waitedMs} ms`;
    super(`Timed out${after} waiting for a database connection${limit}`, { retryable: true, ...details });
    this.waitedMs = waitedMs;
  }
}

/** The server rejected a statement. `constraint` is set for integrity violations. */
export class DatabaseQueryError extends DatalayerError {
  readonly kind = 'query';
  readonly constraint?: string;
  constructor(message: string, details: DatalayerErrorDetails & { constraint?: string } = {}) {
    super(message, details);
    if (details.constraint !== undefined) this.constraint = details.constraint;
  }
}

/** The server cancelled a statement that ran past `statement_timeout` (SQLSTATE 57014). */
export class StatementTimeoutError extends DatalayerError {
  readonly kind = 'statement-timeout';
  constructor(message: string, details: DatalayerErrorDetails = {}) {
    super(message, { sqlState: '57014', ...details });
  }
}

/**
 * A unit of work failed as a whole: its retries ran out, it ran past its deadline, or
 * the connection was lost during COMMIT (`outcome: 'unknown'`: it may have committed).
 */
export class DatabaseTransactionError extends DatalayerError {
  readonly kind = 'transaction';
  declare readonly outcome: TransactionOutcome;
  readonly attempts: number;
  constructor(message: string, details: DatalayerErrorDetails & { outcome: TransactionOutcome; attempts?: number }) {
    super(message, details);
    this.attempts = details.attempts ?? 1;
  }
}

/** One failed startup check of `db.verify()`, with the advice `prisma-datalayer doctor` gives for it. */
export interface VerificationFailure {
  /** ssl, application-name, capacity, server-version, connection, migrations. */
  check: string;
  summary: string;
  advice?: string;
}

/**
 * `db.verify()` found the database unfit for this application: every failed check at
 * once, each with what to do about it, so a deploy stops with the whole list.
 */
export class VerificationError extends DatalayerError {
  readonly kind = 'verification';
  readonly failures: readonly VerificationFailure[];

  constructor(failures: readonly VerificationFailure[], details: DatalayerErrorDetails = {}) {
    const lines = failures.map((f) => `  - ${f.check}: ${f.summary}${f.advice ? `\n    → ${f.advice}` : ''}`);
    super(`The database failed ${failures.length} startup check${failures.length === 1 ? '' : 's'}:\n${lines.join('\n')}`, details);
    this.failures = failures.map((f) => ({ check: f.check, summary: redact(f.summary), ...(f.advice === undefined ? {} : { advice: redact(f.advice) }) }));
  }
}

/**
 * Any failure of deploy, status or drift. The message never contains credentials.
 * `outcome: 'unknown'`: the connection was lost while a migration ran, so it may or may not
 * have been applied (`migrate status` tells). `retryable`: only where trying again can
 * succeed as is (another session held the migration lock).
 */
export class MigrationError extends DatalayerError {
  readonly kind = 'migration';
  /**
   * Prisma error code (e.g. P1000 authentication, P3009 failed migration) when the engine
   * gave one; also in `prismaCode`. A MigrationError never passes through a Prisma driver
   * adapter, so this `code` cannot be mistaken for a driver error's.
   */
  readonly code: string | undefined;

  // No `cause`: the engine's raw error may embed connection details, and inspecting an
  // error prints its cause chain.
  constructor(message: string, code?: string, details: Pick<DatalayerErrorDetails, 'retryable' | 'outcome'> = {}) {
    super(message, { ...details, ...(code === undefined ? {} : { prismaCode: code }) });
    this.code = code;
  }
}
