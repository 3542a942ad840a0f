// Pool policy. Both drivers' pools are pg-pool underneath (node-postgres' `pg.Pool`, and
// the copy bundled in @neondatabase/serverless), so one policy serves both: the options
// handed to pg-pool decide the bounds; GuardedPool adds what pg-pool lacks:
//
// - checkout with a deadline of its own: `pool.timeoutMs` when the caller must queue for
//   a busy pool (PoolTimeoutError), the connect deadline when a connection is being opened;
// - validation of long-idle connections at checkout (SQLAlchemy's pre-ping), bounded;
// - transparent re-runs of work that landed on a pooled connection which had died while
//   idle (retry.ts's recovery budget; never for a fresh connection, never after a deadline);
// - libpq's prefer/allow SSL fallback, decided per connection attempt;
// - one reserved connection for `db.session`;
// - Prisma's `$disconnect()` (disconnect): every connection closed, the pool left usable;
// - the first connection opened while Prisma loads its query compiler (`warm`);
// - counters and events; with telemetry (createDb's `telemetry` option), the wait, use and
//   timeout figures of OpenTelemetry's connection-pool metrics (telemetry.ts).
//
// As in SQLAlchemy, the no-pool mode (NullPool) is a policy, not a second code path: the
// same pool, told to close every connection on release (driver/options.ts).

import { ContextSlot } from './context.ts';
import type { DbConfig } from './config.ts';
import { abandon, abandonOpening, checkedIn, destroySocket, type SocketHolder } from './driver/client.ts';
import { closeOnRelease, withdrawWaiter } from './driver/pg-pool.ts';
import { DEADLINE_GRACE_MS, ReusedTimers, unitLimits, unitLimitsOn, withDeadline, type UnitLimits } from './deadline.ts';
import { DatabaseClosedError, DatabaseConnectionError, DeadlineExceededError, PoolTimeoutError } from './errors.ts';
import type { EventHub } from './events.ts';
import { connectionError, isConnectionLoss, lostAfterSending, markNeverSent } from './failures.ts';
import { diedWhileIdle, recoveryBudget, statementMayRerun } from './retry.ts';
import { currentScope, rawConnectionOf, releaseKeptIdle } from './scope.ts';
import type { SslChoice } from './ssl.ts';
import type { DbCounters, PoolFigures } from './stats.ts';
import type { PoolRecorder } from './telemetry.ts';

/** The part of a pg-pool client the policy uses. */
export interface PoolClient {
  query(config: unknown, values?: unknown): Promise<unknown>;
  release(err?: Error | boolean): void;
  on(event: 'error', listener: (err: Error) => void): unknown;
  removeListener(event: 'error', listener: (err: Error) => void): unknown;
  /** node-postgres' Client emits 'end' once its socket has closed (scope.ts waits for it). */
  once?(event: 'end', listener: () => void): unknown;
  processID?: number | null;
  connection?: SocketHolder['connection'];
}

/** The part of a pg-pool pool the policy uses (pg.Pool and @neondatabase/serverless Pool). */
export interface RawPool {
  on(event: string, listener: (...args: never[]) => void): unknown;
  end(): Promise<void>;
  readonly totalCount: number;
  readonly idleCount: number;
  readonly waitingCount: number;
}

export interface Checkout {
  client: PoolClient;
  reused: boolean;
}

/** pg-pool's `connect` in its callback form (one promise fewer than its promise form). */
export type RawConnect = (callback: RawConnectCallback) => void;
type RawConnectCallback = (err: Error | undefined, client?: PoolClient) => void;

const pinned = new ContextSlot<Pin>();

/**
 * Connections a session ran on inside a unit of work (the session is the unit's
 * connection): the session state it left (SET, advisory locks, temporary tables) is
 * discarded before the connection's next checkout.
 */
const toDiscard = new WeakSet<object>();

export function discardBeforeReuse(client: object): void {
  toDiscard.add(rawConnectionOf(client));
}

/** A session's reserved connection, as its work reaches it. */
interface Pin {
  readonly pool: GuardedPool;
  readonly lent: Lent;
  /** The session ended: work it left behind (a timer, an un-awaited promise) goes to the pool as any other. */
  ended: boolean;
  /**
   * The running session of another pool (another Db's) this one started in: that pool's
   * statements sent inside this session still go to its session's connection.
   */
  readonly outer: Pin | undefined;
}

