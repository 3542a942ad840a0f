/**
 * Test fixture: Neon's proxy (WebSocket + SQL over HTTP) in front of a harness PostgreSQL,
 * rebuilt from Neon's source so the real `@neondatabase/serverless` driver runs with its
 * production defaults (pipelined cleartext-password connect) and meets Neon's real quirks.
 * It replaces the former neon-bridge.ts (a byte relay) and neon-http.ts.
 *
 * Every behaviour names the file it reproduces, in neondatabase/neon unless stated:
 *
 * WebSocket (proxy/src/serverless/mod.rs request_handler → websocket.rs serve_websocket →
 * pglb/handshake.rs + proxy/mod.rs handle_client):
 * - Any path upgrades; only binary frames carry protocol bytes (websocket.rs WebSocketRw).
 * - The endpoint comes from the host the client asked for (serverless/mod.rs takes the Host
 *   header; auth/credentials.rs endpoint_sni: first label when the rest is a Neon domain),
 *   or from `options=endpoint=<id>` / `project=<id>` (credentials.rs, password_hack.rs
 *   parse_endpoint_param); both present and different → "Inconsistent project name…";
 *   neither → auth/mod.rs MissingEndpointName. Tests cannot send a real Host header (loopback
 *   only), so `wsProxy` carries the driver's host in `?address=` and the fixture reads the
 *   host from there: what the default `wsProxy` (host + '/v2') puts in Host in production.
 * - Auth towards the client is cleartext password (pglb ClientMode::Websockets
 *   allow_cleartext → auth/flow.rs CleartextPassword: AuthenticationCleartextPassword, then
 *   AuthenticationOk once the password checks out). So the driver's default
 *   `pipelineConnect: 'password'` works: startup + password + first query arrive at once.
 *   The proxy checks the password itself (the fixture: by the compute's SCRAM answer) and
 *   reports "password authentication failed for user '<u>'" (auth/mod.rs PasswordFailed).
 * - Allow-lists before the rate limit (auth/backend/mod.rs auth_quirks → control_plane/mod.rs
 *   EndpointAccessControl::check): "This IP address … is not allowed to connect to this
 *   endpoint. …" and "… from a blocked network." (auth/mod.rs); over HTTP a 400 (ErrorKind::User).
 * - Rate limit before authentication (auth/backend/mod.rs auth_quirks
 *   connection_attempt_rate_limit): "Too many connections to this endpoint. Please try again later."
 * - Compute wake (proxy/wake_compute.rs, control_plane): a suspended compute takes
 *   `wakeDelayMs` to start; quota errors come from the control plane (control_plane/messages.rs
 *   get_user_facing_message: its fallback for 423, or the control plane's own text, forwarded
 *   as is: 'quota-message'); an unreachable compute is
 *   "Couldn't connect to compute node" (compute/mod.rs COULD_NOT_CONNECT, ConnectionError).
 * - The client is not watched while the compute wakes and connects (proxy/mod.rs
 *   handle_client); the startup and password are read message by message (stream.rs,
 *   pqproto.rs read_message), so what the driver pipelined after them stays in the stream and
 *   is relayed to the compute in the passthrough (pglb/passthrough.rs), even when the client
 *   has left by then: a pipelined statement runs after a wake the client gave up on.
 * - Startup parameters forwarded to the compute: only user, database, application_name,
 *   replication and `options` minus `endpoint=`/`project=`/`neon_*:` entries, plus
 *   client_encoding=UTF8 (compute/mod.rs AuthInfo::set_startup_params, filtered_options).
 *   Everything else (statement_timeout, lock_timeout, …) is dropped silently. The
 *   `neon_proxy_params_compat:true` option forwards everything (proxy/mod.rs params_compat).
 * - Every error the proxy reports itself, including the compute's refusals at startup, is an
 *   ErrorResponse with severity ERROR and code XX000 and nothing else (stream.rs throw_error,
 *   pqproto.rs write_error), then the connection closes.
 * - After the compute's ReadyForQuery the client gets AuthenticationOk, the compute's
 *   ParameterStatus/Notice messages, the proxy's own BackendKeyData and ReadyForQuery
 *   (proxy/mod.rs forward_compute_params_to_client); then bytes are relayed both ways
 *   (pglb/passthrough.rs). A CancelRequest with the proxy's key is forwarded with the
 *   compute's key (cancellation.rs); the key outlives the session (it is stored in redis
 *   with a 90 s expiry, never deleted: maintain_cancel_key), so a cancel sent just after
 *   the client dropped its connection still reaches the query. (Neon's proxy also cancels
 *   the query itself when the passthrough ends, maintain_cancel_key's try_cancel_query on
 *   `_cancel_on_shutdown`: not modelled, so the tests see the layer's own CancelRequest.)
 *
 * SQL over HTTP (proxy/src/serverless/sql_over_http.rs, http_util.rs, error.rs, backend.rs):
 * - POST /sql; conn info from `Neon-Connection-String` (http_util.rs get_conn_info): endpoint
 *   = first label of its host (an IP → 400 "missing hostname"), password required.
 * - Only `user` and `database` reach the compute (backend.rs connect_to_compute), a fresh
 *   compute connection per request (the HTTP pool is opt-in: `sql_over_http_pool_opt_in`
 *   defaults to true in binary/proxy.rs and the driver never opts in).
 * - Request body limit 10 MiB → 413 "request is too large (max is N bytes)" (error.rs
 *   ReadPayloadError, binary/proxy.rs sql_over_http_max_request_size_bytes); response limit
 *   10 MiB → 507 "response is too large (max is N bytes)" (query_to_json, ResponseTooLarge).
 * - Error body: JSON with message, code, detail, hint, position, internalPosition,
 *   internalQuery, severity, where, table, column, schema, dataType, constraint, file, line,
 *   routine; `code` and `severity` are "" (not null) when the error is not from PostgreSQL
 *   (sql_over_http.rs handle). Status: 400 for user errors (SQL errors, auth failures, bad
 *   payloads), 500 for compute/control-plane/rate-limit/quota errors, 507, 413.
 * - A client that disconnects mid-query gets its query cancelled on the compute
 *   (serverless/mod.rs http_cancellation_token → sql_over_http.rs process → cancel_query);
 *   one that disconnects while the compute wakes never has its query sent (handle_db_inner
 *   run_until_cancelled → SqlOverHttpCancel::Connect).
 * - Load shedding (serverless/mod.rs task_main): a new connection arriving while more than
 *   `clientConnThreshold` are open cancels a random open one (cancel_set.take()). A request
 *   in flight on it has its query cancelled on the compute and, unless the query finishes
 *   within 100 ms, gets 400 {"message":"Query cancelled, connection was terminated",
 *   "code":"08P01"} (sql_over_http.rs handle / process); the connection then closes.
 *
 * Compute suspend (compute_ctl / Postgres fast shutdown): `suspend()` terminates every
 * compute backend opened through the proxy with pg_terminate_backend (the client sees
 * 57P01 "terminating connection due to administrator command") and the next connection
 * waits `wakeDelayMs` for the wake.
 *
 * Pooled endpoints (`ep-…-pooler`), when the fixture is given `pooler` (a harness PgBouncer in
 * front of `upstream`):
 * - The proxy keeps the `-pooler` endpoint id as the client gave it and asks the control
 *   plane to wake it (control_plane/client/cplane_proxy_v1.rs do_wake_compute sends it as
 *   `endpointish`); the control plane answers with the address of the compute's PgBouncer
 *   (compute/etc/pgbouncer.ini listen_port=6432). Auth info and allow-lists are the endpoint's
 *   own (types.rs EndpointId::normalize strips `-pooler` for those caches).
 * - Everything else is unchanged: the same startup parameter filter (so `application_name`,
 *   `client_encoding=UTF8` and a non-empty `options` reach PgBouncer, which refuses `options`:
 *   pgbouncer.ini ignore_startup_parameters=extra_float_digits only), the same WebSocket and
 *   HTTP paths (sql_over_http.rs: a fresh connection to the address wake_compute gave, i.e.
 *   through PgBouncer), and the cancel key maps to PgBouncer's key for the proxy's connection,
 *   which PgBouncer honours only while that connection is open.
 * - The proxy reaches PgBouncer over plain TCP (pgbouncer.ini client_tls_sslmode=disable; the
 *   control plane gives no server_name, so cplane_proxy_v1.rs picks SslMode::Disable). The test
 *   starts the PgBouncer with Neon's settings that matter (pool_mode=transaction,
 *   ignore_startup_parameters=extra_float_digits; default_pool_size / max_client_conn as it needs).
 *
 * Not modelled: TLS on the client side (tests use ws:// and http:// on loopback), JWT auth,
 * HTTP connection pooling, batches' Neon-Batch-* echo subtleties beyond the headers.
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import { Client, DatabaseError } from 'pg';
import { WebSocketServer, WebSocket, type RawData } from 'ws';
import { ISOLATION_SQL, parseQueryData, ResponseTooLarge, runQuery, type HttpHeaders, type QueryData, type QueryResultJson } from './neon-json';
import { tlsOptions, type ServerInfo } from './server';
import {
  authCleartextPassword,
  authOk,
  backendKeyData,
  cancelOnCompute,
  CANCEL_REQUEST_CODE,
  ComputeDbError,
  connectCompute,
  errorResponse,
  Framer,
  parseStartupParams,
  PROTOCOL_3,
  readyForQuery,
  SSL_REQUEST_CODE,
  type ComputeAddress,
  type ComputeSession,
} from './neon-wire';

export type NeonFailure = 'compute-unreachable' | 'auth' | 'quota' | 'quota-message' | 'rate-limit' | 'ip-not-allowed' | 'blocked-network';

export interface NeonProxyOptions {
  /** The harness PostgreSQL standing in for the compute (TLS + SCRAM). */
  upstream: ServerInfo;
  /**
   * The compute's PgBouncer (a harness PgBouncer in front of `upstream`): `-pooler` endpoints
   * connect to it. Absent: `-pooler` endpoints go straight to `upstream`, as before.
   */
  pooler?: ServerInfo;
  /** Time a suspended compute takes to wake before the first connection. Default 500 ms. */
  wakeDelayMs?: number;
  /** sql_over_http_max_request_size_bytes; default 10 MiB as in binary/proxy.rs. */
  maxRequestBytes?: number;
  /** sql_over_http_max_response_size_bytes; default 10 MiB as in binary/proxy.rs. */
  maxResponseBytes?: number;
  /** sql_over_http_client_conn_threshold; default 10 000 as in binary/proxy.rs. */
  clientConnThreshold?: number;
}

