/**
 * OpenTelemetry (issue 17) against the real PostgreSQL of the harness and the real
 * OpenTelemetry SDK (in-memory metric exporter and span exporter; nothing mocked).
 *
 *  - the telemetry module on a plain pg.Pool, wired from pg-pool's own API the way the
 *    layer's pool wires it: connection counts, pending requests, timeouts, the three
 *    time histograms; unit spans with a real serialization failure; Prisma's spans
 *    nesting under the unit span (@prisma/instrumentation).
 *  - the same checks through createDb({ telemetry }).
 *  - with no telemetry given, no @opentelemetry module is loaded (child process on the compiled sources).
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { context, trace, type Span as ApiSpan } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  AggregationTemporality,
  DataPointType,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
  type HistogramMetricData,
  type MetricData,
} from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { PrismaInstrumentation, registerInstrumentations } from '@prisma/instrumentation';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { Prisma, PrismaClient } from '../src/generated/prisma/client';
import { classifyError, ConfigError, createDb, PoolTimeoutError, type CreateDbOptions, type Db } from '../src/index';
import { ATTR, createTelemetry, defaultPoolName, METRICS, RETRY_EVENT, UNIT_SPAN, type PoolRecorder, type TelemetryOptions } from '../src/telemetry';
import { createTestDatabase, type TestDatabase } from './support/db';
import { holdConnection, latch, rejectionOf, waitFor } from './support/async';
import { buildExamples, type Build } from './support/build';

// ---------------------------------------------------------------------------------
// Real SDK plumbing: a meter provider exporting to memory on demand, a tracer
// provider exporting every ended span to memory, AsyncLocalStorage context.

interface MetricsHarness {
  meterProvider: MeterProvider;
  /** Every metric collected now. */
  collect(): Promise<MetricData[]>;
  shutdown(): Promise<void>;
}

function metricsHarness(): MetricsHarness {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  // A period of an hour: exports happen only on forceFlush, when the test reads.
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
  const meterProvider = new MeterProvider({ readers: [reader] });
  return {
    meterProvider,
    collect: async () => {
      exporter.reset();
      await reader.forceFlush();
      return exporter.getMetrics().flatMap((rm) => rm.scopeMetrics.flatMap((sm) => sm.metrics));
    },
    shutdown: () => meterProvider.shutdown(),
  };
}

function findMetric(metrics: MetricData[], name: string): MetricData | undefined {
  return metrics.find((m) => m.descriptor.name === name);
}

/** The value of `name`'s data point whose attributes include `attrs`; undefined if none. */
function valueOf(metrics: MetricData[], name: string, attrs: Record<string, string>): number | undefined {
  const metric = findMetric(metrics, name);
  if (!metric || metric.dataPointType === DataPointType.HISTOGRAM || metric.dataPointType === DataPointType.EXPONENTIAL_HISTOGRAM) return undefined;
  const point = metric.dataPoints.find((p) => Object.entries(attrs).every(([k, v]) => p.attributes[k] === v));
  return point?.value;
}

/** How many values a histogram holds for `pool`, and their sum. */
function histogramOf(metrics: MetricData[], name: string, pool: string): { count: number; sum: number } {
  const metric = findMetric(metrics, name) as HistogramMetricData | undefined;
  const point = metric?.dataPoints.find((p) => p.attributes[ATTR.poolName] === pool);
  return { count: point?.value.count ?? 0, sum: point?.value.sum ?? 0 };
}

const contextManager = new AsyncLocalStorageContextManager();
const spanExporter = new InMemorySpanExporter();
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spanExporter)] });
// Disabled until registerInstrumentations has given it the provider (enabled at
// construction, it would capture the global provider, a no-op here).
const prismaInstrumentation = new PrismaInstrumentation({ enabled: false });

let testDb: TestDatabase;
/** The test database as node-postgres options (a URL's sslmode would make pg print its sslmode warning). */
const pgConfig = (): pg.PoolConfig => ({ host: testDb.host, port: testDb.port, user: testDb.user, password: testDb.password, database: testDb.name, ssl: testDb.ssl });

beforeAll(async () => {
  context.setGlobalContextManager(contextManager.enable());
  // Prisma's spans go to the same provider as the unit spans.
  registerInstrumentations({ tracerProvider, instrumentations: [prismaInstrumentation] });
  testDb = await createTestDatabase({ prefix: 'otel' });
});