/** The innermost session still running among `pin` and those it started in. */
function running(pin: Pin | undefined): Pin | undefined {
  while (pin !== undefined && pin.ended) pin = pin.outer;
  return pin;
}
const quiet = (): void => {};

/**
 * What a connection `disconnect()` retired is released with (pg-pool closes a connection
 * released with an error): not a failure, so its `release` event does not say broken.
 */
const RETIRED = new Error('db.$disconnect() closes this connection once its work releases it');

/** One db.$disconnect() waiting for the connections it closes. */
interface Disconnecting {
  /** The caller's own connections (its unit's, its session's): closed on release, not waited for. */
  readonly own: ReadonlySet<object>;
  readonly done: () => void;
}

/**
 * How long a connection opened by `warm` waits for its first checkout before it is
 * released (pooled: kept idle; serverless: closed). Loading Prisma's query compiler takes
 * about 100 ms on a 2-core machine; a slow cold function may take several times that.
 */
export const SPARE_MS = 2_000;

export class GuardedPool {
  private readonly lastUse = new WeakMap<object, number>();
  private readonly max: number;
  private readonly validateAfterMs: number;
  /** No-pool mode: a connection lives for one checkout (a db.scope() keeps it for the scope instead: scope.ts). */
  readonly serverless: boolean;
  /** Connections checked out right now: destroyed if close()'s deadline passes. */
  readonly busy = new Set<PoolClient>();
  /** When each connection now checked out was handed over (telemetry's use time; only with a recorder). */
  private readonly checkedOutAt = new WeakMap<object, number>();
  /** The connection `warm` is opening, or (serverless mode) has opened, until a checkout claims it. */
  private spare: Promise<PoolClient> | undefined;
  /** pg-pool counts the unclaimed spare (opening or open) as checked out; the figures count it idle. */
  private spareCounted = false;
  /** The checkouts' deadline timers, reused by checkouts one after another (deadline.ts). */
  private readonly timers = new ReusedTimers();
  /** Checkouts queued for a connection, by the function that gives each up (close). */
  private readonly queued = new Set<(err: Error) => void>();
  /**
   * Queued checkouts given up (their deadline, close) whose request is still in pg-pool's
   * queue: pg-pool has no way to withdraw one. Not counted as waiting; when pg-pool hands
   * one a connection, it goes straight back.
   */
  private abandoned = 0;
  /** Connections pg-pool reported removed: it reports a destroyed checked-out one twice. */
  private readonly removed = new WeakSet<object>();
  /**
   * Connections the pool gives back without having handed them out (a late handover to a
   * checkout that gave up, a failed validation, the warmed spare): their pg-pool release
   * is no `release` event, as there was no `acquire` (listeners counting in-use
   * connections with the pair went negative by one per pool timeout).
   */
  private readonly unlent = new WeakSet<object>();
  /**
   * Connections handed out with an `acquire` event and not yet released: only their release
   * is a `release` event. pg-pool also acquires and releases an idle connection itself to
   * close it at the end of its lifetime (recycleMs), which took a pair's count below zero.
   */
  private readonly lent = new WeakSet<object>();
  /**
   * When the last validation that went unanswered (no reply within the connect deadline) was
   * sent. Every connection idle since before then shares its network path and is taken as
   * gone too (SQLAlchemy invalidates its pool the same way after a failed pre-ping): pinged
   * one after another, N silent connections kept a checkout waiting N connect deadlines
   * (50 s with the defaults), far past the pool timeout and any unit's deadline.
   */
  private silentSince = -Infinity;
  /** Connections disconnect() closes once released (their pg-pool release gets RETIRED): see `retires`. */
  private readonly retiring = new Set<PoolClient>();
  /** Counts disconnect() calls: a checkout begun before the latest one retires its connection. */
  private epoch = 0;
  /** Checkouts under way; of those, how many began before the latest disconnect(). */
  private checkingOut = 0;
  private lateCheckouts = 0;
  /** Connections disconnect() asked for to close them (idle ones, the warmed spare), not yet handed over. */
  private arriving = 0;
  private readonly disconnecting: Disconnecting[] = [];
  /** The pool is ending (close()): what disconnect() waits for, the end closes. */
  private ending = false;

