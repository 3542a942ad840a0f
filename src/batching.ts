// Prisma batches the `findUnique` calls made in one tick, and every statement of an
// interactive transaction (its DataLoader, `_requestHandler.dataloader`): the batch goes
// out from a `process.nextTick` that the first of them scheduled, so every statement in it
// runs in the first caller's async context. The layer routes a statement by that context:
// its db.scope()'s connection, its session's, its unit's deadline and events. Batched
// across contexts, one invocation's findUnique ran on another's connection (or failed with
// that one's ScopeEndedError), and one unit's statement was watched by another's deadline.
//
// So a call made inside any of the layer's contexts is not batched: Prisma sends it at
// once, from its caller's context (its `singleLoader`, the path of every other query).
// Calls outside every context are batched as before; their tick carries no context.
//
// The one place the layer reaches into Prisma's client internals:
// test/batching.test.ts fails when they move.

import { inAnyContext } from './context.ts';

/** The part of Prisma's DataLoader options this module replaces. */
interface BatchOptions {
  batchBy(request: unknown): string | undefined;
}

/**
 * Makes `prisma` send the requests made inside the layer's contexts unbatched. Returns
 * false when the client has no DataLoader where Prisma 7 keeps it (nothing changed).
 */
export function keepBatchesInContext(prisma: object): boolean {
  const handler = (prisma as { _requestHandler?: { dataloader?: { options?: Partial<BatchOptions> } } })._requestHandler;
  const options = handler?.dataloader?.options;
  const batchBy = options?.batchBy;
  if (options === undefined || typeof batchBy !== 'function') return false;
  options.batchBy = (request: unknown) => (inAnyContext() ? undefined : batchBy.call(options, request));
  return true;
}
