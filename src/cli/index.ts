// `npx prisma-datalayer <command>`: operations on the database the application is
// configured for. Every command reads the same environment the application does
// (DATABASE_URL, DIRECT_URL, DB_*), so what it reports is what the application gets.
//
// main() resolves to the exit code instead of exiting: bin/prisma-datalayer.js sets
// process.exitCode, and tests call it in-process.

import { ConfigError } from '../errors.ts';
import { MigrationError } from '../migrate.ts';
import { redact } from '../secrets.ts';
import { doctor, formatDoctor, loadDbModule } from './doctor.ts';
import { processIo, type CliIo } from './io.ts';
import { runMigrate } from './migrate.ts';

export type { CliIo } from './io.ts';
export type { DoctorReport, Finding, FindingStatus } from './doctor.ts';

const USAGE = `Usage: prisma-datalayer <command> [options]

Commands:
  doctor                 Connect as the application would and check SSL, application
                         name, pool size against max_connections, pooled/direct URLs,
                         timeouts in force and the server version.
      --instances N      Application instances running at once (default 1, or
                         DB_EXPECTED_INSTANCES).
      --module FILE      Audit the Db that FILE exports (default export, or the export
                         with \`$datalayer\`): its resolved configuration, createDb options
                         included, instead of the environment alone. FILE is imported
                         (ESM or CommonJS), e.g. ./dist/db.js; the Db is closed after.
                         Loading it (top-level awaits included) may take 30 s.
      --export NAME      The export to use when FILE exports several Dbs.
      --strict           Count warnings as problems.
      --json             Machine-readable report.
  migrate deploy         Apply pending migrations (DIRECT_URL if set, else DATABASE_URL).
  migrate status         Compare the migrations with the database; exit 1 if not up to date.
      --migrations-dir D Default: migrations.path of ./prisma.config.ts, else
                         ./prisma/migrations (as the prisma CLI).
      --json             Machine-readable result.
  help                   This text.

Exit codes: 0 fine, 1 problems found or the command failed, 2 wrong usage.
`;

class UsageError extends Error {}

interface Parsed {
  positional: string[];
  flags: Map<string, string | true>;
}

const VALUE_FLAGS = new Set(['instances', 'migrations-dir', 'module', 'export']);
const BOOLEAN_FLAGS = new Set(['json', 'strict', 'help']);

function parse(argv: string[]): Parsed {
  const positional: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '-h') {
      flags.set('help', true);
      continue;
    }
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    if (BOOLEAN_FLAGS.has(name) && eq === -1) flags.set(name, true);
    else if (VALUE_FLAGS.has(name)) {
      const value = eq === -1 ? argv[++i] : arg.slice(eq + 1);
      if (value === undefined || value === '') throw new UsageError(`--${name} needs a value`);
      flags.set(name, value);
    } else throw new UsageError(`unknown option ${arg}`);
  }
  return { positional, flags };
}

function instancesFrom(flag: string | true | undefined, env: Record<string, string | undefined>): number {
  const [source, raw] = typeof flag === 'string' ? ['--instances', flag] : ['DB_EXPECTED_INSTANCES', env.DB_EXPECTED_INSTANCES];
  if (raw === undefined || raw === '') return 1;
  if (!/^\d+$/.test(raw.trim()) || Number(raw) < 1) throw new UsageError(`${source} must be a whole number of at least 1 (got ${JSON.stringify(raw)})`);
  return Number(raw);
}

export async function main(argv: string[], io: CliIo = processIo()): Promise<number> {
  let parsed: Parsed;
  try {
    parsed = parse(argv);
    const [command, sub, ...rest] = parsed.positional;
    if (command === undefined || command === 'help' || parsed.flags.has('help')) {
      (command === undefined && !parsed.flags.has('help') ? io.err : io.out)(USAGE);
      return command === undefined && !parsed.flags.has('help') ? 2 : 0;
    }
    const json = parsed.flags.has('json');
    if (command === 'doctor') {
      if (sub !== undefined) throw new UsageError(`doctor takes no argument (got ${sub})`);
      const instances = instancesFrom(parsed.flags.get('instances'), io.env);
      const modulePath = parsed.flags.get('module');
      const exportName = parsed.flags.get('export');
      if (exportName !== undefined && modulePath === undefined) throw new UsageError('--export needs --module');
      const strict = parsed.flags.has('strict');
      if (typeof modulePath !== 'string') {
        const report = await doctor({ env: io.env, instances, strict });
        io.out(json ? `${JSON.stringify(report, null, 2)}\n` : formatDoctor(report));
        return report.ok ? 0 : 1;
      }
      const { db, label } = await loadDbModule(modulePath, io.cwd, typeof exportName === 'string' ? exportName : undefined);
      let report;
      try {
        report = await doctor({ env: io.env, instances, strict, config: db.config, configFrom: label });
      } finally {
        // The module built a Db (its pool may have connected): close it so the command exits.
        await db.close?.({ deadlineMs: 5_000 });
      }
      io.out(json ? `${JSON.stringify(report, null, 2)}\n` : formatDoctor(report));
      return report.ok ? 0 : 1;
    }
    if (command === 'migrate') {
      if ((sub !== 'deploy' && sub !== 'status') || rest.length > 0) throw new UsageError('use `migrate deploy` or `migrate status`');
      const dir = parsed.flags.get('migrations-dir');
      return await runMigrate({ action: sub, json, ...(typeof dir === 'string' ? { migrationsDir: dir } : {}) }, io);
    }
    throw new UsageError(`unknown command ${command}`);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`prisma-datalayer: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    // Known failures are reported as they are; anything else still without secrets.
    const message = err instanceof ConfigError || err instanceof MigrationError ? err.message : redact(err instanceof Error ? err.message : String(err));
    io.err(`prisma-datalayer: ${message}\n`);
    return 1;
  }
}
