// db.close({ deadlineMs }) and closeOnSignals against the shared server: new work is
// refused with a typed error, work in flight finishes (or is cut at the deadline), and
// afterwards the server has no connection of ours and the process no socket.
import { ConfigError, createDb, DatabaseClosedError, type Db, type TxClient } from '../src/index';
import { PrismaClient } from '../src/generated/prisma/client';
import { countConnections, createTestDatabase, type TestDatabase } from './support/db';
import { eventually, waitFor, sockets } from './support/async';
import { startTcpProxy } from './support/tcp-proxy';

let testDb: TestDatabase;
beforeAll(async () => {
  testDb = await createTestDatabase();
});
afterAll(async () => {
  await testDb.drop();
});

let seq = 0;
const appName = (label: string): string => `close-${label}-${process.pid}-${++seq}`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));



function open(label: string): { db: Db<PrismaClient>; name: string } {
  const name = appName(label);
  return { db: createDb({ PrismaClient, url: testDb.url, applicationName: name, pool: { size: 2, maxOverflow: 0 } }), name };
}

describe('db.close()', () => {
  it('refuses new work, waits for the unit in flight, then leaves no connection and no socket', async () => {
    const before = sockets();
    const { db, name } = open('drain');
    // Two connections: one will be busy with the unit, the other idle.
    await Promise.all([1, 2].map(() => db.$executeRawUnsafe('SELECT pg_sleep(0.05)')));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let started = false;
    const inFlight = db.transaction(async (tx) => {
      await tx.user.create({ data: { email: `drain-${name}@example.com` } });
      started = true;
      await gate;
      // Still allowed while closing: it belongs to work admitted before close().
      await db.transaction(async (inner) => inner.user.count());
      return tx.user.count({ where: { email: `drain-${name}@example.com` } });
    });
    await waitFor(() => started);
    expect(await countConnections(name)).toBe(2);

    let closed = false;
    const closing = db.close({ deadlineMs: 10_000 }).then(() => (closed = true));
    expect(db.stats().state).toBe('closing');

    // New work of every kind gets the typed error, without touching the server.
    await expect(db.transaction(async (tx) => tx.user.count())).rejects.toBeInstanceOf(DatabaseClosedError);
    await expect(db.session(async (c) => c.user.count())).rejects.toBeInstanceOf(DatabaseClosedError);
    const plain = await db.user.count().catch((e: unknown) => e);
    expect(plain).toBeInstanceOf(DatabaseClosedError);
    expect((plain as DatabaseClosedError).retryable).toBe(false);

    await sleep(100);
    expect(closed).toBe(false); // still waiting for the unit
    release();
    await expect(inFlight).resolves.toBe(1);
    await closing;
    expect(db.stats().state).toBe('closed');
    expect(db.stats().pool.open).toBe(0);
    expect(await countConnections(name)).toBe(0);
    expect(sockets()).toBe(before);
    // The unit committed.
    expect(await testDb.query(`SELECT 1 FROM users WHERE email = $1`, [`drain-${name}@example.com`])).toHaveLength(1);
    // Still refused afterwards (Prisma would otherwise reconnect on demand).
    await expect(db.user.count()).rejects.toBeInstanceOf(DatabaseClosedError);
    expect(await countConnections(name)).toBe(0);
  });

  it('closes connections still in use once the deadline passes', async () => {
    const before = sockets();
    const { db, name } = open('deadline');
    let started = false;
    const stuck = db.transaction(
      async (tx) => {
        await tx.user.count();
        started = true;
        await sleep(8000); // the unit holds its connection, idle in transaction
        return tx.user.count();
      },
      { timeoutMs: 10_000 },
    );
    stuck.catch(() => {});
    await waitFor(() => started);
    const t0 = Date.now();
    await db.close({ deadlineMs: 300 });
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(280);
    // Deadline + grace is ~1.3 s at most; the unit would only end after 8 s.
    expect(elapsed).toBeLessThan(6000);
    await expect(stuck).rejects.toThrow();
    await waitFor(async () => (await countConnections(name)) === 0);
    await waitFor(() => sockets() === before);
  });

  it("a unit between statements at the deadline fails with the close's error, not Prisma's 'Transaction not found', whether it sends more or returns", async () => {
    const { db } = open('between');
    const unit = (then: 'statement' | 'return'): Promise<unknown> => {
      let started = false;
      const work = db
        .transaction(
          async (tx) => {
            await tx.user.count();
            started = true;
            await sleep(2000); // between statements, idle in transaction, when close() cuts it
            return then === 'statement' ? tx.user.count() : 'done';
          },
          { correlationId: `between-${then}`, timeoutMs: 10_000 },
        )
        .then(() => 'committed', (err: unknown) => err);
      return waitFor(() => started).then(() => work);
    };
    const results = Promise.all([unit('statement'), unit('return')]);
    await waitFor(() => db.stats().pool.inUse === 2);
    await db.close({ deadlineMs: 300 });
    // Before: DatabaseTransactionError P2028 'Transaction not found. Transaction ID is invalid, refers to
    // an old closed transaction Prisma doesn't have information about anymore, or was obtained before disconnecting.'
    const [afterStatement, afterReturn] = await results;
    for (const [err, then] of [[afterStatement, 'statement'], [afterReturn, 'return']] as const) {
      expect(err).toMatchObject({ name: 'DatabaseConnectionError', retryable: false, outcome: 'rolled-back', correlationId: `between-${then}`, message: expect.stringContaining('db.close()') });
    }
  });

  it('a unit cut by the close at its first statement (which carries its BEGIN) fails with the close, and is not run again', async () => {
    const { db } = open('first');
    await db.$queryRaw`SELECT 1`; // the unit's connection is then a reused one, as when a dead one is run again
    let runs = 0;
    const stuck = db.transaction(
      async (tx) => {
        runs++;
        return tx.$queryRawUnsafe('SELECT pg_sleep(8), $1::int AS run', runs);
      },
      { timeoutMs: 10_000 },
    );
    stuck.catch(() => {});
    await waitFor(() => runs === 1);
    await sleep(100); // the statement and its BEGIN on the server
    await db.close({ deadlineMs: 300 });
    await expect(stuck).rejects.toMatchObject({ name: 'DatabaseConnectionError', retryable: false, message: expect.stringContaining('db.close()') });
    expect(runs).toBe(1);
    expect(db.stats().counters.connectionsRecovered).toBe(0);
  });

  it('a statement and a unit cut by the close: each gets its own error; the statement is not run again and may have happened', async () => {
    const { db } = open('cut-statement');
    await db.$queryRaw`SELECT 1`; // the statement below gets this pooled (reused) connection
    const statement = db.$executeRaw`SELECT pg_sleep(8)`.then(() => 'resolved', (err: unknown) => err);
    const unit = db.transaction(async (tx) => tx.$executeRaw`SELECT pg_sleep(8)`, { correlationId: 'cut-unit', timeoutMs: 10_000 }).then(() => 'resolved', (err: unknown) => err);
    await waitFor(() => db.stats().pool.inUse === 2);
    await sleep(300); // both on the server
    await db.close({ deadlineMs: 300 });
    const [fromStatement, fromUnit] = await Promise.all([statement, unit]);
    // Before: the statement was taken for one that hit a connection dead while idle and sent again,
    // into the ended pool: 'Could not connect to the database: Cannot use a pool after calling end
    // on the pool', retryable: true. Or it got the unit's error object: outcome 'rolled-back' and
    // the unit's correlation id.
    expect(fromStatement).toMatchObject({ name: 'DatabaseConnectionError', retryable: false, outcome: 'unknown', message: expect.stringContaining('db.close()') });
    expect((fromStatement as { correlationId?: string }).correlationId).toBeUndefined();
    expect(fromUnit).toMatchObject({ name: 'DatabaseConnectionError', retryable: false, outcome: 'rolled-back', correlationId: 'cut-unit' });
    expect(fromUnit).not.toBe(fromStatement);
    expect(db.stats().counters.connectionsRecovered).toBe(0);
  });

  it('callers still queued for a connection when the deadline passes fail at once, as work that did not start', async () => {
    const name = appName('queued');
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: name, pool: { size: 1, maxOverflow: 0, timeoutMs: 60_000 }, transaction: { maxWaitMs: 60_000 } });
    let started = false;
    const stuck = db.transaction(async (tx) => {
      await tx.user.count();
      started = true;
      await sleep(8000);
    });
    stuck.catch(() => {});
    await waitFor(() => started);
    let ran = false;
    const statement = db.$queryRaw`SELECT 1`.then(() => 'resolved', (err: unknown) => err);
    const unit = db.transaction(async () => void (ran = true)).then(() => 'resolved', (err: unknown) => err);
    await waitFor(() => db.stats().pool.waiting === 2);
    const t0 = Date.now();
    await db.close({ deadlineMs: 300 });
    // Before: pg-pool's end() left them queued until their 60 s wait ran out, then they were told to retry.
    const [fromStatement, fromUnit] = await Promise.all([statement, unit]);
    expect(Date.now() - t0).toBeLessThan(6000);
    for (const err of [fromStatement, fromUnit]) {
      expect(err).toBeInstanceOf(DatabaseClosedError);
      expect(err).toMatchObject({ retryable: false, outcome: 'rolled-back' });
    }
    expect(ran).toBe(false);
    const { pool, counters } = db.stats();
    expect(pool.waiting).toBe(0);
    // The connection destroyed under the unit is counted closed once (pg-pool reports its removal twice).
    expect(counters.connectionsClosed).toBe(counters.connectionsOpened);
  });

  it.each(['primary', 'replica'] as const)("a connection still being opened to a silent %s is ended by the close: its caller fails with the close's error, nothing of the Db is left", async (where) => {
    const proxy = await startTcpProxy({ host: testDb.host, port: testDb.port });
    const silent = testDb.urlWith({ sslmode: 'disable' }, { user: testDb.appUser, port: proxy.port });
    const direct = testDb.urlWith({ sslmode: 'disable' }, { user: testDb.appUser });
    const name = appName(`opening-${where}`);
    const connectMs = 8_000;
    const db = createDb({
      PrismaClient,
      url: where === 'primary' ? silent : direct,
      ...(where === 'replica' ? { replicas: [silent] } : {}),
      applicationName: name,
      pool: { size: 1, maxOverflow: 0 },
      timeouts: { connectMs },
    });
    try {
      if (where === 'replica') await db.account.count();
      proxy.blackhole();
      const read = (where === 'primary' ? db.account.count() : db.read((tx) => tx.account.count())).then(() => 'resolved', (err: unknown) => err);
      await waitFor(() => proxy.accepted > 0);
      const t0 = Date.now();
      await db.close({ deadlineMs: 100 });
      // Before: the pool still counted the connection being opened (open 1, inUse 1) and the
      // caller waited out the whole connect deadline for a DeadlineExceededError(connect).
      expect(db.stats().pool).toMatchObject({ open: 0, inUse: 0 });
      const failure = await read;
      expect(Date.now() - t0).toBeLessThan(connectMs / 2);
      expect(failure).toMatchObject({ retryable: false, message: expect.stringContaining('db.close()') });
      if (where === 'primary') expect(failure).toMatchObject({ name: 'DatabaseClosedError', outcome: 'rolled-back' });
      // Its socket is gone (the proxy sees the client leave), not left to the connect deadline.
      expect(await eventually(() => proxy.open() === 0, 2_000)).toBe(true);
    } finally {
      await db.close();
      await proxy.close();
    }
  });

  it('is idempotent', async () => {
    const { db, name } = open('twice');
    await db.$queryRaw`SELECT 1`;
    const a = db.close();
    const b = db.close({ deadlineMs: 1 });
    expect(b).toBe(a);
    await Promise.all([a, b]);
    await db.close();
    expect(await countConnections(name)).toBe(0);
  });

  it('a deadline that is no deadline (NaN from an unset variable, Infinity, a string) is a ConfigError at once, and nothing closes; closeOnSignals says so when registered', async () => {
    const { db } = open('bad-deadline');
    // Before: close() took these as no deadline and waited for this unit for as long as it ran.
    const { release, inFlight } = await unitInFlight(db, (tx) => tx.user.count());
    for (const deadlineMs of [NaN, Infinity, '5000', -1, 2.5]) {
      await expect(db.close({ deadlineMs: deadlineMs as number })).rejects.toMatchObject({ name: 'ConfigError', message: expect.stringContaining('deadlineMs') });
    }
    release();
    await inFlight;
    // Still open: new work runs.
    expect(await db.user.count()).toBeGreaterThanOrEqual(0);
    const listeners = process.listenerCount('SIGTERM');
    expect(() => db.closeOnSignals({ deadlineMs: NaN })).toThrow(ConfigError);
    expect(() => createDb({ PrismaClient, url: testDb.url, closeOnSignals: { deadlineMs: Infinity } })).toThrow(ConfigError);
    expect(process.listenerCount('SIGTERM')).toBe(listeners);
    await db.close({ deadlineMs: 0 });
  });

  it("an option close() or closeOnSignals does not have (`deadline`, `signal`) is a ConfigError naming it, not ignored: nothing closes, no handler is registered", async () => {
    const { db } = open('bad-option');
    // Before: { deadline: 0 } closed with the 10 s default, and { signal: ['SIGUSR2'] } registered SIGTERM and SIGINT instead.
    await expect(db.close({ deadline: 0 } as never)).rejects.toMatchObject({ name: 'ConfigError', issues: [{ setting: 'close option deadline', problem: expect.stringContaining('deadlineMs') }] });
    expect(db.stats().state).toBe('open');
    const listeners = ['SIGTERM', 'SIGINT', 'SIGUSR2'].map((s) => process.listenerCount(s));
    expect(() => db.closeOnSignals({ signal: ['SIGUSR2'] } as never)).toThrow(/closeOnSignals option signal: .*signals/);
    expect(() => createDb({ PrismaClient, url: testDb.url, closeOnSignals: { deadline: 5_000 } as never })).toThrow(/closeOnSignals option deadline/);
    expect(['SIGTERM', 'SIGINT', 'SIGUSR2'].map((s) => process.listenerCount(s))).toEqual(listeners);
    await db.close({ deadlineMs: 0 });
  });
});

