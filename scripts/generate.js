#!/usr/bin/env node
// Runs `prisma generate` offline. The prisma CLI insists on locating a schema-engine
// binary before it does anything, and that binary is downloaded from Prisma's servers,
// which are unreachable in locked-down networks. Generation never runs the engine, so
// any existing file satisfies the check: we point it at this package's own wasm-backed
// engine executable (see src/engine) unless the caller chose one.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const env = { ...process.env };
if (!env.PRISMA_SCHEMA_ENGINE_BINARY) {
  env.PRISMA_SCHEMA_ENGINE_BINARY = path.join(root, 'bin', 'prisma-datalayer-schema-engine.js');
}
const cli = require.resolve('prisma/build/index.js', { paths: [root] });
const result = spawnSync(process.execPath, [cli, 'generate', ...process.argv.slice(2)], {
  cwd: root,
  env,
  stdio: ['ignore', 'inherit', 'inherit'],
});
process.exit(result.status === null ? 1 : result.status);