afterAll(async () => {
  prismaInstrumentation.disable();
  await tracerProvider.shutdown();
  context.disable();
  await testDb?.drop();
});

beforeEach(() => spanExporter.reset());

const spansNamed = (name: string): ReadableSpan[] => spanExporter.getFinishedSpans().filter((s) => s.name === name);

/** An account row to fight over; returns its id. */
async function newAccount(balance: number): Promise<number> {
  const rows = await testDb.query<{ id: number }>(`INSERT INTO accounts (owner, balance) VALUES ('otel', $1) RETURNING id`, [balance]);
  return rows[0]!.id;
}

// ---------------------------------------------------------------------------------
// The module on a plain pg.Pool. The adapter below is the wiring the layer's pool does:
// figures from pg-pool's counts, create time from a Client subclass (pg-pool's `Client`
// option), wait time around connect(), use time until release(), timeouts from
// pg-pool's queue-timeout error.

type ConnectCallback = Parameters<pg.Client['connect']>[0] & {};

interface InstrumentedPool {
  pool: pg.Pool;
  checkout(): Promise<{ client: pg.PoolClient; release(): void }>;
  recorder: PoolRecorder;
  end(): Promise<void>;
}

function instrumentedPool(name: string, options: TelemetryOptions, max: number): InstrumentedPool {
  const telemetry = createTelemetry(options);
  if (!telemetry) throw new Error('telemetry expected');
  let recorder!: PoolRecorder;
  class TimedClient extends pg.Client {
    override connect(): Promise<pg.Client>;
    override connect(callback: ConnectCallback): void;
    override connect(callback?: ConnectCallback): Promise<pg.Client> | void {
      const started = performance.now();
      const created = (): void => recorder.recordCreate(performance.now() - started);
      if (!callback) {
        return super.connect().then((client) => {
          created();
          return client;
        });
      }
      // pg-pool's way: a callback receiving the error, if any.
      super.connect(((err: Error | null) => {
        if (!err) created();
        (callback as (e: Error | null) => void)(err);
      }) as ConnectCallback);
    }
  }
  const pool = new pg.Pool({ ...pgConfig(), max, min: 0, connectionTimeoutMillis: 60_000, Client: TimedClient, application_name: name });
  pool.on('error', () => {});
  const registered = telemetry.pool({
    name,
    figures: () => ({
      idle: pool.idleCount,
      inUse: pool.totalCount - pool.idleCount,
      waiting: pool.waitingCount,
      max,
      idleMin: 0,
      idleMax: max,
    }),
  });
  if (!registered) throw new Error('pool recorder expected');
  recorder = registered;
  return {
    pool,
    recorder,
    checkout: async () => {
      const started = performance.now();
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (err) {
        if ((err as Error).message === 'timeout exceeded when trying to connect') recorder.recordTimeout();
        throw err;
      }
      const acquired = performance.now();
      recorder.recordWait(acquired - started);
      return {
        client,
        release: () => {
          client.release();
          recorder.recordUse(performance.now() - acquired);
        },
      };
    },
    end: async () => {
      recorder.detach();
      await pool.end();
    },
  };
}

