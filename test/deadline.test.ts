// src/deadline.ts: waits one after another reuse one timer (ReusedTimer); a unit's
// statements share one client-side deadline (UnitLimits.watch).
import { DEADLINE_GRACE_MS, ReusedTimer, ReusedTimers, UnitLimits } from '../src/deadline';
import { PrismaClient } from '../src/generated/prisma/client';
import { createDb, DeadlineExceededError, type Db } from '../src/index';
import { createTestDatabase, type TestDatabase } from './support/db';
import { startTcpProxy } from './support/tcp-proxy';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('ReusedTimer', () => {
  it('expires a wait that is not stopped, also after the timer has fired before, and never one that was', async () => {
    const timer = new ReusedTimer(40);
    const fired: string[] = [];
    timer.start(() => fired.push('first'));
    await sleep(400);
    expect(fired).toEqual(['first']);
    // The timer fired: the next wait re-arms it.
    timer.start(() => fired.push('second'));
    await sleep(400);
    expect(fired).toEqual(['first', 'second']);
    timer.start(() => fired.push('stopped'))();
    await sleep(400);
    expect(fired).toEqual(['first', 'second']);
  });

  it('gives a wait its full length from its own start, and a late stop does not end a newer wait', async () => {
    const timer = new ReusedTimer(300);
    const fired: string[] = [];
    const stopOld = timer.start(() => fired.push('old'));
    await sleep(200);
    stopOld();
    // Started 200 ms after the first: the timer was re-armed, not left at the first's end.
    timer.start(() => fired.push('new'));
    stopOld();
    await sleep(150);
    expect(fired).toEqual([]);
    await sleep(600);
    expect(fired).toEqual(['new']);
  });

  it('gives a wait that starts while another holds the timer a timer of its own: both expire', async () => {
    const timer = new ReusedTimer(40);
    const fired: string[] = [];
    timer.start(() => fired.push('a'));
    const stopB = timer.start(() => fired.push('b'));
    timer.start(() => fired.push('c'));
    stopB();
    await sleep(400);
    expect(fired.sort()).toEqual(['a', 'c']);
  });

  it('a wait armed by work that another timer of the same length woke is not cut at once by this timer, found due with it', async () => {
    // Two connections' statement timers (one length, one Node timer list), both due in one pass:
    // the first's expiry fails its statement, whose caller (in the microtasks Node runs before
    // the next timer) sends a statement on the second connection, re-arming its timer.
    const first = new ReusedTimer(100);
    const second = new ReusedTimer(100);
    const lasted = await new Promise<number>((resolve) => {
      first.start(() => {
        void Promise.resolve().then(() => {
          const armed = performance.now();
          second.start(() => resolve(performance.now() - armed));
        });
      });
      second.start(() => {})(); // its previous wait, over: the timer stays due
    });
    // Before: Node ran the second timer it had already found due, and the new wait expired after 0 ms.
    expect(lasted).toBeGreaterThanOrEqual(90);
  });

  it('creates one Node timer for any number of waits one after another, and keeps no process alive', () => {
    const set = jest.spyOn(global, 'setTimeout');
    try {
      const timer = new ReusedTimer(60_000);
      for (let i = 0; i < 50; i++) timer.start(() => {})();
      expect(set).toHaveBeenCalledTimes(1);
      const made = set.mock.results[0]?.value as NodeJS.Timeout;
      expect(made.hasRef()).toBe(false);
    } finally {
      set.mockRestore();
    }
  });

  it('ReusedTimers keeps one per length, up to its bound', () => {
    const set = jest.spyOn(global, 'setTimeout');
    try {
      const timers = new ReusedTimers(2);
      for (let i = 0; i < 10; i++) {
        timers.start(60_000, () => {})();
        timers.start(30_000, () => {})();
      }
      expect(set).toHaveBeenCalledTimes(2);
      // Past the bound: a timer per wait rather than an ever-growing map.
      for (let i = 0; i < 3; i++) timers.start(10_000, () => {})();
      expect(set).toHaveBeenCalledTimes(5);
    } finally {
      set.mockRestore();
    }
  });
});

