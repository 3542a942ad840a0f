// Config → the Prisma driver adapter factory for the configured driver. `pg` uses
// node-postgres through @prisma/adapter-pg; `neon` uses @neondatabase/serverless through
// @prisma/adapter-neon (loaded only then). Nothing here opens a socket: pools connect on
// the first query.

import type { SqlDriverAdapterFactory } from '@prisma/driver-adapter-utils';
import type { DbConfig } from '../config.ts';
import type { EventHub } from '../events.ts';
import type { GuardedPool } from '../pool.ts';
import type { DbCounters } from '../stats.ts';
import type { PoolRecorder } from '../telemetry.ts';
import { neonDriver } from './neon.ts';
import { pgDriver } from './pg.ts';

export interface DriverHandle {
  readonly factory: SqlDriverAdapterFactory;
  /** The layer's pool, once it exists (the Neon adapter creates its pool when Prisma connects). */
  pool(): GuardedPool | undefined;
  /** Ends the pool this layer owns (the pg pool; Neon's ends with Prisma's disconnect). */
  close(): Promise<void>;
}

/** `recorder`: the pool's telemetry (createDb's `telemetry` option); absent, nothing is measured. */
export function createDriver(config: DbConfig, counters: DbCounters, hub: EventHub, recorder?: PoolRecorder): DriverHandle {
  return config.driver === 'pg' ? pgDriver(config, counters, hub, recorder) : neonDriver(config, counters, hub, recorder);
}
