// The ambient context of the caller's work: the unit of work it runs in, that unit's
// deadline, its session's connection, its db.scope(), the gate that admitted it. All of
// it lives in ONE AsyncLocalStorage, each concern in a slot of its own.
//
// Why one: on Node 20 every AsyncLocalStorage that has ever run a store copies its value
// onto every promise the process creates from then on (a symbol-keyed load and store per
// instance, megamorphic). With seven instances that was about 130 thousand CPU
// instructions per Prisma unit of work, 3% (callgrind, `npm run bench`'s instruction
// counts): more than the rest of the layer together. One instance costs what any
// application using AsyncLocalStorage already pays.

import { AsyncLocalStorage } from 'node:async_hooks';

/** The values of every slot, indexed by slot number; never changed once stored. */
type Store = readonly unknown[];

const storage = new AsyncLocalStorage<Store>();
let slots = 0;

/** Does the caller run inside any of the layer's contexts (a unit, a session, a scope, ...)? */
export function inAnyContext(): boolean {
  return storage.getStore() !== undefined;
}

/** One ambient value, visible to everything `run` starts (statements, timers, promises). */
export class ContextSlot<T> {
  private readonly index = slots++;

  /** The value for the caller's async context, or undefined outside any `run` of this slot. */
  get(): T | undefined {
    return storage.getStore()?.[this.index] as T | undefined;
  }

  /** Runs `fn` with `value` in this slot; the other slots keep the caller's values. */
  run<R>(value: T, fn: () => R): R {
    return runIn(this.withValue(value), fn);
  }

  /** Runs `fn` with `value` in this slot and `otherValue` in `other`: one run for both. */
  runWith<U, R>(value: T, other: ContextSlot<U>, otherValue: U, fn: () => R): R {
    const store = this.withValue(value);
    store[other.index] = otherValue;
    return runIn(store, fn);
  }

  /** The caller's store with `value` in this slot (a copy: a stored array never changes). */
  private withValue(value: T): unknown[] {
    const outer = storage.getStore();
    const store = outer === undefined ? [] : outer.slice();
    store[this.index] = value;
    return store;
  }
}

/** Runs `fn` with `store`, and starts what it returns inside the run. */
function runIn<R>(store: Store, fn: () => R): R {
  return storage.run(store, () => startedHere(fn()));
}

/**
 * `fn`'s result, started inside the run. A Prisma query is a lazy thenable: it runs when
 * something first calls its `then`. Awaited by the caller, outside the run, it would run
 * outside the run's context: a query returned straight from db.scope's or db.session's
 * function (`db.scope(() => db.user.count())`) escaped its scope or its session's
 * connection. Here its `then` is called inside the run.
 */
function startedHere<R>(result: R): R {
  if (result instanceof Promise || typeof (result as { then?: unknown } | null | undefined)?.then !== 'function') return result;
  return new Promise((resolve, reject) => (result as PromiseLike<unknown>).then(resolve, reject)) as R;
}
