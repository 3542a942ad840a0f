// The pg-pool internals the layer relies on, where pg-pool has no public call, in one place.
// Both hold for pg-pool and for the copy bundled in @neondatabase/serverless, and each has a
// test that fails when pg-pool changes underneath: test/pool.test.ts ("callers that gave up
// waiting ... leave no connection opened for nobody") and test/driver/pg.test.ts (a
// checkout's release replaced for that checkout only, closing the connection).

/**
 * Takes a waiting checkout's callback out of pg-pool's queue (`_pendingQueue`), as pg-pool's
 * own connectionTimeoutMillis does. False: not there (pg-pool will serve it).
 */
export function withdrawWaiter(pool: object, callback: unknown): boolean {
  const queue = (pool as { _pendingQueue?: unknown })._pendingQueue;
  if (!Array.isArray(queue)) return false;
  const at = queue.findIndex((item: { callback?: unknown } | null) => item?.callback === callback);
  if (at === -1) return false;
  queue.splice(at, 1);
  return true;
}

/**
 * Makes the current checkout's release close the connection: pg-pool sets `release` on each
 * checkout, and closes a connection released with an error (`reason`, unless the releaser
 * gives one of its own).
 */
export function closeOnRelease(client: { release(err?: Error | boolean): void }, reason: Error): void {
  const release = client.release;
  client.release = (err) => release.call(client, err || reason);
}
