// Maps whatever a query or unit of work raised (Prisma's errors, driver errors, the
// layer's own) onto the taxonomy in errors.ts. Messages are rebuilt from codes and
// constraint names, never copied from Prisma's text, which can quote query arguments.

import {
  DatabaseConnectionError,
  DatabaseQueryError,
  DatabaseTransactionError,
  DatalayerError,
  PoolTimeoutError,
  StatementTimeoutError,
} from './errors.ts';
import { isConnectionFailure } from './pool.ts';
import { redact } from './redact.ts';

interface DriverCause {
  kind?: string;
  originalCode?: string;
  originalMessage?: string;
  code?: string;
  message?: string;
  constraint?: { index?: string; fields?: string[] };
}

interface PrismaLike {
  name?: string;
  code?: unknown;
  message?: string;
  cause?: unknown;
  meta?: { driverAdapterError?: { cause?: DriverCause }; target?: unknown; modelName?: string };
}

/**
 * The driver adapter's mapped error: inside a Prisma error's meta, or — when Prisma
 * rethrows the adapter's error as is, as it does for a failed COMMIT — the cause of a
 * bare `DriverAdapterError`.
 */
function driverCause(e: PrismaLike): DriverCause | undefined {
  const inMeta = e.meta?.driverAdapterError?.cause;
  if (inMeta) return inMeta;
  if (e.name === 'DriverAdapterError' && typeof e.cause === 'object' && e.cause !== null) return e.cause as DriverCause;
  return undefined;
}

/** SQLSTATEs after which re-running the whole unit of work can succeed. */
export const RETRYABLE_SQLSTATES = new Set(['40001', '40P01']);

/**
 * Prisma's error codes (P1xxx-P6xxx). They have the shape of a SQLSTATE too, but class
 * P0 (PL/pgSQL: P0001 for RAISE EXCEPTION, ...) is PostgreSQL's.
 */
const PRISMA_CODE = /^P[1-9]\d{3}$/;

function sqlStateOf(e: PrismaLike): string | undefined {
  const cause = driverCause(e);
  const fromCause = cause?.originalCode ?? cause?.code;
  if (typeof fromCause === 'string' && /^[0-9A-Z]{5}$/.test(fromCause)) return fromCause;
  if (typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) && !PRISMA_CODE.test(e.code)) return e.code;
  if (e.code === 'P2034') return '40001';
  return undefined;
}

function constraintOf(e: PrismaLike): string | undefined {
  const c = driverCause(e)?.constraint;
  if (c?.index) return c.index;
  if (c?.fields?.length) return c.fields.join(', ');
  const target = e.meta?.target;
  if (typeof target === 'string') return target;
  if (Array.isArray(target)) return target.join(', ');
  return undefined;
}

/** The server's message, minus anything that may be a value: quoted literals in data errors. */
function serverMessage(e: PrismaLike, sqlState: string | undefined): string {
  const raw = driverCause(e)?.originalMessage ?? driverCause(e)?.message;
  if (raw === undefined) {
    // Prisma's own errors: the last line is the reason, the lines above quote the call.
    const lines = (e.message ?? '').split('\n').map((l) => l.trim()).filter(Boolean);
    return lines[lines.length - 1] ?? 'query failed';
  }
  return sqlState?.startsWith('22') ? raw.replace(/"(?:[^"\\]|\\.)*"/g, '"…"').replace(/'(?:[^'\\]|\\.)*'/g, "'…'") : raw;
}

export interface MapContext {
  correlationId?: string | undefined;
}

export function toDatalayerError(err: unknown, ctx: MapContext = {}): DatalayerError {
  const mapped = map(err);
  if (ctx.correlationId !== undefined && mapped.correlationId === undefined) mapped.correlationId = ctx.correlationId;
  return mapped;
}

function map(err: unknown): DatalayerError {
  if (err instanceof DatalayerError) return err;
  const e = (typeof err === 'object' && err !== null ? err : {}) as PrismaLike;
  const prismaCode = typeof e.code === 'string' && PRISMA_CODE.test(e.code) ? e.code : undefined;
  const sqlState = sqlStateOf(e);
  const detail = { cause: err, ...(sqlState ? { sqlState } : {}), ...(prismaCode ? { prismaCode } : {}) };

  if (sqlState === '57014') {
    const why = /statement timeout/i.test(serverMessage(e, sqlState)) ? 'statement_timeout' : 'a cancel request';
    return new StatementTimeoutError(`Statement cancelled by ${why} [57014]`, detail);
  }
  if (prismaCode === 'P2028' && /Unable to start a transaction in the given time/i.test(e.message ?? '')) {
    return new PoolTimeoutError(NaN, { ...detail, retryable: true });
  }
  if (prismaCode === 'P2028' || prismaCode === 'P2024') {
    return new DatabaseTransactionError(`Transaction failed: ${serverMessage(e, sqlState)}`, { ...detail, outcome: 'rolled-back' });
  }
  if (prismaCode === 'P1001' || prismaCode === 'P1002' || prismaCode === 'P1017' || isConnectionFailure(err) || (sqlState !== undefined && (sqlState.startsWith('08') || /^57P0[1-3]$/.test(sqlState)))) {
    return new DatabaseConnectionError(`The database connection failed: ${redact(serverMessage(e, sqlState))}`, { ...detail, retryable: true });
  }
  if (sqlState !== undefined || prismaCode !== undefined) {
    const constraint = constraintOf(e);
    const retryable = (sqlState !== undefined && RETRYABLE_SQLSTATES.has(sqlState)) || prismaCode === 'P2034';
    const tag = [sqlState, prismaCode].filter(Boolean).join('/');
    return new DatabaseQueryError(`${redact(serverMessage(e, sqlState))} [${tag}]`, {
      ...detail,
      retryable,
      ...(constraint ? { constraint } : {}),
    });
  }
  if (e.name === 'PrismaClientValidationError') {
    // Its text quotes the call's arguments; keep it only as the cause.
    return new DatabaseQueryError('Invalid query arguments (see error.cause)', detail);
  }
  const text = err instanceof Error ? err.message : String(err);
  return new DatabaseQueryError(`Query failed: ${redact(text.split('\n').filter(Boolean).pop() ?? text)}`, detail);
}
