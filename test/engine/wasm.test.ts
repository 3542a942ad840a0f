/**
 * What src/engine/wasm.ts relies on in @prisma/adapter-pg: its connection adapter keeps an
 * `onError` that converts a driver error as every adapter call does (wholeScripts() reuses
 * it for the migration scripts it sends whole). Fails when the adapter changes underneath.
 */
import { PrismaPg } from '@prisma/adapter-pg';
import { DriverAdapterError } from '@prisma/driver-adapter-utils';
import pg from 'pg';
import type { PgAdapterShape } from '../../src/engine/wasm';
import { createTestDatabase, type TestDatabase } from '../support/db';

let testDb: TestDatabase;
beforeAll(async () => {
  testDb = await createTestDatabase({ prefix: 'enginewasm' });
});
afterAll(async () => {
  await testDb?.drop();
});

test("@prisma/adapter-pg's adapter converts a server error with onError into a DriverAdapterError", async () => {
  const pool = new pg.Pool({ ssl: testDb.ssl, host: testDb.host, port: testDb.port, user: testDb.user, password: testDb.password, database: testDb.name, max: 1 });
  const adapter = (await new PrismaPg(pool).connect()) as unknown as PgAdapterShape & { dispose(): Promise<void> };
  try {
    expect(typeof adapter.executeScript).toBe('function');
    const serverError = await pool.query('SELECT * FROM no_such_table').catch((error: unknown) => error);
    let converted: unknown;
    try {
      adapter.onError(serverError);
    } catch (error) {
      converted = error;
    }
    expect(converted).toBeInstanceOf(DriverAdapterError);
    expect((converted as DriverAdapterError).cause).toMatchObject({ kind: 'TableDoesNotExist', originalCode: '42P01', originalMessage: expect.stringContaining('no_such_table') });
  } finally {
    await adapter.dispose();
    await pool.end();
  }
});
