// @neondatabase/serverless through @prisma/adapter-neon: WebSocket connections with the
// same pool policy, and in serverless mode single statements over Neon's HTTP endpoint.
//
// The one wrapper of a driver object in the layer lives here, because the Neon adapter
// builds its pool itself (`new neon.Pool(config)` in PrismaNeonAdapterFactory.connect) and
// NeonPool's constructor replaces any `Client` option with its own. On that fresh, still
// empty pool it sets the connection class and points `connect`/`query` at GuardedPool.
// test/driver/neon.test.ts fails when the adapter or the pool changes underneath.
//
// `neonConfig` is process-wide, but every WebSocket setting can also be set per
// connection (`client.neonConfig`), so they are applied per client. Only the HTTP
// endpoint is global-only; it is routed by host so other users of the driver keep theirs.

import type * as AdapterNeon from '@prisma/adapter-neon';
import type * as NeonModule from '@neondatabase/serverless';
import type { SqlDriverAdapter, SqlDriverAdapterFactory } from '@prisma/driver-adapter-utils';
import { ContextSlot } from '../context.ts';
import { withDeadline } from '../deadline.ts';
import { DatabaseConnectionError, DatabaseQueryError, DeadlineExceededError } from '../errors.ts';
import { connectionError, isConnectionLoss, mayHaveRun as statementMayHaveRun, neverReachedServer, sqlStateOf } from '../failures.ts';
import { toUrl, type DbConfig } from '../config.ts';
import type { EventHub } from '../events.ts';
import { GuardedPool, inSessionOn, type PoolClient, type RawConnect, type RawPool } from '../pool.ts';
import { currentScope } from '../scope.ts';
import { redact, redactError } from '../secrets.ts';
import { SslChoice } from '../ssl.ts';
import type { DbCounters } from '../stats.ts';
import type { PoolRecorder } from '../telemetry.ts';
import { guardedClientClass, type ClientClass } from './client.ts';
import type { DriverHandle } from './index.ts';
import { adapterSchema, clientPolicy, poolOptions } from './options.ts';

let loaded: typeof NeonModule | undefined;

/** Loaded on first use, so applications on the pg driver never pay for it. */
export function neonModule(): typeof NeonModule {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  loaded ??= require('@neondatabase/serverless') as typeof NeonModule;
  return loaded;
}

/** Per-connection WebSocket settings for a Client of this configuration. */
export function socketSettings(config: DbConfig): Record<string, unknown> {
  const n = config.neon;
  const settings: Record<string, unknown> = {};
  // ws, not the runtime's WebSocket (Node 22+ has undici's): the layer ends a given-up
  // connection with ws's terminate() (driver/client.ts). undici's WebSocket has no such
  // call and waits for the answer to its closing handshake for good: on a silent network
  // each given-up connection kept its TCP socket, and the process, open indefinitely.
  // A constructor the application set on the driver's global neonConfig is its choice.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  if (neonModule().neonConfig.webSocketConstructor === undefined) settings.webSocketConstructor = require('ws');
  // The driver's own default (pipelined startup with a cleartext password) is what Neon's
  // proxy expects; driver/client.ts keeps the connect deadline running through it.
  if (n.wsProxy !== undefined) settings.wsProxy = n.wsProxy;
  if (n.pipelineConnect !== undefined) settings.pipelineConnect = n.pipelineConnect;
  if (n.useSecureWebSocket !== undefined) settings.useSecureWebSocket = n.useSecureWebSocket;
  if (n.pipelineTLS !== undefined) settings.pipelineTLS = n.pipelineTLS;
  return settings;
}

type Endpoint = NonNullable<DbConfig['neon']['fetchEndpoint']>;
const routes = new Map<string, Endpoint>();
let installed = false;

