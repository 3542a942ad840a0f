/**
 * Issue 15: an existing Prisma app's error handling keeps its meaning on the layer. Written
 * the way Prisma's docs write the idiom (`instanceof Prisma.PrismaClientKnownRequestError`
 * and `e.code`), inside and outside units of work, plus the app's own error class thrown
 * through db.transaction, and the `finally { await prisma.$disconnect() }` habit of serverless handlers.
 */
import { PrismaPg } from '@prisma/adapter-pg';
import { Prisma, PrismaClient } from '../src/generated/prisma/client';
import { ConfigError, createDb, DatabaseClosedError, type Db } from '../src/index';
import { countConnections, createTestDatabase, type TestDatabase } from './support/db';

class NotFoundError extends Error {}

/** An HTTP error handler as apps write it against bare Prisma. */
function statusOf(e: unknown): number {
  if (e instanceof NotFoundError) return 404;
  if (e instanceof Prisma.PrismaClientKnownRequestError) {
    if (e.code === 'P2002') return 409;
    if (e.code === 'P2025') return 404;
  }
  return 500;
}

let testDb: TestDatabase;
let db: Db<PrismaClient>;
const APP = 'prisma-idioms-test';

beforeAll(async () => {
  testDb = await createTestDatabase({ prefix: 'idioms' });
  db = createDb({ PrismaClient, url: testDb.url, applicationName: APP });
});
afterAll(async () => {
  await db?.close();
  await testDb?.drop();
});

test('P2002 on create is a PrismaClientKnownRequestError with code and meta: 409, outside and inside a unit', async () => {
  await db.user.create({ data: { email: 'taken@example.com' } });
  const outside = await db.user.create({ data: { email: 'taken@example.com' } }).catch((e: unknown) => e);
  expect(statusOf(outside)).toBe(409);
  expect((outside as Prisma.PrismaClientKnownRequestError).meta).toBeDefined();
  const inside = await db.transaction((tx) => tx.user.create({ data: { email: 'taken@example.com' } })).catch((e: unknown) => e);
  expect(statusOf(inside)).toBe(409);
});

test('P2025 on delete of a missing row: 404, outside and inside a unit', async () => {
  const outside = await db.user.delete({ where: { email: 'nobody@example.com' } }).catch((e: unknown) => e);
  expect(statusOf(outside)).toBe(404);
  const inside = await db.transaction((tx) => tx.user.delete({ where: { email: 'nobody@example.com' } })).catch((e: unknown) => e);
  expect(statusOf(inside)).toBe(404);
});

test("the app's own error class thrown inside db.transaction arrives unchanged, after the rollback", async () => {
  const thrown = new NotFoundError('no such order');
  const err = await db
    .transaction(async (tx) => {
      await tx.user.create({ data: { email: 'rolled-back@example.com' } });
      throw thrown;
    })
    .catch((e: unknown) => e);
  expect(err).toBe(thrown);
  expect(statusOf(err)).toBe(404);
  expect(await db.user.count({ where: { email: 'rolled-back@example.com' } })).toBe(0);
});

/** A repository function typed as Prisma's docs type one: it takes the transaction client. */
async function signUpOrSkip(tx: Prisma.TransactionClient, email: string): Promise<number> {
  // Prisma 7's nested transaction (a savepoint): what it wrote rolls back alone.
  await tx
    .$transaction(async (inner) => {
      await inner.user.create({ data: { email } });
      throw new NotFoundError('undo the sign-up');
    })
    .catch(() => undefined);
  return tx.user.count({ where: { email } });
}

test("a unit's client is a Prisma.TransactionClient (npm run typecheck): repository functions typed with it take it, and its nested $transaction rolls back alone", async () => {
  const email = 'nested-undone@example.com';
  const inUnit = await db.transaction(async (tx) => {
    const seen = await signUpOrSkip(tx, email);
    // db.current() is the same client, typed the same.
    await signUpOrSkip(db.current(), email);
    await tx.user.create({ data: { email: 'nested-kept@example.com' } });
    return seen;
  });
  expect(inUnit).toBe(0);
  expect(await db.user.count({ where: { email: { in: [email, 'nested-kept@example.com'] } } })).toBe(1);
  // Prisma's own $transaction on the Db hands out the same type.
  expect(await db.$transaction((tx) => signUpOrSkip(tx, email))).toBe(0);
});

test("Prisma's $transaction options (timeout, maxWait) given to db.transaction are a ConfigError naming the unit's own, before fn runs: not ignored", async () => {
  // Shared with a $transaction call, as code moved to units of work keeps it (typed: it has isolationLevel).
  const txOptions = { isolationLevel: Prisma.TransactionIsolationLevel.Serializable, timeout: 60_000, maxWait: 10_000 };
  await expect(db.$transaction((tx) => tx.user.count(), txOptions)).resolves.toEqual(expect.any(Number));
  let ran = 0;
  const err = await db
    .transaction(async (tx) => {
      ran++;
      return tx.user.count();
    }, txOptions)
    .catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as ConfigError).issues).toEqual([
    { setting: 'transaction option timeout', problem: expect.stringContaining('timeoutMs') },
    { setting: 'transaction option maxWait', problem: expect.stringContaining('maxWaitMs') },
  ]);
  expect(ran).toBe(0);
  // A misspelt option too, on db.read as well.
  await expect(db.read(async () => ran++, { retires: 2 } as never)).rejects.toThrow(/transaction option retires: is not an option/);
  expect(ran).toBe(0);
});

/** A serverless handler as Prisma's docs write it: the query, then $disconnect() in finally. */
function handlerOf(prisma: { user: { count(): Promise<number> }; $disconnect(): Promise<void> }): () => Promise<number> {
  return async () => {
    try {
      return await prisma.user.count();
    } finally {
      await prisma.$disconnect();
    }
  };
}

test.each(['pooled', 'serverless'] as const)(
  "%s: the handler habit `try { ... } finally { await prisma.$disconnect() }` works on every warm invocation, as on bare Prisma with PrismaPg, with no connection left open in between",
  async (mode) => {
    const bare = new PrismaClient({ adapter: new PrismaPg({ connectionString: testDb.url, application_name: `${APP}-bare` }) });
    const own = createDb({ PrismaClient, url: testDb.url, applicationName: `${APP}-${mode}`, mode });
    try {
      for (const [client, app] of [
        [bare, `${APP}-bare`],
        [own, `${APP}-${mode}`],
      ] as const) {
        const invoke = handlerOf(client);
        for (let invocation = 0; invocation < 3; invocation++) {
          // Before: the layer's second invocation failed with DatabaseClosedError ($disconnect was close()).
          await expect(invoke()).resolves.toEqual(expect.any(Number));
          expect(await countConnections(app)).toBe(0);
        }
      }
      expect(own.stats().state).toBe('open');
    } finally {
      await own.close();
      await bare.$disconnect();
    }
  },
);

test('close() is the end, $disconnect() is not: after close() work is refused with DatabaseClosedError, and $disconnect() resolves', async () => {
  const own = createDb({ PrismaClient, url: testDb.url, applicationName: `${APP}-disc`, pool: { size: 3 } });
  await Promise.all([own.user.count(), own.user.count(), own.user.count()]);
  expect(await countConnections(`${APP}-disc`)).toBeGreaterThan(0);
  await own.close();
  expect(own.stats().state).toBe('closed');
  expect(await countConnections(`${APP}-disc`)).toBe(0);
  await expect(own.$disconnect()).resolves.toBeUndefined();
  await expect(own.user.count()).rejects.toBeInstanceOf(DatabaseClosedError);
});
