// Config → Prisma driver adapter. `pg` uses node-postgres through @prisma/adapter-pg;
// `neon` uses @neondatabase/serverless over WebSocket through @prisma/adapter-neon.
// Both pools get the same policy (pool.ts). Nothing here opens a socket: pools connect
// on the first query.

import type * as AdapterNeon from '@prisma/adapter-neon';
import { PrismaPg } from '@prisma/adapter-pg';
import type { SqlDriverAdapter, SqlDriverAdapterFactory } from '@prisma/driver-adapter-utils';
import pg from 'pg';
import type { DbConfig } from './config.ts';
import { toUrl } from './config.ts';
import { neonModule, routeHttpEndpoint, socketSettings } from './neon.ts';
import { guardPool, PoolMonitor, poolOptions, type PoolLike } from './pool.ts';
import { sslPlan } from './ssl.ts';

export interface Adapter {
  readonly factory: SqlDriverAdapterFactory;
  readonly monitor: PoolMonitor;
  /** Ends the pool this layer owns (the pg pool; Neon's ends with Prisma's disconnect). */
  close(): Promise<void>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- mixin constructors must take any[]
type ClientCtor = new (...args: any[]) => object;

/**
 * A driver Client class whose connect timeout is its own: pg-pool hands every client
 * the pool's options, where `connectionTimeoutMillis` means the wait for a free slot.
 */
function withConnectTimeout<C extends ClientCtor>(Base: C, connectMs: number, socket?: Record<string, unknown>): C {
  return class extends Base {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    constructor(...args: any[]) {
      const config = args[0] as Record<string, unknown>;
      // pg-pool hides the password as a non-enumerable property: a spread would drop it.
      super({ ...config, password: config.password, connectionTimeoutMillis: connectMs });
      // Neon: this connection's own WebSocket settings (the global neonConfig stays as is).
      if (socket) Object.assign((this as unknown as { neonConfig: object }).neonConfig, socket);
    }
  };
}

export function createAdapter(config: DbConfig): Adapter {
  const ssl = sslPlan(config);
  const monitor = new PoolMonitor(config);
  const options = poolOptions(config, ssl);
  // Idle connections' errors reach the monitor through guardPool's own pool listener;
  // the adapters only add errors of connections checked out for a transaction.
  const onError = (err: Error): void => monitor.emitError(err);

  if (config.driver === 'pg') {
    const pool = new pg.Pool({
      ...options,
      Client: withConnectTimeout(pg.Client as unknown as ClientCtor, config.timeouts.connectMs),
    } as pg.PoolConfig);
    guardPool(pool as unknown as PoolLike, config, ssl, monitor);
    const factory = new PrismaPg(pool, { onConnectionError: onError });
    let ended: Promise<void> | undefined;
    return { factory, monitor, close: () => (ended ??= pool.end()) };
  }

  // Loaded only here: applications on the pg driver never load the Neon packages.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { PrismaNeon, PrismaNeonHttp } = require('@prisma/adapter-neon') as typeof AdapterNeon;
  const neon = neonModule();
  routeHttpEndpoint(config);
  const NeonClient = withConnectTimeout(neon.Client as unknown as ClientCtor, config.timeouts.connectMs, socketSettings(config));
  // Neon's proxy terminates TLS on the WebSocket (wss); the driver turns node-postgres'
  // own `ssl` off inside it (forceDisablePgSSL), so the SSL plan does not apply here.
  const wsFactory = new PrismaNeon({ ...options, ssl: false } as never, { onConnectionError: onError });
  const guardedWs: SqlDriverAdapterFactory = {
    provider: wsFactory.provider,
    adapterName: wsFactory.adapterName,
    async connect() {
      const adapter = await wsFactory.connect();
      // The adapter builds its pool here; it is still empty, so every connection it
      // ever opens gets our Client class.
      const pool = adapter.underlyingDriver() as unknown as PoolLike & { Client: unknown };
      pool.Client = NeonClient;
      guardPool(pool, config, { first: false, fallback: undefined }, monitor);
      return adapter;
    },
  };
  const useHttp = config.mode === 'serverless' && config.neon.httpQueries !== false;
  const factory = useHttp ? httpWithWsTransactions(new PrismaNeonHttp(toUrl(config), {}), guardedWs) : guardedWs;
  return { factory, monitor, close: async () => {} };
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
