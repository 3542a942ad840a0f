// What both examples share: the request's correlation id, and the translation of any
// error into a response body that is safe to send to a client.
//
// The body never carries the error's message: a database message can quote the
// statement's values ("invalid input syntax for type integer: \"...\""), and a
// connection error can name hosts. The client gets a fixed text per kind plus the
// correlation id, which finds the full (redacted) error in the server's log.

import { randomUUID } from 'node:crypto';
import { classifyError, isDatabaseError, redact } from '../../src/index.ts';

export const CORRELATION_HEADER = 'x-request-id';

/** The caller's id when it is a sane token (it ends up in logs), else a new one. */
export function correlationIdFrom(header: string | null | undefined): string {
  return header !== null && header !== undefined && /^[\w.:-]{1,128}$/.test(header) ? header : randomUUID();
}

/** Thrown by handlers for expected failures (validation, business rules). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export interface ErrorBody {
  error: { code: string; message: string; correlationId: string; retryable?: boolean };
}

export function toErrorResponse(err: unknown, correlationId: string): { status: number; body: ErrorBody } {
  const body = (status: number, code: string, message: string, retryable?: boolean): { status: number; body: ErrorBody } => ({
    status,
    body: { error: { code, message, correlationId, ...(retryable === undefined ? {} : { retryable }) } },
  });
  // A unit of work re-throws what its body threw unchanged.
  if (err instanceof HttpError) return body(err.status, err.code, err.message);
  if (isDatabaseError(err)) {
    // Prisma's own errors (P2002, ...) and the layer's, seen through one classifier.
    const typed = classifyError(err);
    switch (typed.kind) {
      case 'query':
        if (typed.sqlState === '23505' || typed.prismaCode === 'P2002') return body(409, 'conflict', 'The resource already exists.');
        if (typed.sqlState?.startsWith('22') || typed.sqlState?.startsWith('23')) return body(400, 'invalid-input', 'The request contains an invalid value.');
        return body(500, 'database-error', 'The database rejected the request.');
      case 'statement-timeout':
        return body(504, 'timeout', 'The database took too long to answer.', true);
      case 'pool-timeout':
      case 'connection':
        return body(503, 'unavailable', 'The database is unavailable, try again shortly.', typed.retryable);
      case 'transaction':
        return body(typed.retryable ? 503 : 500, 'transaction-failed', 'The operation could not be completed.', typed.retryable);
      default:
        return body(500, 'internal-error', 'Something went wrong.');
    }
  }
  return body(500, 'internal-error', 'Something went wrong.');
}

/** Server-side log line for a failed request: the detail, secrets removed, never values. */
export function logFailure(err: unknown, correlationId: string, status: number): void {
  if (status < 500) return;
  const detail = err instanceof Error ? `${err.name}: ${redact(err.message)}` : 'non-Error thrown';
  console.error(JSON.stringify({ level: 'error', correlationId, status, error: detail }));
}