  constructor(
    private readonly raw: RawPool,
    private readonly rawConnect: RawConnect,
    private readonly config: DbConfig,
    private readonly ssl: SslChoice,
    private readonly counters: DbCounters,
    private readonly hub: EventHub,
    /** OpenTelemetry's pool instruments; undefined: nothing is measured. */
    private readonly recorder?: PoolRecorder,
    /** The pool's connections still being opened (driver/client.ts ClientPolicy.opening). */
    private readonly opening: ReadonlySet<object> = new Set(),
  ) {
    this.max = config.pool.size + config.pool.maxOverflow;
    this.serverless = config.mode === 'serverless';
    this.validateAfterMs = config.mode === 'serverless' ? Infinity : config.pool.validateAfterIdleMs;
    this.listen();
  }

  /** Will this connection close when released (disconnect())? A scope then hands it back rather than keep it. */
  retires(client: PoolClient): boolean {
    return this.retiring.has(client);
  }

  /** Is work queued for a connection of this pool? */
  hasWaiters(): boolean {
    return this.waiting() > 0;
  }

  private waiting(): number {
    return Math.max(0, this.raw.waitingCount - this.abandoned);
  }

  figures(): PoolFigures {
    const p = this.raw;
    const idle = p.idleCount + (this.spareCounted ? 1 : 0);
    return { open: p.totalCount, idle, inUse: p.totalCount - idle, waiting: this.waiting(), max: this.max };
  }

  /** pg-pool's lifecycle events: counters, safe re-emission, and the idle-error guard. */
  private listen(): void {
    const { counters, hub } = this;
    const pid = (c: PoolClient): number | undefined => c.processID ?? undefined;
    // An idle client's socket error reaches the pool's 'error' event; unheard, it would crash the process.
    this.raw.on('error', ((err: Error) => {
      counters.errors++;
      hub.fail(connectionError(err, 'query'));
    }) as never);
    this.raw.on('connect', ((client: PoolClient) => {
      counters.connectionsOpened++;
      // For the connection's whole life: a socket error while it is checked out (pg-pool
      // listens only while it is idle) must not crash the process; the statement or unit
      // using it gets the error, and the pool discards the connection on release.
      client.on('error', quiet);
      hub.emit('connect', { pid: pid(client), pool: hub.pool });
    }) as never);
    const recorder = this.recorder;
    this.raw.on('release', ((err: Error | undefined, client: PoolClient) => {
      const now = performance.now();
      if (recorder !== undefined) this.recordUse(recorder, client, now);
      this.lastUse.set(client, now);
      this.busy.delete(client);
      checkedIn(client);
      if (!this.lent.delete(client) || this.unlent.has(client)) return;
      if (hub.wants('release')) hub.emit('release', { pid: pid(client), broken: err !== undefined && err !== null && err !== RETIRED, pool: hub.pool });
    }) as never);
    this.raw.on('remove', ((client: PoolClient) => {
      // A checked-out connection destroyed (close's deadline) comes here from its release and again from its socket's end.
      if (this.removed.has(client)) return;
      this.removed.add(client);
      counters.connectionsClosed++;
      this.busy.delete(client);
      hub.emit('remove', { pid: pid(client), pool: hub.pool });
      if (this.retiring.delete(client)) this.settleDisconnects();
    }) as never);
  }

  /** use_time: from checkout to release; nothing for a connection released without one (validation, late handover). */
  private recordUse(recorder: PoolRecorder, client: PoolClient, now: number): void {
    const at = this.checkedOutAt.get(client);
    if (at === undefined) return;
    this.checkedOutAt.delete(client);
    recorder.recordUse(now - at);
  }

  /** For the adapters' transactions: the session's reserved connection, or a checked-out one. */
  async connect(): Promise<PoolClient> {
    // A unit of work inside a session: the session's connection, to itself until it ends.
    const pin = this.pin();
    // The first connection taken in a unit's context is the unit's own; a Prisma $transaction
    // that fn opens beside it (db.$transaction inside db.transaction) takes another. Only a
    // unit on this pool: another Db's unit the caller runs in has a connection of its own.
    const unit = unitLimitsOn(this.config);
    const own = unit !== undefined && unit.connection === undefined;
    if (pin) {
      if (own) {
        unit.lease = pin.lent;
        unit.connection = pin.lent.raw;
      }
      return pin.lent.lease();
    }
    const { client, reused } = await this.take();
    // Tells the unit of work whether a failed BEGIN may be re-run (retry.ts), and which connection it has.
    if (own) {
      unit.reused = reused;
      unit.connection = client;
    }
    return client;
  }

