// OpenTelemetry for the layer: the connection-pool metrics of OpenTelemetry's database
// semantic conventions, and one span per unit of work.
//
// @opentelemetry/api is an optional peer dependency. This module imports it for types
// only (erased at build), so loading this module loads nothing of OpenTelemetry. The
// API package is required only when the application opts in to the global providers
// (`telemetry: { global: true }`); a meter, tracer or provider handed over is used
// through its own methods. Without any of these, `createTelemetry` returns undefined
// and the pool and the units of work do no telemetry work at all.
//
// Names, instrument kinds and units: open-telemetry/semantic-conventions
// model/db/metrics.yaml, model/db/registry.yaml, docs/db/database-metrics.md
// ("Connection pools"), docs/db/database-spans.md, docs/db/postgresql.md.
// The connection-pool metrics are at stability "development" there.

import type {
  Attributes,
  BatchObservableCallback,
  Counter,
  Histogram,
  Meter,
  MeterProvider,
  Observable,
  ObservableUpDownCounter,
  Span,
  Tracer,
  TracerProvider,
} from '@opentelemetry/api';
import { ConfigError, type ConfigIssue } from './errors.ts';
import { sqlStateOf } from './failures.ts';

export interface TelemetryOptions {
  /** Meter for the pool metrics (takes precedence over meterProvider). */
  meter?: Meter;
  meterProvider?: MeterProvider;
  /** Tracer for the unit-of-work spans (takes precedence over tracerProvider). */
  tracer?: Tracer;
  tracerProvider?: TracerProvider;
  /**
   * Use the global providers registered with @opentelemetry/api (e.g. by the NodeSDK)
   * for whatever is not given above. Requires @opentelemetry/api to be installed.
   */
  global?: boolean;
  /**
   * `db.client.connection.pool.name` of the primary pool; replicas get `<name>/replica-<n>`.
   * Dbs reporting to one meter under one name are reported as one pool: their sum.
   * Default, as the conventions ask when a pool has no name of its own:
   * `server.address:server.port/db.namespace` of each pool.
   */
  poolName?: string;
}

/** Instrumentation scope of the meter and tracer. */
export const SCOPE = 'prisma-datalayer';

/** Metric names, from semantic-conventions model/db/metrics.yaml. */
export const METRICS = {
  count: 'db.client.connection.count',
  idleMax: 'db.client.connection.idle.max',
  idleMin: 'db.client.connection.idle.min',
  max: 'db.client.connection.max',
  pendingRequests: 'db.client.connection.pending_requests',
  timeouts: 'db.client.connection.timeouts',
  createTime: 'db.client.connection.create_time',
  waitTime: 'db.client.connection.wait_time',
  useTime: 'db.client.connection.use_time',
} as const;

/** Attribute names: model/db/registry.yaml, model/server/registry.yaml, model/error/registry.yaml. */
export const ATTR = {
  poolName: 'db.client.connection.pool.name',
  state: 'db.client.connection.state',
  system: 'db.system.name',
  namespace: 'db.namespace',
  statusCode: 'db.response.status_code',
  errorType: 'error.type',
  serverAddress: 'server.address',
  serverPort: 'server.port',
  // The conventions define nothing for transactions: these are the layer's own,
  // namespaced as the conventions require for custom attributes.
  isolationLevel: 'prisma_datalayer.transaction.isolation_level',
  readOnly: 'prisma_datalayer.transaction.read_only',
  attempts: 'prisma_datalayer.transaction.attempts',
  outcome: 'prisma_datalayer.transaction.outcome',
} as const;

/** The unit-of-work span and its retry event (no convention exists for either). */
export const UNIT_SPAN = 'db.transaction';
export const RETRY_EVENT = 'prisma_datalayer.transaction.retry';

/**
 * The conventions give no buckets for the connection-time histograms; these are the
 * ones they give for db.client.operation.duration (seconds), extended to the default
 * 30 s pool timeout so a long wait is not lumped into "above 10 s".
 */