/** What one client connection asked for and what reached the compute. */
export interface NeonSessionLog {
  protocol: 'ws' | 'http';
  endpoint: string | undefined;
  clientParams: Record<string, string>;
  computeParams: Record<string, string>;
  /** The proxy's answer when it refused the connection (message of its XX000 / HTTP error). */
  refused?: string;
  /** WebSocket: the password arrived together with the startup packet (the driver's pipelined connect). */
  pipelined?: boolean;
}

export interface NeonProxy {
  readonly port: number;
  /** For the driver's `wsProxy`: routes every host here, keeping the host (see header). */
  readonly wsProxy: (host: string, port: number | string) => string;
  /** For the driver's `fetchEndpoint`. */
  readonly fetchEndpoint: (host: string, port: number | string, options?: unknown) => string;
  /** While on, WebSockets are accepted and HTTP requests read, and nothing is ever answered. */
  blackhole(on?: boolean): void;
  /**
   * A black-holed network under the WebSockets open now: nothing of theirs is read or
   * answered any more, not even the WebSocket closing handshake, and they stay silent
   * (reset() does not revive them; close() ends them). Returns how many.
   */
  silenceOpen(): number;
  /** Compute shutdown: terminates (57P01) every backend opened through the proxy; the next connect waits wakeDelayMs. */
  suspend(): Promise<number>;
  /** The next `times` connections (WebSocket or HTTP) fail with this proxy error. */
  failNext(kind: NeonFailure, times?: number): void;
  /** Clears pending failNext() errors and the blackhole. */
  reset(): void;
  /** Compute connections currently open through the proxy. */
  computeConnections(): number;
  /** Client sockets currently open (WebSockets and HTTP connections). */
  clientSockets(): number;
  /** Counts of client connections/requests received. */
  received(): { ws: number; http: number };
  sessions(): readonly NeonSessionLog[];
  close(): Promise<void>;
}

