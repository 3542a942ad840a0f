// `prisma-datalayer migrate deploy|status`: src/migrate.ts (the wasm schema engine) with
// the application's own configuration: DIRECT_URL when set (migrations need a session,
// which a transaction pooler does not keep), else the application's URL; SSL as the
// application would negotiate it.

import path from 'node:path';
import type { ConnectionOptions } from 'node:tls';
import { loadConfig, toUrl, type DbConfig } from '../config.ts';
import { deploy, migrationsDirOf, status, type MigrateOptions } from '../migrate.ts';
import { describeUrl } from '../secrets.ts';
import { sslPlan } from '../ssl.ts';
import type { CliIo } from './io.ts';

export interface MigrateCommand {
  action: 'deploy' | 'status';
  migrationsDir?: string;
  json: boolean;
}

function migrationTarget(config: DbConfig): { url: string; label: string } {
  if (config.directUrl !== undefined) return { url: config.directUrl, label: `DIRECT_URL ${describeUrl(config.directUrl)}` };
  const url = toUrl(config);
  return { url, label: `DATABASE_URL ${describeUrl(url)}` };
}

/** The SSL attempts libpq would make for this sslmode: prefer/allow have a second one. */
function sslAttempts(config: DbConfig): (false | ConnectionOptions)[] {
  const plan = sslPlan(config);
  return plan.fallback === undefined ? [plan.first] : [plan.first, plan.fallback];
}

async function withSsl<T>(config: DbConfig, base: MigrateOptions, run: (o: MigrateOptions) => Promise<T>): Promise<T> {
  const attempts = sslAttempts(config);
  for (let i = 0; ; i++) {
    try {
      return await run({ ...base, ssl: attempts[i] });
    } catch (err) {
      const other = /does not support SSL|no encryption/i.test((err as Error).message);
      if (!other || i + 1 >= attempts.length) throw err;
    }
  }
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
    say(`Applying pending migrations from ${migrationsDir} to ${target.label} ...`);
    const result = await withSsl(config, base, deploy);
    if (cmd.json) io.out(`${JSON.stringify({ target: target.label, ...result })}\n`);
    else if (result.applied.length === 0) say('No pending migrations: the database is up to date.');
    else say(`Applied ${result.applied.length} migration${result.applied.length === 1 ? '' : 's'}:\n${result.applied.map((m) => `  - ${m}`).join('\n')}`);
    return 0;
  }

  const result = await withSsl(config, base, status);
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
  list('pending', result.pending, 'run `prisma-datalayer migrate deploy`');
  list('failed', result.failed, 'fix the cause, then mark it with `prisma migrate resolve --rolled-back <name>` (or --applied) and deploy again');
  list('edited after being applied', result.edited, 'restore the applied migration.sql; put changes in a new migration');
  list('in the database but not on disk', result.missingLocally, 'deploy from the revision that has them, or check the migrations directory');
  say(result.upToDate ? 'Up to date.' : 'Not up to date.');
  return result.upToDate ? 0 : 1;
}
