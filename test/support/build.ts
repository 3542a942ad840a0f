// Compiles the examples together with the library sources and the test schema's generated
// client they import (examples/tsconfig.json), for tests that run code in a child process:
// dist/ holds the library only. Each call gets its own output directory under .tmp/ (inside
// the project, so the children resolve node_modules), so parallel test files never read
// each other's half-written output.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';

export const ROOT = path.resolve(__dirname, '..', '..');

export interface Build {
  /** The compiled project root: `<dir>/src/index.js`, `<dir>/examples/service/main.js`, ... */
  dir: string;
  remove(): void;
}

export function buildExamples(): Build {
  mkdirSync(path.join(ROOT, '.tmp'), { recursive: true });
  const dir = mkdtempSync(path.join(ROOT, '.tmp', 'build-'));
  const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'examples', '--outDir', dir], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (tsc.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`build failed:\n${tsc.stdout}${tsc.stderr}${tsc.error?.message ?? ''}`);
  }
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
