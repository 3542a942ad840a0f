// Process plumbing shared by the test harness: where the PostgreSQL binaries are,
// running them as the `postgres` OS user when we are root, free ports, and the
// leftover guards (registry of live servers + a detached watchdog per server that
// tears the server down if the process that started it dies without cleaning up).
import { execFileSync, spawn, spawnSync, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import vm from 'node:vm';

export const PG_BINDIR = process.env.PG_BINDIR || '/usr/lib/postgresql/15/bin';
export const REPO_ROOT = path.resolve(__dirname, '..', '..');

export function pgBin(name: string): string {
  return path.join(PG_BINDIR, name);
}

export function pgbouncerBin(): string {
  for (const p of ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer', '/usr/local/bin/pgbouncer']) {
    if (fs.existsSync(p)) return p;
  }
  return 'pgbouncer';
}

function hasPgbouncer(): boolean {
  if (pgbouncerBin() !== 'pgbouncer') return true;
  return spawnSync('sh', ['-c', 'command -v pgbouncer'], { stdio: 'ignore' }).status === 0;
}

export function missingDeps(): string[] {
  const missing: string[] = [];
  for (const b of ['initdb', 'pg_ctl', 'postgres', 'pg_basebackup']) {
    if (!fs.existsSync(pgBin(b))) missing.push(pgBin(b));
  }
  if (!hasPgbouncer()) missing.push('pgbouncer');
  if (spawnSync('sh', ['-c', 'command -v openssl'], { stdio: 'ignore' }).status !== 0) missing.push('openssl');
  return missing;
}

/** Runs scripts/ensure-deps.sh when a binary is missing; throws if still missing. */
export function ensureDeps(): void {
  if (missingDeps().length === 0) return;
  const r = spawnSync('bash', [path.join(REPO_ROOT, 'scripts', 'ensure-deps.sh')], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const still = missingDeps();
  if (still.length > 0) {
    throw new Error(
      `Test harness dependencies missing: ${still.join(', ')} (scripts/ensure-deps.sh exited ${r.status}). ` +
        'Run scripts/ensure-deps.sh as root.',
    );
  }
}

export const IS_ROOT = typeof process.getuid === 'function' && process.getuid() === 0;

let cachedIds: { uid: number; gid: number } | undefined;
/** uid/gid of the `postgres` OS user (only used when we are root). */
export function postgresIds(): { uid: number; gid: number } {
  if (!cachedIds) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    cachedIds = { uid, gid };
  }
  return cachedIds;
}

/** Spawn options that drop to the postgres user when root. */
export function runAsOpts(): Pick<SpawnOptions, 'uid' | 'gid'> {
  return IS_ROOT ? postgresIds() : {};
}

/** Clean environment for server processes: no PG* variables leaking in from the user's shell. */
export function serverEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('PG') || k.startsWith('npm_') || k.startsWith('JEST')) continue;
    env[k] = v;
  }
  env.LANG = 'C';
  env.LC_ALL = 'C';
  env.TZ = 'UTC';
  return { ...env, ...extra };
}

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command (as postgres when root), resolves with its output; never rejects. */
export function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; asPostgres?: boolean; timeoutMs?: number; input?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const cwd = opts.cwd ?? os.tmpdir();
    const asPostgres = opts.asPostgres !== false && IS_ROOT;
    // As postgres, HOME must not stay root's: libpq (pg_basebackup, a replica's
    // walreceiver) probes ~/.postgresql/ and fails on a permission error.
    const child = spawn(cmd, args, {
      cwd,
      env: serverEnv({ ...(asPostgres ? { HOME: cwd } : {}), ...opts.env }),
      stdio: [opts.input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      ...(opts.asPostgres === false ? {} : runAsOpts()),
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer =
      opts.timeoutMs !== undefined
        ? setTimeout(() => {
            stderr += `\n[harness] ${cmd} timed out after ${opts.timeoutMs} ms`;
            child.kill('SIGKILL');
          }, opts.timeoutMs)
        : undefined;
    child.on('error', (err) => {
      if (timer) clearTimeout(timer);
      resolve({ status: -1, stdout, stderr: stderr + String(err) });
    });
    child.on('close', (status) => {
      if (timer) clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
    if (child.stdin) {
      child.stdin.on('error', () => undefined); // EPIPE when the child exits without reading
      child.stdin.end(opts.input);
    }
  });
}

export async function runChecked(
  cmd: string,
  args: string[],
  opts: Parameters<typeof run>[2] = {},
): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.status !== 0) {
    throw new Error(`${path.basename(cmd)} ${args.join(' ')} failed (exit ${r.status}):\n${r.stderr || r.stdout}`);
  }
  return r;
}

