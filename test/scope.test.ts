/**
 * Invocation scopes (issue 16): `db.scope(fn)` / `db.handler(fn)` in serverless mode open
 * one connection per invocation — however many statements, units and sessions run in it —
 * and close it when the scope ends: resolved, thrown, or past its deadline. Counted twice:
 * by the layer (connectionsOpened) and by the server (pg_stat_activity).
 */
import { PrismaClient } from '../src/generated/prisma/client';
import pg from 'pg';
import { ConfigError, createDb, DatabaseConnectionError, DeadlineExceededError, ScopeEndedError, type Db } from '../src/index';
import { eventually, latch, rejectionOf, sleep, sockets } from './support/async';
import { adminQuery, countConnections, createTestDatabase, testServer, type TestDatabase } from './support/db';
import { startNeonProxy, type NeonProxy } from './support/neon-proxy';

let testDb: TestDatabase;
const dbs: Array<Db<PrismaClient>> = [];
let seq = 0;

function makeDb(mode: 'serverless' | 'pooled', pool?: { size: number; maxOverflow: number; timeoutMs?: number }): { db: Db<PrismaClient>; app: string } {
  const app = `scope-${mode}-${++seq}`;
  const db = createDb({ PrismaClient, url: testDb.appUrl, mode, applicationName: app, env: {}, ...(pool ? { pool } : {}) });
  dbs.push(db);
  return { db, app };
}

const opened = (db: Db<PrismaClient>): number => db.stats().counters.connectionsOpened;
const noneLeft = async (db: Db<PrismaClient>, app: string): Promise<boolean> =>
  eventually(async () => (await countConnections(app, testDb.name)) === 0 && db.stats().pool.open === 0, 5_000);

beforeAll(async () => {
  testDb = await createTestDatabase({ prefix: 'scope' });
});

afterAll(async () => {
  for (const d of dbs) await d.close();
  await testDb?.drop();
});

/** Five statements of different kinds, as a handler would send them. */
async function fiveStatements(db: Db<PrismaClient>, tag: string): Promise<void> {
  const user = await db.user.create({ data: { email: `${tag}@example.com` } });
  await db.user.findUnique({ where: { id: user.id } });
  await db.user.update({ where: { id: user.id }, data: { name: tag } });
  await db.$queryRaw`SELECT 1`;
  expect(await db.user.count({ where: { email: `${tag}@example.com` } })).toBe(1);
}

