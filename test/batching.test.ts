/**
 * src/batching.ts: Prisma's DataLoader, where Prisma 7 keeps it, sends the requests made
 * inside the layer's contexts unbatched (each from its own caller's context) and batches
 * the others as before. Checked on a real PrismaClient, so that a Prisma release that
 * moves its batching fails here. What it prevents (one invocation's findUnique on
 * another's connection) is checked end to end in test/scope.test.ts.
 */
import { PrismaPg } from '@prisma/adapter-pg';
import { keepBatchesInContext } from '../src/batching';
import { ContextSlot } from '../src/context';
import { PrismaClient } from '../src/generated/prisma/client';

type BatchBy = (request: unknown) => string | undefined;

/** A client that never connects (nothing is sent here), and its DataLoader's batchBy. */
function client(): { prisma: PrismaClient; batchBy: () => BatchBy } {
  const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: 'postgresql://nobody@127.0.0.1:1/none' }) });
  const options = (prisma as unknown as { _requestHandler: { dataloader: { options: { batchBy: BatchBy } } } })._requestHandler.dataloader.options;
  return { prisma, batchBy: () => options.batchBy };
}

/** A findUnique as Prisma's request handler sees it (protocol query, no transaction). */
const findUnique = {
  protocolQuery: { modelName: 'User', action: 'findUnique', query: { arguments: { where: { id: 1 } }, selection: { $scalars: true } } },
};
/** A statement of an interactive transaction: Prisma batches those by transaction. */
const inTransaction = { protocolQuery: { modelName: 'User', action: 'count', query: { arguments: {}, selection: { _count: true } } }, transaction: { kind: 'itx', id: 'tx-1' } };

const someContext = new ContextSlot<string>();

describe('keepBatchesInContext', () => {
  it("finds Prisma's DataLoader and its batchBy (Prisma batches findUnique and a transaction's statements)", () => {
    const { prisma, batchBy } = client();
    expect(typeof batchBy()(findUnique)).toBe('string');
    expect(typeof batchBy()(inTransaction)).toBe('string');
    expect(keepBatchesInContext(prisma)).toBe(true);
  });

  it('inside any of the layer contexts nothing is batched; outside them, as Prisma does', () => {
    const { prisma, batchBy } = client();
    const before = batchBy();
    const keys = { findUnique: before(findUnique), inTransaction: before(inTransaction) };
    keepBatchesInContext(prisma);
    const after = batchBy();
    expect({ findUnique: after(findUnique), inTransaction: after(inTransaction) }).toEqual(keys);
    someContext.run('a unit, a scope, a session', () => {
      expect(after(findUnique)).toBeUndefined();
      expect(after(inTransaction)).toBeUndefined();
    });
  });

  it('a client without that DataLoader is left as it is', () => {
    expect(keepBatchesInContext({})).toBe(false);
    expect(keepBatchesInContext({ _requestHandler: { dataloader: {} } })).toBe(false);
  });
});