  /**
   * A connection for the caller's work: from its db.scope() when it runs in one (scope.ts).
   * Checks (health, verify, lag) take theirs here too: a scope keeps its idle connection
   * from the pool, so a check that went to the pool instead opened a second one per
   * invocation, or, with every slot held by scopes (connection_limit=1), waited for one
   * until it reported a busy pool for a database that was fine.
   */
  take(): Promise<Checkout> {
    const scope = currentScope();
    return scope === undefined ? this.checkout() : scope.take(this);
  }

  /** For the adapters' statements outside a transaction: one checkout, with recovery. */
  async query(text: unknown, values?: unknown): Promise<unknown> {
    const pin = this.pin();
    if (pin) {
      // Sent from inside the unit of work that holds the session's connection: in that unit.
      const unit = unitLimitsOn(this.config);
      const inUnit = unit !== undefined && !unit.ended && unit.lease === pin.lent;
      try {
        return await (inUnit ? pin.lent.holder : pin.lent.client).query(text, values);
      } catch (err) {
        // Outside a unit the session's statement commits as it runs.
        throw inUnit ? err : lostAfterSending(err);
      }
    }
    for (let recovered = 0; ; recovered++) {
      const { client, reused } = await this.take();
      try {
        const result = await client.query(text, values);
        client.release();
        return result;
      } catch (err) {
        const lost = isConnectionLoss(err);
        // pg-pool would discard the connection after any failed statement; only a lost one needs that.
        client.release(lost ? (err as Error) : undefined);
        if (!lost) throw err;
        // It commits as it runs: re-run only when it cannot have run on the lost connection.
        if (statementMayRerun(err, reused) && this.mayRecover(err, reused, recovered)) continue;
        this.counters.errors++;
        throw this.hub.fail(lostAfterSending(err));
      }
    }
  }

  /**
   * A statement or unit start that hit a dead pooled connection never reached a live
   * backend: it may run again on another one, within the recovery budget.
   */
  mayRecover(err: unknown, reused: boolean, recovered: number): boolean {
    if (!diedWhileIdle(err, reused) || recovered >= recoveryBudget(this.config)) return false;
    this.counters.connectionsRecovered++;
    return true;
  }

  /**
   * Opens the pool's first connection now, for the first checkout. Prisma connects its
   * driver adapter before it loads its query compiler (ClientEngine's #ensureStarted), and
   * a pool opens connections only at checkout, after that load: warmed here, the TCP, TLS
   * and SCRAM round trips and the server's new backend overlap the load instead of
   * following it (a cold start's first query ~20 ms sooner on the bench machine). One
   * connection at most, only when none is open; it counts as opened (stats, events) but
   * not as acquired until claimed. A failed attempt is reported to the checkout that
   * claims it, as its own would be; unclaimed after SPARE_MS, the connection is released.
   */
  warm(): void {
    if (this.spare !== undefined || this.raw.totalCount > 0) return;
    const spare = this.acquire(performance.now());
    this.spare = spare;
    this.spareCounted = true;
    spare.then(
      (client) => {
        if (this.spare !== spare || this.config.mode !== 'pooled') return;
        // The pool keeps its connections anyway: idle, it serves whichever checkout comes first.
        this.claimSpare();
        this.giveBack(client);
      },
      () => {
        if (this.spare === spare) this.spareCounted = false;
      },
    );
    const timer = setTimeout(() => {
      if (this.spare === spare) this.releaseSpare();
    }, SPARE_MS);
    timer.unref();
  }

  /** The warmed connection, once: for the checkout that comes first. */
  private claimSpare(): Promise<PoolClient> | undefined {
    const spare = this.spare;
    this.spare = undefined;
    this.spareCounted = false;
    return spare;
  }

  /** Gives an unclaimed warmed connection back (pooled: idle; serverless: closed). Before the pool ends. */
  private releaseSpare(): void {
    this.claimSpare()?.then((client) => this.giveBack(client), quiet);
  }

  /** A connection back to pg-pool that no checkout was handed: no `release` event (see `unlent`). */
  private giveBack(client: PoolClient, err?: Error): void {
    // pg-pool emits `release` synchronously inside release().
    this.unlent.add(client);
    try {
      client.release(err);
    } finally {
      this.unlent.delete(client);
    }
  }