describe('serverless mode', () => {
  test('5 statements, a unit of work and a session inside one scope open exactly one connection, closed at the end', async () => {
    const { db, app } = makeDb('serverless');
    const socketsBefore = sockets();
    const before = opened(db);
    let serverSaw = -1;
    const result = await db.scope(async () => {
      await fiveStatements(db, 'one-conn');
      await db.transaction(async (tx) => {
        const u = await tx.user.create({ data: { email: 'one-conn-tx@example.com' } });
        await tx.user.update({ where: { id: u.id }, data: { name: 'in unit' } });
      });
      await db.session(async (c) => c.$executeRawUnsafe('SELECT 1'));
      serverSaw = await countConnections(app, testDb.name);
      return 'done';
    });
    expect(result).toBe('done');
    expect(serverSaw).toBe(1);
    expect(opened(db) - before).toBe(1);
    // Nothing left: not on the server, not in the pool, not in the process.
    expect(await noneLeft(db, app)).toBe(true);
    expect(db.stats().counters.connectionsClosed).toBe(db.stats().counters.connectionsOpened);
    expect(await eventually(() => sockets() <= socketsBefore, 5_000)).toBe(true);
    // The unit committed on the scope's connection.
    expect(await db.user.count({ where: { email: 'one-conn-tx@example.com', name: 'in unit' } })).toBe(1);
  });

  test('outside a scope the same 5 statements open one connection each', async () => {
    const { db, app } = makeDb('serverless');
    const before = opened(db);
    await fiveStatements(db, 'no-scope');
    expect(opened(db) - before).toBe(5);
    expect(await noneLeft(db, app)).toBe(true);
  });

  test('a scope that sends nothing opens nothing', async () => {
    const { db } = makeDb('serverless');
    expect(await db.scope(async () => 42)).toBe(42);
    expect(opened(db)).toBe(0);
  });

  test('the connection is closed when the function throws, and the error is the caller’s own', async () => {
    const { db, app } = makeDb('serverless');
    const own = new Error('handler failed');
    const before = opened(db);
    const err = await rejectionOf(
      db.scope(async () => {
        await fiveStatements(db, 'throws');
        throw own;
      }),
    );
    expect(err).toBe(own);
    expect(opened(db) - before).toBe(1);
    expect(await noneLeft(db, app)).toBe(true);
  });

  test('a failed statement and a rolled-back unit inside the scope keep using its one connection', async () => {
    const { db, app } = makeDb('serverless');
    const before = opened(db);
    await db.scope(async () => {
      await db.user.create({ data: { email: 'scope-dup@example.com' } });
      await expect(db.user.create({ data: { email: 'scope-dup@example.com' } })).rejects.toMatchObject({ code: 'P2002' });
      await expect(
        db.transaction(async (tx) => {
          await tx.user.create({ data: { email: 'scope-rolled-back@example.com' } });
          throw new Error('roll back');
        }),
      ).rejects.toThrow('roll back');
      expect(await db.user.count({ where: { email: 'scope-rolled-back@example.com' } })).toBe(0);
    });
    expect(opened(db) - before).toBe(1);
    expect(await noneLeft(db, app)).toBe(true);
  });

  test('past timeoutMs the scope rejects with DeadlineExceededError and its connection is closed under the running statement', async () => {
    const { db, app } = makeDb('serverless');
    const socketsBefore = sockets();
    const started = performance.now();
    let statement: Promise<unknown> | undefined;
    const err = await rejectionOf(
      db.scope(
        async () => {
          statement = db.$queryRaw`SELECT pg_sleep(3)`;
          await statement;
        },
        { timeoutMs: 300 },
      ),
    );
    expect(err).toBeInstanceOf(DeadlineExceededError);
    expect((err as DeadlineExceededError).deadline).toBe('scope');
    // The deadline ended it, not the statement (3 s).
    expect(performance.now() - started).toBeLessThan(2_900);
    expect(await rejectionOf(statement!)).toBeDefined();
    // The process let go at once; the server's backend notices the closed socket when
    // its statement ends (nothing cancels a running statement on the server but its own timeout).
    expect(db.stats().pool).toMatchObject({ open: 0, inUse: 0 });
    expect(await eventually(() => sockets() <= socketsBefore, 2_000)).toBe(true);
    expect(await noneLeft(db, app)).toBe(true);
  });

  test('a query returned straight from the function (not awaited in it) runs in the scope and is ended with it', async () => {
    const { db, app } = makeDb('serverless');
    // A Prisma query runs when first awaited: here by db.scope itself, and still on the scope's connection.
    const err = await rejectionOf(db.scope(() => db.$queryRaw`SELECT pg_sleep(3)`, { timeoutMs: 300 }));
    expect(err).toBeInstanceOf(DeadlineExceededError);
    expect((err as DeadlineExceededError).deadline).toBe('scope');
    // Outside the scope it would have had a connection of its own, still open and running.
    expect(db.stats().pool).toMatchObject({ open: 0, inUse: 0 });
    expect(opened(db)).toBe(1);
    expect(await noneLeft(db, app)).toBe(true);
  });

  test('a statement the function did not await is ended with the scope; one sent after the end is refused and opens nothing', async () => {
    const { db, app } = makeDb('serverless');
    const ended = latch();
    let floating: Promise<unknown> | undefined;
    let late: Promise<unknown> | undefined;
    await db.scope(async () => {
      await db.$queryRaw`SELECT 1`;
      floating = db.$queryRaw`SELECT pg_sleep(2)`;
      floating.catch(() => {});
      // Registered in the scope, run after the scope has ended.
      late = ended.promise.then(() => db.user.count());
      late.catch(() => {});
      // The floating statement is running on the server when the scope ends.
      const running = async (): Promise<boolean> =>
        (await adminQuery(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND query LIKE '%pg_sleep%'`, [app])).length === 1;
      expect(await eventually(running, 5_000)).toBe(true);
    });
    const afterEnd = opened(db);
    ended.open();
    expect(await rejectionOf(floating!)).toBeDefined();
    expect(await rejectionOf(late!)).toBeInstanceOf(ScopeEndedError);
    expect(opened(db)).toBe(afterEnd);
    expect(afterEnd).toBe(1);
    expect(db.stats().pool).toMatchObject({ open: 0, inUse: 0 });
    expect(await noneLeft(db, app)).toBe(true);
  });

  test('units run in parallel inside a scope each get their own connection; a statement never lands in another unit’s transaction', async () => {
    const { db, app } = makeDb('serverless');
    const before = opened(db);
    const [rolledBack, outside] = await db.scope(async () =>
      Promise.allSettled([
        db.transaction(async (tx) => {
          await tx.user.create({ data: { email: 'par-rolled-back@example.com' } });
          await sleep(200);
          throw new Error('roll back');
        }),
        (async () => {
          await sleep(50);
          return db.user.create({ data: { email: 'par-outside@example.com' } });
        })(),
      ]),
    );
    const openedInScope = opened(db) - before;
    expect(rolledBack.status).toBe('rejected');
    expect(outside.status).toBe('fulfilled');
    expect(await db.user.count({ where: { email: 'par-outside@example.com' } })).toBe(1);
    expect(await db.user.count({ where: { email: 'par-rolled-back@example.com' } })).toBe(0);
    expect(openedInScope).toBeLessThanOrEqual(2);
    expect(await noneLeft(db, app)).toBe(true);
  });

  test('db.handler: arguments and result pass through, one connection per invocation, none between', async () => {
    const { db, app } = makeDb('serverless');
    const handle = db.handler(async (email: string, name: string) => {
      const u = await db.user.create({ data: { email, name } });
      await db.user.update({ where: { id: u.id }, data: { name: `${name}!` } });
      return db.user.findUniqueOrThrow({ where: { id: u.id } });
    });
    for (let i = 0; i < 3; i++) {
      const before = opened(db);
      const u = await handle(`handler-${i}@example.com`, `h${i}`);
      expect(u).toMatchObject({ email: `handler-${i}@example.com`, name: `h${i}!` });
      expect(opened(db) - before).toBe(1);
      expect(await noneLeft(db, app)).toBe(true);
    }
  });

  test('db.close() while a scope keeps its connection: close waits up to its deadline, then the connection is closed under the scope', async () => {
    const { db, app } = makeDb('serverless');
    const proceed = latch();
    const scoped = db.scope(async () => {
      await db.$queryRaw`SELECT 1`;
      await proceed.promise;
      return db.user.count();
    });
    scoped.catch(() => {});
    expect(await eventually(async () => (await countConnections(app, testDb.name)) === 1, 5_000)).toBe(true);
    const started = performance.now();
    await db.close({ deadlineMs: 300 });
    // close() did not wait for the scope beyond its deadline (plus its bounded grace).
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(await noneLeft(db, app)).toBe(true);
    proceed.open();
    expect(await rejectionOf(scoped)).toBeInstanceOf(DatabaseConnectionError);
    expect(db.stats().pool).toMatchObject({ open: 0, inUse: 0 });
  });

  test('invalid timeoutMs is refused with a ConfigError before anything runs', async () => {
    const { db } = makeDb('serverless');
    let ran = false;
    for (const timeoutMs of [0, -1, NaN, 1.5, '100' as unknown as number]) {
      const err = await rejectionOf(db.scope(async () => void (ran = true), { timeoutMs }));
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues[0]?.setting).toBe('scope option timeoutMs');
    }
    for (const options of [null, 5, 'fast']) {
      const err = await rejectionOf(db.scope(async () => void (ran = true), options as never));
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues[0]?.setting).toBe('scope options');
    }
    expect(ran).toBe(false);
    expect(opened(db)).toBe(0);
  });

  test("an unknown or misspelt option (Prisma's `timeout`) is a ConfigError naming it, not ignored: db.scope before fn runs, db.handler when it is created", async () => {
    const { db } = makeDb('serverless');
    let ran = 0;
    // Before: { timeout: 200 } was dropped, and the scope ran without a deadline for as long as fn took.
    const err = await rejectionOf(db.scope(async () => void ran++, { timeout: 200, timoutMs: 300 } as never));
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues).toEqual([
      { setting: 'scope option timeout', problem: expect.stringContaining('timeoutMs') },
      { setting: 'scope option timoutMs', problem: expect.stringContaining('is not an option') },
    ]);
    let made: unknown;
    try {
      made = db.handler(async () => ran++, { timeout: 200 } as never);
    } catch (e) {
      made = e;
    }
    expect(made).toBeInstanceOf(ConfigError);
    expect((made as ConfigError).issues).toEqual([{ setting: 'handler option timeout', problem: expect.stringContaining('timeoutMs') }]);
    expect(() => db.handler(async () => ran++, { timeoutMs: NaN })).toThrow(/handler option timeoutMs/);
    expect(ran).toBe(0);
    expect(opened(db)).toBe(0);
    // The right name still works, and the health check's options are checked alike.
    await expect(db.handler(async () => ++ran, { timeoutMs: 5_000 })()).resolves.toBe(1);
    expect(await db.health({ timeout: 1_000 } as never)).toMatchObject({ status: 'unhealthy', error: expect.stringMatching(/health option timeout: .*timeoutMs/) });
  });

  test('a function that starts a query and then throws before returning: the scope still ends, and closes what the query opened', async () => {
    const { db, app } = makeDb('serverless');
    const thrown = new Error('thrown before returning');
    const err = await rejectionOf(
      db.scope((() => {
        void db.$queryRaw`SELECT 1`.then(
          () => undefined,
          () => undefined,
        );
        throw thrown;
      }) as unknown as () => Promise<void>),
    );
    expect(err).toBe(thrown);
    // The pool's first connection waits up to 2 s for a statement (README): then nothing is left.
    expect(await noneLeft(db, app)).toBe(true);
  });

  test('a Promise.all wider than the pool inside a scope: the connections the scope keeps serve it, nothing times out', async () => {
    const { db, app } = makeDb('serverless', { size: 2, maxOverflow: 0, timeoutMs: 3_000 });
    const reads = await db.scope(async () => Promise.allSettled([1, 2, 3, 4].map(() => db.$queryRaw`SELECT 1 AS x FROM pg_sleep(0.05)`)));
    expect(reads.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
    // A unit and a statement side by side on a pool of one, after the scope took its connection.
    const { db: one, app: oneApp } = makeDb('serverless', { size: 1, maxOverflow: 0, timeoutMs: 3_000 });
    const both = await one.scope(async () => {
      await one.$queryRaw`SELECT 1`;
      return Promise.allSettled([one.transaction(async (tx) => tx.user.count()), one.user.count()]);
    });
    expect(both.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
    expect(await noneLeft(db, app)).toBe(true);
    expect(await noneLeft(one, oneApp)).toBe(true);
  });

  test('a scope inside a running scope shares its connections but keeps its own deadline', async () => {
    const { db } = makeDb('serverless');
    let innerFinished = false;
    const err = await rejectionOf(
      db.scope(async () =>
        db.scope(
          async () => {
            await sleep(1_500);
            innerFinished = true;
          },
          { timeoutMs: 200 },
        ),
      ),
    );
    expect(err).toBeInstanceOf(DeadlineExceededError);
    // Its work goes on in the outer scope: it may still happen.
    expect(err).toMatchObject({ deadline: 'scope', outcome: 'unknown', retryable: false });
    expect(innerFinished).toBe(false);
    // A handler called from inside another handler: the same.
    const inner = db.handler(async () => sleep(1_500).then(() => 'late'), { timeoutMs: 200 });
    expect(await rejectionOf(db.handler(async () => inner())())).toBeInstanceOf(DeadlineExceededError);
  });

  test('a scope opened after its outer scope ended (from a timer the invocation left) is a scope of its own', async () => {
    const { db, app } = makeDb('serverless');
    const fired = latch();
    let later: Promise<number> | undefined;
    await db.scope(async () => {
      await db.$queryRaw`SELECT 1`;
      setTimeout(() => {
        later = db.scope(async () => db.user.count());
        fired.open();
      }, 100);
    });
    await fired.promise;
    await expect(later!).resolves.toEqual(expect.any(Number));
    expect(await noneLeft(db, app)).toBe(true);
  });

  test('work sent after a scope that timed out is refused with ScopeEndedError, not the deadline error', async () => {
    const { db, app } = makeDb('serverless');
    let late: Promise<unknown> | undefined;
    const sent = latch();
    const err = await rejectionOf(
      db.scope(
        async () => {
          // Set first: on a cold start the first statement alone can outlast the scope.
          setTimeout(() => {
            late = db.user.count();
            late.catch(() => undefined);
            sent.open();
          }, 400);
          await db.$queryRaw`SELECT 1`;
          await new Promise(() => undefined);
        },
        { timeoutMs: 200 },
      ),
    );
    expect(err).toBeInstanceOf(DeadlineExceededError);
    await sent.promise;
    expect(await rejectionOf(late!)).toBeInstanceOf(ScopeEndedError);
    // The late statement opened nothing (the first one may not have got as far on a cold start).
    expect(opened(db)).toBeLessThanOrEqual(1);
    expect(await noneLeft(db, app)).toBe(true);
  });

  test('past timeoutMs with a write still waiting on the server: the server is asked to cancel it, and the error says it may have happened', async () => {
    const { db, app } = makeDb('serverless');
    const user = await db.user.create({ data: { email: 'scope-locked@example.com' } });
    const locker = new pg.Client({ connectionString: testDb.url, ssl: testDb.ssl });
    await locker.connect();
    let err: unknown;
    const waiting = async (): Promise<number> =>
      Number((await adminQuery<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, [app]))[0]?.n ?? 0);
    try {
      await locker.query('BEGIN');
      await locker.query('SELECT id FROM users WHERE id = $1 FOR UPDATE', [user.id]);
      err = await rejectionOf(db.scope(async () => db.user.update({ where: { id: user.id }, data: { name: 'after the deadline' } }), { timeoutMs: 300 }));
      // Before: destroying the socket left the UPDATE waiting for the lock (up to lock_timeout), and it ran once the lock went.
      expect(await eventually(async () => (await waiting()) === 0, 5_000)).toBe(true);
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      await locker.end();
    }
    // The cancel is best effort (it may arrive after the statement finished): the error cannot say more than "unknown".
    expect(err).toBeInstanceOf(DeadlineExceededError);
    expect(err).toMatchObject({ deadline: 'scope', outcome: 'unknown', retryable: false });
    await sleep(300);
    expect(await db.user.count({ where: { id: user.id, name: 'after the deadline' } })).toBe(0);
    // With nothing on the database at the deadline, the error stays retryable.
    const idle = await rejectionOf(db.scope(async () => sleep(1_000), { timeoutMs: 100 }));
    expect(idle).toMatchObject({ deadline: 'scope', retryable: true });
    expect((idle as DeadlineExceededError).outcome).toBeUndefined();
  });
});

describe('the scope deadline with a unit of work and a statement still running', () => {
  for (const mode of ['serverless', 'pooled'] as const) {
    test(`${mode}: the scope's error keeps 'unknown' (the statement may have happened); the unit's own error says rolled-back`, async () => {
      const { db } = makeDb(mode);
      let inside: PromiseSettledResult<unknown>[] = [];
      const err = await rejectionOf(
        db.scope(
          async () => {
            inside = await Promise.allSettled([
              db.transaction(async (tx) => tx.$executeRaw`SELECT pg_sleep(8)`, { correlationId: 'unit-in-scope' }),
              db.$executeRaw`SELECT pg_sleep(8)`,
            ]);
          },
          // Long enough for both connections to open on a loaded machine: both are on the server at the deadline.
          { timeoutMs: 2_500 },
        ),
      );
      // The work inside settles after the scope rejected: it must not rewrite the scope's error.
      expect(await eventually(() => inside.length === 2, 5_000)).toBe(true);
      expect(err).toBeInstanceOf(DeadlineExceededError);
      // Before: the same error object was handed to the unit, which set outcome 'rolled-back' (and its correlation id) on it.
      expect(err).toMatchObject({ deadline: 'scope', outcome: 'unknown', retryable: false });
      expect((err as DeadlineExceededError).correlationId).toBeUndefined();
      const [unit, statement] = inside.map((r) => (r.status === 'rejected' ? r.reason : undefined));
      expect(unit).toMatchObject({ outcome: 'rolled-back', correlationId: 'unit-in-scope' });
      expect(statement).toBeInstanceOf(DeadlineExceededError);
      expect((statement as DeadlineExceededError).outcome).not.toBe('rolled-back');
    });
  }
});

describe('concurrent invocations', () => {
  test('two invocations whose findUnique go out in the same tick (Prisma batches those) each use their own connection', async () => {
    const { db, app } = makeDb('serverless');
    const a = await db.user.create({ data: { email: 'tick-a@example.com' } });
    const b = await db.user.create({ data: { email: 'tick-b@example.com' } });
    const before = opened(db);
    const invocation = (id: number) =>
      db.scope(async () => {
        const found = await db.user.findUnique({ where: { id } });
        await sleep(200);
        return found?.email;
      });
    await expect(Promise.all([invocation(a.id), invocation(b.id)])).resolves.toEqual(['tick-a@example.com', 'tick-b@example.com']);
    expect(opened(db) - before).toBe(2);
    // The first invocation ends right after sending its findUnique: the second's, sent in the same tick, is not refused with it.
    const first = db.scope(async () => {
      void db.user.findUnique({ where: { id: a.id } }).then(
        () => undefined,
        () => undefined,
      );
    });
    const second = db.scope(async () => db.user.findUnique({ where: { id: b.id } }));
    await expect(first).resolves.toBeUndefined();
    await expect(second).resolves.toMatchObject({ email: 'tick-b@example.com' });
    expect(await noneLeft(db, app)).toBe(true);
  });
});

describe('Neon driver, serverless mode', () => {
  let proxy: NeonProxy;
  beforeAll(async () => {
    proxy = await startNeonProxy({ upstream: testServer().info() });
  });
  afterAll(async () => {
    await proxy?.close();
  });

  test('single statements in a scope stay on HTTP; its units share one WebSocket connection, closed at the end', async () => {
    const app = `scope-neon-${++seq}`;
    const db = createDb({
      PrismaClient,
      mode: 'serverless',
      url: testDb.urlWith(undefined, { user: testDb.appUser, password: testDb.appPassword, host: 'ep-scope-test-123456.us-east-2.aws.neon.tech', port: 5432 }),
      applicationName: app,
      env: {},
      neon: { wsProxy: proxy.wsProxy, useSecureWebSocket: false, fetchEndpoint: proxy.fetchEndpoint },
    });
    dbs.push(db);
    let computeDuring = -1;
    const before = proxy.received();
    await db.scope(async () => {
      await db.$queryRaw`SELECT 1`;
      await db.user.count();
      expect(opened(db)).toBe(0);
      for (let i = 0; i < 3; i++) {
        await db.transaction(async (tx) => {
          await tx.user.create({ data: { email: `neon-scope-${i}@example.com` } });
        });
      }
      computeDuring = proxy.received().ws - before.ws;
    });
    expect(proxy.received().http - before.http).toBeGreaterThanOrEqual(2);
    // One WebSocket for the scope's three units.
    expect(computeDuring).toBe(1);
    expect(opened(db)).toBe(1);
    expect(await eventually(() => proxy.computeConnections() === 0, 5_000)).toBe(true);
    expect(await noneLeft(db, app)).toBe(true);
    expect(await db.user.count({ where: { email: { startsWith: 'neon-scope-' } } })).toBe(3);
  });

  function neonDb(): Db<PrismaClient> {
    const db = createDb({
      PrismaClient,
      mode: 'serverless',
      url: testDb.urlWith(undefined, { user: testDb.appUser, password: testDb.appPassword, host: 'ep-scope-test-123456.us-east-2.aws.neon.tech', port: 5432 }),
      applicationName: `scope-neon-${++seq}`,
      env: {},
      neon: { wsProxy: proxy.wsProxy, useSecureWebSocket: false, fetchEndpoint: proxy.fetchEndpoint },
    });
    dbs.push(db);
    return db;
  }

  test('an HTTP statement sent after its scope ended is refused, and sends nothing', async () => {
    const db = neonDb();
    const ended = latch();
    let late: Promise<unknown> | undefined;
    await db.scope(async () => {
      await db.user.count();
      late = ended.promise.then(() => db.user.create({ data: { email: 'neon-late@example.com' } }));
      late.catch(() => undefined);
    });
    const before = proxy.received().http;
    ended.open();
    expect(await rejectionOf(late!)).toBeInstanceOf(ScopeEndedError);
    expect(proxy.received().http).toBe(before);
    expect(await db.user.count({ where: { email: 'neon-late@example.com' } })).toBe(0);
  });

  test('an HTTP statement running at the scope deadline is ended with the scope, and the error says it may have happened', async () => {
    const db = neonDb();
    await db.user.count();
    let statement: Promise<unknown> | undefined;
    const err = await rejectionOf(
      db.scope(
        async () => {
          statement = db.$executeRaw`INSERT INTO users (email, name) SELECT 'neon-slow@example.com', 'x' FROM pg_sleep(1.5)`;
          await statement;
        },
        { timeoutMs: 300 },
      ),
    );
    expect(err).toMatchObject({ deadline: 'scope', outcome: 'unknown', retryable: false });
    // The statement fails with the scope; it does not resolve after it.
    expect(await rejectionOf(statement!)).toBe(err);
  });
});

describe('pooled mode', () => {
  test('scope after scope on one pooled connection leaves no listener behind on it', async () => {
    const { db } = makeDb('pooled', { size: 1, maxOverflow: 0 });
    await db.user.count();
    // The 'end' listeners added to connections meanwhile (GuardedClient extends pg.Client).
    let added = 0;
    const proto = pg.Client.prototype as unknown as { once: (event: string, listener: () => void) => unknown };
    const once = proto.once;
    proto.once = function countedOnce(this: pg.Client, event: string, listener: () => void) {
      if (event === 'end') added++;
      return once.call(this, event, listener);
    };
    try {
      for (let i = 0; i < 30; i++) await db.scope(async () => db.user.count());
    } finally {
      proto.once = once;
    }
    // Thirty scopes on the one pooled connection: no listener per scope (it was 30).
    expect(added).toBeLessThan(5);
    expect(db.stats().pool.open).toBe(1);
  });

  test('a scope borrows from the warm pool and keeps nothing for itself; the pool stays open after it', async () => {
    const { db } = makeDb('pooled');
    await db.user.count();
    const warm = opened(db);
    await db.scope(async () => fiveStatements(db, 'pooled-scope'));
    // Sequential statements reuse the pool's connections: nothing new had to open.
    expect(opened(db)).toBe(warm);
    expect(db.stats().pool.inUse).toBe(0);
    expect(db.stats().pool.open).toBeGreaterThan(0);
  });

  test('statements sent after the scope ended are refused in pooled mode too', async () => {
    const { db } = makeDb('pooled');
    let late: Promise<unknown> | undefined;
    await db.scope(async () => {
      late = sleep(100).then(() => db.user.count());
      late.catch(() => {});
    });
    expect(await rejectionOf(late!)).toBeInstanceOf(ScopeEndedError);
    expect(db.stats().pool.inUse).toBe(0);
  });
});

describe('two Dbs in one scope (found by probes)', () => {
  // A scope is the invocation's: the work of every Db run in it is in it. Whether a
  // connection stays with the scope is its own Db's mode, not that of the Db whose scope it is.
  test("a serverless Db's scope borrows a pooled Db's connection as usual: not held between statements, and the end does not wait for it to close", async () => {
    const { db: app } = makeDb('serverless');
    const { db: audit } = makeDb('pooled', { size: 2, maxOverflow: 0 });
    await audit.user.count();
    await app.scope(async () => app.user.count());
    let inUseBetween = -1;
    const started = performance.now();
    await app.scope(async () => {
      await app.user.count();
      await audit.user.count();
      // The request's non-database work: the pooled Db's connection is back in its pool.
      inUseBetween = audit.stats().pool.inUse;
    });
    const ms = performance.now() - started;
    expect(inUseBetween).toBe(0);
    expect(audit.stats().pool.open).toBeGreaterThan(0);
    // It waited a whole second for the pooled connection's socket to close, which it never does.
    expect(ms).toBeLessThan(900);
  });

  test("a serverless Db's scope inside a pooled Db's scope still keeps its one connection", async () => {
    const { db: app } = makeDb('pooled');
    const { db: audit, app: auditName } = makeDb('serverless');
    await app.scope(async () => {
      await app.user.count();
      await audit.scope(async () => {
        for (let i = 0; i < 3; i++) await audit.user.count();
      });
      // The pooled Db's scope closes the serverless Db's connection at its end, as that Db's own scope would.
    });
    // One connection for the three statements (it was one per statement).
    expect(opened(audit)).toBe(1);
    expect(await noneLeft(audit, auditName)).toBe(true);
  });
});
