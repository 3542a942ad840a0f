// The one classifier of failures: whatever a driver, the server or Prisma raised, this
// module decides whether the connection was lost, whether a retry can succeed, and which
// of the layer's typed errors describes it. The pool, units of work, health and the
// public `classifyError` all ask here, so the rules cannot drift apart.
//
// Messages are rebuilt from codes and constraint names, never copied from Prisma's text,
// which can quote query arguments.

import {
  DatabaseConnectionError,
  DatabaseQueryError,
  DeadlineExceededError,
  DatabaseTransactionError,
  DatalayerError,
  PoolTimeoutError,
  StatementTimeoutError,
} from './errors.ts';
import { redact } from './secrets.ts';

/** SQLSTATEs after which re-running the whole unit of work can succeed. */
export const RETRYABLE_SQLSTATES: ReadonlySet<string> = new Set(['40001', '40P01']);

const SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED']);
/** Driver-adapter error kinds (driver-adapter-utils) that mean the connection is gone. */
const LOST_KINDS = new Set(['ConnectionClosed', 'SocketTimeout', 'TooManyConnections', 'DatabaseNotReachable']);
const LOST_MESSAGE = /Connection terminated|connection timeout|timeout expired|Client has encountered a connection error|socket hang up|not queryable|WebSocket|ECONNRESET|ECONNREFUSED|Couldn't connect to compute node/i;

/**
 * Neon's proxy answers with its own errors (severity ERROR, SQLSTATE XX000, or an HTTP 500
 * over SQL-over-HTTP) before a compute backend exists: connection failures by meaning,
 * told apart only by their text (neondatabase/neon proxy/src/compute/mod.rs,
 * auth/mod.rs, control_plane/messages.rs).
 */
const NEON_TRANSIENT = /Couldn't connect to compute node|Too many connections to this endpoint|Failed to acquire permit|rate limit/i;
const NEON_PERMANENT = new RegExp(
  [
    /password authentication failed|Check your quotas|endpoint is disabled|exceeded the limit|Endpoint ID is not specified|Inconsistent project name/.source,
    // proxy/src/auth/credentials.rs (ComputeUserInfoParseError): a bad endpoint id or startup packet.
    /must contain only alphanumeric characters and hyphen|is missing in startup packet/.source,
    // proxy/src/auth/mod.rs (AuthError): the endpoint's IP, network and VPC allow-lists.
    /is not allowed to connect to this endpoint|from a blocked network|VPC endpoint ID is not specified/.source,
  ].join('|'),
  'i',
);

/**
 * PgBouncer's own errors to a client it never gave a server connection (08P01, then it closes
 * the client): the statement waited in PgBouncer's queue, or PgBouncer could not log in to
 * the server, and was never forwarded (pgbouncer src/janitor.c pool_client_maint,
 * objects.c check_fast_fail and pause_client; "cannot connect to server" is older releases').
 * Not "server conn crashed?" nor "query_timeout": those can come after the server ran it.
 */
const POOLER_NO_SERVER = /^(?:query_wait_timeout|server login has been failing, .*\(server_login_retry\)|pgbouncer cannot connect to server|server shutting down|pooler is shutting down)$/;

/** A pooler's refusal before any server had the statement: as a failed connect, nothing of it ran. */
export function neverReachedServer(err: unknown): boolean {
  const e = shape(err);
  return sqlStateOf(err) === '08P01' && typeof e.message === 'string' && POOLER_NO_SERVER.test(e.message);
}

/**
 * Failures a retry cannot fix: wrong credentials, a missing database, a startup value the
 * server refuses, and TLS that can never succeed (certificate, host name, no SSL support).
 */
const PERMANENT_SQLSTATES = new Set(['28P01', '28000', '3D000', '22023', '42704']);
/**
 * The compute's own startup refusals, which Neon's proxy relays as XX000 with the text alone
 * (compute/mod.rs): only for failures already known to be connects (a statement's
 * `database "x" does not exist` is a query error, not a lost connection).
 */
const COMPUTE_REFUSED = /^(?:FATAL: )?(?:database|role) "[^"]*" does not exist$/i;
const PERMANENT_TLS = /certificate|self[- ]signed|altname|Hostname\/IP does not match|does not support SSL|unable to verify|UNABLE_TO_|CERT_|ERR_TLS|wrong version number/i;

