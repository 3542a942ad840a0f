/**
 * `db.$extends(...)`: Prisma client extensions keep working in the layer's units of work,
 * sessions and `current()`, as they do in Prisma's own `$transaction` on an extended client.
 * A query extension written as a tenant filter must never be skipped inside a unit.
 */
import { Prisma, PrismaClient } from '../src/generated/prisma/client';
import { ConfigError, createDb, type Db } from '../src/index';
import { createTestDatabase, type TestDatabase } from './support/db';

let testDb: TestDatabase;
let db: Db<PrismaClient>;
let seq = 0;
const uniq = (p: string): string => `${p}-${process.pid}-${++seq}@ext.test`;

beforeAll(async () => {
  testDb = await createTestDatabase({ prefix: 'extensions' });
  db = createDb({ PrismaClient, url: testDb.url, applicationName: 'extensions-test' });
});
afterAll(async () => {
  await db?.close();
  await testDb?.drop();
});

/** A tenant filter as apps write one: every findMany of users sees only the tenant's rows. */
const tenant = (name: string) =>
  Prisma.defineExtension({
    query: { user: { findMany: ({ args, query }) => query({ ...args, where: { ...args.where, name } }) } },
  });

/** A model method and a computed field. */
const helpers = Prisma.defineExtension({
  model: {
    user: {
      async byEmail(email: string) {
        const users = Prisma.getExtensionContext(this);
        return (users as unknown as PrismaClient['user']).findFirst({ where: { email } });
      },
    },
  },
  result: { user: { shout: { needs: { email: true }, compute: (u) => u.email.toUpperCase() } } },
});

async function seed(): Promise<{ a: string; b: string }> {
  const a = uniq('tenant-a');
  const b = uniq('tenant-b');
  await db.user.createMany({ data: [{ email: a, name: 'a' }, { email: b, name: 'b' }] });
  return { a, b };
}

test('a unit of work from an extended client runs its query extension, model methods and computed fields', async () => {
  const { a } = await seed();
  const x = db.$extends(tenant('a')).$extends(helpers);
  const got = await x.transaction(async (tx) => ({
    emails: (await tx.user.findMany({ where: { email: { endsWith: '@ext.test' } } })).map((u) => u.email),
    found: await tx.user.byEmail(a),
    computed: await tx.user.findFirst({ where: { email: a } }),
  }));
  expect(got.emails.every((e) => e.startsWith('tenant-a'))).toBe(true);
  expect(got.emails).toContain(a);
  expect(got.found?.email).toBe(a);
  expect(got.computed?.shout).toBe(a.toUpperCase());
  const read = await x.read((tx) => tx.user.findMany({ where: { email: { endsWith: '@ext.test' } } }));
  expect(read.every((u) => u.name === 'a' && u.shout === u.email.toUpperCase())).toBe(true);
});

test("repository code's db.current() inside a unit started from an extended client gets the unit's extensions", async () => {
  await seed();
  const x = db.$extends(tenant('b'));
  const repository = () => db.current().user.findMany({ where: { email: { endsWith: '@ext.test' } } });
  const inUnit = await x.transaction(() => repository());
  expect(inUnit.length).toBeGreaterThan(0);
  expect(inUnit.every((u) => u.name === 'b')).toBe(true);
  const inSession = await x.session(async (client) => {
    expect(client.user.findMany).toBeDefined();
    return repository();
  });
  expect(inSession.every((u) => u.name === 'b')).toBe(true);
  // Outside any unit each client is itself.
  expect(x.current()).toBe(x);
  expect(db.current()).toBe(db);
});

test('an extended client joining a unit of the Db gets that transaction with its own extensions', async () => {
  const email = uniq('joined');
  const x = db.$extends(tenant('joined')).$extends(helpers);
  const seen = await db.transaction(async (tx) => {
    await tx.user.create({ data: { email, name: 'joined' } });
    // Not committed yet: only the same transaction sees the row.
    const viaCurrent = await x.current().user.findFirst({ where: { email } });
    expect((await x.current().user.byEmail(email))?.email).toBe(email);
    const nested = await x.transaction((inner) => inner.user.findMany({ where: { email: { endsWith: '@ext.test' } } }));
    return { shout: viaCurrent?.shout, nested: nested.map((u) => u.name) };
  });
  expect(seen.shout).toBe(email.toUpperCase());
  expect(seen.nested).toEqual(['joined']);
});

test('a client extended separately from the running unit\'s cannot join it: ConfigError, not a silently dropped filter', async () => {
  const a = db.$extends(tenant('a'));
  const b = db.$extends(tenant('b'));
  const err = await a.transaction(() => b.transaction((tx) => tx.user.findMany())).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as ConfigError).issues[0]!.setting).toBe('$extends');
  await expect(a.transaction(async () => b.current())).rejects.toBeInstanceOf(ConfigError);
});

test("the layer's API is on the extended client and acts on the Db", async () => {
  const x = db.$extends(helpers);
  // Still usable where the app's code takes its Prisma client (types only).
  const asPrisma: PrismaClient = db;
  expect(asPrisma).toBe(db);
  expect(x.$datalayer.config).toBe(db.config);
  const before = db.stats().counters.transactions;
  expect(await x.$datalayer.transaction(async (tx) => typeof tx.user.byEmail)).toBe('function');
  expect(db.stats().counters.transactions).toBe(before + 1);
  expect(x.stats().counters.transactions).toBe(before + 1);
  await expect(x.health()).resolves.toMatchObject({ status: 'healthy' });
  await expect(x.scope(() => x.user.count())).resolves.toEqual(expect.any(Number));
});

test('extending an extended client inside a unit: the extension applies to the unit it joins', async () => {
  const email = uniq('inside');
  const shout = await db.transaction(async (tx) => {
    await tx.user.create({ data: { email } });
    const found = await db.$extends(helpers).current().user.findFirst({ where: { email } });
    return found?.shout;
  });
  expect(shout).toBe(email.toUpperCase());
});
