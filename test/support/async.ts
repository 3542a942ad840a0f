// Timing helpers shared by the tests: rendezvous, polling, rejections, open sockets.

/** Resolves with what `p` rejected with; fails the test if `p` resolves. */
export async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject, but it resolved');
}

/**
 * A rendezvous for `parties` concurrent callers: each `arrive()` resolves once all
 * of them have arrived, so two units of work really overlap at a known point.
 * Rejects after `timeoutMs` so a broken test fails instead of hanging.
 */
export function barrier(parties: number, timeoutMs = 10_000): { arrive(): Promise<void> } {
  let arrived = 0;
  let release!: () => void;
  const all = new Promise<void>((resolve) => (release = resolve));
  return {
    arrive() {
      arrived++;
      if (arrived >= parties) release();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`barrier: only ${arrived}/${parties} arrived`)), timeoutMs);
      });
      return Promise.race([all, timeout]).finally(() => clearTimeout(timer));
    },
  };
}

/** A promise plus the function that resolves it. */
export function latch(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns true; returns the last value seen either way. */
export async function eventually(probe: () => Promise<boolean> | boolean, timeoutMs = 5_000, everyMs = 25): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > until) return false;
    await sleep(everyMs);
  }
}

/** Socket handles of this process (TCP, TLS over TCP; pipes are excluded): what a leaked connection leaves behind. */
export function sockets(): number {
  return process.getActiveResourcesInfo().filter((r) => /TCP|TLS/i.test(r)).length;
}

/** Polls `check` until it holds; throws after `timeoutMs` (use `eventually` to get a boolean instead). */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 5000, everyMs = 25): Promise<void> {
  if (!(await eventually(check, timeoutMs, everyMs))) throw new Error('condition not reached in time');
}

/**
 * Starts a unit of work that holds one pooled connection until the returned function is
 * called (which resolves once the unit has finished). Resolves when the connection is held.
 */
export async function holdConnection(db: { transaction(fn: () => Promise<void>): Promise<unknown> }): Promise<() => Promise<void>> {
  const held = latch();
  const release = latch();
  const unit = db.transaction(async () => {
    held.open();
    await release.promise;
  });
  await Promise.race([held.promise, unit]);
  return async () => {
    release.open();
    await unit;
  };
}