  /** A connection fit for use: validated when it sat idle long, bounded in time throughout. */
  async checkout(): Promise<Checkout> {
    const started = performance.now();
    const unit = this.unitOf();
    const epoch = this.epoch;
    this.checkingOut++;
    try {
      for (let sslRetries = 0; ; ) {
        let client: PoolClient;
        try {
          const spare = this.claimSpare();
          client = await (spare === undefined ? this.acquire(started, unit) : this.spareWithin(spare, unit));
        } catch (err) {
          if (err instanceof DeadlineExceededError && err.deadline === 'unit') throw err;
          if (err instanceof PoolTimeoutError) throw err;
          if (sslRetries++ === 0 && this.ssl.fallBack(err)) continue;
          this.counters.errors++;
          throw this.hub.fail(this.ssl.explain(connectionError(err, 'connect'), (message, cause) => connectionError(new DatabaseConnectionError(message, { cause, retryable: false }), 'connect')));
        }
        const reused = this.lastUse.has(client);
        if (reused && this.lastUse.get(client)! <= this.silentSince) {
          this.dropUnheard(client);
          continue;
        }
        if (toDiscard.has(client) && !(await this.discard(client))) continue;
        if (reused && this.validateAfterMs !== Infinity && performance.now() - this.lastUse.get(client)! >= this.validateAfterMs && !(await this.validate(client, unit))) continue;
        this.counters.acquires++;
        if (this.recorder !== undefined) {
          // wait_time: from the request to a usable connection (queueing, opening, validation).
          const now = performance.now();
          this.checkedOutAt.set(client, now);
          this.recorder.recordWait(now - started);
        }
        // Asked for before a disconnect(): its connection is one of those it closes.
        if (epoch !== this.epoch) this.retire(client);
        this.busy.add(client);
        this.lent.add(client);
        if (this.hub.wants('acquire')) this.hub.emit('acquire', { pid: client.processID ?? undefined, reused, pool: this.hub.pool });
        return { client, reused };
      }
    } finally {
      this.checkingOut--;
      if (epoch !== this.epoch) {
        this.lateCheckouts--;
        this.settleDisconnects();
      }
    }
  }


  /**
   * pg-pool's own wait is unbounded here (its `connectionTimeoutMillis` is 0): the layer
   * bounds it, by the pool timeout (or the unit's maxWaitMs) when the caller has to queue,
   * by the connect deadline when a connection is being opened for it. One promise, settled
   * by pg-pool's callback or by the timer, whichever comes first; the timer is one of the
   * pool's reused ones (deadline.ts), not one per checkout.
   */
  private acquire(started: number, unit?: UnitLimits): Promise<PoolClient> {
    const queued = this.raw.totalCount >= this.max || this.raw.idleCount > 0;
    // A unit's maxWaitMs is for its own pool: another Db's statement inside it waits by its pool's timeout.
    const waitMs = unit?.maxWaitMs ?? this.config.pool.timeoutMs;
    const ownMs = queued ? waitMs : this.config.timeouts.connectMs + DEADLINE_GRACE_MS;
    // Opening a connection for a unit ends by its deadline when that comes first (a unit may
    // wait in the queue for maxWaitMs, which may be the longer of the two by choice).
    const unitFirst = !queued && unit !== undefined && unit.endsAt - performance.now() < ownMs;
    return new Promise<PoolClient>((resolve, reject) => {
      let settled = false;
      const giveUp = (err: Error): void => {
        settled = true;
        stop();
        this.queued.delete(giveUp);
        // Out of pg-pool's queue: left there, it was served later, on a silent network by a new
        // connection opened for nobody, one connect deadline after another, counted in use.
        if (queued && !withdrawWaiter(this.raw, handover)) this.abandoned++;
        reject(err);
      };
      const expire = (): void => {
        if (unitFirst) {
          giveUp(unitOver(unit));
          return;
        }
        if (!queued) {
          giveUp(connectionError(new DeadlineExceededError('connect', this.config.timeouts.connectMs), 'connect'));
          return;
        }
        this.counters.poolTimeouts++;
        this.recorder?.recordTimeout();
        giveUp(new PoolTimeoutError(Math.round(performance.now() - started), { max: this.max }));
      };
      // A unit's remaining time is a length of its own: no reused timer for it.
      const stop = unitFirst ? stopper(setTimeout(expire, Math.max(0, unit.endsAt - performance.now())).unref()) : this.timers.start(ownMs, expire);
      if (queued) this.queued.add(giveUp);
      const handover = (err: Error | undefined, client?: PoolClient): void => {
        if (settled) {
          if (queued) this.abandoned--;
          // A connection handed over after we gave up goes straight back.
          if (client !== undefined) this.giveBack(client);
          return;
        }
        settled = true;
        stop();
        this.queued.delete(giveUp);
        if (err || !client) reject(err ?? new Error('pg-pool handed over no connection'));
        else resolve(client);
      };
      this.rawConnect(handover);
    });
  }