describe('pool metrics on a pg.Pool (the module alone)', () => {
  let m: MetricsHarness;
  beforeEach(() => (m = metricsHarness()));
  afterEach(() => m.shutdown());

  it('reports used/idle connections and pending requests, with the conventions\' names, kinds and units', async () => {
    const name = 'otel-unit-counts';
    const p = instrumentedPool(name, { meterProvider: m.meterProvider }, 3);
    try {
      const held = await Promise.all([p.checkout(), p.checkout(), p.checkout()]);
      const queued = [p.checkout(), p.checkout()];
      await waitFor(() => p.pool.waitingCount === 2, 10_000);

      const metrics = await m.collect();
      const pool = { [ATTR.poolName]: name };
      expect(valueOf(metrics, METRICS.count, { ...pool, [ATTR.state]: 'used' })).toBe(3);
      expect(valueOf(metrics, METRICS.count, { ...pool, [ATTR.state]: 'idle' })).toBe(0);
      expect(valueOf(metrics, METRICS.pendingRequests, pool)).toBe(2);
      expect(valueOf(metrics, METRICS.max, pool)).toBe(3);
      expect(valueOf(metrics, METRICS.idleMax, pool)).toBe(3);
      expect(valueOf(metrics, METRICS.idleMin, pool)).toBe(0);
      expect(histogramOf(metrics, METRICS.createTime, name).count).toBe(3);
      expect(histogramOf(metrics, METRICS.waitTime, name).count).toBe(3);

      // Instrument kinds and units from model/db/metrics.yaml: an UpDownCounter exports a
      // non-monotonic sum, a Counter a monotonic one.
      const kinds: Array<[string, DataPointType, boolean | undefined, string]> = [
        [METRICS.count, DataPointType.SUM, false, '{connection}'],
        [METRICS.idleMax, DataPointType.SUM, false, '{connection}'],
        [METRICS.idleMin, DataPointType.SUM, false, '{connection}'],
        [METRICS.max, DataPointType.SUM, false, '{connection}'],
        [METRICS.pendingRequests, DataPointType.SUM, false, '{request}'],
        [METRICS.createTime, DataPointType.HISTOGRAM, undefined, 's'],
        [METRICS.waitTime, DataPointType.HISTOGRAM, undefined, 's'],
      ];
      for (const [metricName, type, monotonic, unit] of kinds) {
        const metric = findMetric(metrics, metricName);
        const isMonotonic = metric?.dataPointType === DataPointType.SUM ? metric.isMonotonic : undefined;
        expect({ metricName, type: metric?.dataPointType, isMonotonic, unit: metric?.descriptor.unit }).toEqual({ metricName, type, isMonotonic: monotonic, unit });
      }

      for (const h of held) h.release();
      const later = await Promise.all(queued);
      for (const h of later) h.release();
      const after = await m.collect();
      expect(valueOf(after, METRICS.count, { ...pool, [ATTR.state]: 'used' })).toBe(0);
      expect(valueOf(after, METRICS.count, { ...pool, [ATTR.state]: 'idle' })).toBe(3);
      expect(valueOf(after, METRICS.pendingRequests, pool)).toBe(0);
      expect(histogramOf(after, METRICS.waitTime, name).count).toBe(5);
      const use = histogramOf(after, METRICS.useTime, name);
      expect(use.count).toBe(5);
      // Seconds, not milliseconds: five short checkouts add up to far less than a minute.
      expect(use.sum).toBeLessThan(60);
      expect(findMetric(after, METRICS.useTime)?.descriptor.unit).toBe('s');
    } finally {
      await p.end();
    }
  });

  it('counts a pool timeout once, as a monotonic counter', async () => {
    const name = 'otel-unit-timeout';
    const p = instrumentedPool(name, { meterProvider: m.meterProvider }, 1);
    try {
      const held = await p.checkout();
      p.pool.options.connectionTimeoutMillis = 200;
      const err = await rejectionOf(p.checkout());
      expect((err as Error).message).toBe('timeout exceeded when trying to connect');
      held.release();

      const metrics = await m.collect();
      const timeouts = findMetric(metrics, METRICS.timeouts);
      expect(timeouts?.dataPointType === DataPointType.SUM && timeouts.isMonotonic).toBe(true);
      expect(timeouts?.descriptor.unit).toBe('{timeout}');
      expect(valueOf(metrics, METRICS.timeouts, { [ATTR.poolName]: name })).toBe(1);
    } finally {
      await p.end();
    }
  });

  it('reports a detached (closed) pool as empty, not with its last connections', async () => {
    const name = 'otel-unit-detach';
    const p = instrumentedPool(name, { meterProvider: m.meterProvider }, 2);
    const c = await p.checkout();
    c.release();
    const idle = { [ATTR.poolName]: name, [ATTR.state]: 'idle' };
    expect(valueOf(await m.collect(), METRICS.count, idle)).toBe(1);
    await p.end();
    // Twice: the cumulative export must not bring the last value back later.
    for (let i = 0; i < 2; i++) {
      const metrics = await m.collect();
      expect(valueOf(metrics, METRICS.count, idle)).toBe(0);
      expect(valueOf(metrics, METRICS.max, { [ATTR.poolName]: name })).toBe(0);
    }
  });

  it('is not created at all without a meter or tracer', () => {
    expect(createTelemetry(undefined)).toBeUndefined();
    expect(createTelemetry({})).toBeUndefined();
    expect(createTelemetry({ tracerProvider })?.pool({ name: 'x', figures: () => ({ idle: 0, inUse: 0, waiting: 0, max: 0, idleMin: 0, idleMax: 0 }) })).toBeUndefined();
  });

  it('names a pool server.address:server.port/db.namespace by default', () => {
    expect(defaultPoolName({ host: '127.0.0.1', port: 5433, database: 'app' })).toBe('127.0.0.1:5433/app');
    expect(defaultPoolName({ host: '::1', port: 5432, database: 'app' })).toBe('[::1]:5432/app');
  });
});

