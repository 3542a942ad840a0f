// Jest globalSetup: one shared PostgreSQL 15 primary (TLS + SCRAM) with a migrated
// template database for the whole run. Connection info goes to a JSON file whose
// path is put in process.env.DATALAYER_TEST_STATE (inherited by the workers).
import fs from 'node:fs';
import path from 'node:path';
import { startCluster, type Cluster } from './cluster';
import { cleanupStale, ensureDeps } from './proc';
import { STATE_ENV, type TestState } from './state';
import { buildTemplate, TEMPLATE_DB } from './template';

export const GLOBAL_KEY = '__DATALAYER_TEST_HARNESS__';

export default async function globalSetup(): Promise<void> {
  ensureDeps();
  const { killed } = cleanupStale();
  if (killed.length > 0) {
    console.warn(`[test harness] removed ${killed.length} leftover server(s) of a crashed earlier run`);
  }
  const cluster = await startCluster({ name: 'shared', maxConnections: 200 });
  (globalThis as Record<string, unknown>)[GLOBAL_KEY] = cluster;
  try {
    const template = await buildTemplate(cluster.info());
    const state: TestState = {
      version: 1,
      primary: cluster.info(),
      templateDb: TEMPLATE_DB,
      templateMigrated: template.migrated,
      migrations: template.applied,
      migratedWith: template.migratedWith,
      dir: cluster.dir,
      ownerPid: process.pid,
    };
    const file = path.join(cluster.dir, 'state.json');
    fs.writeFileSync(file, JSON.stringify(state, null, 2));
    process.env[STATE_ENV] = file;
  } catch (err) {
    await cluster.destroy().catch(() => undefined);
    delete (globalThis as Record<string, unknown>)[GLOBAL_KEY];
    throw err;
  }
}

export function sharedCluster(): Cluster | undefined {
  return (globalThis as Record<string, unknown>)[GLOBAL_KEY] as Cluster | undefined;
}
