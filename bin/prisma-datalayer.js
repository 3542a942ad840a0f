#!/usr/bin/env node
'use strict';
require('../dist/cli/index.js').main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // The command has finished and closed what it opened; what an application module
    // loaded by `doctor --module` left running (an interval, a server, a load that never
    // finished) must not keep the process: it ends once its output has had time to go.
    setTimeout(() => process.exit(), 2000).unref();
  },
  (err) => { console.error(err && err.message ? err.message : err); process.exitCode = 1; },
);