/** Routes Neon HTTP queries for this host:port to the configured endpoint. */
function routeHttpEndpoint(config: DbConfig): void {
  const endpoint = config.neon.fetchEndpoint;
  if (endpoint === undefined) return;
  const { neonConfig } = neonModule();
  routes.set(`${config.target.host}:${config.target.port}`, endpoint);
  if (installed) return;
  installed = true;
  const previous = neonConfig.fetchEndpoint as Endpoint;
  neonConfig.fetchEndpoint = ((host: string, port: number | string, opts?: unknown) => {
    const route = routes.get(`${host}:${port}`) ?? routes.get(`${host}:5432`) ?? previous;
    return typeof route === 'function' ? route(host, port, opts) : route;
  }) as never;
}

interface NeonPool extends RawPool {
  Client: unknown;
  connect(): Promise<PoolClient>;
  query(text: unknown, values?: unknown): Promise<unknown>;
}

export function neonDriver(config: DbConfig, counters: DbCounters, hub: EventHub, recorder?: PoolRecorder): DriverHandle {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { PrismaNeon, PrismaNeonHttp } = require('@prisma/adapter-neon') as typeof AdapterNeon;
  const settings = socketSettings(config);
  const configure = (client: object): void => void Object.assign((client as { neonConfig: object }).neonConfig, settings);
  const policy = clientPolicy(config, undefined, configure, recorder);
  const NeonClient = guardedClientClass(neonModule().Client as unknown as ClientClass, policy);
  routeHttpEndpoint(config);
  // Neon's proxy terminates TLS on the WebSocket (wss); the driver turns node-postgres'
  // own `ssl` off inside it (forceDisablePgSSL), so the SSL plan does not apply here.
  const noSsl = new SslChoice({ first: false, fallback: undefined });
  const wsFactory = new PrismaNeon({ ...poolOptions(config), ssl: false } as never, { ...adapterSchema(config), onConnectionError: (err) => void hub.fail(err) });
  let guard: GuardedPool | undefined;
  // With statementMs 0 a single statement has no bound the layer may enforce, and an HTTP
  // request that hangs (a black-holed endpoint) cannot be told from a long query: such
  // statements go over WebSocket, where the connect has its own deadline and a lost
  // connection is noticed by the socket (keepalive), not by the statement's length.
  const useHttp = config.mode === 'serverless' && config.neon.httpQueries !== false && config.timeouts.statementMs > 0;
  const inFlight = new InFlight();
  const ws: SqlDriverAdapterFactory = {
    provider: wsFactory.provider,
    adapterName: wsFactory.adapterName,
    async connect() {
      const adapter = await wsFactory.connect();
      const pool = adapter.underlyingDriver() as unknown as NeonPool;
      pool.Client = NeonClient;
      const connect = pool.connect as unknown as (cb: unknown) => void;
      const rawConnect: RawConnect = (callback) => void connect.call(pool, callback);
      const current = new NeonGuardedPool(inFlight, pool, rawConnect, config, noSsl, counters, hub, recorder, policy.opening);
      pool.connect = () => current.connect();
      pool.query = (text, values) => current.query(text, values);
      // The adapter's dispose ends this pool directly: a warmed connection nobody claimed goes back first (GuardedPool.willEnd).
      const end = pool.end.bind(pool);
      pool.end = () => {
        current.willEnd();
        current.stopOpening();
        return end();
      };
      guard = current;
      // Prisma loads its query compiler next: the first connection opens meanwhile (GuardedPool.warm).
      // Not when single statements go over HTTP: they need no connection.
      if (!useHttp) current.warm();
      return adapter;
    },
  };
  const route: HttpRoute = { config, inFlight, session: () => inSessionOn(guard) };
  const factory = useHttp ? httpWithWsTransactions(new PrismaNeonHttp(toUrl(config), {}), ws, route) : ws;
  // The WebSocket pool ends with Prisma's disconnect (the adapter's dispose).
  return { factory, pool: () => guard, close: async () => {} };
}

/** The abort signal of the HTTP statement being sent, for the fetch hook below. */
const httpSignals = new ContextSlot<AbortSignal>();
let fetchHooked = false;

