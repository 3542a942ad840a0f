// The connection class both drivers' pools create (node-postgres' `Client`, and the copy
// bundled in @neondatabase/serverless). pg-pool creates connections through its `Client`
// option, the documented way to customise them; this subclass adds what a connection
// needs while it is in use:
//
// - its own connect timeout (pg-pool hands every client the pool's options, where
//   `connectionTimeoutMillis` means the wait for a free slot), covering TCP, TLS and
//   authentication: node-postgres clears it only at the first ReadyForQuery;
// - TCP keepalive with an initial delay derived from the configured timeouts;
// - a client-side deadline on every statement: when the server cannot be heard (a black
//   hole, a frozen host), the socket is destroyed and the statement fails with
//   DeadlineExceededError. A destroyed client is never returned to the pool: pg-pool
//   discards clients that are no longer queryable;
// - failures typed where they happen: a lost connection becomes DatabaseConnectionError
//   and a server-side statement timeout StatementTimeoutError. These carry no `code`, so
//   the Prisma adapter and client pass them through unchanged. Every other server error
//   goes on to Prisma as is, which maps it to its own error classes (P2002, ...); a
//   COMMIT the server answered with ROLLBACK fails (DatabaseTransactionError, rolled-back);
// - a transaction's BEGIN sent with its first statement, one round trip fewer (begin.ts).

import type { ConnectionOptions } from 'node:tls';
import { DatabaseConnectionError, DatabaseTransactionError, DeadlineExceededError, StatementTimeoutError, type Deadline } from '../errors.ts';
import { ReusedTimer, type TransactionSettings } from '../deadline.ts';
import { classifyError, connectionError, isConnectionLoss, markBeforeBegin, markGivenUp, markNeverSent, mayHaveHappened, sqlStateOf, wentOnAfter } from '../failures.ts';
import { answered, carrying, isBegin, isolationStatement, queryClassOf, transactionEnd, type Ahead } from './begin.ts';

export interface StatementDeadline {
  /** The deadline the error names: a statement's own length, or (shared) the unit's timeoutMs. */
  ms: number;
  kind: Deadline;
  /** A deadline the statement shares with others (its unit's): watched there, no timer of its own. */
  shared?: { watch(expire: () => void): () => void };
}

export interface ClientPolicy {
  connectMs: number;
  keepAliveDelayMs: number;
  /** The SSL side for a new connection (ssl.ts's SslChoice); absent: the pool's option. */
  ssl?(): false | ConnectionOptions;
  /** The deadline of a statement sent now (read from the unit of work it runs in), or none. */
  statementDeadline(): StatementDeadline | undefined;
  /** The settings for a BEGIN sent on `connection` (begin.ts): its unit's, when it is that unit's own connection; absent: none. */
  transactionSettings?(connection: object): TransactionSettings | undefined;
  /** Per-connection settings applied after construction (Neon: WebSocket options). */
  configure?(client: object): void;
  /** Hears how long each new connection took to establish (telemetry only; absent: not timed). */
  onConnected?(ms: number): void;
  /** Send PostgreSQL's cancel request for the work of a connection given up (abandon); absent: only the socket is destroyed. */
  cancelOnAbandon?: boolean;
  /**
   * Keep a given-up connection's socket until its cancel request has been forwarded (at most
   * CANCEL_HOLD_MS): behind PgBouncer the cancel key is the pooler's, for this client connection,
   * and PgBouncer forwards a CancelRequest only while that connection is still open.
   * 'forwarded': until the cancel connection ends (PgBouncer ends it once it has forwarded the
   * cancel). 'answered': until the statement answers — Neon's proxy ends a cancel connection
   * at once and forwards the cancel after (neondatabase/neon proxy/src/pglb/mod.rs spawns
   * cancel_session), so behind a `-pooler` endpoint its end says nothing, and closing then
   * would close the proxy's PgBouncer connection under the cancel.
   */
  cancelBeforeClosing?: 'forwarded' | 'answered';
  /**
   * libpq's channel_binding=require: authenticate only with SCRAM-SHA-256-PLUS over SSL; a
   * server (or a man in the middle) asking for anything else gets no password, and the
   * connection fails. node-postgres' own `enableChannelBinding` only prefers it.
   */
  requireChannelBinding?: boolean;
  /**
   * The pool's connections still being opened (connect() called, no first ReadyForQuery
   * yet), kept here for the pool to end them when it closes (abandonOpening).
   */
  opening?: Set<object>;
  /**
   * Hears that a statement sent at `sentAt` (performance.now()) got not one byte of answer
   * within its own statement deadline, which the server's statement_timeout would have
   * answered first: the connection's network path was silent from then on (the pool takes
   * the connections idle since before it with it). Absent: not reported.
   */
  onSilence?(sentAt: number): void;
}