  /**
   * The warmed connection, still being opened for the caller's unit: waited for until the
   * unit's deadline when that comes before the connect deadline (as acquire does); one that
   * arrives later goes to the pool, idle.
   */
  private spareWithin(spare: Promise<PoolClient>, unit: UnitLimits | undefined): Promise<PoolClient> {
    const left = unit === undefined ? Infinity : unit.endsAt - performance.now();
    if (left >= this.config.timeouts.connectMs + DEADLINE_GRACE_MS) return spare;
    return withDeadline(spare, left, () => {
      spare.then((client) => this.giveBack(client), quiet);
      return unitOver(unit!);
    });
  }

  /** A session's state discarded (discardBeforeReuse) before the connection's next use. */
  private async discard(client: PoolClient): Promise<boolean> {
    toDiscard.delete(client);
    return (await this.ready(client, 'DISCARD ALL')) === undefined;
  }

  /**
   * The pre-ping, bounded by the connect deadline or, when it comes first, the deadline of
   * the caller's unit (which then fails: its time is up before it could start).
   */
  private async validate(client: PoolClient, unit: UnitLimits | undefined): Promise<boolean> {
    this.counters.validations++;
    const sent = performance.now();
    const left = unit === undefined ? Infinity : unit.endsAt - sent;
    const failure = await this.ready(client, 'SELECT 1', left < this.config.timeouts.connectMs ? unit : undefined);
    if (failure === undefined) return true;
    // Long idle, and gone: the server, a proxy or Neon's autosuspend dropped it.
    this.counters.connectionsRecovered++;
    // Unanswered for the whole connect deadline: silence. Cut sooner by a unit's deadline, it says nothing of the network.
    if (failure instanceof DeadlineExceededError && failure.deadline !== 'unit') this.silentSince = Math.max(this.silentSince, sent);
    if (failure instanceof DeadlineExceededError && failure.deadline === 'unit') throw failure;
    return false;
  }

  /** The caller's unit of work on this pool, while it runs: its deadline bounds the checkout too. */
  private unitOf(): UnitLimits | undefined {
    const unit = unitLimitsOn(this.config);
    return unit !== undefined && !unit.ended ? unit : undefined;
  }

  /**
   * A statement sent at `sentAt` got no answer within its deadline, not even the server's
   * own statement timeout: its network path was silent from then on. Connections idle
   * since before then share that path and are dropped unpinged at checkout, as after an
   * unanswered validation: otherwise each recently used one (idle less than
   * validateAfterIdleMs, so not pinged) cost one caller a whole statement deadline.
   * Connections in use, or used since, are kept: they were heard after it.
   */
  wentSilent(sentAt: number): void {
    this.silentSince = Math.max(this.silentSince, sentAt);
  }

  /** An idle connection taken as gone with one that went silent (silentSince): dropped unpinged. */
  private dropUnheard(client: PoolClient): void {
    this.counters.connectionsRecovered++;
    const reason = new DatabaseConnectionError('An idle connection idle since before another went silent was dropped unchecked: it shares its network path', { retryable: true });
    // Its socket too: ending it the orderly way would wait on a peer that does not answer.
    destroySocket(client, reason);
    this.giveBack(client, reason);
  }

  /**
   * `sql` on a connection about to be handed out, within the connect deadline; one that fails
   * it is dropped, and the failure returned (undefined: it answered).
   */
  private async ready(client: PoolClient, sql: string, unit?: UnitLimits): Promise<Error | undefined> {
    try {
      await this.housekeeping(client, sql, unit);
      return undefined;
    } catch (err) {
      const failure = err instanceof Error ? err : new Error(`${sql} failed`);
      this.giveBack(client, failure);
      return failure;
    }
  }

  /**
   * A statement of the layer's own (a validation ping, a session's DISCARD ALL), bounded by
   * the connect deadline whatever the statement timeout (0 = none is for the caller's
   * statements): past it the socket is destroyed, so a silent connection neither holds its
   * slot nor lingers half-closed.
   */
  private housekeeping(client: PoolClient, sql: string, unit?: UnitLimits): Promise<unknown> {
    const ms = unit === undefined ? this.config.timeouts.connectMs : Math.max(0, unit.endsAt - performance.now());
    return withDeadline(client.query(sql), ms, () => {
      const err = unit === undefined ? new DeadlineExceededError('validation', ms) : unitOver(unit);
      abandon(client, err);
      return err;
    });
  }