interface DriverCause {
  kind?: string;
  originalCode?: string;
  originalMessage?: string;
  code?: string;
  message?: string;
  constraint?: { index?: string; fields?: string[] };
}

interface ErrorShape {
  name?: string;
  code?: unknown;
  message?: string;
  cause?: unknown;
  meta?: { driverAdapterError?: { cause?: DriverCause }; target?: unknown };
}

const SQLSTATE = /^[0-9A-Z]{5}$/;
/** Prisma's codes (P1xxx–P6xxx); PL/pgSQL's class P0 (P0001, ...) is PostgreSQL's. */
const PRISMA_CODE = /^P[1-9]\d{3}$/;

const shape = (err: unknown): ErrorShape => (typeof err === 'object' && err !== null ? err : {}) as ErrorShape;

/** The driver adapter's mapped error: inside a Prisma error's meta, or the cause of a bare DriverAdapterError. */
function driverCause(e: ErrorShape): DriverCause | undefined {
  const inMeta = e.meta?.driverAdapterError?.cause;
  if (inMeta) return inMeta;
  if (e.name === 'DriverAdapterError' && typeof e.cause === 'object' && e.cause !== null) return e.cause as DriverCause;
  return undefined;
}

export function sqlStateOf(err: unknown): string | undefined {
  if (err instanceof DatalayerError) return err.sqlState;
  const e = shape(err);
  const cause = driverCause(e);
  const fromCause = cause?.originalCode ?? cause?.code;
  if (typeof fromCause === 'string' && SQLSTATE.test(fromCause)) return fromCause;
  if (typeof e.code === 'string' && SQLSTATE.test(e.code) && !PRISMA_CODE.test(e.code)) return e.code;
  if (e.code === 'P2034') return '40001';
  return undefined;
}

function prismaCodeOf(err: unknown): string | undefined {
  // PrismaClientInitializationError ($connect) carries its code as `errorCode`.
  const e = shape(err) as ErrorShape & { errorCode?: unknown };
  const code = typeof e.code === 'string' ? e.code : e.errorCode;
  return typeof code === 'string' && PRISMA_CODE.test(code) ? code : undefined;
}

/**
 * Prisma's codes for a connect that failed (from the driver adapter's error kinds: Prisma's
 * client maps AuthenticationFailed to P1000, DatabaseNotReachable P1001, DatabaseDoesNotExist
 * P1003, DatabaseAccessDenied P1010, TlsConnectionError P1011; P1002 is the server reached,
 * then timing out), and whether a retry can succeed. A raw query's (P2010) carries the kind alone.
 */
const PRISMA_CONNECT: ReadonlyMap<string, boolean> = new Map([
  ['P1000', false],
  ['P1001', true],
  ['P1002', true],
  ['P1003', false],
  ['P1010', false],
  ['P1011', false],
]);
const CONNECT_KINDS: ReadonlyMap<string, string> = new Map([
  ['AuthenticationFailed', 'P1000'],
  ['DatabaseNotReachable', 'P1001'],
  ['DatabaseDoesNotExist', 'P1003'],
  ['DatabaseAccessDenied', 'P1010'],
  ['TlsConnectionError', 'P1011'],
]);

/** The connect failure Prisma reported, by its code or its driver adapter's kind. */
function prismaConnectCode(e: ErrorShape, prismaCode: string | undefined): string | undefined {
  if (prismaCode !== undefined && PRISMA_CONNECT.has(prismaCode)) return prismaCode;
  const kind = driverCause(e)?.kind;
  return kind === undefined ? undefined : CONNECT_KINDS.get(kind);
}

/**
 * Did the connection itself fail (as opposed to the server rejecting a statement)?
 * SQLSTATE class 08 is "connection exception"; 57P01–57P03 are the server shutting down
 * or terminating the backend. Walks the cause chain: Prisma and the adapters wrap.
 */
export function isConnectionLoss(err: unknown): boolean {
  let e: unknown = err;
  for (let depth = 0; depth < 6 && typeof e === 'object' && e !== null; depth++) {
    if (e instanceof DatabaseConnectionError) return true;
    if (e instanceof DatalayerError) return false;
    const verdict = lossVerdict(e as ErrorShape);
    if (verdict !== undefined) return verdict;
    e = (e as ErrorShape).cause;
  }
  return false;
}

