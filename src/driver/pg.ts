// node-postgres through @prisma/adapter-pg. The adapter takes a `pg.Pool` instance, so the
// layer hands it a subclass whose `connect` and `query` are the layer's pool (GuardedPool):
// the adapter's transactions check out through `connect`, its single statements through
// `query`. Everything else is pg-pool's own. test/driver/pg.test.ts fails when the adapter
// stops calling these two methods.

import { PrismaPg } from '@prisma/adapter-pg';
import type { SqlDriverAdapterFactory } from '@prisma/driver-adapter-utils';
import pg from 'pg';
import type { DbConfig } from '../config.ts';
import type { EventHub } from '../events.ts';
import { GuardedPool, type PoolClient, type RawConnect } from '../pool.ts';
import { SslChoice, sslPlan } from '../ssl.ts';
import type { DbCounters } from '../stats.ts';
import type { PoolRecorder } from '../telemetry.ts';
import { guardedClientClass, type ClientClass } from './client.ts';
import type { DriverHandle } from './index.ts';
import { adapterSchema, clientPolicy, poolOptions } from './options.ts';

export function pgDriver(config: DbConfig, counters: DbCounters, hub: EventHub, recorder?: PoolRecorder): DriverHandle {
  const ssl = new SslChoice(sslPlan(config));
  const policy = clientPolicy(config, ssl, undefined, recorder);
  const Client = guardedClientClass(pg.Client as unknown as ClientClass, policy);
  let guard: GuardedPool | undefined;

  class LayerPool extends pg.Pool {
    // @ts-expect-error -- the adapter uses the promise form; the callback form is served too.
    override connect(callback?: (err: Error | undefined, client?: PoolClient, done?: () => void) => void): Promise<PoolClient> | void {
      const connected = guard!.connect();
      if (callback === undefined) return connected;
      connected.then((client) => callback(undefined, client, () => client.release()), (err: Error) => callback(err));
    }
    // @ts-expect-error -- likewise: `query(config, values)` returning a promise.
    override query(text: unknown, values?: unknown): Promise<unknown> {
      return guard!.query(text, values);
    }
  }

  const binding = config.channelBinding === 'disable' ? {} : { enableChannelBinding: true };
  const pool = new LayerPool({ ...poolOptions(config), ...binding, Client } as unknown as pg.PoolConfig);
  const rawConnect: RawConnect = (callback) => void (pg.Pool.prototype.connect as (cb: unknown) => void).call(pool, callback);
  guard = new GuardedPool(pool, rawConnect, config, ssl, counters, hub, recorder, policy.opening);
  // Outside a unit, behind a transaction-mode pooler no statement_timeout reaches the server
  // (it is set inside units only): a long statement there is cut by the client, not silence.
  if (!config.pooler) policy.onSilence = (sentAt) => guard!.wentSilent(sentAt);
  const adapter = new PrismaPg(pool as unknown as pg.Pool, { ...adapterSchema(config), onConnectionError: (err) => void hub.fail(err) });
  // Prisma connects the adapter on its first query (or $connect), then loads its query compiler: the pool's first connection opens meanwhile.
  const factory: SqlDriverAdapterFactory = {
    provider: adapter.provider,
    adapterName: adapter.adapterName,
    connect: () => {
      guard!.warm();
      return adapter.connect();
    },
  };
  let ended: Promise<void> | undefined;
  return { factory, pool: () => guard, close: () => (ended ??= guard!.end()) };
}
