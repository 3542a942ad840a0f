// The Hono service example, end to end: real HTTP on port 0, the real database.
import { createDb } from '../../src/index';
import { PrismaClient } from '../../src/generated/prisma/client';
import { startService, type RunningService } from '../../examples/service/main';
import { createMetrics } from '../../examples/service/metrics';
import type { ErrorBody } from '../../examples/shared/http';
import { createTestDatabase, type TestDatabase } from '../support/db';
import { spawn } from 'node:child_process';
import { connect, createServer } from 'node:net';
import path from 'node:path';
import { buildExamples, ROOT } from '../support/build';

let testDb: TestDatabase;
let service: RunningService;
let base: string;
const APP = `example-service-${process.pid}`;
const errors: string[] = [];
let consoleError: jest.SpyInstance;

beforeAll(async () => {
  testDb = await createTestDatabase();
  const metrics = createMetrics();
  service = await startService({
    port: 0,
    db: createDb({ PrismaClient, url: testDb.appUrl, applicationName: APP, telemetry: { meterProvider: metrics.meterProvider } }),
    metrics,
  });
  base = `http://127.0.0.1:${service.port}`;
  // The service logs 5xx failures; keep them to check what reaches the log, too.
  consoleError = jest.spyOn(console, 'error').mockImplementation((...args: unknown[]) => void errors.push(args.map(String).join(' ')));
});
afterAll(async () => {
  consoleError?.mockRestore();
  await service?.stop();
  await testDb?.drop();
});

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: unknown; id: string | null; text: string }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as unknown, id: res.headers.get('x-request-id'), text };
}

describe('service example', () => {
  it('GET /health answers from db.health()', async () => {
    const res = await call('GET', '/health');
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'healthy', ssl: { active: true }, isReplica: false, serverVersion: expect.stringMatching(/^15\./) });
  });

  it('GET /metrics serves the pool metrics in Prometheus text format', async () => {
    await call('GET', '/health');
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    const pool = `${testDb.host}:${testDb.port}/${testDb.name}`;
    // The conventions' names with Prometheus' dots → underscores; a gauge-like sum per state.
    const idle = new RegExp(`^db_client_connection_count\\{[^}]*db_client_connection_pool_name="${pool.replace(/[.]/g, '\\.')}"[^}]*db_client_connection_state="idle"[^}]*\\} (\\d+)`, 'm');
    expect(text).toMatch(idle);
    expect(Number(idle.exec(text)![1])).toBeGreaterThanOrEqual(1);
    expect(text).toMatch(/^# TYPE db_client_connection_wait_time(_seconds)? histogram$/m);
    expect(text).not.toContain(testDb.appPassword);
  });

  it('creates and reads a user, echoing the caller’s correlation id or generating one', async () => {
    const created = await call('POST', '/users', { email: `ann-${process.pid}@example.com`, name: 'Ann' }, { 'x-request-id': 'req-123' });
    expect(created.status).toBe(201);
    expect(created.id).toBe('req-123');
    const id = (created.body as { id: number }).id;
    const read = await call('GET', `/users/${id}`);
    expect(read.status).toBe(200);
    expect(read.body).toMatchObject({ id, name: 'Ann' });
    expect(read.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(await testDb.query('SELECT name FROM users WHERE id = $1', [id])).toEqual([{ name: 'Ann' }]);
  });

  it('turns a database error into a sanitized body with the correlation id', async () => {
    const secret = `zz-${testDb.appPassword.slice(0, 8)}-VALUE`;
    const res = await call('GET', `/users/by-code/${encodeURIComponent(secret)}`, undefined, { 'x-request-id': 'req-db-error' });
    expect(res.status).toBe(400);
    expect(res.id).toBe('req-db-error');
    expect(res.body).toEqual<ErrorBody>({
      error: { code: 'invalid-input', message: 'The request contains an invalid value.', correlationId: 'req-db-error' },
    });
    expect(res.text).not.toContain('VALUE');
    expect(res.text).not.toMatch(/SELECT|users|22P02/);
    expect(res.text).not.toContain(testDb.appPassword);
  });

  it('maps a unique violation to 409 and a broken business rule to its own status, rolling the unit back', async () => {
    const email = `dup-${process.pid}@example.com`;
    expect((await call('POST', '/users', { email })).status).toBe(201);
    const dup = await call('POST', '/users', { email }, { 'x-request-id': 'req-dup' });
    expect(dup.status).toBe(409);
    expect(dup.body).toEqual({ error: { code: 'conflict', message: 'The resource already exists.', correlationId: 'req-dup' } });
    expect(dup.text).not.toContain(email);

    const [a, b] = await testDb.query<{ id: number }>(`INSERT INTO accounts (owner, balance) VALUES ('a', 100), ('b', 0) RETURNING id`);
    const ok = await call('POST', '/transfers', { from: a!.id, to: b!.id, amount: 60, reference: `t1-${process.pid}` });
    expect(ok.status).toBe(201);
    const short = await call('POST', '/transfers', { from: a!.id, to: b!.id, amount: 60, reference: `t2-${process.pid}` }, { 'x-request-id': 'req-funds' });
    expect(short.status).toBe(422);
    expect(short.body).toEqual({ error: { code: 'insufficient-funds', message: 'The source account cannot cover the amount.', correlationId: 'req-funds' } });
    const balances = await testDb.query<{ balance: number }>('SELECT balance FROM accounts WHERE id = ANY($1) ORDER BY id', [[a!.id, b!.id]]);
    expect(balances.map((r) => r.balance)).toEqual([40, 60]);
  });

  it('answers 503 with a sanitized body when the database is unreachable', async () => {
    // The database goes away after startup (the startup check would refuse to start).
    const down = await startService({
      port: 0,
      verify: false,
      db: createDb({ PrismaClient, url: 'postgresql://app:Sup3r-Secret@127.0.0.1:1/x', applicationName: `${APP}-down`, timeouts: { connectMs: 1000 } }),
    });
    try {
      const res = await fetch(`http://127.0.0.1:${down.port}/health`);
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ status: 'unhealthy' });
      const write = await fetch(`http://127.0.0.1:${down.port}/users`, { method: 'POST', body: JSON.stringify({ email: 'x@example.com' }), headers: { 'x-request-id': 'req-down' } });
      const text = await write.text();
      expect(write.status).toBe(503);
      expect(JSON.parse(text)).toEqual({ error: { code: 'unavailable', message: 'The database is unavailable, try again shortly.', correlationId: 'req-down', retryable: true } });
      expect(text).not.toMatch(/Sup3r-Secret|127\.0\.0\.1|ECONNREFUSED/);
      // The log has the detail, tied to the same id, still without the password.
      const logged = errors.find((line) => line.includes('req-down'));
      expect(logged).toMatch(/ECONNREFUSED/);
      expect(logged).not.toContain('Sup3r-Secret');
    } finally {
      await down.stop();
    }
  });
});