describe('unit-of-work spans (the module alone)', () => {
  it('records attempts, outcome and a retry event for a real serialization failure', async () => {
    const telemetry = createTelemetry({ tracerProvider })!;
    const id = await newAccount(100);
    const pool = new pg.Pool({ ...pgConfig(), max: 2 });
    pool.on('error', () => {});
    try {
      let runs = 0;
      // The retry loop of a unit of work, reduced to its telemetry calls.
      await telemetry.unit({ poolName: 'p', isolationLevel: 'Serializable', database: testDb.name, serverAddress: testDb.host, serverPort: testDb.port }, async (span) => {
        for (;;) {
          const client = await pool.connect();
          try {
            runs++;
            await client.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
            const { rows } = await client.query<{ balance: number }>('SELECT balance FROM accounts WHERE id = $1', [id]);
            // Someone else changes the row after this unit's snapshot: its update must fail with 40001.
            if (runs === 1) await testDb.query('UPDATE accounts SET balance = balance + 1 WHERE id = $1', [id]);
            await client.query('UPDATE accounts SET balance = $2 WHERE id = $1', [id, rows[0]!.balance - 10]);
            await client.query('COMMIT');
            return;
          } catch (err) {
            await client.query('ROLLBACK');
            if ((err as { code?: string }).code !== '40001' || runs > 1) throw err;
            span?.retry(err, 0);
          } finally {
            client.release();
          }
        }
      });
      expect(runs).toBe(2);
    } finally {
      await pool.end();
    }
    const [span, ...more] = spansNamed(UNIT_SPAN);
    expect(more).toHaveLength(0);
    expect(span!.kind).toBe(0); // INTERNAL: it contains the CLIENT spans of each statement
    expect(span!.attributes).toMatchObject({
      [ATTR.system]: 'postgresql',
      [ATTR.namespace]: testDb.name,
      [ATTR.serverAddress]: testDb.host,
      [ATTR.serverPort]: testDb.port,
      [ATTR.isolationLevel]: 'Serializable',
      [ATTR.attempts]: 2,
      [ATTR.outcome]: 'committed',
    });
    expect(span!.status.code).toBe(0);
    expect(span!.events.map((e) => [e.name, e.attributes?.[ATTR.statusCode], e.attributes?.[ATTR.attempts]])).toEqual([[RETRY_EVENT, '40001', 1]]);
  });

  it('marks a unit that throws as rolled back, with error.type and no message', async () => {
    const telemetry = createTelemetry({ tracerProvider })!;
    class InsufficientFunds extends Error {
      override name = 'InsufficientFunds';
    }
    const secret = 'card 4111-1111-1111-1111';
    await expect(telemetry.unit({ poolName: 'p' }, async () => Promise.reject(new InsufficientFunds(secret)))).rejects.toThrow(InsufficientFunds);
    const [span] = spansNamed(UNIT_SPAN);
    expect(span!.attributes).toMatchObject({ [ATTR.outcome]: 'rolled-back', [ATTR.attempts]: 1, [ATTR.errorType]: 'InsufficientFunds' });
    expect(span!.status.code).toBe(2);
    expect(JSON.stringify([span!.attributes, span!.status, span!.events])).not.toContain('4111');
  });

  it("is the active span while the unit runs, so Prisma's spans nest under it and carry no parameter values", async () => {
    const telemetry = createTelemetry({ tracerProvider })!;
    const prisma = new PrismaClient({ adapter: new PrismaPg(pgConfig()) });
    const secret = `owner-${Math.random().toString(36).slice(2)}`;
    try {
      await telemetry.unit({ poolName: 'p' }, () => prisma.$transaction((tx) => tx.account.findMany({ where: { owner: secret } })));
    } finally {
      await prisma.$disconnect();
    }
    const spans = spanExporter.getFinishedSpans();
    const [unit] = spans.filter((s) => s.name === UNIT_SPAN);
    const byId = new Map(spans.map((s) => [s.spanContext().spanId, s]));
    const ancestors = (s: ReadableSpan): string[] => {
      const names: string[] = [];
      for (let p = s.parentSpanContext && byId.get(s.parentSpanContext.spanId); p; p = p.parentSpanContext && byId.get(p.parentSpanContext.spanId)) names.push(p.name);
      return names;
    };
    const queries = spans.filter((s) => s.name === 'prisma:client:db_query');
    expect(queries.length).toBeGreaterThan(0);
    for (const q of queries) {
      expect(ancestors(q)).toContain(UNIT_SPAN);
      expect(q.spanContext().traceId).toBe(unit!.spanContext().traceId);
    }
    expect(spans.find((s) => s.name === 'prisma:client:transaction')?.parentSpanContext?.spanId).toBe(unit!.spanContext().spanId);
    // SQL text is there, parameter values are not.
    expect(queries.some((q) => /accounts/.test(String(q.attributes['db.query.text'])))).toBe(true);
    expect(JSON.stringify(spans.map((s) => [s.attributes, s.events]))).not.toContain(secret);
  });

  it('still nests under the caller\'s own span', async () => {
    const telemetry = createTelemetry({ tracerProvider })!;
    const outer = tracerProvider.getTracer('app').startSpan('handler');
    await context.with(trace.setSpan(context.active(), outer as ApiSpan), () => telemetry.unit({ poolName: 'p' }, async () => 1));
    outer.end();
    expect(spansNamed(UNIT_SPAN)[0]!.parentSpanContext?.spanId).toBe(outer.spanContext().spanId);
  });
});