const MiB = 1024 * 1024;
/** cancellation.rs: a session's cancel key is stored with CANCEL_KEY_INITIAL_PERIOD (60 s) + CANCEL_KEY_TTL_SLACK (30 s). */
const CANCEL_KEY_TTL_MS = 90_000;

/** A Neon endpoint host for tests: never resolved, `wsProxy`/`fetchEndpoint` route it to the fixture. */
export const NEON_TEST_ENDPOINT = 'ep-quiet-sun-123456';
export const NEON_TEST_HOST = `${NEON_TEST_ENDPOINT}.us-east-2.aws.neon.tech`;

// Error texts, verbatim from the source files named in the header.
export const NEON_ERRORS = {
  computeUnreachable: "Couldn't connect to compute node",
  rateLimit: 'Too many connections to this endpoint. Please try again later.',
  quota: 'Control plane request failed: endpoint is temporarily unavailable. Check your quotas and/or contact our support.',
  // control_plane/messages.rs get_user_facing_message: when the control plane's answer has a
  // user_facing_message (its quota refusals do), that text reaches the client as is, in place
  // of the fallback above. Its texts are not in Neon's open source: this one is made up, so
  // nothing can match it by text.
  quotaMessage: 'Your project has used up its allowance for this period (a control plane text).',
  passwordFailed: (user: string) => `password authentication failed for user '${user}'`,
  // auth/mod.rs AuthError::IpAddressNotAllowed / NetworkNotAllowed (the endpoint's allow-lists).
  ipNotAllowed: (ip: string) =>
    `This IP address ${ip} is not allowed to connect to this endpoint. Please add it to the allowed list in the Neon console. Make sure to check for IPv4 or IPv6 addresses.`,
  blockedNetwork: 'This connection is trying to access this endpoint from a blocked network.',
  missingEndpoint:
    "Endpoint ID is not specified. Either please upgrade the postgres client library (libpq) for SNI support or pass the endpoint ID (first part of the domain name) as a parameter: '?options=endpoint%3D<endpoint-id>'. See more at https://neon.tech/sni",
} as const;

/** credentials.rs endpoint_sni: first label, when the rest is a Neon domain (our stand-in for common_names). */
function endpointFromHost(host: string): string | undefined {
  const dot = host.indexOf('.');
  if (dot <= 0) return undefined;
  return host.slice(dot + 1).endsWith('neon.tech') ? host.slice(0, dot) : undefined;
}

/** pqproto.rs parse_options_raw: split on unescaped ASCII whitespace, keep escapes as they are. */
function splitOptions(input: string): string[] {
  const out: string[] = [];
  let cur = '';
  let escaped = false;
  for (const c of input) {
    if (/\s/.test(c) && !escaped) {
      if (cur) out.push(cur);
      cur = '';
    } else cur += c;
    escaped = c === '\\' && !escaped;
  }
  if (cur) out.push(cur);
  return out;
}

const endpointParam = (opt: string): string | undefined =>
  opt.startsWith('project=') ? opt.slice(8) : opt.startsWith('endpoint=') ? opt.slice(9) : undefined;
const isNeonOption = (opt: string): boolean => /^neon_(\w+):(.+)/.test(opt);

