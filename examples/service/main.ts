// Runs the service: `PORT=3000 DATABASE_URL=... node <compiled>/examples/service/main.js`
// (see examples/README.md). Before listening it checks the database with db.verify() and
// exits 1 with the advice for every failed check. On SIGTERM it stops accepting requests, lets the ones in
// flight finish (up to 10 s), then closes the database pool and exits.

import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { createDb, VerificationError, type Db, type VerifyOptions } from '../../src/index.ts';
import { PrismaClient } from '../../src/generated/prisma/client.ts';
import { createApp } from './app.ts';
import { createMetrics, type ServiceMetrics } from './metrics.ts';

export interface RunningService {
  db: Db<PrismaClient>;
  server: ServerType;
  port: number;
  /** Stops accepting connections, drains the database work, closes the pool. */
  stop(): Promise<void>;
}

/**
 * `metrics`: where /metrics reads from. By default the service makes its own and hands
 * its meter provider to the Db it creates; a caller passing its own `db` passes the
 * `metrics` whose provider that Db was given.
 */
export interface ServiceOptions {
  port?: number;
  db?: Db<PrismaClient>;
  metrics?: ServiceMetrics;
  /** The startup check (default: migrations too); `false` skips it. */
  verify?: VerifyOptions | false;
  /** How long stop() lets requests and database work in flight finish, in all. Default 10 000 ms. */
  drainMs?: number;
}

export async function startService(options: ServiceOptions = {}): Promise<RunningService> {
  const metrics = options.metrics ?? createMetrics();
  // Configuration from the environment (DATABASE_URL, DB_*); slow statements logged;
  // pool metrics (OpenTelemetry's database conventions) to the Prometheus exporter.
  const db =
    options.db ??
    createDb({ PrismaClient, applicationName: 'example-service', logger: console, slowQueryMs: 500, telemetry: { meterProvider: metrics.meterProvider } });
  // Fail the deploy, not the first requests: reachable, SSL as configured, application name
  // visible, every committed migration applied.
  try {
    if (options.verify !== false) await db.verify(options.verify ?? { migrations: true });
  } catch (err) {
    await db.close();
    await metrics.shutdown();
    throw err;
  }
  const app = createApp(db, { scrapeMetrics: metrics.scrape });
  let server!: ServerType;
  const port = await new Promise<number>((resolve) => {
    server = serve({ fetch: app.fetch, port: options.port ?? 3000 }, (info: AddressInfo) => resolve(info.port));
  });
  const drainMs = options.drainMs ?? 10_000;
  const stop = async (): Promise<void> => {
    const deadline = Date.now() + drainMs;
    // server.close() waits for every open request, a slow or stalled client's too (Node ends
    // a half-sent request only at its requestTimeout, 300 s): past the drain deadline the
    // connections still open are cut, so the database still gets closed before the platform's SIGKILL.
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), drainMs)));
    if ((await Promise.race([closed, late])) === 'late' && 'closeAllConnections' in server) server.closeAllConnections();
    clearTimeout(timer);
    await db.close({ deadlineMs: Math.max(0, deadline - Date.now()) });
    await metrics.shutdown();
  };
  return { db, server, port, stop };
}

if (require.main === module) {
  startService({ port: Number(process.env.PORT ?? 3000) }).then((service) => {
    console.log(`listening on http://localhost:${service.port}`);
    const shutdown = (signal: NodeJS.Signals): void => {
      console.log(`${signal}: shutting down`);
      void service.stop().then(() => process.exit(0));
    };
    process.once('SIGTERM', shutdown);
    process.once('SIGINT', shutdown);
  }, (err: unknown) => {
    // The failed checks with what to do about each; anything else as it is.
    console.error(err instanceof VerificationError ? err.message : err);
    process.exit(1);
  });
}
