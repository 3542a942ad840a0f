/**
 * What src/driver/pg.ts and src/driver/client.ts rely on in node-postgres, pg-pool and
 * @prisma/adapter-pg. Each test fails when a driver changes underneath the layer: the
 * adapter must keep calling the pool's `query` for single statements and `connect` for
 * transactions, pg-pool must keep creating connections through its `Client` option, and a
 * connection must keep its socket at `connection.stream` and its ReadyForQuery event.
 */
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { abandon, guardedClientClass, type ClientClass } from '../../src/driver/client';
import { createDb, DeadlineExceededError } from '../../src/index';
import { PrismaClient } from '../../src/generated/prisma/client';
import { eventually } from '../support/async';
import { adminQuery, createTestDatabase, testServer, type TestDatabase } from '../support/db';
import { startPgBouncer } from '../support/pgbouncer';

let testDb: TestDatabase;
beforeAll(async () => {
  testDb = await createTestDatabase({ prefix: 'driverpg' });
});
afterAll(async () => {
  await testDb?.drop();
});

test('@prisma/adapter-pg sends single statements through pool.query and transactions through pool.connect', async () => {
  const calls: string[] = [];
  class Spy extends pg.Pool {
    // @ts-expect-error -- pg-pool's own query() calls connect(callback); the adapter calls connect()
    override connect(callback?: never): Promise<pg.PoolClient> | void {
      if (callback) return super.connect(callback);
      calls.push('connect');
      return super.connect();
    }
    // @ts-expect-error -- likewise
    override query(config: unknown, values?: unknown): Promise<unknown> {
      calls.push('query');
      return super.query(config as string, values as unknown[]);
    }
  }
  const pool = new Spy({ ...testDb.ssl ? { ssl: testDb.ssl } : {}, host: testDb.host, port: testDb.port, user: testDb.user, password: testDb.password, database: testDb.name, max: 2 });
  const adapter = await new PrismaPg(pool as unknown as pg.Pool).connect();
  try {
    await adapter.queryRaw({ sql: 'SELECT 1', args: [], argTypes: [] });
    expect(calls).toEqual(['query']);
    const tx = await adapter.startTransaction();
    await tx.queryRaw({ sql: 'SELECT 2', args: [], argTypes: [] });
    await tx.commit();
    expect(calls).toEqual(['query', 'connect']);
  } finally {
    await adapter.dispose();
    await pool.end();
  }
});

test("pg-pool creates connections through its Client option; a connection's socket and ReadyForQuery are where the layer looks", async () => {
  const created: object[] = [];
  class Recording extends pg.Client {
    constructor(config: pg.ClientConfig) {
      super(config);
      created.push(this);
    }
  }
  const pool = new pg.Pool({ ssl: testDb.ssl, host: testDb.host, port: testDb.port, user: testDb.user, password: testDb.password, database: testDb.name, max: 1, Client: Recording as unknown as typeof pg.Client });
  try {
    const client = await pool.connect();
    expect(created).toEqual([client]);
    const internals = client as unknown as { connection: { stream: { destroy: () => void }; once: unknown } };
    client.on('error', () => {});
    expect(typeof internals.connection.stream.destroy).toBe('function');
    expect(typeof internals.connection.once).toBe('function');
    // Destroying the socket fails what is pending and pg-pool drops the connection on release.
    const pending = client.query('SELECT pg_sleep(5)');
    internals.connection.stream.destroy();
    await expect(pending).rejects.toThrow();
    client.release(new Error('destroyed'));
    expect(pool.totalCount).toBe(0);
  } finally {
    await pool.end();
  }
});

test("what GuardedPool.disconnect relies on in pg-pool: `release` is set per checkout (replacing it lasts one checkout), a release with an error closes the connection, and connect() hands out idle connections first", async () => {
  const pool = new pg.Pool({ ssl: testDb.ssl, host: testDb.host, port: testDb.port, user: testDb.user, password: testDb.password, database: testDb.name, max: 2 });
  const removed: object[] = [];
  pool.on('remove', (client) => removed.push(client));
  try {
    const [a, b] = [await pool.connect(), await pool.connect()];
    const firstRelease = a.release;
    expect(Object.hasOwn(a, 'release')).toBe(true);
    a.release();
    b.release();
    expect(pool.idleCount).toBe(2);
    // The idle connections, taken as disconnect() takes them: no new one opened.
    const taken = await Promise.all([pool.connect(), pool.connect()]);
    expect(new Set(taken)).toEqual(new Set([a, b]));
    expect(a.release).not.toBe(firstRelease);
    for (const client of taken) client.release(new Error('closed by $disconnect'));
    expect(pool.totalCount).toBe(0);
    await eventually(() => removed.length === 2);
    expect(new Set(removed)).toEqual(new Set([a, b]));
  } finally {
    await pool.end();
  }
});

test("a connection given up (abandon) has its statement cancelled on the server: node-postgres' Connection still sends CancelRequest", async () => {
  const policy = { connectMs: 5_000, keepAliveDelayMs: 5_000, statementDeadline: () => undefined, cancelOnAbandon: true };
  const Guarded = guardedClientClass(pg.Client as unknown as ClientClass, policy) as unknown as typeof pg.Client;
  const client = new Guarded({ ssl: testDb.ssl, host: testDb.host, port: testDb.port, user: testDb.user, password: testDb.password, database: testDb.name });
  client.on('error', () => undefined); // as the pool's connections: the layer listens for their whole life
  await client.connect();
  const pid = (client as unknown as { processID: number }).processID;
  const running = client.query('SELECT pg_sleep(30)').catch(() => 'failed');
  const active = async (): Promise<boolean> => (await adminQuery(`SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active'`, [pid])).length > 0;
  expect(await eventually(active, 5_000)).toBe(true);
  abandon(client, new Error('given up'));
  expect(await running).toBe('failed');
  // Without the cancel request the backend would sleep on for its 30 s (it notices a closed socket only when it next writes).
  expect(await eventually(async () => !(await active()), 10_000)).toBe(true);
});

test('behind PgBouncer, a statement given up at its deadline is cancelled on the server too: the socket stays until PgBouncer has forwarded the cancel request', async () => {
  // PgBouncer's cancel key is its own, for this client connection: it forwards a CancelRequest
  // only while that connection is open. Closed first, the server's backend slept on for its 30 s
  // (PgBouncer closes its server link, which the backend notices only when it next writes).
  const bouncer = await startPgBouncer(testServer().info(), { poolMode: 'transaction', defaultPoolSize: 2 });
  const db = createDb({ PrismaClient, url: bouncer.url(testDb.name, { pgbouncer: 'true', sslmode: 'disable' }), applicationName: 'driverpg-bouncer-cancel', timeouts: { statementMs: 1_000, connectMs: 5_000 } });
  try {
    await db.account.count();
    const started = Date.now();
    const err = await db.$queryRawUnsafe('SELECT pg_sleep(30)::text /* bouncer-cancel */').then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(DeadlineExceededError);
    // The caller is not kept waiting for the cancel: its deadline (1 s + the grace) and no more than a few seconds.
    expect(Date.now() - started).toBeLessThan(10_000);
    const sleeping = async (): Promise<boolean> =>
      (await adminQuery(`SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query LIKE '%bouncer-cancel%' AND pid <> pg_backend_pid()`, [testDb.name])).length > 0;
    expect(await eventually(async () => !(await sleeping()), 10_000)).toBe(true);
  } finally {
    await db.close({ deadlineMs: 1_000 });
    await bouncer.stop();
  }
}, 60_000);