  /** Does the caller run inside a db.session() on this pool? */
  inSession(): boolean {
    return this.pin() !== undefined;
  }

  /** The caller's session on this pool, while it runs. */
  private pin(): Pin | undefined {
    // Nearly always one step: no session, or this pool's. Another Db's session inside this
    // pool's (an audit session inside the app's) is passed over to reach this pool's.
    let pin = pinned.get();
    while (pin !== undefined && pin.pool !== this) pin = pin.outer;
    return pin !== undefined && !pin.ended ? pin : undefined;
  }

  /**
   * Runs `fn` with one connection reserved for it: every statement the Prisma client sends
   * inside `fn` (through this pool) goes to that connection. Session state is discarded
   * before the connection goes back, so nothing leaks to the next user.
   */
  async withConnection<T>(fn: () => Promise<T>): Promise<T> {
    // A session inside a session on this pool is the outer one: its connection, its state.
    if (this.pin()) return fn();
    const { client } = await this.take();
    const pin: Pin = { pool: this, lent: lend(client), ended: false, outer: running(pinned.get()) };
    let broken: Error | undefined;
    try {
      return await pinned.run(pin, fn);
    } catch (err) {
      if (isConnectionLoss(err)) broken = err as Error;
      throw err;
    } finally {
      pin.ended = true;
      // What the session still had queued goes first (each statement has its deadline), then the discard.
      await pin.lent.idle();
      if (!broken) await this.housekeeping(client, 'DISCARD ALL').catch((err: Error) => (broken = err));
      client.release(broken);
    }
  }

  /**
   * Destroys every connection still checked out (close() after its deadline): their work
   * fails at once, each with an error of its own (a unit completes its own with its outcome
   * and correlation id; shared, a statement beside it would report them).
   */
  destroyBusy(reason: () => Error): number {
    const n = this.busy.size;
    for (const client of this.busy) abandon(client, reason());
    return n;
  }

  /**
   * pg-pool's end() serves no queued request again, and fails none: a caller queued for a
   * connection would wait out its whole pool timeout, then be told to retry. Its work never
   * started: it gets DatabaseClosedError now.
   */
  end(): Promise<void> {
    this.willEnd();
    for (const giveUp of [...this.queued]) giveUp(new DatabaseClosedError({ whileWaiting: true }));
    this.stopOpening();
    return this.raw.end();
  }

  /**
   * The pool is about to end (close(), or the Neon adapter's dispose): a warmed connection
   * nobody claimed goes back first, and disconnect() stops waiting (pg-pool's end closes
   * every connection, and serves no request disconnect() queued for an idle one).
   */
  willEnd(): void {
    this.releaseSpare();
    this.ending = true;
    this.settleDisconnects();
  }

  /**
   * Connections still being opened when the pool ends (for work still waiting, or the
   * warmed spare) are ended with it: pg-pool would wait for each to connect or fail, on a
   * silent network a whole connect deadline after close() had resolved. The work waiting
   * for one never started: DatabaseClosedError, as for work queued for a connection.
   */
  stopOpening(): number {
    return abandonOpening(this.opening, () => new DatabaseClosedError({ whileWaiting: true }));
  }

  /**
   * db.$disconnect() with the pool staying usable, as Prisma's $disconnect leaves its client
   * (the next query connects again). Every connection open or being opened for work now is
   * closed: idle ones at once (a scope's kept idle one too), those in use once their work
   * releases them, which this waits for, as pg-pool's end() does (not for the caller's own:
   * its unit's or session's connection is released only after it, and closes then). Work
   * sent meanwhile is served at once, on a new connection, which stays open.
   */
  disconnect(): Promise<void> {
    const own = this.callersConnections();
    this.epoch++;
    // Every checkout under way began before this call.
    this.lateCheckouts = this.checkingOut;
    for (const client of this.busy) this.retire(client);
    for (const client of [...this.busy]) releaseKeptIdle(client);
    const spare = this.claimSpare();
    if (spare !== undefined) this.closeOnArrival(spare);
    // pg-pool has no call that closes its idle connections but end(): each is taken and handed back with an error, which closes it.
    for (let idle = this.raw.idleCount; idle > 0; idle--) {
      this.closeOnArrival(new Promise<PoolClient>((resolve, reject) => this.rawConnect((err, client) => (client === undefined ? reject(err) : resolve(client)))));
    }
    return new Promise<void>((done) => {
      this.disconnecting.push({ own, done });
      this.settleDisconnects();
    });
  }