/** A TCP port that was free on 127.0.0.1 a moment ago (bind to port 0, read, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('could not get a free port'))));
    });
  });
}

/** Whether something accepts TCP connections on host:port right now. */
export function portOpen(host: string, port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const s = net.connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Resolves once something accepts TCP connections on host:port (or rejects after timeoutMs). */
export async function waitForPort(host: string, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await portOpen(host, port)) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on ${host}:${port} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Whether pid is a live process (a zombie waiting to be reaped counts as dead). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true; // no /proc: trust kill(0)
  }
}

/** Process start time (clock ticks since boot) from /proc, to tell a pid from a reused one. */
export function pidStartTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22; the comm field (2) may contain spaces, so split after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19];
  } catch {
    return undefined;
  }
}

function cmdlineContains(pid: number, marker: string): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker);
  } catch {
    return false;
  }
}

/** First line of a pid file, if it names a live process whose command line contains marker. */
export function livePidFromFile(pidFile: string, marker: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]?.trim());
    if (Number.isInteger(pid) && pid > 0 && pidAlive(pid) && cmdlineContains(pid, marker)) return pid;
  } catch {
    /* no pid file */
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Directories, registry of live servers, watchdogs.

const UID = typeof process.getuid === 'function' ? process.getuid() : 0;
/** All harness temp dirs live under here (one per OS user running tests). */
export const HARNESS_BASE = path.join(os.tmpdir(), `prisma-datalayer-test-${UID}`);
const REGISTRY_DIR = path.join(HARNESS_BASE, 'registry');

/** Creates a fresh temp dir for one server, owned by postgres (when root), mode 0700. */
export function makeServerDir(prefix: string): string {
  fs.mkdirSync(REGISTRY_DIR, { recursive: true, mode: 0o755 });
  fs.chmodSync(HARNESS_BASE, 0o755);
  const dir = fs.mkdtempSync(path.join(HARNESS_BASE, `${prefix}-`));
  fs.chmodSync(dir, 0o700);
  chownToPostgres(dir);
  return dir;
}

export function chownToPostgres(p: string, recursive = false): void {
  if (!IS_ROOT) return;
  const { uid, gid } = postgresIds();
  fs.chownSync(p, uid, gid);
  if (recursive && fs.statSync(p).isDirectory()) {
    for (const e of fs.readdirSync(p)) chownToPostgres(path.join(p, e), true);
  }
}

export interface RegistryEntry {
  /** The process that owns (started) the server. */
  ownerPid: number;
  ownerStart: string | undefined;
  /** Temp dir to remove. */
  dir: string;
  /** pid file of the server process, and a string its command line must contain. */
  pidFile: string;
  marker: string;
  /** Signal that stops it at once. */
  signal: NodeJS.Signals;
}

function registryFile(dir: string): string {
  return path.join(REGISTRY_DIR, `${path.basename(dir)}.json`);
}

export function register(entry: RegistryEntry): void {
  fs.mkdirSync(REGISTRY_DIR, { recursive: true });
  fs.writeFileSync(registryFile(entry.dir), JSON.stringify(entry));
}

export function unregister(dir: string): void {
  fs.rmSync(registryFile(dir), { force: true });
}

/** Synchronously kills the server of an entry (if still running) and removes its dir. */
export function killEntrySync(entry: Pick<RegistryEntry, 'dir' | 'pidFile' | 'marker' | 'signal'>): void {
  const pid = livePidFromFile(entry.pidFile, entry.marker);
  if (pid !== undefined) {
    try {
      process.kill(pid, entry.signal);
    } catch {
      /* gone */
    }
    const deadline = Date.now() + 10_000;
    while (pidAlive(pid) && Date.now() < deadline) {
      spawnSync('sleep', ['0.05']);
    }
    if (pidAlive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  fs.rmSync(entry.dir, { recursive: true, force: true });
  unregister(entry.dir);
}

/**
 * Kills servers (and removes dirs) left over by test processes that died without
 * cleaning up. Servers of processes that are still alive (e.g. a concurrent test
 * run) are left alone.
 */
export function cleanupStale(): { killed: string[] } {
  const killed: string[] = [];
  let files: string[] = [];
  try {
    files = fs.readdirSync(REGISTRY_DIR);
  } catch {
    return { killed };
  }
  for (const f of files) {
    if (!f.endsWith('.json')) continue;
    const file = path.join(REGISTRY_DIR, f);
    let entry: RegistryEntry;
    try {
      entry = JSON.parse(fs.readFileSync(file, 'utf8')) as RegistryEntry;
    } catch {
      continue; // being written right now, or garbage: leave it
    }
    const ownerAlive = pidAlive(entry.ownerPid) && pidStartTime(entry.ownerPid) === entry.ownerStart;
    if (ownerAlive) continue;
    killEntrySync(entry);
    killed.push(entry.dir);
  }
  // Dirs without a registry entry (a process killed in the instant between creating the
  // dir and registering it, or the entry already removed): remove when clearly old.
  for (const e of fs.readdirSync(HARNESS_BASE, { withFileTypes: true })) {
    if (!e.isDirectory() || e.name === 'registry') continue;
    const dir = path.join(HARNESS_BASE, e.name);
    if (fs.existsSync(registryFile(dir))) continue;
    try {
      if (Date.now() - fs.statSync(dir).mtimeMs < 30 * 60_000) continue;
      if (livePidFromFile(path.join(dir, 'data', 'postmaster.pid'), dir) !== undefined) continue;
      if (livePidFromFile(path.join(dir, 'pgbouncer.pid'), dir) !== undefined) continue;
      fs.rmSync(dir, { recursive: true, force: true });
      killed.push(dir);
    } catch {
      /* raced with its owner: leave it */
    }
  }
  return { killed };
}

const WATCHDOG_SCRIPT = `
owner="$1"; ownerstart="$2"; dir="$3"; pidfile="$4"; marker="$5"; sig="$6"; regfile="$7"
alive() {
  kill -0 "$owner" 2>/dev/null || return 1
  [ -z "$ownerstart" ] && return 0
  st=$(sed 's/.*) //' "/proc/$owner/stat" 2>/dev/null | cut -d' ' -f20)
  [ "$st" = "$ownerstart" ]
}
# Dismissed with SIGTERM: reap our own sleep first so no <defunct> is left for init.
trap 'kill $sl 2>/dev/null; wait $sl 2>/dev/null; exit 0' TERM
while alive; do sleep 0.5 & sl=$!; wait $sl; done
trap - TERM
if [ -f "$pidfile" ]; then
  pid=$(head -n1 "$pidfile")
  if [ -n "$pid" ] && tr '\\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker"; then
    kill "-$sig" "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    kill -KILL "$pid" 2>/dev/null
  fi
fi
rm -rf "$dir" "$regfile"
`;

interface Watchdog {
  pid: number | undefined;
  exited: Promise<void>;
}

/**
 * Starts a detached watchdog: when this process dies (however: crash, SIGKILL, a Jest
 * worker force-killed), it stops the server and removes its dir.
 */
function startWatchdog(entry: Omit<RegistryEntry, 'ownerPid' | 'ownerStart'>): Watchdog {
  const child = spawn(
    'sh',
    [
      '-c',
      WATCHDOG_SCRIPT,
      'datalayer-watchdog',
      String(process.pid),
      pidStartTime(process.pid) ?? '',
      entry.dir,
      entry.pidFile,
      entry.marker,
      entry.signal.replace(/^SIG/, ''),
      registryFile(entry.dir),
    ],
    { detached: true, stdio: 'ignore', cwd: '/' },
  );
  child.unref();
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  return { pid: child.pid, exited };
}

/** Kills the watchdog (no longer needed); the promise resolves once it is reaped (max 2 s). */
function stopWatchdog(w: Watchdog): Promise<void> {
  if (w.pid === undefined) return Promise.resolve();
  const pid = w.pid;
  try {
    process.kill(pid, 'SIGTERM'); // it reaps its `sleep` and exits
  } catch {
    return Promise.resolve();
  }
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    w.exited.then(() => true),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), 2_000);
    }),
  ])
    .then((exited) => {
      if (!exited) {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    })
    .finally(() => clearTimeout(timer));
}