/** A unit of work that has sent `first` and then waits, in flight, until `release()`. */
async function unitInFlight(db: Db<PrismaClient>, first: (tx: TxClient<PrismaClient>) => Promise<unknown>): Promise<{ release: () => void; inFlight: Promise<void> }> {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let started = false;
  const inFlight = db.transaction(async (tx) => {
    await first(tx);
    started = true;
    await gate;
  });
  await waitFor(() => started);
  return { release, inFlight };
}

describe('signals', () => {
  it('registers no handler by default', () => {
    const counts = [process.listenerCount('SIGTERM'), process.listenerCount('SIGINT')];
    createDb({ PrismaClient, url: testDb.url, applicationName: appName('nosig') });
    expect([process.listenerCount('SIGTERM'), process.listenerCount('SIGINT')]).toEqual(counts);
  });

  it('closeOnSignals: true closes on SIGTERM and then lets the signal take effect', async () => {
    const sigterm = process.listenerCount('SIGTERM');
    const sigint = process.listenerCount('SIGINT');
    const name = appName('sig');
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: name, closeOnSignals: true });
    expect(process.listenerCount('SIGTERM')).toBe(sigterm + 1);
    expect(process.listenerCount('SIGINT')).toBe(sigint + 1);
    await db.$queryRaw`SELECT 1`;
    expect(await countConnections(name)).toBe(1);
    // The re-raised signal would end the Jest worker: record it instead.
    const kill = jest.spyOn(process, 'kill').mockImplementation(() => true);
    try {
      process.emit('SIGTERM', 'SIGTERM');
      await waitFor(() => kill.mock.calls.length > 0);
      expect(db.stats().state).toBe('closed');
      expect(kill).toHaveBeenCalledWith(process.pid, 'SIGTERM');
    } finally {
      kill.mockRestore();
    }
    expect(await countConnections(name)).toBe(0);
    expect(process.listenerCount('SIGTERM')).toBe(sigterm);
    expect(process.listenerCount('SIGINT')).toBe(sigint);
  });

  it('two Dbs closing on SIGTERM: the signal takes effect only after the slower one has drained its unit in flight', async () => {
    const sigterm = process.listenerCount('SIGTERM');
    const fast = createDb({ PrismaClient, url: testDb.url, applicationName: appName('sig-fast'), closeOnSignals: { signals: ['SIGTERM'] } });
    const slow = createDb({ PrismaClient, url: testDb.url, applicationName: appName('sig-slow'), closeOnSignals: { signals: ['SIGTERM'] } });
    await fast.$queryRaw`SELECT 1`;
    const email = `sig-slow-${process.pid}-${seq}@example.com`;
    const { release, inFlight } = await unitInFlight(slow, (tx) => tx.user.create({ data: { email } }));
    const kill = jest.spyOn(process, 'kill').mockImplementation(() => true);
    try {
      process.emit('SIGTERM', 'SIGTERM');
      await waitFor(() => fast.stats().state === 'closed');
      await sleep(300);
      // The fast Db's close is over; the slow one is still draining: nothing may end the process yet.
      expect(kill).not.toHaveBeenCalled();
      expect(slow.stats().state).toBe('closing');
      release();
      await inFlight;
      await waitFor(() => kill.mock.calls.length > 0);
      expect(slow.stats().state).toBe('closed');
      expect(kill).toHaveBeenCalledTimes(1);
      expect(kill).toHaveBeenCalledWith(process.pid, 'SIGTERM');
    } finally {
      release();
      kill.mockRestore();
    }
    expect(await testDb.query('SELECT count(*)::int AS n FROM users WHERE email = $1', [email])).toEqual([{ n: 1 }]);
    expect(process.listenerCount('SIGTERM')).toBe(sigterm);
  });

  it('a second SIGTERM while draining does not end the process: a listener stays until the close has ended', async () => {
    const sigterm = process.listenerCount('SIGTERM');
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: appName('sig-twice'), closeOnSignals: { signals: ['SIGTERM'] } });
    const { release, inFlight } = await unitInFlight(db, (tx) => tx.user.count());
    const kill = jest.spyOn(process, 'kill').mockImplementation(() => true);
    try {
      process.emit('SIGTERM', 'SIGTERM');
      expect(db.stats().state).toBe('closing');
      // Without a listener, a real second SIGTERM takes Node's default action: the process ends mid-drain.
      expect(process.listenerCount('SIGTERM')).toBeGreaterThan(sigterm);
      process.emit('SIGTERM', 'SIGTERM');
      await sleep(200);
      expect(kill).not.toHaveBeenCalled();
      release();
      await inFlight;
      await waitFor(() => kill.mock.calls.length > 0);
      expect(db.stats().state).toBe('closed');
      expect(kill).toHaveBeenCalledTimes(1);
    } finally {
      release();
      kill.mockRestore();
    }
    expect(process.listenerCount('SIGTERM')).toBe(sigterm);
  });

  it('a signal name that is no signal a process can catch is a ConfigError when registering, and nothing is registered', async () => {
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: appName('badsig') });
    const names = ['SIGTERM', 'SIGINT', 'sigterm', 'SIGTEM'];
    const counts = (): number[] => names.map((n) => process.listenerCount(n));
    const before = counts();
    // Before: 'sigterm' and 'SIGTEM' were accepted (a listener for an event that never comes, so
    // SIGTERM ended the process with nothing drained); SIGKILL threw Node's raw EINVAL after
    // SIGTERM's handler was registered; an empty list registered nothing.
    for (const signals of [['sigterm'], ['SIGTERM', 'SIGTEM'], ['SIGTERM', 'SIGKILL'], []]) {
      expect(() => db.closeOnSignals({ signals: signals as NodeJS.Signals[] })).toThrow(ConfigError);
    }
    expect(() => createDb({ PrismaClient, url: testDb.url, closeOnSignals: { signals: ['sigterm' as NodeJS.Signals] } })).toThrow(ConfigError);
    expect(counts()).toEqual(before);
    await db.close();
  });

  it('db.closeOnSignals() returns an unregister function', () => {
    const db = createDb({ PrismaClient, url: testDb.url, applicationName: appName('unreg') });
    const sigterm = process.listenerCount('SIGTERM');
    const off = db.closeOnSignals({ signals: ['SIGTERM'] });
    expect(process.listenerCount('SIGTERM')).toBe(sigterm + 1);
    off();
    expect(process.listenerCount('SIGTERM')).toBe(sigterm);
  });
});
