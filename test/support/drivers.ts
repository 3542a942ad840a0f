// The two drivers under test, as option sets for createDb: `pg` straight to the server,
// `neon` through the real @neondatabase/serverless driver (production defaults) and the
// Neon proxy fixture (test/support/neon-proxy.ts), so one test body checks both.
import type { DbOptions } from '../../src/index';
import { testServer, type TestDatabase } from './db';
import { NEON_TEST_HOST, startNeonProxy, type NeonProxy } from './neon-proxy';

export interface DriverCase {
  name: 'pg' | 'neon';
  /** Options that point createDb at `db` through this driver. */
  options(db: TestDatabase): DbOptions;
  close(): Promise<void>;
}

export async function driverCase(name: 'pg' | 'neon', _db: TestDatabase): Promise<DriverCase> {
  if (name === 'pg') {
    return { name, options: (d) => ({ url: d.url }), close: async () => {} };
  }
  const proxy: NeonProxy = await startNeonProxy({ upstream: testServer().info() });
  return {
    name,
    options: (d) => ({
      // A Neon host: the layer picks the neon driver by itself, as in production.
      url: d.urlWith(undefined, { host: NEON_TEST_HOST, port: 5432 }),
      neon: { wsProxy: proxy.wsProxy, useSecureWebSocket: false, fetchEndpoint: proxy.fetchEndpoint },
    }),
    close: () => proxy.close(),
  };
}