type ConnectCallback = (err?: Error | null) => void;
/** node-postgres' query callback. */
type QueryCallback = (err: unknown, result?: unknown) => void;

/** The part of node-postgres' Client this class relies on; test/driver checks it still exists. */
export interface PgClientShape {
  connect(callback?: ConnectCallback): unknown;
  query(config: unknown, values?: unknown, callback?: unknown): unknown;
  end(callback?: unknown): unknown;
  connect(callback?: unknown): unknown;
  connection: { stream: { destroy(err?: Error): void }; once(event: string, listener: () => void): unknown };
  processID?: number | null;
  /** node-postgres' own state: false once the connection failed, true once it is ending. */
  _queryable?: boolean;
  _ending?: boolean;
  /** node-postgres' handlers of the server's authentication requests (channel_binding=require checks them). */
  _handleAuthCleartextPassword?(msg: unknown): void;
  _handleAuthMD5Password?(msg: unknown): void;
  _handleAuthSASL?(msg: { mechanisms: string[] }): void;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- mixin constructors must take any[]
export type ClientClass = new (...args: any[]) => PgClientShape;

export interface SocketHolder {
  connection?: { stream?: { destroy(err?: Error): void } };
}

/**
 * How long a given-up connection's socket is kept for its cancel request (cancelBeforeClosing):
 * PgBouncer forwards one in milliseconds; a silent network never does, and close() waits for
 * its pool's sockets to end (within its deadline plus about a second).
 */
const CANCEL_HOLD_MS = 750;

/** Why the layer destroyed a connection: what its pending statements fail with (the driver's own error is generic). */
const lostTo = new WeakMap<object, Error>();

/** Destroys the socket under a client: whatever it was waiting for fails with `reason`, and pg-pool drops it. */
export function destroySocket(client: SocketHolder, reason: Error): void {
  giveUp(client, reason);
  const stream = client.connection?.stream;
  if (stream !== undefined) destroyStream(stream, reason);
}

/** A client given up, its socket still open: what it waits for fails with `reason`, it is never pooled or used again. */
function giveUp(client: object, reason: Error): void {
  if (!lostTo.has(client)) lostTo.set(client, reason);
  markGivenUp(reason);
  // node-postgres calls a connection queryable until its socket reports the close, and
  // pg-pool keeps a released connection that is still queryable. Neon's WebSocket closes
  // only once its closing handshake is answered (a silent peer: ws gives up after 30 s);
  // until then a unit's connection, released by Prisma after the unit's deadline, went
  // back to the pool and to the next unit.
  (client as { _queryable?: boolean })._queryable = false;
}

/**
 * Ends a connection's socket now. The Neon driver's socket is a WebSocket whose destroy()
 * only starts the closing handshake: a silent peer (a black-holed network) kept the
 * WebSocket, its TCP socket and ws's 30 s close timer, which holds the process open, for
 * 30 s after the layer had given the connection up, db.close() included. ws's terminate()
 * ends it at once (a WebSocket without one, a runtime's own, keeps its own close).
 */
function destroyStream(stream: { destroy(err?: Error): void }, reason?: Error): void {
  stream.destroy(reason);
  (stream as { ws?: { terminate?(): void } | null }).ws?.terminate?.();
}

/** The part of ws's WebSocket the bound on a closing handshake uses. */
interface ClosingWebSocket {
  readyState?: number;
  terminate?(): void;
  once?(event: 'close', listener: () => void): unknown;
}

/**
 * A connection ended the orderly way (Terminate, then the stream's end): on the Neon
 * driver that is the WebSocket's closing handshake, which a silent peer never answers
 * (ws then keeps the socket, and the process, 30 s). Past `ms` the WebSocket is ended
 * outright; an answered handshake clears the timer.
 */
function boundClosingHandshake(stream: unknown, ms: number): void {
  const ws = (stream as { ws?: ClosingWebSocket | null } | undefined)?.ws;
  if (typeof ws?.terminate !== 'function' || ws.readyState === 3) return;
  const timer = setTimeout(() => ws.terminate!(), ms);
  timer.unref();
  ws.once?.('close', () => clearTimeout(timer));
}

/**
 * Gives up a connection whose work may still run on the server (a deadline passed, its
 * scope ended, close() cut it): a cancel request where the policy asks for one, then the
 * socket destroyed. Destroying alone leaves a statement that waits on a lock, or runs long,
 * running until it next writes to the socket (or its server-side timeout).
 */
export function abandon(client: object, reason: Error): void {
  const own = (client as { abandon?: (reason: Error) => void }).abandon;
  if (typeof own === 'function') own.call(client, reason);
  else destroySocket(client as SocketHolder, reason);
}

/**
 * Ends every connection in `opening` (a pool's connections still being opened): each
 * connect fails with `reason()` at once. pg-pool's end() waits for a connection being
 * opened to connect or fail: on a silent network that is the connect deadline, and the
 * socket, its timer and the caller waiting for it outlived db.close().
 */
export function abandonOpening(opening: ReadonlySet<object>, reason: () => Error): number {
  const clients = [...opening];
  for (const client of clients) destroySocket(client as SocketHolder, reason());
  return clients.length;
}

/** What a cancel request needs of the connection it cancels (node-postgres' Client). */
interface CancelTarget {
  processID?: number | null;
  secretKey?: number | null;
  host?: unknown;
  port?: unknown;
}

/** The part of node-postgres' Connection a cancel request uses (Client.cancel's own steps). */
interface CancelConnection {
  stream: { destroy(): void };
  connect(portOrPath: number | string, host?: string): void;
  cancel(processID: number, secretKey: number): void;
  on(event: 'error', listener: () => void): unknown;
  once(event: 'connect' | 'end', listener: () => void): unknown;
}

/**
 * PostgreSQL's CancelRequest for what `client`'s backend runs now, sent as node-postgres'
 * Client.cancel and libpq's PQcancel send it: on a connection of its own, in the clear (the
 * server reads it before any TLS or authentication). Best effort: an answer is not waited
 * for, and the connection is destroyed after `ms` at the latest. On Neon the connection is
 * a WebSocket to the proxy with the connection's own settings (`configure`): the proxy
 * takes a CancelRequest as the first message of any connection, WebSocket ones included,
 * and forwards it with the compute's key (neondatabase/neon proxy/src/pglb/mod.rs
 * handle_connection, cancellation.rs).
 */
function requestCancel(Base: ClientClass, client: CancelTarget, ms: number, configure: ((client: object) => void) | undefined, gone: () => void = () => {}): void {
  const { processID, secretKey, host, port } = client;
  if (typeof processID !== 'number' || typeof secretKey !== 'number' || typeof host !== 'string' || typeof port !== 'number') return gone();
  const carrier = new Base({ host, port, ssl: false });
  configure?.(carrier);
  const con = (carrier as unknown as { connection: CancelConnection }).connection;
  // `gone` once: the server or pooler ends a cancel connection once it has acted on it.
  let ended = false;
  const end = (): void => {
    clearTimeout(timer);
    if (ended) return;
    ended = true;
    gone();
  };
  const timer = setTimeout(() => {
    destroyStream(con.stream);
    end();
  }, ms);
  timer.unref();
  con.on('error', end);
  con.once('end', end);
  con.once('connect', () => con.cancel(processID, secretKey));
  if (host.startsWith('/')) con.connect(`${host}/.s.PGSQL.${port}`);
  else con.connect(port, host);
}

/**
 * Has this connection been lost: its socket failed or closed, or the layer gave it up? A
 * unit of work asks of its own connection when fn fails with a lost connection: one that is
 * still alive means the loss was other work's (another Db's statement), not the unit's.
 */
export function connectionLost(client: object): boolean {
  const c = client as PgClientShape;
  return lostTo.has(client) || c._queryable === false || c._ending === true;
}

/** Why the layer gave this connection up (a deadline, close()'s, a scope's end), if it did. */
export function lossOf(client: object): Error | undefined {
  return lostTo.get(client);
}

/** A connection going back to its pool keeps nothing of its checkout's transaction (begin.ts). */
export function checkedIn(client: object): void {
  (client as { forgetTransaction?(): void }).forgetTransaction?.();
}

export function guardedClientClass(Base: ClientClass, policy: ClientPolicy): ClientClass {
  const Query = queryClassOf(Base);
  return class GuardedClient extends Base {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    constructor(...args: any[]) {
      const config = args[0] as Record<string, unknown>;
      // pg-pool hides the password as a non-enumerable property: a spread would drop it.
      super({
        ...config,
        password: config.password,
        // The connect deadline is this class's own (connect() below): one timer, one error.
        connectionTimeoutMillis: 0,
        keepAlive: true,
        keepAliveInitialDelayMillis: policy.keepAliveDelayMs,
        ...(policy.ssl === undefined ? {} : { ssl: policy.ssl() }),
      });
      policy.configure?.(this);
    }

    /**
     * The connect deadline (node-postgres' own timer is off). node-postgres would end its
     * timer at the first ReadyForQuery it handles; the Neon driver's pipelined startup
     * fakes that one as soon as the WebSocket opens, so the real answer (authentication,
     * a waking compute) would wait unbounded. This
     * deadline ends only at the server's first real ReadyForQuery. Listeners are added
     * after the driver's own connect(), which clears the connection's listeners first.
     * With telemetry, the time from here to the connect callback (pg-pool's way) is reported.
     */
    override connect(callback?: ConnectCallback): unknown {
      const report = policy.onConnected;
      const started = report === undefined ? 0 : performance.now();
      // A connect the deadline cut fails with DeadlineExceededError, not the driver's generic error.
      const done: ConnectCallback | undefined =
        typeof callback !== 'function'
          ? callback
          : (err) => {
              policy.opening?.delete(this);
              if (!err && report !== undefined) report(performance.now() - started);
              callback(err ? (lostTo.get(this) ?? err) : err);
            };
      const opening = policy.opening;
      opening?.add(this);
      const result = super.connect(done);
      const expire = (): void => destroySocket(this, new DeadlineExceededError('connect', policy.connectMs));
      const timer = setTimeout(expire, policy.connectMs);
      const clear = (): void => {
        clearTimeout(timer);
        opening?.delete(this);
      };
      this.connection.once('readyForQuery', clear);
      this.connection.once('readyForQuery', () => (this.serverReady = true));
      this.connection.once('end', clear);
      // Trust authentication: the server let us in without the channel-bound exchange.
      if (policy.requireChannelBinding === true) this.connection.once('authenticationOk', () => void (this.channelBound || this.refuseUnbound('authenticated the connection without asking for a password')));
      return result;
    }

    /** SCRAM-SHA-256-PLUS was started on this connection (channel_binding=require). */
    private channelBound = false;

    /** channel_binding=require: fails the connection, before any password is sent. */
    private refuseUnbound(what: string): void {
      const reason = new DatabaseConnectionError(
        `channel_binding=require: the server ${what}, not SCRAM-SHA-256-PLUS over SSL (channel binding); the password was not sent. Use SSL (sslmode=require or verify-full) to a server with SCRAM-SHA-256 passwords, or set channel_binding=prefer`,
        { retryable: false },
      );
      destroySocket(this, reason);
    }

    override _handleAuthCleartextPassword(msg: unknown): void {
      if (policy.requireChannelBinding === true) return this.refuseUnbound('asked for the password in clear text');
      super._handleAuthCleartextPassword!(msg);
    }

    override _handleAuthMD5Password(msg: unknown): void {
      if (policy.requireChannelBinding === true) return this.refuseUnbound('asked for an MD5 password');
      super._handleAuthMD5Password!(msg);
    }

    override _handleAuthSASL(msg: { mechanisms: string[] }): void {
      if (policy.requireChannelBinding === true) {
        const tls = typeof (this.connection.stream as { getPeerCertificate?: unknown }).getPeerCertificate === 'function';
        if (!tls) return this.refuseUnbound('asked for SCRAM on a connection without SSL');
        if (!msg.mechanisms.includes('SCRAM-SHA-256-PLUS')) return this.refuseUnbound(`offered only ${msg.mechanisms.join(', ')}`);
        this.channelBound = true;
      }
      super._handleAuthSASL!(msg);
    }

    /** Ends the connection (pg-pool's idle timeout, serverless release, close()), its WebSocket's closing handshake bounded by the connect deadline. */
    override end(callback?: unknown): unknown {
      // Given up with its cancel request still on the way (abandon): ended once that has gone.
      const cancelling = this.cancelling;
      if (cancelling !== undefined) {
        const ended = cancelling.then(() => super.end(callback));
        return typeof callback === 'function' ? undefined : ended;
      }
      const result = super.end(callback);
      boundClosingHandshake(this.connection.stream, policy.connectMs);
      return result;
    }

    /** Settles once the cancel request sent ahead of closing this connection has gone (cancelBeforeClosing). */
    private cancelling: Promise<void> | undefined;
    /** The answers of statements sent and not yet answered (cancelBeforeClosing only). */
    private inFlight: Set<QueryCallback> | undefined;

    /** See abandon(). */
    abandon(reason: Error): void {
      // Already given up, its socket kept for the cancel request on the way: it goes with it.
      if (this.cancelling !== undefined) return;
      if (policy.cancelOnAbandon !== true) return destroySocket(this, reason);
      if (policy.cancelBeforeClosing === undefined) {
        requestCancel(Base, this as CancelTarget, policy.connectMs, policy.configure);
        return destroySocket(this, reason);
      }
      // The caller gets `reason` now and the connection is never used again; the socket
      // stays until the pooler has forwarded the cancel (it ends the cancel connection then).
      giveUp(this, reason);
      const inFlight = this.inFlight;
      this.inFlight = undefined;
      for (const fail of inFlight ?? []) fail(reason);
      this.cancelling = new Promise<void>((resolve) => {
        let kept = true;
        const close = (): void => {
          if (!kept) return;
          kept = false;
          clearTimeout(timer);
          destroySocket(this, reason);
          resolve();
        };
        const timer = setTimeout(close, CANCEL_HOLD_MS);
        timer.unref();
        if (policy.cancelBeforeClosing === 'forwarded') return requestCancel(Base, this as CancelTarget, policy.connectMs, policy.configure, close);
        // The statement's answer (ReadyForQuery after its error or result): the cancel reached it, or it ended anyway.
        this.connection.once('readyForQuery', close);
        requestCancel(Base, this as CancelTarget, policy.connectMs, policy.configure);
      });
    }

    /**
     * The server's first real ReadyForQuery came. Before it (Neon's pipelined startup), an
     * error is the proxy or the compute refusing the connection, not the statement.
     */
    private serverReady = false;

    /** The deadline of this connection's statements outside a unit of work: one timer, re-armed per statement. */
    private statementTimer: ReusedTimer | undefined;

    /**
     * Every statement gets its deadline, in both of node-postgres' forms: the promise form
     * (one promise, as node-postgres' own; the adapters' form) and the callback form (code
     * using the pool directly). The deadline rejects at once and destroys the socket. A
     * statement outside a unit re-arms the connection's one timer (deadline.ts ReusedTimer):
     * no Node timer is created per statement.
     */
    override query(config: unknown, values?: unknown, callback?: unknown): unknown {
      // A Submittable (a cursor, a stream) reports through its own events, not a callback.
      if (typeof (config as { submit?: unknown } | null)?.submit === 'function') return this.submitted(config);
      if (typeof values === 'function') return this.query(config, undefined, values);
      if (typeof callback === 'function') {
        this.send(config, values, callback as QueryCallback);
        return undefined;
      }
      const local = this.heldBack(config, values);
      if (local !== undefined) return Promise.resolve(local);
      return new Promise((resolve, reject) => this.send(config, values, (err, result) => (err ? reject(err) : resolve(result))));
    }

    /**
     * What is held back to go out ahead of the transaction's first statement (begin.ts):
     * BEGIN, the isolation level's statement, the unit's settings, in that order.
     */
    private held: Ahead[] | undefined;
    /** What was held is on the wire and the server has not confirmed BEGIN yet. */
    private unconfirmed = false;
    /**
     * Until the carried BEGIN is confirmed, the unit's other statements (a Promise.all) wait
     * for it: queued behind a carrier the server refuses whole, one would run before BEGIN
     * goes again, outside the transaction. node-postgres sends one statement at a time
     * anyway, so they lose nothing by waiting.
     */
    private waitingForBegin: (() => void)[] | undefined;

    /**
     * The adapters' transaction statements that need no round trip of their own, answered
     * here (promise form only): BEGIN is held, with the unit's settings, the isolation level
     * joins them, and COMMIT or ROLLBACK while they are still held ends a transaction the
     * server never saw.
     */
    private heldBack(config: unknown, values: unknown): object | undefined {
      if (Query === undefined) return undefined;
      const held = this.held;
      if (held === undefined) {
        // A connection that already failed gets its BEGIN sent, and refused, as before.
        if (!isBegin(config, values) || this._queryable === false || this._ending === true) return undefined;
        const settings = policy.transactionSettings?.(this);
        if (settings !== undefined) settings.carried = true;
        this.held = settings === undefined ? [{ text: 'BEGIN' }] : [{ text: 'BEGIN' }, { text: settings.sql, values: settings.values }];
        this.unconfirmed = false;
        return answered('BEGIN');
      }
      const isolation = isolationStatement(config, values);
      if (isolation !== undefined) {
        // Before the settings: a transaction's isolation level is set before its first query.
        held.splice(1, 0, { text: isolation });
        return answered('SET');
      }
      const end = transactionEnd(config, values);
      if (end === undefined) return undefined;
      this.held = undefined;
      return answered(end);
    }

    /**
     * The connection lost with the statement that carried BEGIN: the unit may run again,
     * unless its code goes on to send another statement (failures.ts wentOnAfter).
     */
    private lostWithFirst: object | undefined;

    /** Called by the pool on release (checkedIn). */
    forgetTransaction(): void {
      this.held = undefined;
      this.unconfirmed = false;
      this.lostWithFirst = undefined;
      this.waitingForBegin = undefined;
    }

    /**
     * A cursor or a stream, sent as is; what is held goes in its own round trip ahead of it
     * (node-postgres sends queued statements in order), so it runs in the transaction.
     */
    private submitted(submittable: unknown): unknown {
      const held = this.held;
      if (held !== undefined) {
        this.held = undefined;
        this.unconfirmed = true;
        // Answered without a loss, BEGIN's fate is known (confirmed, or refused by the server).
        this.sendAhead(held, (err) => {
          if (!err || !isConnectionLoss(err)) this.unconfirmed = false;
        });
      }
      return super.query(submittable);
    }

    private send(config: unknown, values: unknown, done: QueryCallback): void {
      // Read in the caller's context: a statement waiting for BEGIN goes later, from the socket's.
      const deadline = policy.statementDeadline();
      if (this.waitingForBegin !== undefined && this.held === undefined) {
        this.waitingForBegin.push(() => this.sendNow(deadline, config, values, done));
        return;
      }
      this.sendNow(deadline, config, values, done);
    }

    private sendNow(deadline: StatementDeadline | undefined, config: unknown, values: unknown, done: QueryCallback): void {
      const held = this.held;
      // node-postgres refuses a statement on a connection that already failed: it is not sent.
      const dead = this._queryable === false || this._ending === true;
      let settled = false;
      let stop: (() => void) | undefined;
      if (deadline !== undefined) {
        const heard = policy.onSilence === undefined || deadline.kind !== 'statement' ? undefined : bytesHeard(this);
        const sentAt = heard === undefined ? 0 : performance.now();
        const expire = (): void => {
          settled = true;
          if (heard !== undefined && bytesHeard(this) === heard) policy.onSilence?.(sentAt);
          // A COMMIT that went unanswered may have committed; so may a statement sent with the
          // Neon driver's pipelined startup (see pipelinedPastConnect).
          const atCommit = !this.unconfirmed && transactionEnd(config, values) === 'COMMIT';
          const pipelined = !this.serverReady && !dead && held === undefined;
          const err = new DeadlineExceededError(deadline.kind, deadline.ms, atCommit || pipelined ? { outcome: 'unknown', retryable: false } : {});
          // Before the server's first real ReadyForQuery, a unit's first statement (it carries BEGIN) committed nothing.
          if (!this.serverReady && !pipelined) markNeverSent(err);
          this.abandon(err);
          done(err);
        };
        if (deadline.shared !== undefined) stop = deadline.shared.watch(expire);
        else {
          if (this.statementTimer?.ms !== deadline.ms) this.statementTimer = new ReusedTimer(deadline.ms);
          stop = this.statementTimer.start(expire);
        }
      }
      const answer: QueryCallback = (err, result) => {
        if (settled) return;
        settled = true;
        stop?.();
        this.inFlight?.delete(answer);
        if (err) done(this.failure(lostTo.get(this) ?? err, held !== undefined, dead, transactionEnd(config, values) === 'COMMIT'));
        else if ((result as { command?: unknown } | undefined)?.command === 'ROLLBACK' && transactionEnd(config, values) === 'COMMIT') done(rolledBackAtCommit());
        else done(undefined, result);
      };
      // Only where a given-up socket is kept for a while (abandon): its statements fail at once, not when it goes.
      if (policy.cancelBeforeClosing !== undefined) (this.inFlight ??= new Set()).add(answer);
      // The unit's code went on after its first statement failed (Prisma's own COMMIT or ROLLBACK does not count).
      if (this.lostWithFirst !== undefined && transactionEnd(config, values) === undefined) {
        wentOnAfter(this.lostWithFirst);
        this.lostWithFirst = undefined;
      }
      try {
        if (held === undefined) super.query(config, values, answer);
        else {
          this.held = undefined;
          this.sendWithBegin(held, config, values, answer);
        }
      } catch (err) {
        // Refused before anything was sent (node-postgres checks its arguments): no deadline is left armed.
        settled = true;
        stop?.();
        throw err;
      }
    }

    /**
     * The statement with what is held ahead of it, in one round trip when it can carry it
     * (begin.ts), else that goes first in a round trip of its own. Until the server confirms
     * BEGIN, a lost connection is marked as such: no transaction was open there.
     */
    private sendWithBegin(ahead: readonly Ahead[], config: unknown, values: unknown, answer: QueryCallback): void {
      this.unconfirmed = true;
      let begun = false;
      const waiting: (() => void)[] = [];
      this.waitingForBegin = waiting;
      // BEGIN's fate is known (confirmed, refused, or the connection lost): the statements waiting go, in order.
      const known = (): void => {
        if (this.waitingForBegin === waiting) this.waitingForBegin = undefined;
        for (const go of waiting.splice(0)) go();
      };
      const confirmed = (): void => {
        begun = true;
        this.unconfirmed = false;
        known();
      };
      let replied = false;
      const carried: QueryCallback = (err, result) => {
        // node-postgres may call back twice (a parameter it cannot encode, then ReadyForQuery): the first answer stands.
        if (replied) return;
        replied = true;
        // Refused by the server before BEGIN ran, so nothing of it ran: a syntax error anywhere
        // in a simple-protocol text refuses the whole `BEGIN;…;text`. BEGIN goes first, then
        // the statement again, as Prisma sends them: it fails there, in the transaction.
        if (err && !begun && this.serverReady && sqlStateOf(err) !== undefined && !isConnectionLoss(err)) this.sendAfter(ahead, config, values, confirmed, known, answer);
        else {
          if (!err) confirmed();
          known();
          answer(err, result);
        }
      };
      // Query exists: nothing is held without it (heldBack).
      const carrier = carrying(Query!, ahead, config, values, carried, confirmed);
      if (carrier !== undefined) super.query(carrier);
      else this.sendAfter(ahead, config, values, confirmed, known, answer);
    }

    /**
     * What is held, in a round trip of its own, then the statement. `confirmed`: BEGIN went
     * through; `known`: its fate is known otherwise (refused, or the connection lost).
     */
    private sendAfter(ahead: readonly Ahead[], config: unknown, values: unknown, confirmed: () => void, known: () => void, answer: QueryCallback): void {
      this.sendAhead(ahead, (err) => {
        if (err) {
          // Answered without a loss, BEGIN's fate is known: refused by the server.
          if (!isConnectionLoss(err)) confirmed();
          known();
          answer(err);
          return;
        }
        // The statement first, then the ones that waited for BEGIN: in the order they were sent.
        try {
          super.query(config, values, answer);
        } catch (refused) {
          answer(refused);
        }
        confirmed();
      });
    }

    /**
     * The statements ahead on their own, in one round trip: the last one (the settings, with
     * parameters) carries the others in the extended protocol; without settings they go as
     * one simple Query.
     */
    private sendAhead(ahead: readonly Ahead[], then: QueryCallback): void {
      const last = ahead.at(-1)!;
      // BEGIN's fate is the caller's to judge from `then` (the whole round trip's answer).
      const carrier = last.values === undefined ? undefined : carrying(Query!, ahead.slice(0, -1), { text: last.text, values: [...last.values] }, undefined, then, () => undefined);
      super.query(carrier ?? ahead.map((a) => a.text).join(';'), then);
    }

    /**
     * The error the caller gets: typed, and marked when the connection went before BEGIN
     * was confirmed (`carrier`: with the statement that carried it) or before the statement
     * could be sent (`unsent`: the connection had already failed).
     */
    private failure(err: unknown, carrier: boolean, unsent = false, commit = false): unknown {
      if (!this.serverReady && !unsent && !carrier && err instanceof DeadlineExceededError && err.deadline === 'connect' && lostTo.get(this) === err) return pipelinedPastConnect(err);
      // Refused at startup: nothing was sent to a backend, and the refusal's text is the reason.
      const e = this.serverReady ? typed(err) : connectionError(err, 'connect');
      if (unsent && isConnectionLoss(e)) markNeverSent(e);
      // A COMMIT sent in a transaction the server had begun, then no answer: it may have committed.
      else if (commit && !this.unconfirmed && isConnectionLoss(e)) return lostDuringCommit(e);
      if (this.unconfirmed && isConnectionLoss(e)) {
        markBeforeBegin(e, carrier);
        if (carrier && typeof e === 'object' && e !== null) this.lostWithFirst = e;
      }
      return e;
    }
  };
}

/** Bytes received so far on a connection's socket (undefined: not known, as on a WebSocket). */
function bytesHeard(client: PgClientShape): number | undefined {
  const read = (client.connection.stream as { bytesRead?: unknown }).bytesRead;
  return typeof read === 'number' ? read : undefined;
}

/**
 * A COMMIT whose connection went before its answer: the transaction may have committed. The
 * layer's units say so themselves (unit-of-work.ts); Prisma's own `$transaction` on the Db
 * passes this on as it is, where the driver's error said "retryable" and nothing more.
 */
function lostDuringCommit(err: unknown): unknown {
  if (!(err instanceof DatabaseConnectionError) || err.outcome !== undefined || !err.retryable) return err;
  return mayHaveHappened(err, 'The connection was lost during COMMIT: the transaction may or may not have committed');
}

/**
 * A statement the Neon driver sent with its pipelined startup (before the compute's first
 * ReadyForQuery), cut by the connect deadline: the proxy is not listening to the client while
 * it wakes the compute, and relays what the client had sent once it has (neondatabase/neon
 * proxy/src/proxy/mod.rs handle_client, pglb/passthrough.rs). The statement may run after
 * all; outside a unit nothing rolls it back. (A unit's first statement carries its BEGIN: the
 * transaction is never committed, so that one keeps the connect failure.)
 */
function pipelinedPastConnect(deadline: DeadlineExceededError): DeadlineExceededError {
  return new DeadlineExceededError('connect', deadline.timeoutMs, { cause: deadline, outcome: 'unknown', retryable: false });
}

/**
 * A COMMIT the server answered with ROLLBACK: a statement of the transaction had failed and
 * the caller caught its error, so PostgreSQL rolled everything back. node-postgres and the
 * adapters report that as success; like pgjdbc, the layer reports the failure it is.
 */
function rolledBackAtCommit(): DatabaseTransactionError {
  return new DatabaseTransactionError(
    'COMMIT was answered with ROLLBACK: a statement of this transaction failed earlier (its error was caught), so PostgreSQL rolled the whole transaction back',
    { sqlState: '25P02', outcome: 'rolled-back', retryable: false },
  );
}

/** A lost connection or a server-side statement timeout as the layer's typed error; anything else as is. */
function typed(err: unknown): unknown {
  if (sqlStateOf(err) === '57014') return classifyError(err) as StatementTimeoutError;
  if (isConnectionLoss(err)) return connectionError(err, 'query');
  // As node-postgres does: a stack that leads back to the caller, not to the socket's read.
  if (err instanceof Error) Error.captureStackTrace(err);
  return err;
}