/** credentials.rs ComputeUserInfoMaybeEndpoint::parse. Returns the endpoint or an error message. */
function resolveEndpoint(host: string | undefined, options: string | undefined): { endpoint?: string; error?: string } {
  const fromOptions = options === undefined ? [] : splitOptions(options).map(endpointParam).filter((e): e is string => e !== undefined);
  const option = fromOptions.length === 1 ? fromOptions[0] : undefined; // at_most_one
  const domain = host === undefined ? undefined : endpointFromHost(host);
  if (option !== undefined && domain !== undefined && option !== domain) {
    return { error: `Inconsistent project name inferred from SNI ('${domain}') and project option ('${option}').` };
  }
  const endpoint = option ?? domain;
  if (endpoint !== undefined && !/^[A-Za-z0-9-]+$/.test(endpoint)) {
    return { error: `Project name ('${endpoint}') must contain only alphanumeric characters and hyphen.` };
  }
  return endpoint === undefined ? {} : { endpoint };
}

/** compute/mod.rs AuthInfo::set_startup_params + filtered_options (arbitrary_params = params_compat). */
export function computeStartupParams(client: Record<string, string>): Record<string, string> {
  const compat = splitOptions(client.options ?? '').includes('neon_proxy_params_compat:true');
  const out: Record<string, string> = compat ? {} : { client_encoding: 'UTF8' };
  for (const [k, v] of Object.entries(client)) {
    if (k === 'options') {
      const kept = splitOptions(v).filter((o) => endpointParam(o) === undefined && !isNeonOption(o));
      if (kept.length > 0) out.options = kept.join(' ');
    } else if (k === 'user' || k === 'database' || k === 'application_name' || k === 'replication' || compat) {
      out[k] = v;
    }
  }
  return out;
}

interface Tracked {
  pid: number;
  close(): void;
}

interface State {
  opts: Required<Omit<NeonProxyOptions, 'upstream' | 'pooler'>>;
  compute: ComputeAddress;
  /** The compute's PgBouncer, for `-pooler` endpoints (cplane_proxy_v1.rs do_wake_compute). */
  pooler: ComputeAddress | undefined;
  upstream: ServerInfo;
  blackholed: boolean;
  suspended: boolean;
  waking: Promise<void> | undefined;
  failures: NeonFailure[];
  computes: Set<Tracked>;
  sockets: Set<Socket>;
  /** The cancel_set: how to cancel the request in flight on an HTTP connection. */
  httpCancels: Map<Socket, () => void>;
  websockets: Set<WebSocket>;
  /** WebSockets silenced by silenceOpen(): their socket is no longer read, nothing is sent to them. */
  silenced: WeakSet<WebSocket>;
  /** proxy cancel key → compute cancel key and address (cancellation.rs CancelClosure). */
  cancelKeys: Map<string, { pid: number; secret: number; addr: ComputeAddress }>;
  log: NeonSessionLog[];
  counts: { ws: number; http: number };
  closing: boolean;
}

/**
 * The address wake_compute answers for an endpoint (cplane_proxy_v1.rs do_wake_compute, with
 * the endpoint id as given): the compute's PgBouncer for a `-pooler` endpoint.
 */
function computeFor(state: State, endpoint: string | undefined): ComputeAddress {
  return state.pooler !== undefined && endpoint?.endsWith('-pooler') === true ? state.pooler : state.compute;
}

/** wake_compute.rs: a suspended compute takes wakeDelayMs; concurrent connects share one wake. */
function wake(state: State): Promise<void> {
  if (!state.suspended) return Promise.resolve();
  state.waking ??= new Promise<void>((resolve) => {
    setTimeout(() => {
      state.suspended = false;
      state.waking = undefined;
      resolve();
    }, state.opts.wakeDelayMs);
  });
  return state.waking;
}

const takeFailure = (state: State, ...kinds: NeonFailure[]): NeonFailure | undefined => {
  const next = state.failures[0];
  if (next !== undefined && kinds.includes(next)) return state.failures.shift();
  return undefined;
};

// ---------------------------------------------------------------- WebSocket -------------

class WsSession {
  private readonly framer = new Framer();
  private stage: 'startup' | 'password' | 'connecting' | 'relay' | 'done' = 'startup';
  private params: Record<string, string> = {};
  private endpoint: string | undefined;
  private compute: ComputeSession | undefined;
  private addr: ComputeAddress | undefined;
  private readonly pending: Buffer[] = [];
  private pipelined = false;

  constructor(
    private readonly state: State,
    private readonly ws: WebSocket,
    private readonly host: string | undefined,
  ) {}

  onData(chunk: Buffer): void {
    if (this.state.blackholed || this.stage === 'done' || this.state.silenced.has(this.ws)) return;
    if (this.stage === 'relay' && this.compute) {
      this.compute.socket.write(chunk);
      return;
    }
    if (this.stage === 'connecting') {
      this.pending.push(chunk); // pipelined queries: forwarded once the compute is ready
      return;
    }
    this.framer.push(chunk);
    if (this.stage === 'startup') this.onStartup();
    if (this.stage === 'password') this.onPassword();
  }

  private onStartup(): void {
    const first = this.framer.nextUntyped();
    if (!first) return;
    if (first.code === SSL_REQUEST_CODE) {
      // No TLS inside the WebSocket (the driver's forceDisablePgSSL default).
      this.send(Buffer.from('N'));
      return this.onStartup();
    }
    if (first.code === CANCEL_REQUEST_CODE) return this.onCancel(first.body);
    if (first.code !== PROTOCOL_3) return this.refuse(`unsupported protocol version ${first.code}`);
    this.params = parseStartupParams(first.body);
    if (!this.params.user) return this.refuse("Parameter 'user' is missing in startup packet.");
    const { endpoint, error } = resolveEndpoint(this.host, this.params.options);
    if (error) return this.refuse(error);
    if (!endpoint) return this.refuse(NEON_ERRORS.missingEndpoint);
    this.endpoint = endpoint;
    const denied = accessDenied(this.state);
    if (denied) return this.refuse(denied);
    if (takeFailure(this.state, 'rate-limit')) return this.refuse(NEON_ERRORS.rateLimit);
    this.send(authCleartextPassword());
    this.stage = 'password';
    this.pipelined = this.framer.hasData();
  }