function lossVerdict(e: ErrorShape): boolean | undefined {
  if (typeof e.message === 'string' && (NEON_TRANSIENT.test(e.message) || NEON_PERMANENT.test(e.message))) return true;
  const kind = driverCause(e)?.kind;
  if (kind !== undefined && LOST_KINDS.has(kind)) return true;
  const state = sqlStateOf(e);
  if (state !== undefined) return state.startsWith('08') || /^57P0[1-3]$/.test(state);
  if (typeof e.code === 'string' && SOCKET_CODES.has(e.code)) return true;
  if (['P1001', 'P1002', 'P1008', 'P1017'].includes(String(e.code))) return true;
  return typeof e.message === 'string' && LOST_MESSAGE.test(e.message) ? true : undefined;
}

/** Can a retry of the same connection attempt succeed? */
export function isPermanentConnectFailure(err: unknown): boolean {
  const state = sqlStateOf(err);
  if (state !== undefined && PERMANENT_SQLSTATES.has(state)) return true;
  const e = shape(err);
  return PERMANENT_TLS.test(`${String(e.code ?? '')} ${e.message ?? ''}`) || NEON_PERMANENT.test(e.message ?? '') || COMPUTE_REFUSED.test(e.message ?? '');
}

/**
 * Why the layer gave up a connection with work on it (close()'s deadline, a scope's end, a
 * deadline: driver/client.ts destroySocket): that work was running, it did not land on a
 * connection that had died while idle, and is never re-run (retry.ts).
 */
const givenUp = new WeakSet<object>();

export function markGivenUp(reason: Error): void {
  givenUp.add(reason);
}

export function isGivenUp(err: unknown): boolean {
  return typeof err === 'object' && err !== null && givenUp.has(err);
}

/** Failures of opening a connection: nothing of the caller's work was sent. */
const connectFailures = new WeakSet<object>();

export function isConnectFailure(err: unknown): boolean {
  return typeof err === 'object' && err !== null && connectFailures.has(err);
}

/**
 * Statements node-postgres refused to send because their connection had already failed
 * (it was not queryable any more): they never reached a backend.
 */
const neverSent = new WeakSet<object>();

export function markNeverSent(err: unknown): void {
  if (typeof err === 'object' && err !== null) neverSent.add(err);
}

/** The driver refused this statement without sending it: a COMMIT refused so took the transaction with its lost connection (rolled back). */
export function wasNeverSent(err: unknown): boolean {
  return typeof err === 'object' && err !== null && neverSent.has(err);
}

/**
 * Can the statement that failed with `err` have run on the server? Not if it was never sent,
 * nor if the server's answer was that it was ending the backend (57P01–57P03: shutdown,
 * pg_terminate_backend), which aborts whatever the backend ran. Any other loss (a reset, the
 * connection closed, no answer) may have come after the server ran, and committed, it.
 */
export function mayHaveRun(err: unknown): boolean {
  if (wasNeverSent(err)) return false;
  const state = sqlStateOf(err);
  return state === undefined || !/^57P0[1-3]$/.test(state);
}

/**
 * What the caller of a statement sent outside a transaction (autocommit) gets when its
 * connection went before the answer came: the statement may have run and committed, so the
 * outcome is unknown and a blind retry may apply it twice (`retryable: false`), as for a
 * Neon HTTP statement whose answer was lost or a scope's deadline with work in flight. A
 * failure that shows the statement did not run (mayHaveRun) is left as it is.
 */
export function lostAfterSending(err: unknown): unknown {
  if (!(err instanceof DatabaseConnectionError) || !err.retryable || err.outcome !== undefined || isConnectFailure(err) || !mayHaveRun(err)) return err;
  if (!(err instanceof DeadlineExceededError) && err.constructor !== DatabaseConnectionError) return err;
  return mayHaveHappened(err, `${err.message} (after the statement was sent: it may have run, outcome unknown)`);
}

/**
 * A retryable connection loss (or deadline) as one whose work may have happened: outcome
 * unknown, not retryable, the original as its cause. A deadline stays a deadline; any
 * other loss gets `message`.
 */