export const TIME_BUCKETS_S = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30];

/** What a pool reports at each collection. */
export interface PoolTelemetryFigures {
  idle: number;
  /** Checked out (`db.client.connection.state = used`). */
  inUse: number;
  /** Callers waiting for a connection. */
  waiting: number;
  /** Open connections allowed (size + overflow). */
  max: number;
  /** Idle connections the pool keeps (its configured minimum: `size`; 0 serverless). */
  idleMin: number;
  /** Idle connections the pool may hold (`max` for pg-pool; 0 serverless, which closes on release). */
  idleMax: number;
}

const CLOSED: PoolTelemetryFigures = { idle: 0, inUse: 0, waiting: 0, max: 0, idleMin: 0, idleMax: 0 };

/** One pool, as the telemetry module sees it. */
export interface PoolTelemetrySource {
  /** Its series' name; pools of one name (two Dbs on one target) are reported as their sum. */
  name: string;
  figures(): PoolTelemetryFigures;
}

/** What the pool calls; durations in milliseconds (converted to the conventions' seconds). */
export interface PoolRecorder {
  /** A new connection was established (TCP + TLS + startup) in `ms`. */
  recordCreate(ms: number): void;
  /** A caller obtained a connection after waiting `ms` (including a new connection's handshake). */
  recordWait(ms: number): void;
  /** A connection went back to the pool `ms` after it was checked out. */
  recordUse(ms: number): void;
  /** A caller gave up waiting for a connection (the pool's PoolTimeoutError). */
  recordTimeout(): void;
  /** Stops reporting this pool (on close). Idempotent. */
  detach(): void;
}

export interface UnitInfo {
  /** Pool the unit runs on (the primary's, or a replica's for reads). */
  poolName: string;
  isolationLevel?: string | undefined;
  readOnly?: boolean | undefined;
  /** `db.namespace`: the database name. */
  database?: string | undefined;
  serverAddress?: string | undefined;
  serverPort?: number | undefined;
}

/** Handed to the unit's runner: it reports each re-run of the unit. */
export interface UnitSpan {
  /** The attempt that just failed with `error` will be re-run after `backoffMs`. */
  retry(error: unknown, backoffMs: number): void;
}

export interface Telemetry {
  /** Registers a pool's metrics; undefined when no meter was given. */
  pool(source: PoolTelemetrySource): PoolRecorder | undefined;
  /**
   * Runs a unit of work inside a `db.transaction` span that is the active context
   * throughout, so that Prisma's own spans (@prisma/instrumentation) nest under it.
   * Runs `fn` plainly when no tracer was given.
   */
  unit<T>(info: UnitInfo, fn: (span: UnitSpan | undefined) => Promise<T>): Promise<T>;
}

type OtelApi = typeof import('@opentelemetry/api');

/** @opentelemetry/api, only when the application opted in; undefined if not installed. */
function loadApi(): OtelApi | undefined {
  try {
    // Lazily, and only here: nothing of OpenTelemetry loads unless asked for.
    return require('@opentelemetry/api') as OtelApi;
  } catch {
    return undefined;
  }
}

/** Each option and the method that shows a value is one (what the layer calls on it). */
const TELEMETRY_OPTIONS: Record<keyof TelemetryOptions, string | undefined> = {
  meter: 'createHistogram',
  meterProvider: 'getMeter',
  tracer: 'startActiveSpan',
  tracerProvider: 'getTracer',
  global: undefined,
  poolName: undefined,
};

/** Longest `poolName`: it becomes an attribute of every pool series and unit span. */
const MAX_POOL_NAME = 256;

/**
 * The problems of a `telemetry` option. A misspelt key (`meterprovider`) would otherwise
 * be ignored and nothing measured, without a word; a value that is not what it names
 * would fail later, inside the pool or a unit of work.
 */