  private onPassword(): void {
    const m = this.framer.next();
    if (!m) return;
    if (m.type !== 'p') return this.refuse('Malformed password message: missing terminator');
    const password = m.body.toString('utf8').replace(/\0$/, '');
    this.stage = 'connecting';
    const rest = this.framer.drain();
    if (rest.length > 0) this.pending.push(rest);
    void this.connect(password);
  }

  private async connect(password: string): Promise<void> {
    const user = this.params.user ?? '';
    if (takeFailure(this.state, 'auth')) return this.refuse(NEON_ERRORS.passwordFailed(user));
    await wake(this.state);
    // The proxy does not watch the client while it wakes and connects the compute (proxy/mod.rs
    // handle_client): a client that left meanwhile is noticed only in the passthrough, after
    // what it had sent. The proxy reads the startup and the password message by message
    // (stream.rs, pqproto.rs read_message), so what the driver pipelined after them is still
    // in the stream, and pglb/passthrough.rs relays it to the compute, which runs it.
    if (this.isDone() && this.pending.length === 0) return;
    const failure = takeFailure(this.state, 'quota', 'quota-message', 'compute-unreachable');
    if (failure === 'quota') return this.refuse(NEON_ERRORS.quota);
    if (failure === 'quota-message') return this.refuse(NEON_ERRORS.quotaMessage);
    if (failure === 'compute-unreachable') return this.refuse(NEON_ERRORS.computeUnreachable);
    const computeParams = computeStartupParams(this.params);
    const entry: NeonSessionLog = { protocol: 'ws', endpoint: this.endpoint, clientParams: this.params, computeParams, pipelined: this.pipelined };
    this.state.log.push(entry);
    let session: ComputeSession;
    try {
      this.addr = computeFor(this.state, this.endpoint);
      session = await connectCompute(this.addr, computeParams, password, 10_000);
    } catch (err) {
      entry.refused = this.computeRefusal(err, user);
      return this.refuse(entry.refused);
    }
    if (this.isDone()) {
      if (this.pending.length === 0) session.socket.destroy();
      else this.relayLeftovers(session);
      return;
    }
    this.attach(session);
  }

  /** The client left during the wake: what it had pipelined goes to the compute, then the client's end. */
  private relayLeftovers(session: ComputeSession): void {
    const tracked: Tracked = { pid: session.pid, close: () => session.socket.destroy() };
    this.state.computes.add(tracked);
    session.socket.on('error', () => session.socket.destroy());
    session.socket.on('close', () => this.state.computes.delete(tracked));
    session.socket.resume(); // answers go nowhere: the client is gone
    for (const chunk of this.pending.splice(0)) session.socket.write(chunk);
    session.socket.end();
  }

  /** Auth failures are the proxy's own check; other compute refusals keep PG's message (compute/mod.rs PostgresError). */
  private computeRefusal(err: unknown, user: string): string {
    if (err instanceof ComputeDbError) return err.code === '28P01' ? NEON_ERRORS.passwordFailed(user) : err.message;
    return NEON_ERRORS.computeUnreachable;
  }

  private attach(session: ComputeSession): void {
    this.compute = session;
    const proxyKey = { pid: 0x4e00_0000 | Math.floor(Math.random() * 0xffffff), secret: Math.floor(Math.random() * 0x7fffffff) };
    const keyId = `${proxyKey.pid}:${proxyKey.secret}`;
    this.state.cancelKeys.set(keyId, { pid: session.pid, secret: session.secret, addr: this.addr ?? this.state.compute });
    const tracked: Tracked = { pid: session.pid, close: () => session.socket.destroy() };
    this.state.computes.add(tracked);
    session.socket.on('data', (chunk: Buffer) => this.send(chunk));
    session.socket.on('error', () => session.socket.destroy());
    session.socket.on('close', () => {
      this.state.computes.delete(tracked);
      // cancellation.rs: the key is not removed when the session ends; it expires (redis TTL).
      setTimeout(() => this.state.cancelKeys.delete(keyId), CANCEL_KEY_TTL_MS).unref();
      this.end();
    });
    this.send(Buffer.concat([authOk(), ...session.greeting, backendKeyData(proxyKey.pid, proxyKey.secret), readyForQuery(), session.rest]));
    this.stage = 'relay';
    for (const chunk of this.pending.splice(0)) session.socket.write(chunk);
  }

  private onCancel(body: Buffer): void {
    const key = this.state.cancelKeys.get(`${body.readInt32BE(0)}:${body.readInt32BE(4)}`);
    this.end();
    if (key) void cancelOnCompute(key.addr, key.pid, key.secret).catch(() => undefined);
  }

  private refuse(msg: string): void {
    if (!this.state.log.some((l) => l.clientParams === this.params)) {
      this.state.log.push({ protocol: 'ws', endpoint: this.endpoint, clientParams: this.params, computeParams: {}, refused: msg });
    }
    this.send(errorResponse(msg));
    this.end();
  }

  private send(data: Buffer): void {
    if (this.state.silenced.has(this.ws)) return;
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(data, { binary: true });
  }