export function mayHaveHappened(err: DatabaseConnectionError, message: string): DatabaseConnectionError {
  const details = {
    cause: err,
    outcome: 'unknown' as const,
    retryable: false,
    ...(err.sqlState === undefined ? {} : { sqlState: err.sqlState }),
    ...(err.correlationId === undefined ? {} : { correlationId: err.correlationId }),
  };
  if (err instanceof DeadlineExceededError) return new DeadlineExceededError(err.deadline, err.timeoutMs, details);
  return new DatabaseConnectionError(message, details);
}

/**
 * Connections lost before the server confirmed a transaction's BEGIN, which went out with
 * the transaction's first statement (driver/begin.ts): no transaction was open there, so
 * nothing of it can have committed.
 */
const beforeBegin = new WeakSet<object>();
/**
 * Of those, the failure of the statement that carried BEGIN, while the unit's code has
 * sent nothing after it: the code went no further than its first statement, so the unit
 * may run again (unit-of-work.ts). Not the failures of statements sent after it: the code
 * went on (it caught the first failure), and running it again would repeat what it did.
 */
const atFirstStatement = new WeakSet<object>();

/** `carrier`: the error is the failure of the statement that carried BEGIN. */
export function markBeforeBegin(err: unknown, carrier: boolean): void {
  if (typeof err !== 'object' || err === null) return;
  beforeBegin.add(err);
  if (carrier) atFirstStatement.add(err);
}

/** No transaction was open on the server when this connection was lost. */
export function isBeforeBegin(err: unknown): boolean {
  return typeof err === 'object' && err !== null && beforeBegin.has(err);
}

/** The connection was lost with the unit's first statement, and the unit's code sent nothing after it. */
export function isLostWithFirstStatement(err: unknown): boolean {
  return typeof err === 'object' && err !== null && atFirstStatement.has(err);
}

/** The unit's code sent a statement after `err` came back: it went on past its first statement. */
export function wentOnAfter(err: object): void {
  atFirstStatement.delete(err);
}

/** The typed error for a failed connect (`connect`) or a connection lost mid-statement (`query`). */
export function connectionError(err: unknown, given: 'connect' | 'query'): DatabaseConnectionError {
  // Behind PgBouncer a statement can fail for want of a server: it never ran, as a failed connect.
  const phase = given === 'query' && neverReachedServer(err) ? 'connect' : given;
  const sqlState = sqlStateOf(err);
  const what = phase === 'connect' ? 'Could not connect to the database' : 'The database connection was lost';
  const text = err instanceof Error ? err.message : String(err);
  const typed =
    err instanceof DatabaseConnectionError
      ? err
      : new DatabaseConnectionError(`${what}: ${redact(text)}`, {
          cause: err,
          retryable: !isPermanentConnectFailure(err),
          ...(sqlState === undefined ? {} : { sqlState }),
        });
  if (phase === 'connect') connectFailures.add(typed);
  return typed;
}

/** A serialization failure or deadlock: re-running the whole unit can succeed. */
export function isRetryableConflict(err: unknown): boolean {
  const state = sqlStateOf(err);
  return prismaCodeOf(err) === 'P2034' || (state !== undefined && RETRYABLE_SQLSTATES.has(state));
}

/** Quoted literals in server messages can be user data (`invalid input syntax: "..."`). */
export function withoutLiterals(message: string): string {
  return message.replace(/"(?:[^"\\]|\\.)*"/g, '"…"').replace(/'(?:[^'\\]|\\.)*'/g, "'…'");
}

function constraintOf(e: ErrorShape): string | undefined {
  const c = driverCause(e)?.constraint;
  if (c?.index) return c.index;
  if (c?.fields?.length) return c.fields.join(', ');
  const target = e.meta?.target;
  if (typeof target === 'string') return target;
  if (Array.isArray(target)) return target.join(', ');
  return undefined;
}

/** The server's message, minus anything that may be a value: quoted literals in data errors. */
function serverMessage(e: ErrorShape, sqlState: string | undefined): string {
  const raw = driverCause(e)?.originalMessage ?? driverCause(e)?.message;
  if (raw === undefined) {
    // Prisma's own errors: the last line is the reason, the lines above quote the call.
    const lines = (e.message ?? '').split('\n').map((l) => l.trim()).filter(Boolean);
    return lines[lines.length - 1] ?? 'query failed';
  }
  return sqlState?.startsWith('22') ? withoutLiterals(raw) : raw;
}