// ---------------------------------------------------------------------------------
// Through createDb. Needs the layer's wiring (createDb's `telemetry` option).

type TelemetryDbOptions = CreateDbOptions<PrismaClient> & { telemetry: TelemetryOptions };

describe('createDb({ telemetry })', () => {
  let m: MetricsHarness;
  const dbs: Array<Db<PrismaClient>> = [];
  beforeEach(() => (m = metricsHarness()));
  afterEach(async () => {
    await Promise.all(dbs.splice(0).map((d) => d.close()));
    await m.shutdown();
  });

  function newDb(applicationName: string, options: Partial<CreateDbOptions<PrismaClient>>): Db<PrismaClient> {
    const all: TelemetryDbOptions = { PrismaClient, url: testDb.url, applicationName, ...options, telemetry: { meterProvider: m.meterProvider, tracerProvider } };
    const d = createDb(all);
    dbs.push(d);
    return d;
  }

  const primaryPool = (): string => defaultPoolName({ host: testDb.host, port: testDb.port, database: testDb.name });

  it('holding 3 connections and queueing 2 callers: used 3, idle 0, pending_requests 2', async () => {
    const db = newDb('otel-db-counts', { pool: { size: 3, maxOverflow: 0, timeoutMs: 60_000 } });
    const releases = await Promise.all([holdConnection(db), holdConnection(db), holdConnection(db)]);
    const gate = latch();
    const queued = [db.session(() => gate.promise), db.session(() => gate.promise)];
    const pool = { [ATTR.poolName]: primaryPool() };
    let metrics: MetricData[] = [];
    await waitFor(async () => {
      metrics = await m.collect();
      return valueOf(metrics, METRICS.pendingRequests, pool) === 2;
    }, 10_000);
    expect(valueOf(metrics, METRICS.count, { ...pool, [ATTR.state]: 'used' })).toBe(3);
    expect(valueOf(metrics, METRICS.count, { ...pool, [ATTR.state]: 'idle' })).toBe(0);
    expect(valueOf(metrics, METRICS.max, pool)).toBe(3);
    for (const release of releases) await release();
    gate.open();
    await Promise.all(queued);
    const after = await m.collect();
    expect(valueOf(after, METRICS.count, { ...pool, [ATTR.state]: 'used' })).toBe(0);
    expect(valueOf(after, METRICS.pendingRequests, pool)).toBe(0);
    expect(histogramOf(after, METRICS.waitTime, primaryPool()).count).toBeGreaterThanOrEqual(5);
    expect(histogramOf(after, METRICS.useTime, primaryPool()).count).toBeGreaterThanOrEqual(5);
    expect(histogramOf(after, METRICS.createTime, primaryPool()).count).toBeGreaterThanOrEqual(3);
  });

  it('reports every pool of a Db: the primary and each replica, by pool name', async () => {
    const replicaUrl = testDb.urlWith({ sslmode: 'require', sslrootcert: testDb.caFile }, { host: 'localhost' });
    const defaults = newDb('otel-db-replica', { replicas: [replicaUrl] });
    const named = createDb({
      PrismaClient,
      url: testDb.url,
      replicas: [replicaUrl],
      telemetry: { meterProvider: m.meterProvider, poolName: 'orders' },
    } as TelemetryDbOptions);
    dbs.push(named);
    await defaults.$queryRawUnsafe('SELECT 1');
    const metrics = await m.collect();
    const pools = new Set(findMetric(metrics, METRICS.max)?.dataPoints.map((p) => p.attributes[ATTR.poolName]));
    const replicaPool = defaultPoolName({ host: 'localhost', port: testDb.port, database: testDb.name });
    expect([...pools].sort()).toEqual([primaryPool(), replicaPool, 'orders', 'orders/replica-1'].sort());
    expect(valueOf(metrics, METRICS.count, { [ATTR.poolName]: primaryPool(), [ATTR.state]: 'idle' })).toBeGreaterThanOrEqual(1);
  });

  it('a closed Db reports its pools as empty', async () => {
    const db = newDb('otel-db-close', {});
    await db.$queryRawUnsafe('SELECT 1');
    const idle = { [ATTR.poolName]: primaryPool(), [ATTR.state]: 'idle' };
    expect(valueOf(await m.collect(), METRICS.count, idle)).toBeGreaterThanOrEqual(1);
    await db.close();
    expect(valueOf(await m.collect(), METRICS.count, idle)).toBe(0);
  });

  it('two Dbs on one target report one series, their sum; one closing leaves the other\'s', async () => {
    const a = newDb('otel-db-two-a', { pool: { size: 2, maxOverflow: 0 } });
    const b = newDb('otel-db-two-b', { pool: { size: 2, maxOverflow: 0 } });
    const releases = [await holdConnection(a), await holdConnection(b)];
    const pool = { [ATTR.poolName]: primaryPool() };
    const metrics = await m.collect();
    // Before: each Db observed the shared name in a callback of its own, the last one replacing the other (used 1, max 2).
    expect(valueOf(metrics, METRICS.count, { ...pool, [ATTR.state]: 'used' })).toBe(2);
    expect(valueOf(metrics, METRICS.max, pool)).toBe(4);
    for (const release of releases) await release();
    await a.close();
    const after = await m.collect();
    expect(valueOf(after, METRICS.max, pool)).toBe(2);
    expect(valueOf(after, METRICS.count, { ...pool, [ATTR.state]: 'idle' })).toBe(1);
  });

  it('a misspelt or wrong telemetry option is a ConfigError naming it, not silently nothing measured', () => {
    const bad: Array<[Record<string, unknown>, string]> = [
      [{ meterprovider: m.meterProvider, tracerProvider }, 'telemetry.meterprovider'],
      [{ meterProvider: m.meterProvider, tracerprovider: tracerProvider }, 'telemetry.tracerprovider'],
      [{ meterProvider: {} }, 'telemetry.meterProvider'],
      [{ tracer: tracerProvider }, 'telemetry.tracer'],
      [{ global: 'yes' }, 'telemetry.global'],
      [{ meterProvider: m.meterProvider, poolName: 'x'.repeat(10_000) }, 'telemetry.poolName'],
      [{ meterProvider: m.meterProvider, poolName: 42 }, 'telemetry.poolName'],
    ];
    for (const [telemetry, setting] of bad) {
      let err: unknown;
      try {
        // Before: createDb returned a Db measuring nothing (or failed with a TypeError).
        dbs.push(createDb({ PrismaClient, url: testDb.url, telemetry } as unknown as TelemetryDbOptions));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues.map((i) => i.setting)).toEqual([setting]);
    }
  });

  it('a createDb refused for a bad replica URL reports no pool: a Db on the same target is reported alone', async () => {
    const bad = { PrismaClient, url: testDb.url, pool: { size: 2, maxOverflow: 0 }, replicas: ['postgresql://u@127.0.0.1:5432/db?sslmode=bogus'] };
    expect(() => createDb({ ...bad, telemetry: { meterProvider: m.meterProvider } } as TelemetryDbOptions)).toThrow(ConfigError);
    const db = newDb('otel-db-refused', { pool: { size: 3, maxOverflow: 0 } });
    await db.$queryRawUnsafe('SELECT 1');
    // Before: the refused Db's primary pool had been built and registered: max 5 (its 2 + this Db's 3), for ever.
    expect(valueOf(await m.collect(), METRICS.max, { [ATTR.poolName]: primaryPool() })).toBe(3);
  });

  it('a pool timeout: timeouts = 1', async () => {
    const db = newDb('otel-db-timeout', { pool: { size: 1, maxOverflow: 0, timeoutMs: 300 } });
    const release = await holdConnection(db);
    const err = await rejectionOf(db.session(async () => 1));
    await release();
    expect(err).toBeInstanceOf(PoolTimeoutError);
    expect(valueOf(await m.collect(), METRICS.timeouts, { [ATTR.poolName]: primaryPool() })).toBe(1);
  });

  it("a unit that never got a connection: its PoolTimeoutError says outcome 'rolled-back' (nothing ran), as its span does", async () => {
    const db = newDb('otel-db-unit-timeout', { pool: { size: 1, maxOverflow: 0, timeoutMs: 300 } });
    const release = await holdConnection(db);
    const err = await rejectionOf(db.transaction((tx) => tx.account.count()));
    await release();
    expect(err).toBeInstanceOf(PoolTimeoutError);
    // Was undefined: the one failure of a unit whose error did not say what became of it, while its span said 'rolled-back'.
    expect((err as PoolTimeoutError).outcome).toBe('rolled-back');
    const failed = spansNamed(UNIT_SPAN).filter((s) => s.status.code === 2);
    expect(failed).toHaveLength(1);
    expect(failed[0]!.attributes).toMatchObject({ [ATTR.outcome]: 'rolled-back', [ATTR.errorType]: 'PoolTimeoutError' });
  });

  it('a unit retried once after a real serialization failure: span attempts = 2', async () => {
    const db = newDb('otel-db-retry', { transaction: { retries: 3 } });
    const id = await newAccount(100);
    let runs = 0;
    await db.transaction(
      async (tx) => {
        runs++;
        const account = await tx.account.findUniqueOrThrow({ where: { id } });
        if (runs === 1) await testDb.query('UPDATE accounts SET balance = balance + 1 WHERE id = $1', [id]);
        await tx.account.update({ where: { id }, data: { balance: account.balance - 10 } });
      },
      { isolationLevel: 'Serializable' },
    );
    expect(runs).toBe(2);
    const units = spansNamed(UNIT_SPAN);
    expect(units).toHaveLength(1);
    expect(units[0]!.attributes).toMatchObject({
      [ATTR.system]: 'postgresql',
      [ATTR.poolName]: primaryPool(),
      [ATTR.isolationLevel]: 'Serializable',
      [ATTR.attempts]: 2,
      [ATTR.outcome]: 'committed',
    });
    expect(units[0]!.events.filter((e) => e.name === RETRY_EVENT)).toHaveLength(1);
    // Prisma's spans of both attempts sit under the one unit span.
    const unitId = units[0]!.spanContext().spanId;
    expect(spanExporter.getFinishedSpans().filter((s) => s.name === 'prisma:client:transaction' && s.parentSpanContext?.spanId === unitId)).toHaveLength(2);
  });

  it('a unit that fails for good carries its outcome and SQLSTATE', async () => {
    const db = newDb('otel-db-fail', {});
    const err = await rejectionOf(db.transaction((tx) => tx.$executeRawUnsafe('SELECT 1/0')));
    // Prisma's own error passes through; the layer's view of it names the SQLSTATE.
    expect(err).toBeInstanceOf(Prisma.PrismaClientKnownRequestError);
    expect(classifyError(err)).toMatchObject({ sqlState: '22012' });
    const [span] = spansNamed(UNIT_SPAN);
    expect(span!.attributes).toMatchObject({ [ATTR.outcome]: 'rolled-back', [ATTR.statusCode]: '22012', [ATTR.errorType]: '22012' });
    expect(span!.status.code).toBe(2);
  });
});