  /** The connections of the caller's units and sessions on this pool: released only after its disconnect() returns. */
  private callersConnections(): Set<object> {
    const own = new Set<object>();
    for (let unit = unitLimits.get(); unit !== undefined; unit = unit.enclosing) {
      if (unit.owner === this.config && !unit.ended && unit.connection !== undefined) own.add(rawConnectionOf(unit.connection));
    }
    for (let pin = pinned.get(); pin !== undefined; pin = pin.outer) if (pin.pool === this && !pin.ended) own.add(pin.lent.raw);
    return own;
  }

  /** Closes a connection in use once its work releases it: pg-pool closes one released with an error. */
  private retire(client: PoolClient): void {
    if (this.retiring.has(client)) return;
    this.retiring.add(client);
    closeOnRelease(client, RETIRED);
  }

  /** A connection disconnect() asked pg-pool for (idle, or the warmed spare): closed as it comes. */
  private closeOnArrival(arrival: Promise<PoolClient>): void {
    this.arriving++;
    arrival
      .then((client) => {
        this.retiring.add(client);
        this.giveBack(client, RETIRED);
      }, quiet)
      .finally(() => {
        this.arriving--;
        this.settleDisconnects();
      });
  }

  /** Resolves each disconnect() whose connections have all closed (or the pool is ending). */
  private settleDisconnects(): void {
    if (this.disconnecting.length === 0) return;
    const waiting = !this.ending && (this.lateCheckouts > 0 || this.arriving > 0);
    for (let i = this.disconnecting.length - 1; i >= 0; i--) {
      const { own, done } = this.disconnecting[i]!;
      if (waiting || (!this.ending && [...this.retiring].some((client) => !own.has(client)))) continue;
      this.disconnecting.splice(i, 1);
      done();
    }
  }
}

/**
 * A unit whose deadline passed while it waited for its connection (queued, connecting or
 * validating): nothing of it was sent, so it did not start.
 */
function unitOver(unit: UnitLimits): DeadlineExceededError {
  const err = new DeadlineExceededError('unit', unit.timeoutMs, { outcome: 'rolled-back' });
  markNeverSent(err);
  return err;
}

const stopper = (timer: ReturnType<typeof setTimeout>) => (): void => clearTimeout(timer);

/** A session's connection, lent to its work one user at a time. */
interface Lent {
  /** The connection itself (a unit's own connection, for its settings). */
  readonly raw: PoolClient;
  /** Statements outside a unit: "release" is a no-op (the session owns the connection). */
  readonly client: PoolClient;
  /** The connection without taking turns: for the unit that holds it. */
  readonly holder: PoolClient;
  /** For a unit of work: the connection to itself until it releases it (commit or rollback). */
  lease(): Promise<PoolClient>;
  /** Resolves when everything queued so far is done. */
  idle(): Promise<unknown>;
}

/**
 * The reserved connection as the session's work sees it. Statements and units sent
 * concurrently (a Promise.all inside the session) take turns: a statement never lands in a
 * unit's transaction, nor two units in one (node-postgres 9 will require the statements'
 * turns instead of queueing them itself).
 */
function lend(client: PoolClient): Lent {
  let tail: Promise<unknown> = Promise.resolve();
  const shared = (release: (err?: Error | boolean) => void): PoolClient => ({
    query: (text, values) => client.query(text, values),
    release,
    on: (event, listener) => client.on(event, listener),
    removeListener: (event, listener) => client.removeListener(event, listener),
    processID: client.processID ?? null,
  });
  const holder = shared(quiet);
  return {
    raw: client,
    holder,
    client: {
      ...holder,
      query: (text, values) => {
        const run = tail.then(() => client.query(text, values));
        tail = run.catch(quiet);
        return run;
      },
    },
    lease: async () => {
      const before = tail;
      let done!: () => void;
      tail = new Promise<void>((resolve) => (done = resolve));
      await before;
      let released = false;
      return shared(() => {
        if (released) return;
        released = true;
        done();
      });
    },
    idle: () => tail,
  };
}

/**
 * Is the caller inside a db.session() on `pool`? For work that bypasses the pool (Neon's
 * HTTP statements, driver/neon.ts): inside a session it must go to the session's connection.
 */
export function inSessionOn(pool: GuardedPool | undefined): boolean {
  return pool?.inSession() ?? false;
}
