// src/deadline.ts: waits one after another reuse one timer (ReusedTimer); a unit's
// statements share one client-side deadline (UnitLimits.watch).
import { DEADLINE_GRACE_MS, ReusedTimer, ReusedTimers, UnitLimits } from '../src/deadline';

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