// ---------------------------------------------------------------------------------
// Nothing of OpenTelemetry loads unless asked for. A child process on the compiled sources
// (Jest's module registry is its own): createDb, one query, then require.cache.

let build: Build;
beforeAll(() => void (build = buildExamples()), 120_000);
afterAll(() => build?.remove());

/** A preload that makes @opentelemetry/api unresolvable, as in an application that did not install it. */
const WITHOUT_API = `const M = require('module'); const resolve = M._resolveFilename;
  M._resolveFilename = function (request, ...rest) {
    if (request === '@opentelemetry/api') { const e = new Error("Cannot find module '@opentelemetry/api'"); e.code = 'MODULE_NOT_FOUND'; throw e; }
    return resolve.call(this, request, ...rest);
  };`;

function loadedOtelModules(script: string): Promise<string[]> {
  const program = `
    const { createDb } = require('./src/index.js');
    const { PrismaClient } = require('./src/generated/prisma/client.js');
    (async () => {
      ${script}
      const loaded = Object.keys(require.cache).filter((k) => k.includes('@opentelemetry'));
      process.stdout.write(JSON.stringify(loaded));
    })().catch((err) => { console.error(err); process.exit(1); });`;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', program], { cwd: build.dir, env: { ...process.env, DATABASE_URL: testDb.url }, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as string[]);
    });
  });
}

