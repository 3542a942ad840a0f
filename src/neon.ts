// The Neon driver's process-wide settings. `neonConfig` is global in
// @neondatabase/serverless, so this is the only module that writes to it.

import type * as NeonModule from '@neondatabase/serverless';
import type { DbConfig } from './config.ts';

let loaded: typeof NeonModule | undefined;

/** Loaded on first use, so applications on the pg driver never pay for it. */
export function neonModule(): typeof NeonModule {
  if (!loaded) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    loaded = require('@neondatabase/serverless') as typeof NeonModule;
    if (!loaded.neonConfig.webSocketConstructor && typeof globalThis.WebSocket !== 'function') {
      // Node 20 has no global WebSocket.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      loaded.neonConfig.webSocketConstructor = require('ws');
    }
  }
  return loaded;
}

export function applyNeonConfig(config: DbConfig): void {
  const { neonConfig } = neonModule();
  const n = config.neon;
  // Pipelining the startup messages only works with cleartext password auth, which a
  // self-hosted Postgres (or a bridge to one) usually does not use; it saves one round
  // trip on Neon, where the proxy handles auth.
  neonConfig.pipelineConnect = false;
  if (n.wsProxy !== undefined) neonConfig.wsProxy = n.wsProxy as never;
  if (n.useSecureWebSocket !== undefined) neonConfig.useSecureWebSocket = n.useSecureWebSocket;
  if (n.pipelineTLS !== undefined) neonConfig.pipelineTLS = n.pipelineTLS;
  if (n.fetchEndpoint !== undefined) neonConfig.fetchEndpoint = n.fetchEndpoint as never;
}