/**
 * The real `process` object. Inside a Jest test file `process` is a sandbox copy whose
 * 'exit' event never fires; the main context's global still has the real one.
 */
function realProcess(): NodeJS.Process {
  try {
    const p = vm.runInThisContext('process') as NodeJS.Process;
    if (p && typeof p.on === 'function') return p;
  } catch {
    /* fall through */
  }
  return process;
}

/** Registers a server for leftover protection: registry entry + watchdog + exit hook. */
export function guardServer(entry: Omit<RegistryEntry, 'ownerPid' | 'ownerStart'>): { release(): Promise<void> } {
  register({ ...entry, ownerPid: process.pid, ownerStart: pidStartTime(process.pid) });
  const watchdog = startWatchdog(entry);
  const onExit = (): void => {
    try {
      killEntrySync(entry);
    } finally {
      void stopWatchdog(watchdog);
    }
  };
  const proc = realProcess();
  proc.on('exit', onExit);
  return {
    /** The server is gone and its dir removed: drop the guards. */
    release(): Promise<void> {
      proc.removeListener('exit', onExit);
      unregister(entry.dir);
      return stopWatchdog(watchdog);
    },
  };
}

export function tail(file: string, lines = 40): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

// ---------------------------------------------------------------------------
// Long-running server processes as direct (detached) children of this process, so
// that this process reaps them when they stop: no <defunct> entries left behind
// waiting for init, which is what daemonizing (pg_ctl, pgbouncer -d) leads to.

