// The serverless handler example behind a real HTTP server (as a platform would call it),
// against the real database: one connection per invocation, none survives it.
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { resetDb } from '../../src/index';
import type * as Example from '../../examples/serverless/handler';
import { countConnections, createTestDatabase, type TestDatabase } from '../support/db';

let testDb: TestDatabase;
let server: ServerType;
let base: string;
let example: typeof Example;
const saved = { DATABASE_URL: process.env.DATABASE_URL };
const opened = (): number => example.db.stats().counters.connectionsOpened;

beforeAll(async () => {
  testDb = await createTestDatabase();
  // The handler reads its configuration from the environment when it is loaded, as on a platform.
  process.env.DATABASE_URL = testDb.appUrl;
  example = await import('../../examples/serverless/handler.ts');
  const { handler } = example;
  const port = await new Promise<number>((resolve) => {
    server = serve({ fetch: handler, port: 0 }, (info: AddressInfo) => resolve(info.port));
  });
  base = `http://127.0.0.1:${port}`;
});
afterAll(async () => {
  await new Promise((r) => server?.close(r));
  await resetDb();
  process.env.DATABASE_URL = saved.DATABASE_URL;
  await testDb?.drop();
});

describe('serverless handler example', () => {
  it('creates and finds a user; one connection per invocation, none left open after it', async () => {
    const email = `sls-${process.pid}@example.com`;
    let before = opened();
    const created = await fetch(base, { method: 'POST', body: JSON.stringify({ email, name: 'Sam' }), headers: { 'x-request-id': 'inv-1' } });
    expect(created.status).toBe(201);
    expect(created.headers.get('x-request-id')).toBe('inv-1');
    expect(await created.json()).toMatchObject({ email, name: 'Sam' });
    expect(opened() - before).toBe(1);
    expect(await countConnections('example-serverless', testDb.name)).toBe(0);

    before = opened();
    const found = await fetch(`${base}?email=${encodeURIComponent(email)}`);
    expect(found.status).toBe(200);
    expect(await found.json()).toMatchObject({ email });
    expect(opened() - before).toBe(1);
    expect(await countConnections('example-serverless', testDb.name)).toBe(0);

    // An invocation that sends no statement opens no connection.
    before = opened();
    expect((await fetch(`${base}?email=`)).status).toBe(400);
    expect(opened()).toBe(before);

    const missing = await fetch(`${base}?email=nobody@example.com`);
    expect(missing.status).toBe(404);
  });

  it('returns a sanitized error body with the correlation id on a database error', async () => {
    const email = `dup-sls-${process.pid}@example.com`;
    await fetch(base, { method: 'POST', body: JSON.stringify({ email }) });
    const dup = await fetch(base, { method: 'POST', body: JSON.stringify({ email }), headers: { 'x-request-id': 'inv-dup' } });
    const text = await dup.text();
    expect(dup.status).toBe(409);
    expect(JSON.parse(text)).toEqual({ error: { code: 'conflict', message: 'The resource already exists.', correlationId: 'inv-dup' } });
    expect(text).not.toContain(email);
    expect(text).not.toContain(testDb.appPassword);
    expect(await countConnections('example-serverless', testDb.name)).toBe(0);
  });
});
