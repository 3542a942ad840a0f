#!/usr/bin/env node
// `npm run build:lib`: the published library in dist/. tsc compiles src/ (declarations,
// source maps); then src/valibot.ts's output is replaced by an esbuild bundle of the
// valibot functions it re-exports, tree-shaken from the pinned valibot, so the package
// loads ~8 kB of valibot (its license included) instead of its whole 213 kB file
// (see src/valibot.ts).
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const dist = path.join(root, 'dist');

fs.rmSync(dist, { recursive: true, force: true });
execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.build.json')], { stdio: 'inherit', cwd: root });

const valibotDir = path.join(root, 'node_modules', 'valibot');
const valibot = JSON.parse(fs.readFileSync(path.join(valibotDir, 'package.json'), 'utf8'));
const license = fs.readFileSync(path.join(valibotDir, 'LICENSE.md'), 'utf8').trim().replace(/\*\//g, '* /');
const out = path.join(dist, 'valibot.js');
require('esbuild').buildSync({
  entryPoints: [path.join(root, 'src', 'valibot.ts')],
  outfile: out,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  // valibot's license travels with the code taken from it.
  banner: { js: `/*\n * Tree-shaken from valibot ${valibot.version} (https://valibot.dev).\n *\n${license.split('\n').map((l) => ` * ${l}`.trimEnd()).join('\n')}\n */` },
  logLevel: 'warning',
});
// tsc's source map described the re-export, not the bundle; its declarations would name
// valibot, which the package does not depend on (no public type comes from it).
fs.rmSync(`${out}.map`, { force: true });
fs.rmSync(path.join(dist, 'valibot.d.ts'), { force: true });
