// Jest globalTeardown: stops the shared primary and removes its files (runs also when
// tests failed). Servers started inside test files are destroyed by their own
// afterAll hooks, and as a backstop by the exit hook / watchdog in proc.ts.
import { GLOBAL_KEY, sharedCluster } from './global-setup';
import { killEntrySync } from './proc';
import { STATE_ENV, type TestState } from './state';
import fs from 'node:fs';
import path from 'node:path';

export default async function globalTeardown(): Promise<void> {
  const cluster = sharedCluster();
  if (cluster) {
    await cluster.destroy();
    delete (globalThis as Record<string, unknown>)[GLOBAL_KEY];
  } else {
    // Different module instance (should not happen): fall back to the state file.
    const file = process.env[STATE_ENV];
    if (file && fs.existsSync(file)) {
      const state = JSON.parse(fs.readFileSync(file, 'utf8')) as TestState;
      const dataDir = path.join(state.dir, 'data');
      killEntrySync({ dir: state.dir, pidFile: path.join(dataDir, 'postmaster.pid'), marker: dataDir, signal: 'SIGQUIT' });
    }
  }
  delete process.env[STATE_ENV];
}
