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
import { toUrl, type DbConfig } from '../config.ts';
import type { EventHub } from '../events.ts';
import { GuardedPool, type PoolClient, type RawConnect, type RawPool } from '../pool.ts';
import { SslChoice } from '../ssl.ts';
import type { DbCounters } from '../stats.ts';
import { guardedClientClass, type ClientClass } from './client.ts';
import type { DriverHandle } from './index.ts';
import { clientPolicy, poolOptions } from './options.ts';

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
  // Node 20 has no global WebSocket.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  if (typeof globalThis.WebSocket !== 'function') settings.webSocketConstructor = require('ws');
  if (n.wsProxy !== undefined) {
    settings.wsProxy = n.wsProxy;
    // Pipelining the startup only works with cleartext password auth, which Neon's
    // proxy uses and a self-hosted Postgres (SCRAM) behind another proxy does not.
    settings.pipelineConnect = false;
  }
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

export function neonDriver(config: DbConfig, counters: DbCounters, hub: EventHub): DriverHandle {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { PrismaNeon, PrismaNeonHttp } = require('@prisma/adapter-neon') as typeof AdapterNeon;
  const settings = socketSettings(config);
  const configure = (client: object): void => void Object.assign((client as { neonConfig: object }).neonConfig, settings);
  const NeonClient = guardedClientClass(neonModule().Client as unknown as ClientClass, clientPolicy(config, undefined, configure));
  routeHttpEndpoint(config);
  // Neon's proxy terminates TLS on the WebSocket (wss); the driver turns node-postgres'
  // own `ssl` off inside it (forceDisablePgSSL), so the SSL plan does not apply here.
  const noSsl = new SslChoice({ first: false, fallback: undefined });
  const wsFactory = new PrismaNeon({ ...poolOptions(config), ssl: false } as never, { onConnectionError: (err) => void hub.fail(err) });
  let guard: GuardedPool | undefined;
  const ws: SqlDriverAdapterFactory = {
    provider: wsFactory.provider,
    adapterName: wsFactory.adapterName,
    async connect() {
      const adapter = await wsFactory.connect();
      const pool = adapter.underlyingDriver() as unknown as NeonPool;
      pool.Client = NeonClient;
      const connect = pool.connect as unknown as (cb: unknown) => void;
      const rawConnect: RawConnect = (callback) => void connect.call(pool, callback);
      const current = new GuardedPool(pool, rawConnect, config, noSsl, counters, hub);
      pool.connect = () => current.connect();
      pool.query = (text, values) => current.query(text, values);
      guard = current;
      return adapter;
    },
  };
  const useHttp = config.mode === 'serverless' && config.neon.httpQueries !== false;
  const factory = useHttp ? httpWithWsTransactions(new PrismaNeonHttp(toUrl(config), {}), ws) : ws;
  // The WebSocket pool ends with Prisma's disconnect (the adapter's dispose).
  return { factory, pool: () => guard, close: async () => {} };
}

/**
 * Serverless Neon: single statements over Neon's HTTP endpoint (no connection at all),
 * transactions over one short-lived WebSocket connection, since HTTP rejects them.
 */
function httpWithWsTransactions(http: SqlDriverAdapterFactory, ws: SqlDriverAdapterFactory): SqlDriverAdapterFactory {
  return {
    provider: http.provider,
    adapterName: http.adapterName,
    async connect(): Promise<SqlDriverAdapter> {
      const [h, w] = await Promise.all([http.connect(), ws.connect()]);
      return {
        provider: h.provider,
        adapterName: h.adapterName,
        queryRaw: (q) => h.queryRaw(q),
        executeRaw: (q) => h.executeRaw(q),
        executeScript: (s) => w.executeScript(s),
        startTransaction: (level) => w.startTransaction(level),
        getConnectionInfo: () => w.getConnectionInfo?.() ?? { supportsRelationJoins: true },
        dispose: async () => {
          await Promise.all([h.dispose(), w.dispose()]);
        },
      };
    },
  };
}
