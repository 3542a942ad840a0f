// Where the APPLICATION keeps its Prisma schema and migrations, found the way the prisma
// CLI finds them: its prisma.config.ts (`schema`, `migrations.path`) when there is one,
// else `./schema.prisma` or `./prisma/schema.prisma`, with `migrations/` next to the
// schema. Never this package's own files: an installed library has no business applying
// its test schema to someone's database.

import { existsSync, statSync } from 'node:fs';
import path from 'node:path';

/** The config file names the prisma CLI (via c12, `name: 'prisma'`) discovers, in its order. */
const CONFIG_EXTENSIONS = ['.ts', '.mts', '.cts', '.js', '.mjs', '.cjs'];
const CONFIG_BASENAMES = ['prisma.config', path.join('.config', 'prisma'), path.join('.config', 'prisma.config')];
/** prisma CLI's own default schema locations (cli: `schema.prisma`, then `prisma/schema.prisma`). */
const DEFAULT_SCHEMAS = ['schema.prisma', path.join('prisma', 'schema.prisma')];

export interface ProjectPaths {
  /** Migrations directory (absolute). May not exist: callers check. */
  migrationsDir: string;
  /** Schema file or folder (absolute), undefined when none was found. */
  schemaPath: string | undefined;
  /** The prisma config file that was loaded, if any. */
  configFile: string | undefined;
  /** How the paths were chosen, for error messages. */
  source: string;
}

/** The subset of @prisma/config's loader this module relies on (stable across Prisma 6.x/7.x). */
interface ConfigLoader {
  loadConfigFromFile(input: { configRoot?: string; configFile?: string }): Promise<{
    resolvedPath: string | null;
    config?: { schema?: string; migrations?: { path?: string } };
    error?: { _tag: string; error?: Error };
  }>;
}

export class ProjectConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProjectConfigError';
  }
}

export function findConfigFile(projectDir: string): string | undefined {
  for (const base of CONFIG_BASENAMES) {
    for (const ext of CONFIG_EXTENSIONS) {
      const file = path.resolve(projectDir, `${base}${ext}`);
      if (statSync(file, { throwIfNoEntry: false })?.isFile()) return file;
    }
  }
  return undefined;
}

/**
 * @prisma/config is the prisma CLI's own loader (TypeScript config files included). It is
 * a dependency of the `prisma` package the application installs, so it is resolved from
 * there; loaded lazily because only applications with a config file need it.
 */
function configLoader(projectDir: string): ConfigLoader | undefined {
  const attempts: string[][] = [];
  try {
    attempts.push([path.dirname(require.resolve('prisma/package.json', { paths: [projectDir] }))]);
  } catch {
    // No prisma CLI in the application: try a hoisted @prisma/config directly.
  }
  attempts.push([projectDir]);
  for (const paths of attempts) {
    try {
      const loader = require(require.resolve('@prisma/config', { paths })) as Partial<ConfigLoader>;
      if (typeof loader.loadConfigFromFile === 'function') return loader as ConfigLoader;
    } catch {
      // Next location.
    }
  }
  return undefined;
}

/** The application's schema and migrations, as the prisma CLI run in `projectDir` would use them. */
export async function resolveProject(projectDir: string): Promise<ProjectPaths> {
  const dir = path.resolve(projectDir);
  const configFile = findConfigFile(dir);
  let schema: string | undefined;
  let migrations: string | undefined;
  if (configFile !== undefined) {
    const loader = configLoader(dir);
    if (loader === undefined) {
      throw new ProjectConfigError(
        `${configFile} exists but the prisma package (its config loader) is not installed here; install \`prisma\` or pass the migrations directory explicitly`,
      );
    }
    const loaded = await loader.loadConfigFromFile({ configRoot: dir, configFile: path.relative(dir, configFile) });
    if (loaded.error !== undefined) {
      throw new ProjectConfigError(`could not load ${configFile}: ${loaded.error.error?.message ?? loaded.error._tag}`);
    }
    // The loader has already made these absolute, relative to the config file.
    schema = loaded.config?.schema;
    migrations = loaded.config?.migrations?.path;
  }
  const schemaPath = schema ?? DEFAULT_SCHEMAS.map((file) => path.join(dir, file)).find((file) => existsSync(file));
  // The CLI's default: `migrations` in the schema's folder (the folder itself for a multi-file schema).
  const schemaRoot = schemaPath === undefined ? path.join(dir, 'prisma') : isDirectory(schemaPath) ? schemaPath : path.dirname(schemaPath);
  const migrationsDir = migrations ?? path.join(schemaRoot, 'migrations');
  const source =
    configFile === undefined
      ? `no prisma.config.ts in ${dir}; ${schemaPath === undefined ? 'no schema.prisma or prisma/schema.prisma either' : `schema ${schemaPath}`}`
      : `from ${configFile}${migrations === undefined ? ' (no migrations.path: next to the schema)' : ''}`;
  return { migrationsDir, schemaPath, configFile, source };
}

export function isDirectory(file: string): boolean {
  return statSync(file, { throwIfNoEntry: false })?.isDirectory() === true;
}
