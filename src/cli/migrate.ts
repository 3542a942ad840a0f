// `prisma-datalayer migrate deploy|status`: src/migrate.ts (the wasm schema engine) with
// the application's own configuration: DIRECT_URL when set (migrations need a session,
// which a transaction pooler does not keep), else the application's URL; SSL as the
// application would negotiate it.

import path from 'node:path';
import { MIGRATION_ADVICE } from '../audit.ts';
import { loadConfig } from '../config.ts';
import { deploy, migrationsDirOf, migrationTarget, refuseTransactionPooler, status, withSsl, type MigrateOptions } from '../migrate.ts';
import type { CliIo } from './io.ts';

export interface MigrateCommand {
  action: 'deploy' | 'status';
  migrationsDir?: string;
  json: boolean;
}

export async function runMigrate(cmd: MigrateCommand, io: CliIo): Promise<number> {
  const config = loadConfig({}, io.env);
  const target = migrationTarget(config);
  // The application's migrations (--migrations-dir, else its prisma.config.ts or
  // ./prisma/migrations), never this package's: a missing directory is an error here.
  const migrationsDir = await migrationsDirOf(
    cmd.migrationsDir !== undefined ? { migrationsDir: path.resolve(io.cwd, cmd.migrationsDir) } : { projectDir: io.cwd },
    cmd.action,
  );
  const base: MigrateOptions = { url: target.url, migrationsDir };
  const say = (line: string): void => {
    if (!cmd.json) io.out(`${line}\n`);
  };

  if (cmd.action === 'deploy') {
    refuseTransactionPooler('deploy', target.config.pooler, target.label);
    say(`Applying pending migrations from ${migrationsDir} to ${target.label} ...`);
    const result = await withSsl(target.config, base, deploy);
    if (cmd.json) io.out(`${JSON.stringify({ target: target.label, ...result })}\n`);
    else if (result.applied.length === 0) say('No pending migrations: the database is up to date.');
    else say(`Applied ${result.applied.length} migration${result.applied.length === 1 ? '' : 's'}:\n${result.applied.map((m) => `  - ${m}`).join('\n')}`);
    return 0;
  }

  const result = await withSsl(target.config, base, status);
  if (cmd.json) {
    io.out(`${JSON.stringify({ target: target.label, ...result })}\n`);
    return result.upToDate ? 0 : 1;
  }
  say(`Migration status of ${target.label}`);
  say(`  applied: ${result.applied.length}`);
  const list = (title: string, names: string[], advice: string): void => {
    if (names.length === 0) return;
    say(`  ${title}: ${names.length}\n${names.map((m) => `    - ${m}`).join('\n')}\n    → ${advice}`);
  };
  list('pending', result.pending, MIGRATION_ADVICE.pending);
  list('failed', result.failed, MIGRATION_ADVICE.failed);
  list('edited after being applied', result.edited, MIGRATION_ADVICE.edited);
  list('in the database but not on disk', result.missingLocally, MIGRATION_ADVICE.missingLocally);
  say(result.upToDate ? 'Up to date.' : 'Not up to date.');
  return result.upToDate ? 0 : 1;
}
