// deploy / drift / status as the package root offers them: loaded on first call, so an
// application that only queries never loads the migration code or the schema engine's
// wrapper at import (cold start of a serverless function).

import type * as Migrate from './migrate.ts';

let loaded: typeof Migrate | undefined;
function migrations(): typeof Migrate {
  // No extension: `migrate.js` in the build, `migrate.ts` under the test runner.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  loaded ??= require('./migrate') as typeof Migrate;
  return loaded;
}

/** Applies pending migrations (see migrate.ts). */
export const deploy: typeof Migrate.deploy = async (options) => migrations().deploy(options);
/** Applied, pending and failed migrations (see migrate.ts). */
export const status: typeof Migrate.status = async (options) => migrations().status(options);
/** Differences between the migrations and the database (see migrate.ts). */
export const drift: typeof Migrate.drift = async (options) => migrations().drift(options);
