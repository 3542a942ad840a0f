// src/deadline.ts: a unit's statements share one client-side deadline (UnitLimits.watch).
import { DEADLINE_GRACE_MS, UnitLimits } from '../src/deadline';

const pendingTimers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

describe('UnitLimits', () => {
  it('gives up every statement still pending at the deadline plus the grace, once, and none that settled', async () => {
    const limits = new UnitLimits(performance.now(), 1, 1_000);
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
    const before = pendingTimers();
    const limits = new UnitLimits(performance.now() + 60_000, 60_000, 1_000);
    const fired: number[] = [];
    for (let i = 0; i < 5; i++) limits.watch(() => fired.push(i));
    expect(pendingTimers()).toBe(before + 1);
    limits.end();
    expect(pendingTimers()).toBe(before);
    expect(fired).toEqual([]);
  });
});