  /** The client went away while we awaited (TS narrows `stage` across awaits otherwise). */
  private isDone(): boolean {
    return this.stage === 'done';
  }

  end(): void {
    if (this.stage === 'done') return;
    this.stage = 'done';
    this.compute?.socket.destroy();
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
  }
}

// ---------------------------------------------------------------- HTTP -------------------

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly db?: DatabaseError,
  ) {
    super(message);
  }
}

/** sql_over_http.rs handle(): the error body, "" for code/severity when not a PostgreSQL error. */
function neonErrorBody(message: string, db?: DatabaseError): Record<string, string | null> {
  return {
    message,
    code: db?.code ?? '',
    detail: db?.detail ?? null,
    hint: db?.hint ?? null,
    position: db?.position ?? null,
    internalPosition: db?.internalPosition ?? null,
    internalQuery: db?.internalQuery ?? null,
    severity: db?.severity ?? '',
    where: db?.where ?? null,
    table: db?.table ?? null,
    column: db?.column ?? null,
    schema: db?.schema ?? null,
    dataType: db?.dataType ?? null,
    constraint: db?.constraint ?? null,
    file: db?.file ?? null,
    line: db?.line ?? null,
    routine: db?.routine ?? null,
  };
}

function header(req: http.IncomingMessage, name: string): string | undefined {
  const v = req.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

function parseHttpHeaders(req: http.IncomingMessage): HttpHeaders {
  const level = header(req, 'Neon-Batch-Isolation-Level');
  if (level !== undefined && !(level in ISOLATION_SQL)) throw new HttpError(400, 'invalid isolation level');
  return {
    rawOutput: header(req, 'Neon-Raw-Text-Output') === 'true',
    arrayMode: header(req, 'Neon-Array-Mode') === 'true',
    isolationLevel: level,
    readOnly: header(req, 'Neon-Batch-Read-Only') === 'true',
    deferrable: header(req, 'Neon-Batch-Deferrable') === 'true',
  };
}

interface ConnInfo {
  user: string;
  password: string;
  database: string;
  endpoint: string;
  clientParams: Record<string, string>;
}

/** http_util.rs get_conn_info (ConnInfoError → 400, messages from serverless/error.rs). */
function connInfo(req: http.IncomingMessage): ConnInfo {
  const raw = header(req, 'Neon-Connection-String');
  if (raw === undefined) throw new HttpError(400, 'invalid header: neon-connection-string');
  let url: URL;
  try {
    url = new URL(raw);
  } catch (e) {
    throw new HttpError(400, `invalid connection string: ${(e as Error).message}`);
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') throw new HttpError(400, 'incorrect scheme');
  const database = decodeURIComponent(url.pathname.slice(1).split('/')[0] ?? '');
  const user = decodeURIComponent(url.username);
  if (!user) throw new HttpError(400, 'missing username');
  if (!url.password) throw new HttpError(400, 'missing authentication credentials: required password');
  const host = url.hostname;
  if (host === '' || /^[\d.]+$/.test(host) || host.startsWith('[')) throw new HttpError(400, 'missing hostname');
  const clientParams: Record<string, string> = { user, database };
  for (const [k, v] of url.searchParams) clientParams[k] = v;
  return { user, password: decodeURIComponent(url.password), database, endpoint: host.split('.')[0] ?? host, clientParams };
}

async function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = new HttpError(413, `request is too large (max is ${limit} bytes)`);
  // http/mod.rs read_body_with_limit: the Content-Length (size hint) is checked first.
  if (Number(req.headers['content-length'] ?? 0) > limit) throw tooLarge;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw tooLarge;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function parsePayload(body: Buffer): QueryData | QueryData[] {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new HttpError(400, `could not parse the HTTP request body: ${(e as Error).message}`);
  }
  const single = parseQueryData(json);
  if (single) return single;
  const queries = typeof json === 'object' && json !== null ? (json as Record<string, unknown>).queries : undefined;
  if (Array.isArray(queries)) {
    const parsed = queries.map(parseQueryData);
    if (parsed.every((q): q is QueryData => q !== undefined)) return parsed;
  }
  throw new HttpError(400, 'could not parse the HTTP request body: data did not match any variant of untagged enum Payload');
}

/**
 * auth/backend/mod.rs auth_quirks → control_plane/mod.rs EndpointAccessControl::check: the
 * endpoint's IP allow-list and network blocks, checked before the rate limit and the password.
 */
function accessDenied(state: State): string | undefined {
  const failure = takeFailure(state, 'ip-not-allowed', 'blocked-network');
  if (failure === 'ip-not-allowed') return NEON_ERRORS.ipNotAllowed('127.0.0.1');
  return failure === 'blocked-network' ? NEON_ERRORS.blockedNetwork : undefined;
}

/** backend.rs authenticate_with_password + connect_to_compute, with the proxy's error mapping. */
async function openHttpCompute(state: State, info: ConnInfo): Promise<Client> {
  // A user error (ErrorKind::User): 400 (sql_over_http.rs get_http_status_code).
  const denied = accessDenied(state);
  if (denied) throw new HttpError(400, denied);
  if (takeFailure(state, 'rate-limit')) throw new HttpError(500, NEON_ERRORS.rateLimit);
  if (takeFailure(state, 'auth')) throw new HttpError(400, NEON_ERRORS.passwordFailed(info.user));
  await wake(state);
  const failure = takeFailure(state, 'quota', 'quota-message', 'compute-unreachable');
  // ErrorKind::Quota → 500 (sql_over_http.rs get_http_status_code).
  if (failure === 'quota') throw new HttpError(500, NEON_ERRORS.quota);
  if (failure === 'quota-message') throw new HttpError(500, NEON_ERRORS.quotaMessage);
  if (failure === 'compute-unreachable') throw new HttpError(500, NEON_ERRORS.computeUnreachable);
  const addr = computeFor(state, info.endpoint);
  const client = new Client({
    host: addr.host,
    port: addr.port,
    user: info.user,
    password: info.password,
    database: info.database,
    ssl: addr.tls ?? false,
    connectionTimeoutMillis: 10_000,
    types: { getTypeParser: () => (value: string) => value },
  });
  client.on('error', () => undefined); // 57P01 at suspend etc.: surfaces through the query
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    if (err instanceof DatabaseError) {
      if (err.code === '28P01') throw new HttpError(400, NEON_ERRORS.passwordFailed(info.user));
      // backend.rs HttpConnError::PostgresConnectionError: 3D000 is the user's (400), the rest 500.
      throw new HttpError(err.code === '3D000' ? 400 : 500, err.message, err);
    }
    throw new HttpError(500, NEON_ERRORS.computeUnreachable);
  }
  return client;
}

