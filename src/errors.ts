// The error taxonomy. Every error the layer raises is one of these classes, carries a
// `retryable` flag, and has had secrets removed from its message before construction.
//
// None of these classes has a `code` property on purpose: Prisma turns any error
// with a string `code` that a driver adapter throws into a PrismaClientKnownRequestError
// and drops the original. Without `code`, the instance raised in the pool reaches the
// caller unchanged. The SQLSTATE lives in `sqlState`, Prisma's code in `prismaCode`.

import { redact } from './redact.ts';

export type ErrorKind =
  | 'config'
  | 'connection'
  | 'pool-timeout'
  | 'query'
  | 'statement-timeout'
  | 'transaction';

export interface DatalayerErrorDetails {
  cause?: unknown;
  retryable?: boolean;
  sqlState?: string;
  prismaCode?: string;
  correlationId?: string;
}

export abstract class DatalayerError extends Error {
  abstract readonly kind: ErrorKind;
  readonly retryable: boolean;
  readonly sqlState?: string;
  readonly prismaCode?: string;
  correlationId?: string;

  constructor(message: string, details: DatalayerErrorDetails = {}) {
    super(redact(message), details.cause === undefined ? undefined : { cause: details.cause });
    this.name = new.target.name;
    this.retryable = details.retryable ?? false;
    if (details.sqlState !== undefined) this.sqlState = details.sqlState;
    if (details.prismaCode !== undefined) this.prismaCode = details.prismaCode;
    if (details.correlationId !== undefined) this.correlationId = details.correlationId;
  }
}

export interface ConfigIssue {
  /** The setting as the user spells it: `DB_POOL_SIZE`, `DATABASE_URL`, `pool.size`, ... */
  setting: string;
  problem: string;
}

/** One error for every invalid setting at once, so a deploy fails with the whole list. */
export class ConfigError extends DatalayerError {
  readonly kind = 'config';
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[]) {
    const lines = issues.map((i) => `  - ${i.setting}: ${redact(i.problem)}`);
    super(`Invalid database configuration:\n${lines.join('\n')}`);
    this.issues = issues.map((i) => ({ setting: i.setting, problem: redact(i.problem) }));
  }
}

/** The server could not be reached, refused us, or dropped the connection. */
export class DatabaseConnectionError extends DatalayerError {
  readonly kind = 'connection';
  constructor(message: string, details: DatalayerErrorDetails = {}) {
    super(message, { retryable: true, ...details });
  }
}

/** Waited longer than the pool timeout for a free connection. */
export class PoolTimeoutError extends DatalayerError {
  readonly kind = 'pool-timeout';
  readonly waitedMs: number;
  constructor(waitedMs: number, details: DatalayerErrorDetails & { size?: number; max?: number } = {}) {
    const limit = details.max === undefined ? '' : ` (all ${details.max} connections in use)`;
    super(`Timed out after ${waitedMs} ms waiting for a database connection${limit}`, {
      retryable: true,
      ...details,
    });
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

export type TransactionOutcome = 'rolled-back' | 'unknown';

/**
 * A unit of work failed. `outcome` says whether the database certainly rolled it back
 * or whether the connection was lost during COMMIT, so it may or may not have committed.
 */
export class DatabaseTransactionError extends DatalayerError {
  readonly kind = 'transaction';
  readonly outcome: TransactionOutcome;
  readonly attempts: number;
  constructor(
    message: string,
    details: DatalayerErrorDetails & { outcome: TransactionOutcome; attempts?: number },
  ) {
    super(message, details);
    this.outcome = details.outcome;
    this.attempts = details.attempts ?? 1;
  }
}