describe('UnitLimits', () => {
  it('gives up every statement still pending at the deadline plus the grace, once, and none that settled', async () => {
    // The deadline is now: statements get the grace, 750 ms.
    const limits = new UnitLimits(performance.now(), 0, 1_000, new ReusedTimers());
    const fired: string[] = [];
    const stopA = limits.watch(() => fired.push('a'));
    limits.watch(() => fired.push('b'));
    const stopC = limits.watch(() => fired.push('c'));
    stopA();
    await new Promise((r) => setTimeout(r, DEADLINE_GRACE_MS / 2));
    expect(fired).toEqual([]);
    stopC();
    await new Promise((r) => setTimeout(r, DEADLINE_GRACE_MS));
    expect(fired).toEqual(['b']);
    // A statement sent after the deadline still gets the grace, then is given up.
    const late: string[] = [];
    limits.watch(() => late.push('late'));
    await new Promise((r) => setTimeout(r, DEADLINE_GRACE_MS + 250));
    expect(late).toEqual(['late']);
  });

  it('uses one timer for all its statements and for units one after another, and leaves none armed once a unit ends', async () => {
    const set = jest.spyOn(global, 'setTimeout');
    try {
      const timers = new ReusedTimers();
      const fired: number[] = [];
      for (let unit = 0; unit < 3; unit++) {
        const limits = new UnitLimits(performance.now() + 60_000, 60_000, 1_000, timers);
        for (let i = 0; i < 5; i++) limits.watch(() => fired.push(i))();
        for (let i = 0; i < 5; i++) limits.watch(() => fired.push(i));
        limits.end();
      }
      expect(set).toHaveBeenCalledTimes(1);
      // The same duration for every unit with the same timeout.
      expect(set.mock.calls[0]?.[1]).toBe(60_000 + DEADLINE_GRACE_MS);
      // Ended units leave nothing to expire, even when their timer fires.
      const limits = new UnitLimits(performance.now(), 0, 1_000, new ReusedTimers());
      limits.watch(() => fired.push(99));
      limits.end();
      await sleep(DEADLINE_GRACE_MS + 250);
      expect(fired).toEqual([]);
    } finally {
      set.mockRestore();
    }
  });
});

describe("a unit's limits are its own Db's (two Dbs, found by probes)", () => {
  // An app database and an audit one: the audit Db's statements sent inside an app unit
  // waited for a connection by the app unit's maxWaitMs and were given up at the app unit's
  // deadline, not by the audit Db's own pool timeout and statement deadline.
  let appDb: TestDatabase;
  let auditDb: TestDatabase;
  const open: Array<{ close(options?: { deadlineMs?: number }): Promise<void> }> = [];
  const make = (t: TestDatabase, name: string, options: Partial<Parameters<typeof createDb<PrismaClient>>[0]> = {}): Db<PrismaClient> => {
    const d = createDb({ PrismaClient, url: t.url, applicationName: name, env: {}, ...options });
    open.push(d);
    return d;
  };
  beforeAll(async () => {
    [appDb, auditDb] = await Promise.all([createTestDatabase({ prefix: 'deadline_app' }), createTestDatabase({ prefix: 'deadline_audit' })]);
  });
  afterAll(async () => {
    for (const d of open.reverse()) await d.close({ deadlineMs: 1_000 });
    await Promise.all([appDb?.drop(), auditDb?.drop()]);
  });

  it("another Db's statement inside a unit waits for its pool by that pool's timeout, not the unit's maxWaitMs", async () => {
    const app = make(appDb, 'deadline-two-app', { transaction: { maxWaitMs: 100 } });
    const audit = make(auditDb, 'deadline-two-audit', { pool: { size: 1, maxOverflow: 0, timeoutMs: 10_000 } });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let held = false;
    const holder = audit.transaction(async (tx) => {
      await tx.$executeRaw`SELECT 1`;
      held = true;
      await gate;
    });
    while (!held) await sleep(10);
    // The audit pool's one connection comes free after 500 ms: well within its 10 s timeout.
    setTimeout(release, 500);
    await app.transaction(async (tx) => {
      await tx.$executeRaw`SELECT 1`;
      await audit.$executeRaw`SELECT 1`;
    });
    await holder;
    expect(audit.stats().counters.poolTimeouts).toBe(0);
  });

  it("another Db's statement inside a unit is given up at its own statement deadline, not the unit's", async () => {
    const proxy = await startTcpProxy({ host: auditDb.host, port: auditDb.port });
    open.push(proxy);
    const app = make(appDb, 'deadline-two-app2', { transaction: { timeoutMs: 60_000 } });
    const audit = make(auditDb, 'deadline-two-audit2', {
      url: auditDb.urlWith({ sslmode: 'disable' }, { port: proxy.port }),
      timeouts: { statementMs: 1_000, connectMs: 2_000 },
      pool: { size: 1, maxOverflow: 0 },
    });
    await audit.$executeRaw`SELECT 1`;
    // The audit database's network goes silent: its statement's deadline is 1 s + the grace.
    proxy.blackhole();
    const started = performance.now();
    let failure: unknown;
    await app.transaction(async (tx) => {
      await tx.$executeRaw`SELECT 1`;
      failure = await audit.$executeRaw`SELECT 1`.then(
        () => undefined,
        (err: unknown) => err,
      );
    });
    const ms = performance.now() - started;
    expect(failure).toBeInstanceOf(DeadlineExceededError);
    expect((failure as DeadlineExceededError).deadline).toBe('statement');
    // It was given up at the app unit's deadline instead: 60.75 s.
    expect(ms).toBeLessThan(15_000);
  });
});