async function runPayload(state: State, client: Client, payload: QueryData | QueryData[], headers: HttpHeaders): Promise<unknown> {
  const limit = state.opts.maxResponseBytes;
  if (!Array.isArray(payload)) return runQuery(client, payload, headers, limit);
  const modes: string[] = [];
  if (headers.isolationLevel) modes.push(`ISOLATION LEVEL ${ISOLATION_SQL[headers.isolationLevel]}`);
  if (headers.readOnly) modes.push('READ ONLY');
  if (headers.deferrable) modes.push('DEFERRABLE');
  await client.query(`START TRANSACTION${modes.length ? ' ' + modes.join(', ') : ''}`);
  const results: QueryResultJson[] = [];
  try {
    for (const q of payload) results.push(await runQuery(client, q, headers, limit));
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
  return { results };
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Access-Control-Allow-Origin': '*' });
  res.end(text);
}

/** serverless/mod.rs task_main: over the threshold, a random open connection is cancelled. */
function shedLoad(state: State): void {
  if (state.sockets.size <= state.opts.clientConnThreshold) return;
  const open = [...state.sockets];
  const victim = open[Math.floor(Math.random() * open.length)]!;
  const cancel = state.httpCancels.get(victim);
  if (cancel) cancel();
  else victim.destroy();
}

const LOAD_SHED_BODY = { message: 'Query cancelled, connection was terminated', code: '08P01' };

async function handleSql(state: State, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  let client: Client | undefined;
  let tracked: Tracked | undefined;
  let entry: NeonSessionLog | undefined;
  let cancelled = false;
  let addr = state.compute;
  const socket = req.socket;
  // sql_over_http.rs process: cancel_query on the compute, then 100 ms for the query to end.
  const shed = (): void => {
    cancelled = true;
    const conn = client as unknown as { processID?: number; secretKey?: number } | undefined;
    if (conn?.processID !== undefined && conn.secretKey !== undefined) void cancelOnCompute(addr, conn.processID, conn.secretKey).catch(() => undefined);
    setTimeout(() => sendJson(res, 400, LOAD_SHED_BODY), 100).unref();
  };
  state.httpCancels.set(socket, shed);
  // sql_over_http.rs handle_db_inner: the body read and the compute connect run under
  // run_until_cancelled; a client gone meanwhile (the connection's cancellation token,
  // serverless/mod.rs) ends them with SqlOverHttpCancel::Connect: the query is never sent.
  let gone = false;
  res.once('close', () => void (gone = !res.writableFinished));
  res.once('finish', () => {
    state.httpCancels.delete(socket);
    if (cancelled) socket.destroy();
  });
  try {
    const headers = parseHttpHeaders(req);
    const info = connInfo(req);
    entry = { protocol: 'http', endpoint: info.endpoint, clientParams: info.clientParams, computeParams: { user: info.user, database: info.database } };
    state.log.push(entry);
    addr = computeFor(state, info.endpoint);
    const payload = parsePayload(await readBody(req, state.opts.maxRequestBytes));
    client = await openHttpCompute(state, info);
    if (cancelled) throw new HttpError(400, LOAD_SHED_BODY.message);
    if (gone) throw new HttpError(400, 'query was cancelled while stuck trying to connect to the database');
    const c = client;
    const conn = c as unknown as { processID: number; secretKey: number };
    tracked = { pid: conn.processID, close: () => void c.end().catch(() => undefined) };
    state.computes.add(tracked);
    // Cancel on client disconnect (serverless/mod.rs http_cancellation_token → cancel_query).
    const onGone = (): void => {
      if (!res.writableFinished) void cancelOnCompute(addr, conn.processID, conn.secretKey).catch(() => undefined);
    };
    res.once('close', onGone);
    const body = await runPayload(state, c, payload, headers);
    res.removeListener('close', onGone);
    sendJson(res, 200, body);
  } catch (err) {
    const e = toHttpError(err);
    if (entry) entry.refused = e.message;
    if (cancelled) sendJson(res, 400, LOAD_SHED_BODY);
    sendJson(res, e.status, neonErrorBody(e.message, e.db));
  } finally {
    if (tracked) state.computes.delete(tracked);
    await client?.end().catch(() => undefined);
  }
}

/** sql_over_http.rs get_http_status_code: Postgres errors during queries are 400. */
function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof ResponseTooLarge) return new HttpError(507, err.message);
  if (err instanceof DatabaseError) return new HttpError(400, err.message, err);
  return new HttpError(400, err instanceof Error ? err.message : String(err));
}

