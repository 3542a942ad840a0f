// The JSON file through which globalSetup hands the shared server to the test workers.
import fs from 'node:fs';
import type { ServerInfo } from './server';

export const STATE_ENV = 'DATALAYER_TEST_STATE';

export interface TestState {
  version: 1;
  /** The shared primary (TLS on, password auth) every test file creates its database on. */
  primary: ServerInfo;
  /** Migrated template database ('template_app'); IS_TEMPLATE, connections not allowed. */
  templateDb: string;
  /** Whether the template has the app schema (false while prisma/migrations is empty). */
  templateMigrated: boolean;
  /** Migration names applied to the template. */
  migrations: string[];
  /** How the template was migrated: src/migrate.ts deploy(), raw migration.sql files, or nothing to apply. */
  migratedWith: 'deploy' | 'sql' | 'none';
  /** Temp dir of the shared primary. */
  dir: string;
  /** pid of the Jest main process that owns the shared primary. */
  ownerPid: number;
}

let cached: TestState | undefined;

export function readState(): TestState {
  if (cached) return cached;
  const file = process.env[STATE_ENV];
  if (!file) {
    throw new Error(
      `${STATE_ENV} is not set: the shared test server is started by Jest's globalSetup ` +
        '(test/support/global-setup.ts). Run the tests with `npx jest` / `npm test`.',
    );
  }
  cached = JSON.parse(fs.readFileSync(file, 'utf8')) as TestState;
  return cached;
}