function telemetryIssues(options: unknown): ConfigIssue[] {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    return [{ setting: 'telemetry', problem: 'must be an object such as { meterProvider, tracerProvider } or { global: true }' }];
  }
  const issues: ConfigIssue[] = [];
  const given = options as Record<string, unknown>;
  for (const [name, value] of Object.entries(given)) {
    if (!(name in TELEMETRY_OPTIONS)) {
      issues.push({ setting: `telemetry.${name}`, problem: `is not an option of telemetry (it takes ${Object.keys(TELEMETRY_OPTIONS).join(', ')})` });
      continue;
    }
    const method = TELEMETRY_OPTIONS[name as keyof TelemetryOptions];
    if (value === undefined || method === undefined) continue;
    if (typeof (value as Record<string, unknown> | null)?.[method] !== 'function') {
      issues.push({ setting: `telemetry.${name}`, problem: `must be an OpenTelemetry ${name} (an object with ${method}())` });
    }
  }
  if (given.global !== undefined && typeof given.global !== 'boolean') issues.push({ setting: 'telemetry.global', problem: 'must be true or false' });
  const poolName = given.poolName;
  if (poolName !== undefined && (typeof poolName !== 'string' || poolName.length === 0 || poolName.length > MAX_POOL_NAME || /[\x00-\x1f\x7f]/.test(poolName))) {
    issues.push({ setting: 'telemetry.poolName', problem: `must be a text of 1 to ${MAX_POOL_NAME} characters without control characters` });
  }
  return issues;
}

/**
 * The layer's telemetry, or undefined when the application gave nothing to report to.
 * `warn` hears about `global: true` without @opentelemetry/api installed. A `telemetry`
 * option that is not one (a misspelt key, a value of the wrong kind) is a ConfigError.
 */
export function createTelemetry(options: TelemetryOptions | undefined, warn?: (message: string) => void): Telemetry | undefined {
  if (!options) return undefined;
  const issues = telemetryIssues(options);
  if (issues.length > 0) throw new ConfigError(issues);
  let { meter, tracer } = options;
  meter ??= options.meterProvider?.getMeter(SCOPE);
  tracer ??= options.tracerProvider?.getTracer(SCOPE);
  if (options.global && (!meter || !tracer)) {
    const api = loadApi();
    if (api) {
      meter ??= api.metrics.getMeter(SCOPE);
      tracer ??= api.trace.getTracer(SCOPE);
    } else {
      warn?.('telemetry.global is set but @opentelemetry/api is not installed: no metrics or spans');
    }
  }
  if (!meter && !tracer) return undefined;
  const pools = meter ? poolMetricsOf(meter) : undefined;
  return {
    pool: (source) => pools?.add(source),
    unit: tracer ? (info, fn) => runUnit(tracer, info, fn) : (_info, fn) => fn(undefined),
  };
}

/** The default pool name the conventions ask for: `server.address:server.port/db.namespace`. */
export function defaultPoolName(target: { host: string; port: number; database: string }): string {
  const host = target.host.includes(':') ? `[${target.host}]` : target.host;
  return `${host}:${target.port}/${target.database}`;
}

/**
 * One PoolMetrics per meter, shared by every Db that reports to it: a batch callback per
 * Db would observe a shared pool name once per Db, each observation replacing the last
 * (two Dbs on one target, one connection in use each, reported 1 in use), and would stay
 * registered after its Db closed.
 */
const metricsByMeter = new WeakMap<Meter, PoolMetrics>();

function poolMetricsOf(meter: Meter): PoolMetrics {
  let metrics = metricsByMeter.get(meter);
  if (metrics === undefined) {
    metrics = new PoolMetrics(meter);
    metricsByMeter.set(meter, metrics);
  }
  return metrics;
}

/** The figures of pools that share a name, added up (the conventions' series are per name). */
function sumFigures(all: PoolTelemetryFigures[]): PoolTelemetryFigures {
  const sum = { ...CLOSED };
  for (const f of all) for (const key of Object.keys(sum) as (keyof PoolTelemetryFigures)[]) sum[key] += f[key];
  return sum;
}

