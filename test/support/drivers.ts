// The two drivers under test, as option sets for createDb: `pg` straight to the server,
// `neon` through the real @neondatabase/serverless driver and a local wsproxy bridge
// (the same protocol Neon's proxy speaks), so one test body checks both.
import type { DbOptions } from '../../src/index';
import type { TestDatabase } from './db';
import { startNeonBridge, type NeonBridge } from './neon-bridge';

export interface DriverCase {
  name: 'pg' | 'neon';
  /** Options that point createDb at `db` through this driver. */
  options(db: TestDatabase): DbOptions;
  close(): Promise<void>;
}

export async function driverCase(name: 'pg' | 'neon', db: TestDatabase): Promise<DriverCase> {
  if (name === 'pg') {
    return { name, options: (d) => ({ url: d.url }), close: async () => {} };
  }
  const bridge: NeonBridge = await startNeonBridge({ pgHost: db.host, pgPort: db.port });
  return {
    name,
    options: (d) => ({
      url: d.urlWith(),
      driver: 'neon',
      neon: { wsProxy: bridge.wsProxy, useSecureWebSocket: false },
    }),
    close: () => bridge.close(),
  };
}