/**
 * `fetchFunction` is global-only in the driver too: the hook adds the current statement's
 * abort signal (none outside the layer's statements), so a statement past its deadline is
 * aborted and Neon cancels the query when the client disconnects (sql_over_http.rs).
 */
function hookFetch(): void {
  if (fetchHooked) return;
  fetchHooked = true;
  const { neonConfig } = neonModule();
  const previous = neonConfig.fetchFunction as typeof fetch | undefined;
  neonConfig.fetchFunction = ((url: string, init?: RequestInit) => {
    const signal = httpSignals.get();
    return (previous ?? fetch)(url, signal === undefined ? init : { ...init, signal });
  }) as never;
}

const HTTP_STATUS = /^Server error \(HTTP status (\d+)\): ([\s\S]*)$/;

/**
 * Neon's SQL-over-HTTP failures as the layer's errors, told apart by whether the statement
 * can have run. Not sent: the request never left (a refused TCP or TLS connect), or the proxy
 * answered that it could not reach or start the compute (http_util.rs, error.rs; by their
 * text, like the WebSocket proxy's errors), or that the compute refused its connection (a
 * 500 with the server's SQLSTATE), or any other 500 of Neon's own but one (statusFailure) —
 * connect failures. May have run: the request went
 * out and the answer was lost, cut off or not Neon's (a load balancer's page), or Neon
 * cancelled the query under load (08P01, sql_over_http.rs) — outcome unknown. Ended by the
 * compute (57P01–57P03: a suspend under the statement): it did not run. 400 with a
 * SQLSTATE is the server's own SQL error (kept for Prisma to map); 400 with code "" is the
 * proxy's own (proxyFailure); 413/507 are Neon's 10 MiB limits on the request and the response.
 */
function httpFailure(err: unknown): unknown {
  const message = isErrorLike(err) ? err.message : String(err);
  const status = HTTP_STATUS.exec(message);
  if (status) return statusFailure(err, status[1] ?? '', status[2] ?? '');
  if (/^Error connecting to database/.test(message)) return neverSent(err) ? connectionError(err, 'connect') : mayHaveRun(err, 'lost the connection after the request was sent');
  if (!isNeonDbError(err)) return isErrorLike(err) ? mayHaveRun(err, 'sent an answer that could not be read') : err;
  // Behind a -pooler endpoint PgBouncer's own 08P01 for a query it never gave a server
  // (query_wait_timeout, …) reaches the HTTP answer as the server's: nothing ran, as a failed connect.
  if (neverReachedServer(err)) return connectionError(err, 'connect');
  if (sqlStateOf(err)?.startsWith('08')) return mayHaveRun(err, 'ended the query');
  // The compute ended the backend under the statement (a suspend, a restart: 57P01–57P03, a 400
  // with the server's code, sql_over_http.rs), which aborts it: nothing of it committed.
  if (isConnectionLoss(err) && !statementMayHaveRun(err)) return endedUnderStatement(err as Error);
  // Proxy errors (auth, quota) come as a 400 body with code "": connection failures by their text.
  if (isConnectionLoss(err)) return connectionError(err, 'connect');
  // Any other code "" is not the server's: the proxy's own, told apart by text (below).
  if ((err as { code?: unknown }).code === '') return proxyFailure(err as Error);
  return err;
}

/**
 * The proxy's refusals of the request itself, before any compute is reached (400, code ""):
 * the connection string it was sent (serverless/error.rs ConnInfoError), a body it cannot
 * read (ReadPayloadError::Parse), a batch's isolation level (InvalidIsolationLevel), the
 * control plane's and authentication's user errors not already known by their text
 * (control_plane/errors.rs, auth/mod.rs, backend.rs HttpConnError::JwtPayloadError).
 * Nothing ran, and the same request is refused again.
 */
