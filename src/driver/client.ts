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
//   goes on to Prisma as is, which maps it to its own error classes (P2002, ...).

import type { ConnectionOptions } from 'node:tls';
import { DeadlineExceededError, StatementTimeoutError, type Deadline } from '../errors.ts';
import { MAX_TIMER_MS } from '../deadline.ts';
import { classifyError, connectionError, isConnectionLoss, sqlStateOf } from '../failures.ts';

export interface StatementDeadline {
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
  /** Per-connection settings applied after construction (Neon: WebSocket options). */
  configure?(client: object): void;
  /** Hears how long each new connection took to establish (telemetry only; absent: not timed). */
  onConnected?(ms: number): void;
}

type ConnectCallback = (err?: Error | null) => void;

/** The part of node-postgres' Client this class relies on; test/driver checks it still exists. */
export interface PgClientShape {
  connect(callback?: ConnectCallback): unknown;
  query(config: unknown, values?: unknown, callback?: unknown): unknown;
  connect(callback?: unknown): unknown;
  connection: { stream: { destroy(err?: Error): void }; once(event: string, listener: () => void): unknown };
  processID?: number | null;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- mixin constructors must take any[]
export type ClientClass = new (...args: any[]) => PgClientShape;

export interface SocketHolder {
  connection?: { stream?: { destroy(err?: Error): void } };
}

/** Why the layer destroyed a connection: what its pending statements fail with (the driver's own error is generic). */
const lostTo = new WeakMap<object, Error>();

/** Destroys the socket under a client: whatever it was waiting for fails with `reason`, and pg-pool drops it. */
export function destroySocket(client: SocketHolder, reason: Error): void {
  if (!lostTo.has(client)) lostTo.set(client, reason);
  client.connection?.stream?.destroy(reason);
}

export function guardedClientClass(Base: ClientClass, policy: ClientPolicy): ClientClass {
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
              if (!err && report !== undefined) report(performance.now() - started);
              callback(err ? (lostTo.get(this) ?? err) : err);
            };
      const result = super.connect(done);
      const expire = (): void => destroySocket(this, new DeadlineExceededError('connect', policy.connectMs));
      const timer = setTimeout(expire, policy.connectMs);
      const clear = (): void => clearTimeout(timer);
      this.connection.once('readyForQuery', clear);
      this.connection.once('end', clear);
      return result;
    }

    /**
     * One promise per statement, as node-postgres' own: its callback form is used and the
     * deadline timer (when there is one) settles the same promise, so the layer adds no
     * promise hop to a statement. The timer rejects at once and destroys the socket.
     */
    override query(config: unknown, values?: unknown, callback?: unknown): unknown {
      // Callback style is pg-pool's own `pool.query`, which the layer's pool replaces.
      if (typeof values === 'function' || typeof callback === 'function') return super.query(config, values, callback);
      const deadline = policy.statementDeadline();
      return new Promise((resolve, reject) => {
        let settled = false;
        let stop: (() => void) | undefined;
        if (deadline !== undefined) {
          const expire = (): void => {
            settled = true;
            const err = new DeadlineExceededError(deadline.kind, deadline.ms);
            destroySocket(this, err);
            reject(err);
          };
          if (deadline.shared !== undefined) stop = deadline.shared.watch(expire);
          else {
            const timer = setTimeout(expire, Math.min(Math.max(deadline.ms, 0), MAX_TIMER_MS));
            stop = () => clearTimeout(timer);
          }
        }
        super.query(config, values, (err: unknown, result: unknown) => {
          if (settled) return;
          settled = true;
          stop?.();
          if (err) reject(typed(lostTo.get(this) ?? err));
          else resolve(result);
        });
      });
    }
  };
}

/** A lost connection or a server-side statement timeout as the layer's typed error; anything else as is. */
function typed(err: unknown): unknown {
  if (sqlStateOf(err) === '57014') return classifyError(err) as StatementTimeoutError;
  if (isConnectionLoss(err)) return connectionError(err, 'query');
  // As node-postgres does: a stack that leads back to the caller, not to the socket's read.
  if (err instanceof Error) Error.captureStackTrace(err);
  return err;
}
