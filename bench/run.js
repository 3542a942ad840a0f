#!/usr/bin/env node
// Entry point of `npm run bench`. The benchmark and the test harness it reuses
// (test/support: throwaway PostgreSQL, migrated template) are TypeScript; this loader
// transpiles them in memory (typescript.transpileModule, no type check: `npm run bench`
// type-checks with tsconfig.bench.json first), so they run from their own location and
// the harness' paths (REPO_ROOT, prisma/migrations, src/migrate.ts) stay right.
// What is measured is never transpiled here: the variants load the compiled build
// (dist/index.js, the test schema's client compiled to bench/.build/generated) and
// node_modules as an application would.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const ts = require('typescript');

const root = path.resolve(__dirname, '..');
const options = {
  module: ts.ModuleKind.CommonJS,
  target: ts.ScriptTarget.ES2022,
  esModuleInterop: true,
  inlineSourceMap: true,
  isolatedModules: true,
};
require.extensions['.ts'] = function loadTs(module, filename) {
  if (!filename.startsWith(root + path.sep) || filename.includes(`${path.sep}node_modules${path.sep}`)) {
    throw new Error(`bench loader: refusing to transpile ${filename}`);
  }
  const source = fs.readFileSync(filename, 'utf8');
  const { outputText } = ts.transpileModule(source, { compilerOptions: options, fileName: filename });
  module._compile(outputText, filename);
};
process.setSourceMapsEnabled?.(true);

require('./main.ts')
  .main()
  .then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