// ---------------------------------------------------------------- fixture ----------------

function onUpgrade(state: State, wss: WebSocketServer, req: http.IncomingMessage, socket: Socket, head: Buffer): void {
  state.counts.ws++;
  wss.handleUpgrade(req, socket, head, (ws) => {
    state.websockets.add(ws);
    const address = new URL(req.url ?? '/', 'http://proxy.invalid').searchParams.get('address') ?? undefined;
    const host = address?.replace(/:\d+$/, '');
    const session = new WsSession(state, ws, host);
    ws.on('message', (data: RawData, isBinary: boolean) => {
      // websocket.rs: a text frame is a protocol error.
      if (!isBinary) return session.end();
      session.onData(Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data));
    });
    ws.on('error', () => session.end());
    ws.on('close', () => {
      state.websockets.delete(ws);
      session.end();
    });
  });
}

async function terminateComputes(state: State): Promise<number> {
  const pids = [...state.computes].map((c) => c.pid);
  if (pids.length === 0) return 0;
  const admin = new Client({
    host: state.upstream.host,
    port: state.upstream.port,
    user: state.upstream.superuser,
    password: state.upstream.password,
    database: 'postgres',
    ssl: state.compute.tls,
    application_name: 'neon-proxy-fixture-suspend',
    connectionTimeoutMillis: 10_000,
  });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM unnest($1::int[]) AS p WHERE pg_terminate_backend(p)', [pids]);
    return rows[0]?.n ?? 0;
  } finally {
    await admin.end().catch(() => undefined);
  }
}

export async function startNeonProxy(options: NeonProxyOptions): Promise<NeonProxy> {
  const state: State = {
    opts: {
      wakeDelayMs: options.wakeDelayMs ?? 500,
      maxRequestBytes: options.maxRequestBytes ?? 10 * MiB,
      maxResponseBytes: options.maxResponseBytes ?? 10 * MiB,
      clientConnThreshold: options.clientConnThreshold ?? 10_000,
    },
    compute: { host: options.upstream.host, port: options.upstream.port, tls: tlsOptions(options.upstream) },
    // Neon's compute PgBouncer takes plain TCP (compute/etc/pgbouncer.ini client_tls_sslmode=disable).
    pooler: options.pooler === undefined ? undefined : { host: options.pooler.host, port: options.pooler.port },
    upstream: options.upstream,
    blackholed: false,
    suspended: false,
    waking: undefined,
    failures: [],
    computes: new Set(),
    sockets: new Set(),
    httpCancels: new Map(),
    websockets: new Set(),
    silenced: new WeakSet(),
    cancelKeys: new Map(),
    log: [],
    counts: { ws: 0, http: 0 },
    closing: false,
  };
  const inFlight = new Set<Promise<void>>();
  const wss = new WebSocketServer({ noServer: true });
  const server = http.createServer((req, res) => {
    if (state.blackholed) return; // read nothing back, answer nothing; close() destroys the socket
    const path = new URL(req.url ?? '/', 'http://proxy.invalid').pathname;
    if (path !== '/sql' || req.method !== 'POST') return sendJson(res, 404, { message: 'not found' });
    state.counts.http++;
    const p = handleSql(state, req, res).catch(() => {
      res.destroy();
    });
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  });
  server.on('connection', (socket: Socket) => {
    shedLoad(state);
    state.sockets.add(socket);
    socket.once('close', () => {
      state.sockets.delete(socket);
      state.httpCancels.delete(socket);
    });
  });
  // serverless/mod.rs: a WebSocket upgrade is accepted on any path.
  server.on('upgrade', (req: http.IncomingMessage, socket: Socket, head: Buffer) => onUpgrade(state, wss, req, socket, head));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('neon proxy: unexpected listen address');
  const port = address.port;

  return {
    port,
    wsProxy: (host, pgPort) => `127.0.0.1:${port}/v2?address=${host}:${pgPort}`,
    fetchEndpoint: () => `http://127.0.0.1:${port}/sql`,
    blackhole: (on = true) => {
      state.blackholed = on;
    },
    silenceOpen: () => {
      for (const ws of state.websockets) {
        state.silenced.add(ws);
        // Not read any more: the ws library cannot answer a close frame it never reads.
        (ws as unknown as { _socket?: Socket })._socket?.pause();
      }
      return state.websockets.size;
    },
    async suspend() {
      state.suspended = true;
      return terminateComputes(state);
    },
    failNext: (kind, times = 1) => {
      for (let i = 0; i < times; i++) state.failures.push(kind);
    },
    reset: () => {
      state.failures.length = 0;
      state.blackholed = false;
    },
    computeConnections: () => state.computes.size,
    clientSockets: () => state.sockets.size,
    received: () => ({ ...state.counts }),
    sessions: () => state.log,
    async close() {
      state.closing = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const c of state.computes) c.close();
      for (const ws of state.websockets) ws.terminate();
      for (const s of state.sockets) s.destroy();
      await Promise.all([...inFlight]);
      await stopped;
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}