/**
 * The layer's typed view of any error: the same instance when it already is one, else a
 * new DatalayerError whose `cause` is the original. Prisma's errors keep their identity
 * where they are thrown; this is for code that wants `retryable`, `sqlState` or `kind`.
 */
export function classifyError(err: unknown, correlationId?: string): DatalayerError {
  const typed = err instanceof DatalayerError ? err : classifyForeign(err);
  // A unit of work marks the errors it lets through (Prisma's too) with its correlation id.
  correlationId ??= (shape(err) as { correlationId?: string }).correlationId;
  if (correlationId !== undefined && typed.correlationId === undefined) typed.correlationId = correlationId;
  return typed;
}

function classifyForeign(err: unknown): DatalayerError {
  const e = shape(err);
  const prismaCode = prismaCodeOf(err);
  const sqlState = sqlStateOf(err);
  const detail = { cause: err, ...(sqlState ? { sqlState } : {}), ...(prismaCode ? { prismaCode } : {}) };
  if (sqlState === '57014') {
    const why = /statement timeout/i.test(serverMessage(e, sqlState)) ? 'statement_timeout' : 'a cancel request';
    return new StatementTimeoutError(`Statement cancelled by ${why} [57014]`, detail);
  }
  if (prismaCode === 'P2024' || (prismaCode === 'P2028' && /Unable to start a transaction in the given time/i.test(e.message ?? ''))) {
    return new PoolTimeoutError(NaN, { ...detail, retryable: true });
  }
  if (prismaCode === 'P2028') {
    return new DatabaseTransactionError(`Transaction failed: ${serverMessage(e, sqlState)}`, { ...detail, outcome: 'rolled-back' });
  }
  const tag = [sqlState, prismaCode].filter(Boolean).join('/');
  const connect = prismaConnectCode(e, prismaCode);
  if (connect !== undefined) {
    // Prisma's text quotes the call site (its source line, with the call's arguments): rebuilt from the reason alone.
    const typed = new DatabaseConnectionError(`Could not connect to the database: ${redact(serverMessage(e, sqlState))} [${tag}]`, {
      ...detail,
      retryable: PRISMA_CONNECT.get(connect) === true && !isPermanentConnectFailure(err),
    });
    return connectionError(typed, 'connect');
  }
  if (isConnectionLoss(err)) {
    if (prismaCode === undefined) return connectionError(err, 'query');
    return new DatabaseConnectionError(`The database connection was lost: ${redact(serverMessage(e, sqlState))} [${tag}]`, { ...detail, retryable: !isPermanentConnectFailure(err) });
  }
  const attempts = (err as { attempts?: unknown }).attempts;
  if (typeof attempts === 'number' && isRetryableConflict(err)) {
    // A conflict a unit of work gave up on after its retries (unit-of-work.ts failure()).
    const tag = [sqlState, prismaCode].filter(Boolean).join('/');
    return new DatabaseTransactionError(`Unit of work failed after ${attempts} attempts: ${redact(serverMessage(e, sqlState))} [${tag}]`, { ...detail, outcome: 'rolled-back', retryable: true, attempts });
  }
  if (sqlState !== undefined || prismaCode !== undefined) {
    const constraint = constraintOf(e);
    const tag = [sqlState, prismaCode].filter(Boolean).join('/');
    return new DatabaseQueryError(`${redact(serverMessage(e, sqlState))} [${tag}]`, {
      ...detail,
      retryable: isRetryableConflict(err),
      ...(constraint ? { constraint } : {}),
    });
  }
  if (e.name === 'PrismaClientValidationError') {
    // Its text quotes the call's arguments; keep it only as the cause.
    return new DatabaseQueryError('Invalid query arguments (see error.cause)', detail);
  }
  const text = err instanceof Error ? err.message : String(err);
  return new DatabaseQueryError(`Query failed: ${redact(withoutLiterals(text.split('\n').filter(Boolean).pop() ?? text))}`, detail);
}

/** Did this come from the database, the driver or the layer, rather than from the caller's own code? */
export function isDatabaseFailure(err: unknown): boolean {
  if (err instanceof DatalayerError) return true;
  const name = shape(err).name;
  return typeof name === 'string' && (name.startsWith('PrismaClient') || name === 'DriverAdapterError');
}