export interface ServerProcess {
  readonly pid: number;
  /** Resolves when the process has exited (and been reaped). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  hasExited(): boolean;
}

export function spawnServer(
  cmd: string,
  args: string[],
  opts: { cwd: string; logFile?: string; env?: Record<string, string> },
): ServerProcess {
  const logFd = opts.logFile ? fs.openSync(opts.logFile, 'a') : undefined;
  let done = false;
  let child;
  try {
    child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: serverEnv({ ...(IS_ROOT ? { HOME: opts.cwd } : {}), ...opts.env }),
      stdio: ['ignore', logFd ?? 'ignore', logFd ?? 'ignore'],
      detached: true, // own process group: a Ctrl-C meant for Jest does not hit it half-way
      ...runAsOpts(),
    });
  } finally {
    if (logFd !== undefined) fs.closeSync(logFd);
  }
  child.unref();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      done = true;
      resolve({ code, signal });
    });
    child.once('error', () => {
      done = true;
      resolve({ code: -1, signal: null });
    });
  });
  if (child.pid === undefined) done = true;
  return { pid: child.pid ?? -1, exited, hasExited: () => done };
}

/** Sends `signal`, waits up to timeoutMs for the exit, then SIGKILLs. */
export async function stopServerProcess(p: ServerProcess, signal: NodeJS.Signals, timeoutMs: number): Promise<void> {
  if (p.hasExited()) return;
  try {
    process.kill(p.pid, signal);
  } catch {
    /* already gone */
  }
  if (!(await exitWithin(p, timeoutMs))) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    await exitWithin(p, 5_000);
  }
}

/** Whether the process exits within ms (the timer is cleared, so it never holds the event loop open). */
async function exitWithin(p: ServerProcess, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([p.exited.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
