// src/deadline.ts: a unit's statements share one client-side deadline (UnitLimits.watch).
import { DEADLINE_GRACE_MS, UnitLimits } from '../src/deadline';

describe('UnitLimits', () => {
  it('gives up every statement still pending at the deadline plus the grace, once, and none that settled', async () => {
    // The deadline is now: statements get the grace, 750 ms.
    const limits = new UnitLimits(performance.now(), 0, 1_000);
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

  it('uses one timer for all its statements, and leaves none once the unit ends', () => {
    const set = jest.spyOn(global, 'setTimeout');
    const clear = jest.spyOn(global, 'clearTimeout');
    try {
      const limits = new UnitLimits(performance.now() + 60_000, 60_000, 1_000);
      const fired: number[] = [];
      for (let i = 0; i < 5; i++) limits.watch(() => fired.push(i))();
      for (let i = 0; i < 5; i++) limits.watch(() => fired.push(i));
      expect(set).toHaveBeenCalledTimes(1);
      // The same duration for every unit with the same timeout: one timer list for all of them.
      expect(set.mock.calls[0]?.[1]).toBe(60_000 + DEADLINE_GRACE_MS);
      limits.end();
      expect(clear).toHaveBeenCalledTimes(1);
      expect(clear.mock.calls[0]?.[0]).toBe(set.mock.results[0]?.value);
      expect(fired).toEqual([]);
    } finally {
      set.mockRestore();
      clear.mockRestore();
    }
  });
});