/** All pools of one meter: one batch callback reads every pool's figures at collection. */
class PoolMetrics {
  private readonly sources = new Set<PoolTelemetrySource>();
  /**
   * Names of closed pools, reported as empty from then on. The SDK's cumulative export
   * repeats a series' last value once its callback stops observing it (that is what
   * Prometheus scrapes), so a closed pool would otherwise show its last connections
   * forever. Kept (names only) rather than reported once, so every reader sees it.
   */
  private readonly retired = new Set<string>();
  private readonly count: ObservableUpDownCounter;
  private readonly idleMax: ObservableUpDownCounter;
  private readonly idleMin: ObservableUpDownCounter;
  private readonly max: ObservableUpDownCounter;
  private readonly pending: ObservableUpDownCounter;
  private readonly timeouts: Counter;
  private readonly createTime: Histogram;
  private readonly waitTime: Histogram;
  private readonly useTime: Histogram;
  private readonly observe: BatchObservableCallback;
  private registered = false;

  constructor(private readonly meter: Meter) {
    const connections = (name: string, description: string): ObservableUpDownCounter =>
      meter.createObservableUpDownCounter(name, { unit: '{connection}', description });
    const seconds = (name: string, description: string): Histogram =>
      meter.createHistogram(name, { unit: 's', description, advice: { explicitBucketBoundaries: TIME_BUCKETS_S } });
    this.count = connections(METRICS.count, 'The number of connections that are currently in state described by the `state` attribute.');
    this.idleMax = connections(METRICS.idleMax, 'The maximum number of idle open connections allowed.');
    this.idleMin = connections(METRICS.idleMin, 'The minimum number of idle open connections allowed.');
    this.max = connections(METRICS.max, 'The maximum number of open connections allowed.');
    this.pending = meter.createObservableUpDownCounter(METRICS.pendingRequests, {
      unit: '{request}',
      description: 'The number of current pending requests for an open connection.',
    });
    this.timeouts = meter.createCounter(METRICS.timeouts, {
      unit: '{timeout}',
      description: 'The number of connection timeouts that have occurred trying to obtain a connection from the pool.',
    });
    this.createTime = seconds(METRICS.createTime, 'The time it took to create a new connection.');
    this.waitTime = seconds(METRICS.waitTime, 'The time it took to obtain an open connection from the pool.');
    this.useTime = seconds(METRICS.useTime, 'The time between borrowing a connection and returning it to the pool.');
    this.observe = (result) => {
      const byName = new Map<string, PoolTelemetryFigures[]>([...this.retired].map((name) => [name, []]));
      for (const source of this.sources) byName.set(source.name, [...(byName.get(source.name) ?? []), source.figures()]);
      for (const [name, all] of byName) {
        const f = sumFigures(all);
        const pool = { [ATTR.poolName]: name };
        result.observe(this.count, f.idle, { ...pool, [ATTR.state]: 'idle' });
        result.observe(this.count, f.inUse, { ...pool, [ATTR.state]: 'used' });
        result.observe(this.idleMax, f.idleMax, pool);
        result.observe(this.idleMin, f.idleMin, pool);
        result.observe(this.max, f.max, pool);
        result.observe(this.pending, f.waiting, pool);
      }
    };
  }

  private get observables(): Observable[] {
    return [this.count, this.idleMax, this.idleMin, this.max, this.pending];
  }

  add(source: PoolTelemetrySource): PoolRecorder {
    // A new Db on the same target takes the name back.
    this.retired.delete(source.name);
    this.sources.add(source);
    if (!this.registered) {
      this.meter.addBatchObservableCallback(this.observe, this.observables);
      this.registered = true;
    }
    const attributes: Attributes = { [ATTR.poolName]: source.name };
    return {
      recordCreate: (ms) => this.createTime.record(ms / 1000, attributes),
      recordWait: (ms) => this.waitTime.record(ms / 1000, attributes),
      recordUse: (ms) => this.useTime.record(ms / 1000, attributes),
      recordTimeout: () => this.timeouts.add(1, attributes),
      detach: () => {
        if (this.sources.delete(source) && ![...this.sources].some((s) => s.name === source.name)) this.retired.add(source.name);
      },
    };
  }
}