const HTTP_REFUSED = new RegExp(
  `^(?:${[
    'invalid header: ', 'invalid connection string: ', 'incorrect scheme$', 'missing database name$', 'invalid database name$', 'missing username$',
    'invalid username: ', 'missing authentication credentials: ', 'missing hostname$', 'invalid hostname: ', 'could not parse the HTTP request body: ',
    'invalid isolation level$', 'Control plane request failed', 'Console responded with ', 'Unsupported authentication method: ',
    'Malformed password message: ', 'could not parse JWT payload',
  ].join('|')})`,
);

/**
 * Any other 400 with code "": the proxy's client to the compute failed while it ran the
 * statement, without an error from PostgreSQL (sql_over_http.rs SqlOverHttpError::Postgres
 * without a DbError: "connection closed", "error communicating with the server"), or a text
 * the layer does not know: the statement may have run.
 */
function proxyFailure(err: Error): DatabaseConnectionError {
  if (!HTTP_REFUSED.test(err.message)) return mayHaveRun(err, 'failed the request without an error from PostgreSQL');
  return new DatabaseConnectionError(`Could not connect to the database: Neon's HTTP endpoint refused the request (nothing ran): ${redact(err.message)}`, { cause: err, retryable: false });
}

function statusFailure(err: unknown, code: string, body: string): Error {
  const { message: text, sqlState, neon } = neonBody(body);
  if (code === '413' || code === '507') return new DatabaseQueryError(`Neon refused the statement: ${text} [HTTP ${code}]`, { cause: err });
  const said = Object.assign(new Error(text, { cause: err }), sqlState === undefined ? {} : { code: sqlState });
  // A status other than 400 with the server's SQLSTATE is the compute refusing the proxy's
  // connection (sql_over_http.rs: HttpConnError::PostgresConnectionError, status 500 unless
  // 3D000; InternalPostgres is never built): too many connections (53300), a compute starting
  // up or shutting down (57P03): nothing ran, and whether a retry can succeed is the code's.
  if (sqlState !== undefined || isConnectionLoss(said)) return connectionError(said, 'connect');
  // Neon's own 500 without a SQLSTATE (get_http_status_code): the proxy could not wake, reach or
  // start a connection to the compute (wake, control plane, quota, rate limit: texts of the
  // control plane's own, which no list can hold), all before the statement was sent; only a
  // result the proxy could not read back (JsonConversion) comes after it ran.
  if (code === '500' && neon && !/^could not parse postgres response$/.test(text)) return connectionError(said, 'connect');
  return mayHaveRun(err, `answered HTTP ${code}`);
}

/** By shape: fetch's errors come from undici's realm, where `instanceof Error` can fail (a vm context). */
const isErrorLike = (err: unknown): err is Error => typeof err === 'object' && err !== null && typeof (err as Error).message === 'string';
const isNeonDbError = (err: unknown): err is Error => isErrorLike(err) && err.name === 'NeonDbError';

/** Failures of fetch that happen before a byte of the request is written (undici's codes). */
const BEFORE_SENDING = /^(?:ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|UND_ERR_CONNECT_TIMEOUT|ERR_TLS_CERT_ALTNAME_INVALID|CERT_\w+|UNABLE_TO_\w+|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN)$/;

/** The driver's "Error connecting to database" wraps fetch's TypeError, whose cause has the socket's code. */
function neverSent(err: unknown): boolean {
  const fetchError = (err as { sourceError?: { cause?: { code?: unknown } } }).sourceError;
  const code = fetchError?.cause?.code;
  return typeof code === 'string' && BEFORE_SENDING.test(code);
}

/** The compute terminated the backend running the statement: it did not run, and running it again can succeed. */
function endedUnderStatement(err: Error): DatabaseConnectionError {
  const sqlState = sqlStateOf(err);
  return new DatabaseConnectionError(`Neon's compute ended the connection running the statement (${sqlState}): it did not run (rolled back): ${redact(err.message)}`, {
    cause: err,
    retryable: true,
    outcome: 'rolled-back',
    ...(sqlState === undefined ? {} : { sqlState }),
  });
}