describe('without telemetry', () => {
  it('loads no @opentelemetry module (createDb + a query + close)', async () => {
    const loaded = await loadedOtelModules(`
      const db = createDb({ PrismaClient, url: process.env.DATABASE_URL });
      await db.transaction((tx) => tx.account.count());
      await db.close();`);
    expect(loaded).toEqual([]);
  });

  it('createDb({ telemetry: { global: true } }) loads @opentelemetry/api (control through createDb)', async () => {
    const loaded = await loadedOtelModules(`
      const db = createDb({ PrismaClient, url: process.env.DATABASE_URL, telemetry: { global: true } });
      await db.transaction((tx) => tx.account.count());
      await db.close();`);
    expect(loaded.some((k) => k.includes(`${path.sep}@opentelemetry${path.sep}api${path.sep}`))).toBe(true);
  });

  it('telemetry: { global: true } without @opentelemetry/api installed says so, without a logger too', async () => {
    const program = `${WITHOUT_API}
      const { createDb } = require('./src/index.js');
      const { PrismaClient } = require('./src/generated/prisma/client.js');
      process.on('warning', (w) => process.stdout.write(JSON.stringify({ code: w.code, message: w.message }) + '\\n'));
      const db = createDb({ PrismaClient, url: process.env.DATABASE_URL, telemetry: { global: true } });
      db.close().then(() => setTimeout(() => {}, 50));`;
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, ['-e', program], { cwd: build.dir, env: { ...process.env, DATABASE_URL: testDb.url }, timeout: 30_000 }, (err, out, stderr) => {
        if (err) reject(new Error(`${err.message}\n${stderr}`));
        else resolve(out);
      });
    });
    // Before: nothing at all (the warning went only to a logger, and there was none): no metrics, no spans, no word.
    const warnings = stdout.split('\n').filter(Boolean).map((line) => JSON.parse(line) as { code?: string; message: string });
    expect(warnings).toContainEqual({ code: 'PRISMA_DATALAYER_TELEMETRY', message: expect.stringMatching(/@opentelemetry\/api is not installed/) });
  });

  it('the check sees @opentelemetry/api once telemetry is asked for (control)', async () => {
    const loaded = await loadedOtelModules(`
      require('./src/telemetry.js').createTelemetry({ global: true });`);
    expect(loaded.some((k) => k.includes(`${path.sep}@opentelemetry${path.sep}api${path.sep}`))).toBe(true);
  });
});
