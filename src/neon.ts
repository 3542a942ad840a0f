// The Neon driver's settings. `neonConfig` in @neondatabase/serverless is process-wide,
// but every WebSocket setting can also be set per connection (on `client.neonConfig`),
// so this module applies them per client and leaves the global alone. Only the HTTP
// endpoint is global-only; it is routed by host so other users of the driver in the
// process keep theirs.

import type * as NeonModule from '@neondatabase/serverless';
import type { DbConfig } from './config.ts';

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
export function routeHttpEndpoint(config: DbConfig): void {
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