/** The request went out, so the statement may have run (autocommit): whether to retry is the caller's call. */
function mayHaveRun(err: unknown, what: string): DatabaseConnectionError {
  const text = isErrorLike(err) ? err.message : String(err);
  return new DatabaseConnectionError(`Neon's HTTP endpoint ${what}: the statement may have run (outcome unknown): ${redact(text)}`, {
    cause: err,
    retryable: false,
    outcome: 'unknown',
  });
}

/**
 * The message and SQLSTATE (`code`, "" when not the server's) of Neon's JSON error body
 * (sql_over_http.rs handle: message, code, severity, …); the body itself when not Neon's.
 */
function neonBody(body: string): { message: string; sqlState?: string; neon: boolean } {
  let parsed: { message?: unknown; code?: unknown; severity?: unknown };
  try {
    parsed = JSON.parse(body) as typeof parsed;
  } catch {
    return { message: body, neon: false };
  }
  if (typeof parsed !== 'object' || parsed === null || typeof parsed.message !== 'string') return { message: body, neon: false };
  const neon = typeof parsed.code === 'string' && 'severity' in parsed;
  const sqlState = typeof parsed.code === 'string' && /^[0-9A-Z]{5}$/.test(parsed.code) ? parsed.code : undefined;
  return sqlState === undefined ? { message: parsed.message, neon } : { message: parsed.message, sqlState, neon };
}

/** What an HTTP statement needs besides the statement: its Db's settings and state. */
interface HttpRoute {
  readonly config: DbConfig;
  readonly inFlight: InFlight;
  /** Is the caller inside a db.session()? Then its statements belong on the session's connection. */
  readonly session: () => boolean;
}

/**
 * The HTTP statements running now, each by the function that ends it. They hold no
 * connection of the pool, so close()'s deadline (destroyBusy) reaches them only here.
 */
class InFlight {
  private readonly running = new Set<(reason: Error) => void>();

  add(end: (reason: Error) => void): () => void {
    this.running.add(end);
    return () => void this.running.delete(end);
  }

  endAll(reason: Error): number {
    const ends = [...this.running];
    for (const end of ends) end(reason);
    return ends.length;
  }
}

/** The WebSocket pool, whose close-deadline teardown also ends the HTTP statements in flight. */
class NeonGuardedPool extends GuardedPool {
  constructor(
    private readonly http: InFlight,
    ...args: ConstructorParameters<typeof GuardedPool>
  ) {
    super(...args);
  }

  override destroyBusy(reason: () => Error): number {
    return super.destroyBusy(reason) + this.http.endAll(reason());
  }
}

/**
 * The error of an HTTP statement ended under it (close's deadline): the request may have
 * reached the compute and run, so the outcome is unknown and a retry is not for the layer.
 */
function endedUnder(reason: Error): Error {
  return new DatabaseConnectionError(reason.message, { cause: reason, retryable: false, outcome: 'unknown' });
}

/**
 * One HTTP statement. Over HTTP nothing but user and database reaches the compute, so the
 * server-side timeouts cannot be sent; the statement timeout is enforced here instead,
 * with the connect deadline added, since one request covers a compute's wake-up and the
 * statement alike and the client cannot tell them apart (statementMs 0 never comes here).
 * Past that deadline the statement may have run: outcome unknown, not retryable.
 * It holds no connection, so what ends connections ends it too: the end of its db.scope()
 * (refused once the scope ended, aborted when it ends while it runs) and close()'s deadline.
 */
