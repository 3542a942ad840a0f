#!/usr/bin/env node
// `npm run test:repeat -- N`: runs the whole test suite N times (default 5), each run a
// fresh Jest process with its own throwaway servers, and reports every failure with its
// suite and run number. Builds and type-checks once, as `npm test` does before Jest.
// Exit code 0 only if all N runs passed. Meant to expose flaky tests: a failure seen
// here is to be explained and fixed, not retried away.
'use strict';

const { spawnSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const JEST = path.join(ROOT, 'node_modules', 'jest', 'bin', 'jest.js');
// Same flags as `npm test`; the ExperimentalWarning for vm modules is expected noise.
const NODE_FLAGS = ['--experimental-vm-modules', '--disable-warning=ExperimentalWarning'];

function parseArgs(argv) {
  const runs = argv.length > 0 ? Number(argv[0]) : 5;
  if (!Number.isInteger(runs) || runs < 1) {
    console.error(`usage: npm run test:repeat -- N   (N a positive integer, got ${JSON.stringify(argv[0])})`);
    process.exit(2);
  }
  return { runs, jestArgs: argv.slice(1) };
}

function prepare() {
  for (const script of ['build', 'build:demo', 'typecheck']) {
    const r = spawnSync('npm', ['run', script, '--silent'], { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) {
      console.error(`test:repeat: npm run ${script} failed (exit ${r.status})`);
      process.exit(1);
    }
  }
}

/** One Jest run; resolves with its exit code and its combined output. */
function runJest(outputFile, jestArgs) {
  // A clean environment: nothing of an earlier run's harness state is inherited.
  const env = { ...process.env };
  delete env.DATALAYER_TEST_STATE;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...NODE_FLAGS, JEST, '--ci', '--json', `--outputFile=${outputFile}`, ...jestArgs], {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const keep = (chunk) => {
      output += chunk;
      process.stderr.write(chunk);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('close', (code, signal) => resolve({ code: code ?? 1, signal, output }));
  });
}

const firstLines = (text, n = 6) =>
  String(text ?? '')
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.trim() !== '')
    .slice(0, n)
    .join('\n      ');

/** Failures of one run, from Jest's --json report: [{ suite, test, message }]. */
function failuresOf(report) {
  const failures = [];
  for (const suite of report.testResults ?? []) {
    const file = path.relative(ROOT, suite.name);
    const failedTests = (suite.assertionResults ?? []).filter((a) => a.status === 'failed');
    for (const t of failedTests) {
      failures.push({ suite: file, test: t.fullName, message: firstLines((t.failureMessages ?? []).join('\n')) });
    }
    // Errors outside any test (afterAll hooks, errors no test owns, load failures): Jest
    // reports them only inside the suite's message, as "● Test suite failed to run" blocks.
    const suiteErrors = suiteLevelErrors(suite.message);
    if (suite.testExecError && suiteErrors.length === 0) suiteErrors.push(suite.testExecError.message);
    if (suite.status === 'failed' && failedTests.length === 0 && suiteErrors.length === 0) suiteErrors.push(suite.message);
    for (const message of suiteErrors) {
      failures.push({ suite: file, test: 'Test suite failed to run', message: firstLines(message) });
    }
  }
  return failures;
}

const SUITE_HEADER = '● Test suite failed to run';

/** The "● Test suite failed to run" blocks of a suite's failure message (ANSI colours removed). */
function suiteLevelErrors(message) {
  // eslint-disable-next-line no-control-regex
  const lines = String(message ?? '').replace(/\u001b\[[0-9;]*m/g, '').split('\n');
  const blocks = [];
  let current;
  for (const line of lines) {
    const header = line.trim();
    if (header.startsWith('● ')) {
      current = header === SUITE_HEADER ? [] : undefined;
      if (current) blocks.push(current);
    } else if (current) {
      current.push(line);
    }
  }
  return blocks.map((b) => b.join('\n'));
}

async function main() {
  const { runs, jestArgs } = parseArgs(process.argv.slice(2));
  prepare();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'datalayer-test-repeat-'));
  const results = [];
  for (let i = 1; i <= runs; i++) {
    console.error(`\n===== test:repeat: run ${i} of ${runs} =====`);
    const outputFile = path.join(dir, `run-${i}.json`);
    const started = Date.now();
    const { code, signal, output } = await runJest(outputFile, jestArgs);
    const seconds = Math.round((Date.now() - started) / 1000);
    let failures = [];
    let counts = '';
    if (fs.existsSync(outputFile)) {
      const report = JSON.parse(fs.readFileSync(outputFile, 'utf8'));
      failures = failuresOf(report);
      counts = `${report.numPassedTests}/${report.numTotalTests} tests passed`;
    }
    if (code !== 0 && failures.length === 0) {
      // No report, or a failure the report does not show (globalSetup, a crashed worker).
      failures.push({ suite: '(jest)', test: `exit ${code}${signal ? ` (${signal})` : ''}`, message: firstLines(output.split('\n').slice(-15).join('\n'), 15) });
    }
    // globalSetup removes servers a previous run left behind and says so: a fixture leak.
    const leftovers = /removed \d+ leftover server\(s\)[^\n]*/.exec(output)?.[0];
    results.push({ run: i, code, seconds, counts, failures, leftovers });
  }

  console.log('\n===== test:repeat summary =====');
  for (const r of results) {
    const verdict = r.failures.length === 0 ? 'PASS' : `FAIL (${r.failures.length})`;
    console.log(`run ${r.run}: ${verdict}  ${r.counts}  ${r.seconds} s`);
    if (r.leftovers) console.log(`    note: before this run the harness ${r.leftovers}`);
    for (const f of r.failures) {
      console.log(`  ● ${f.suite} › ${f.test}`);
      if (f.message) console.log(`      ${f.message}`);
    }
  }
  const passed = results.filter((r) => r.failures.length === 0).length;
  console.log(`\n${passed} of ${runs} runs passed (reports: ${dir})`);
  process.exit(passed === runs ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
