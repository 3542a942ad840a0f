// Builds the migrated template database every test database is cloned from.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ConnectionOptions } from 'node:tls';
import { Client } from 'pg';
import { REPO_ROOT } from './proc';
import { clientConfig, queryServer, quoteIdent, serverUrl, tlsOptions, type ServerInfo } from './server';

export const TEMPLATE_DB = 'template_app';
const MIGRATIONS_DIR = path.join(REPO_ROOT, 'prisma', 'migrations');
const MIGRATE_MODULE = path.join(REPO_ROOT, 'src', 'migrate.ts');

interface MigrateModule {
  deploy(opts: { url: string; ssl?: ConnectionOptions }): Promise<{ applied: string[] }>;
}

/** Migration directory names (those with a migration.sql), in apply order. */
export function migrationNames(): string[] {
  if (!fs.existsSync(MIGRATIONS_DIR)) return [];
  return fs
    .readdirSync(MIGRATIONS_DIR, { withFileTypes: true })
    .filter((d) => d.isDirectory() && fs.existsSync(path.join(MIGRATIONS_DIR, d.name, 'migration.sql')))
    .map((d) => d.name)
    .sort();
}

/**
 * Fallback used until src/migrate.ts exists: applies each migration.sql in order and
 * records it in _prisma_migrations exactly like `prisma migrate deploy` would (same
 * table, sha256 checksum), so a later deploy() on a clone sees them as applied.
 */
async function applySqlMigrations(server: ServerInfo, db: string, names: string[]): Promise<void> {
  const client = new Client(clientConfig(server, db));
  await client.connect();
  try {
    await client.query(`CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
      "id"                  VARCHAR(36) PRIMARY KEY NOT NULL,
      "checksum"            VARCHAR(64) NOT NULL,
      "finished_at"         TIMESTAMPTZ,
      "migration_name"      VARCHAR(255) NOT NULL,
      "logs"                TEXT,
      "rolled_back_at"      TIMESTAMPTZ,
      "started_at"          TIMESTAMPTZ NOT NULL DEFAULT now(),
      "applied_steps_count" INTEGER NOT NULL DEFAULT 0
    )`);
    for (const name of names) {
      const sql = fs.readFileSync(path.join(MIGRATIONS_DIR, name, 'migration.sql'), 'utf8');
      const checksum = crypto.createHash('sha256').update(sql).digest('hex');
      await client.query(sql);
      await client.query(
        `INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, applied_steps_count)
         VALUES ($1, $2, now(), $3, 1)`,
        [crypto.randomUUID(), checksum, name],
      );
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

export interface TemplateResult {
  migrated: boolean;
  applied: string[];
  migratedWith: 'deploy' | 'sql' | 'none';
}

/** Creates `template_app` on the server, migrates it, grants the app role, marks it a template. */
export async function buildTemplate(server: ServerInfo, db = TEMPLATE_DB): Promise<TemplateResult> {
  await queryServer(server, `CREATE DATABASE ${quoteIdent(db)} OWNER ${quoteIdent(server.appUser)}`);
  const names = migrationNames();
  let result: TemplateResult;
  if (fs.existsSync(MIGRATE_MODULE)) {
    // Loaded with require so the harness compiles whether or not the module exists yet;
    // Jest's transform hook is active while globalSetup runs, so the .ts file loads.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(MIGRATE_MODULE) as MigrateModule;
    const { applied } = await mod.deploy({ url: serverUrl(server, db), ssl: tlsOptions(server) });
    result = { migrated: names.length > 0, applied, migratedWith: 'deploy' };
  } else if (names.length > 0) {
    await applySqlMigrations(server, db, names);
    result = { migrated: true, applied: names, migratedWith: 'sql' };
  } else {
    result = { migrated: false, applied: [], migratedWith: 'none' };
  }
  // The app role (owner of the database) may use everything the superuser created.
  const grants = [
    `GRANT ALL ON SCHEMA public TO ${quoteIdent(server.appUser)}`,
    `GRANT ALL ON ALL TABLES IN SCHEMA public TO ${quoteIdent(server.appUser)}`,
    `GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO ${quoteIdent(server.appUser)}`,
  ].join('; ');
  await queryServer(server, grants, [], { db });
  await queryServer(server, `ALTER DATABASE ${quoteIdent(db)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false`);
  return result;
}