function httpStatement<T>(route: HttpRoute, run: () => Promise<T>, serverError: (err: Error) => unknown): Promise<T> {
  const { statementMs, connectMs } = route.config.timeouts;
  const abort = new AbortController();
  let endWith!: (reason: Error) => void;
  const ended = new Promise<never>((_, reject) => (endWith = reject));
  const end = (reason: Error): void => {
    abort.abort();
    endWith(reason);
  };
  const unwatch: Array<() => void> = [route.inFlight.add((reason) => end(endedUnder(reason)))];
  const scope = currentScope();
  try {
    if (scope !== undefined) unwatch.push(scope.watch(end));
  } catch (refused) {
    unwatch.forEach((f) => f());
    return Promise.reject(refused);
  }
  const sent = httpSignals.run(abort.signal, run).catch((err: unknown) => {
    const failure = httpFailure(err);
    // Left as it is: the server's own SQL error (a constraint, a syntax error), as Prisma maps it over WebSocket.
    return Promise.reject(redactError(failure === err && isNeonDbError(err) ? serverError(err) : failure));
  });
  const ms = connectMs + statementMs;
  // Past the deadline the request has gone out (or may have: fetch does not say how far it
  // got) and the compute may be running or have run the statement, committed on its own: its
  // outcome is unknown and re-running it is the caller's call, as for an answer lost.
  const bounded = withDeadline(Promise.race([sent, ended]), ms, () => {
    abort.abort();
    return new DeadlineExceededError('statement', ms, { outcome: 'unknown', retryable: false });
  });
  return bounded.finally(() => unwatch.forEach((f) => f()));
}

/**
 * The server's SQL error of an HTTP statement as Prisma's Neon adapter reports the same error
 * over WebSocket: a DriverAdapterError (its `onError`), which Prisma maps to P2002, P2003,
 * P2010, ... with `meta`. The HTTP adapter throws the driver's error as it is, which Prisma
 * reports with the SQLSTATE as `code` ('23505') and no `meta`: the same failed statement
 * would be a P2002 in a unit of work and a '23505' outside one. Where the adapter no
 * longer has `onError`, the error is left as it is (test/driver/neon.test.ts fails).
 */
function asAdapterError(ws: SqlDriverAdapter): (err: Error) => unknown {
  const onError = (ws as { onError?: (err: unknown) => never }).onError;
  return (err) => {
    if (typeof onError !== 'function') return err;
    try {
      onError.call(ws, err);
    } catch (mapped) {
      return mapped;
    }
    return err;
  };
}

/** The driver's rejection with passwords removed (secrets.ts): the HTTP driver's errors can quote its connection string. */
function redacted<T>(work: Promise<T>): Promise<T> {
  return work.catch((err: unknown) => Promise.reject(redactError(err)));
}

/**
 * Serverless Neon: single statements over Neon's HTTP endpoint (no connection at all),
 * transactions and sessions over short-lived WebSocket connections, since HTTP has no
 * transaction and no session.
 */
function httpWithWsTransactions(http: SqlDriverAdapterFactory, ws: SqlDriverAdapterFactory, route: HttpRoute): SqlDriverAdapterFactory {
  hookFetch();
  return {
    provider: http.provider,
    adapterName: http.adapterName,
    async connect(): Promise<SqlDriverAdapter> {
      const [h, w] = await redacted(Promise.all([http.connect(), ws.connect()]));
      const serverError = asAdapterError(w);
      return {
        provider: h.provider,
        adapterName: h.adapterName,
        // Inside a db.session() the statement goes to the session's connection (its SET,
        // advisory locks and temporary tables); HTTP would reach a fresh backend each time.
        queryRaw: (q) => (route.session() ? redacted(w.queryRaw(q)) : httpStatement(route, () => h.queryRaw(q), serverError)),
        executeRaw: (q) => (route.session() ? redacted(w.executeRaw(q)) : httpStatement(route, () => h.executeRaw(q), serverError)),
        executeScript: (s) => redacted(w.executeScript(s)),
        startTransaction: (level) => redacted(w.startTransaction(level)),
        getConnectionInfo: () => w.getConnectionInfo?.() ?? { supportsRelationJoins: true },
        dispose: async () => {
          await Promise.all([h.dispose(), w.dispose()]);
        },
      };
    },
  };
}