/** A loopback port nothing listens on: a database server that is down. */
function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

describe('service example, stopping', () => {
  it('stop() with a client that never finishes its request: the connection is cut at the drain deadline and the database is closed', async () => {
    const db = createDb({ PrismaClient, url: testDb.appUrl, applicationName: `${APP}-stop` });
    const running = await startService({ port: 0, db, verify: false, drainMs: 1000 });
    // Headers sent, the body never completed: Node would wait for it until its requestTimeout (300 s).
    const slow = connect(running.port, '127.0.0.1');
    slow.on('error', () => undefined);
    await new Promise((resolve) => slow.once('connect', resolve));
    slow.write('POST /users HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"email":');
    const cut = new Promise<'cut'>((resolve) => slow.once('close', () => resolve('cut')));
    await db.user.count();
    let timer: NodeJS.Timeout | undefined;
    const stillStopping = new Promise<'still stopping'>((resolve) => (timer = setTimeout(() => resolve('still stopping'), 15_000)));
    try {
      // Before: stop() waited for the slow client (still stopping at 15 s), the Db stayed open.
      expect(await Promise.race([running.stop().then(() => 'stopped' as const), stillStopping])).toBe('stopped');
      expect(await cut).toBe('cut');
      expect(db.$datalayer.stats().pool.open).toBe(0);
      await expect(db.user.count()).rejects.toMatchObject({ name: 'DatabaseClosedError' });
    } finally {
      clearTimeout(timer);
      slow.destroy();
      await db.close({ deadlineMs: 0 });
    }
  }, 60_000);
});

describe('service example, started as a program', () => {
  it('with the database down: no listening, exit 1, and the advice for the failed check', async () => {
    const build = buildExamples();
    try {
      const env: NodeJS.ProcessEnv = {};
      for (const [key, value] of Object.entries(process.env)) if (key !== 'DATABASE_URL' && key !== 'DIRECT_URL' && !key.startsWith('DB_')) env[key] = value;
      const port = await closedPort();
      Object.assign(env, { DATABASE_URL: `postgresql://app:s3cret-pw@127.0.0.1:${port}/app?sslmode=disable`, DB_CONNECT_TIMEOUT: '3000', PORT: '0' });
      const child = spawn(process.execPath, [path.join(build.dir, 'examples', 'service', 'main.js')], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => void (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => void (err += d.toString()));
      const code = await new Promise<number | null>((resolve, reject) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error(`the service did not exit within 60 s\n${out}\n${err}`));
        }, 60_000);
        child.once('exit', (c) => {
          clearTimeout(timer);
          resolve(c);
        });
      });
      expect({ code, out }).toEqual({ code: 1, out: expect.not.stringContaining('listening') });
      expect(err).toMatch(/failed 1 startup check/);
      expect(err).toMatch(/- connection: could not query the database/);
      expect(err).toContain(`→ Check that 127.0.0.1:${port} is reachable from this host`);
      expect(err).not.toContain('s3cret-pw');
    } finally {
      build.remove();
    }
  }, 120_000);
});