// @opentelemetry/api's enum values, inlined so the API package need not be loaded.
const SPAN_KIND_INTERNAL = 0;
const STATUS_ERROR = 2;
const POSTGRES_DEFAULT_PORT = 5432;

function unitAttributes(info: UnitInfo): Attributes {
  const attributes: Attributes = { [ATTR.system]: 'postgresql', [ATTR.poolName]: info.poolName };
  if (info.database !== undefined) attributes[ATTR.namespace] = info.database;
  if (info.serverAddress !== undefined) attributes[ATTR.serverAddress] = info.serverAddress;
  // server.port is conditionally required: when not PostgreSQL's default.
  if (info.serverPort !== undefined && info.serverPort !== POSTGRES_DEFAULT_PORT) attributes[ATTR.serverPort] = info.serverPort;
  if (info.isolationLevel !== undefined) attributes[ATTR.isolationLevel] = info.isolationLevel;
  if (info.readOnly !== undefined) attributes[ATTR.readOnly] = info.readOnly;
  return attributes;
}

/**
 * error.type: the SQLSTATE when there is one (as the conventions ask: it matches
 * db.response.status_code; from a Prisma error, its driver's, never Prisma's own P-code),
 * else the error's class name. Never the message, which can quote values (a unique
 * violation repeats the key).
 */
function errorAttributes(err: unknown): { errorType: string; sqlState: string | undefined } {
  const e = err as { name?: unknown } | null | undefined;
  const sqlState = sqlStateOf(err);
  const name = typeof e?.name === 'string' && e.name !== '' ? e.name : '_OTHER';
  return { errorType: sqlState ?? name, sqlState };
}

/** A thrown error's outcome: the layer says 'unknown' for a connection lost during COMMIT. */
function outcomeOf(err: unknown): string {
  const outcome = (err as { outcome?: unknown } | null | undefined)?.outcome;
  return outcome === 'unknown' ? 'unknown' : 'rolled-back';
}

async function runUnit<T>(tracer: Tracer, info: UnitInfo, fn: (span: UnitSpan) => Promise<T>): Promise<T> {
  // startActiveSpan makes the span the active context for everything fn awaits (with a
  // context manager registered, as the Node SDK does), which is how Prisma's spans nest.
  return tracer.startActiveSpan(UNIT_SPAN, { kind: SPAN_KIND_INTERNAL, attributes: unitAttributes(info) }, async (span: Span) => {
    let attempts = 1;
    const handle: UnitSpan = {
      retry: (error, backoffMs) => {
        const { errorType, sqlState } = errorAttributes(error);
        span.addEvent(RETRY_EVENT, {
          [ATTR.attempts]: attempts,
          [ATTR.errorType]: errorType,
          ...(sqlState === undefined ? {} : { [ATTR.statusCode]: sqlState }),
          'prisma_datalayer.transaction.backoff_ms': backoffMs,
        });
        attempts++;
      },
    };
    try {
      const value = await fn(handle);
      span.setAttributes({ [ATTR.attempts]: attempts, [ATTR.outcome]: 'committed' });
      return value;
    } catch (err) {
      const { errorType, sqlState } = errorAttributes(err);
      span.setAttributes({
        [ATTR.attempts]: attempts,
        [ATTR.outcome]: outcomeOf(err),
        [ATTR.errorType]: errorType,
        ...(sqlState === undefined ? {} : { [ATTR.statusCode]: sqlState }),
      });
      span.setStatus({ code: STATUS_ERROR, message: errorType });
      throw err;
    } finally {
      span.end();
    }
  });
}
