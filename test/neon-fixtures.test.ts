/**
 * Proves the Neon proxy fixture (test/support/neon-proxy.ts) with the REAL drivers and
 * their production defaults (pipelined cleartext-password connect), against a real PostgreSQL:
 * - WebSocket: `@neondatabase/serverless` Client/Pool and Prisma's `PrismaNeon`,
 *   configured per instance only — the process-wide `neonConfig` is asserted untouched.
 * - HTTP: `neon()` and `PrismaNeonHttp` through the fixture's SQL-over-HTTP endpoint.
 *   `fetchEndpoint` is global-only in the driver, so these tests set it and restore it afterwards.
 */
import ws from 'ws';
import {
  Client,
  NeonDbError,
  Pool,
  neon,
  neonConfig,
  type ClientConfig,
  type NeonConfig,
} from '@neondatabase/serverless';
import { PrismaNeon, PrismaNeonHttp } from '@prisma/adapter-neon';
import { PrismaClient } from '../src/generated/prisma/client';
import { createTestDatabase, type TestDatabase } from './support/db';
import { testServer } from './support/db';
import { NEON_TEST_HOST, startNeonProxy, type NeonProxy } from './support/neon-proxy';

// ---- per-instance WebSocket settings (what the library must do too) ----------------------
type SocketSettings = Pick<
  NeonConfig,
  'webSocketConstructor' | 'wsProxy' | 'useSecureWebSocket'
>;

/** Only what a loopback proxy needs; everything else (pipelineConnect 'password', forceDisablePgSSL…) stays the driver's default. */
function socketSettings(via: NeonProxy): SocketSettings {
  return {
    webSocketConstructor: ws, // Node 20 has no global WebSocket
    wsProxy: via.wsProxy,
    useSecureWebSocket: false, // the fixture speaks ws:// on loopback, Neon wss://
  };
}

/** A Client class whose every instance carries `settings` (its `neonConfig` is its socket). */
function configuredClient(settings: SocketSettings): typeof Client {
  return class ConfiguredNeonClient extends Client {
    constructor(config?: string | ClientConfig) {
      super(config);
      Object.assign(this.neonConfig, settings);
    }
  };
}

/** Pool whose connections use `settings`: pg-pool instantiates `this.Client` per connection. */
function configuredPool(config: ConstructorParameters<typeof Pool>[0], settings: SocketSettings): Pool {
  const pool = new Pool(config);
  pool.Client = configuredClient(settings);
  return pool;
}

/** PrismaNeon builds its Pool inside connect(); swap the Client class before first use. */
class ConfiguredPrismaNeon extends PrismaNeon {
  constructor(
    config: ConstructorParameters<typeof PrismaNeon>[0],
    private readonly settings: SocketSettings,
  ) {
    super(config);
  }
  override async connect(): ReturnType<PrismaNeon['connect']> {
    const adapter = await super.connect();
    adapter.underlyingDriver().Client = configuredClient(this.settings);
    return adapter;
  }
}

function globalNeonOpts(): Record<string, unknown> {
  return { ...neonConfig.opts };
}

// ---- fixtures --------------------------------------------------------------------------
// A fresh database on the harness' shared primary (TLS, SCRAM auth) behind the proxy. The
// drivers get a Neon URL (the endpoint is the host's first label) without sslmode.
let db: TestDatabase;
let dbUrl: string;
let proxy: NeonProxy;
let globalsBefore: Record<string, unknown>;

beforeAll(async () => {
  globalsBefore = globalNeonOpts();
  db = await createTestDatabase({ migrated: false, prefix: 'neon' });
  // superuser, password needs URL-encoding: exercises decoding too
  dbUrl = db.urlWith(undefined, { host: NEON_TEST_HOST, port: 5432 });
  await db.query('CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL)');
  proxy = await startNeonProxy({ upstream: testServer().info() });
});

afterAll(async () => {
  await proxy?.close();
  await db?.drop();
});

beforeEach(async () => {
  await db.query('TRUNCATE items');
});

// ---- WebSocket ---------------------------------------------------------------------------
describe('WebSocket driver through the Neon proxy fixture', () => {
  afterEach(() => {
    // Everything WebSocket-side is per instance: the process-wide config stays pristine.
    expect(globalNeonOpts()).toEqual(globalsBefore);
  });

  test('Client with per-instance neonConfig runs a query (the proxy reaches the compute over TLS)', async () => {
    const ClientClass = configuredClient(socketSettings(proxy));
    const client = new ClientClass(dbUrl);
    await client.connect();
    try {
      const { rows } = await client.query<{ n: number; db: string; ssl: boolean }>(
        'SELECT 41 + $1::int AS n, current_database() AS db, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
        [1],
      );
      expect(rows).toEqual([{ n: 42, db: db.name, ssl: true }]);
    } finally {
      await client.end();
    }
    await waitFor(() => proxy.computeConnections() === 0);
  });

  test('Pool runs queries and an interactive transaction (commit and rollback)', async () => {
    const pool = configuredPool({ connectionString: dbUrl, max: 2 }, socketSettings(proxy));
    try {
      const results = await Promise.all([1, 2, 3].map((i) => pool.query<{ i: number }>('SELECT $1::int AS i', [i])));
      expect(results.map((r) => r.rows[0]?.i)).toEqual([1, 2, 3]);

      const conn = await pool.connect();
      try {
        await conn.query('BEGIN');
        await conn.query("INSERT INTO items VALUES (1, 'kept')");
        await conn.query('COMMIT');
        await conn.query('BEGIN');
        await conn.query("INSERT INTO items VALUES (2, 'discarded')");
        await conn.query('ROLLBACK');
      } finally {
        conn.release();
      }
      const { rows } = await pool.query('SELECT id, label FROM items ORDER BY id');
      expect(rows).toEqual([{ id: 1, label: 'kept' }]);

      await expect(pool.query("INSERT INTO items VALUES (1, 'dup')")).rejects.toMatchObject({ code: '23505' });
    } finally {
      await pool.end();
    }
    await waitFor(() => proxy.computeConnections() === 0);
  });

  test('Prisma through PrismaNeon runs $queryRaw and an interactive $transaction', async () => {
    const prisma = new PrismaClient({ adapter: new ConfiguredPrismaNeon({ connectionString: dbUrl }, socketSettings(proxy)) });
    try {
      const rows = await prisma.$queryRaw<{ n: number; label: string }[]>`SELECT ${7}::int AS n, ${'via ws'}::text AS label`;
      expect(rows).toEqual([{ n: 7, label: 'via ws' }]);

      await expect(
        prisma.$transaction(async (tx) => {
          await tx.$executeRaw`INSERT INTO items VALUES (10, 'rolled back')`;
          throw new Error('abort');
        }),
      ).rejects.toThrow('abort');
      const count = await prisma.$queryRaw<{ c: number }[]>`SELECT count(*)::int AS c FROM items`;
      expect(count).toEqual([{ c: 0 }]);
    } finally {
      await prisma.$disconnect();
    }
    await waitFor(() => proxy.computeConnections() === 0);
  });
});

// ---- HTTP --------------------------------------------------------------------------------
describe('HTTP driver through the Neon proxy fixture (SQL over HTTP)', () => {
  let savedEndpoint: NeonConfig['fetchEndpoint'] | undefined;

  beforeAll(() => {
    // fetchEndpoint is global-only in @neondatabase/serverless 1.2.0.
    savedEndpoint = neonConfig.opts.fetchEndpoint;
    neonConfig.fetchEndpoint = proxy.fetchEndpoint;
  });
  afterAll(() => {
    if (savedEndpoint === undefined) delete neonConfig.opts.fetchEndpoint;
    else neonConfig.opts.fetchEndpoint = savedEndpoint;
  });

  test('parameterised query returns typed values', async () => {
    const sql = neon(dbUrl);
    const before = proxy.received().http;
    const at = '2024-05-06T07:08:09.123Z';
    const rows = await sql`
      SELECT ${5}::int AS i, ${'hé "quoted"'}::text AS t, ${at}::timestamptz AS ts,
             ${JSON.stringify({ a: [1, 'x'], b: null })}::json AS j, NULL::text AS nothing,
             ${9007199254740993n.toString()}::int8 AS big, true AS flag`;
    expect(rows).toEqual([
      {
        i: 5,
        t: 'hé "quoted"',
        ts: new Date(at),
        j: { a: [1, 'x'], b: null },
        nothing: null,
        big: '9007199254740993', // int8 stays a string with the default parsers
        flag: true,
      },
    ]);
    expect(proxy.received().http).toBe(before + 1);

    const full = await sql.query('SELECT $1::int AS n', [3], { fullResults: true, arrayMode: true });
    expect(full).toMatchObject({ command: 'SELECT', rowCount: 1, rows: [[3]], rowAsArray: true });
    expect(full.fields[0]).toMatchObject({ name: 'n', dataTypeID: 23, format: 'text' });
  });

  test('a failing query surfaces SQLSTATE and the other error fields', async () => {
    const sql = neon(dbUrl);
    const err: unknown = await sql`SELECT 1/0`.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NeonDbError);
    expect(err).toMatchObject({ code: '22012', severity: 'ERROR', message: 'division by zero' });

    await sql`INSERT INTO items VALUES (1, 'one')`;
    await expect(sql`INSERT INTO items VALUES (1, 'again')`).rejects.toMatchObject({
      code: '23505',
      constraint: 'items_pkey',
      table: 'items',
      detail: 'Key (id)=(1) already exists.',
    });
    await expect(sql`SELEC 1`).rejects.toMatchObject({ code: '42601', position: '1' });
    // Extended protocol, like Neon: several statements in one query are refused.
    await expect(sql.query('SELECT 1; SELECT 2')).rejects.toMatchObject({ code: '42601' });
  });

  test('sql.transaction commits a batch and rolls the whole batch back on error', async () => {
    const sql = neon(dbUrl);
    const [inserted, listed] = await sql.transaction([
      sql`INSERT INTO items VALUES (1, 'a'), (2, 'b') RETURNING id`,
      sql`SELECT count(*)::int AS c FROM items`,
    ]);
    expect(inserted).toEqual([{ id: 1 }, { id: 2 }]);
    expect(listed).toEqual([{ c: 2 }]);

    await expect(
      sql.transaction([sql`INSERT INTO items VALUES (3, 'c')`, sql`INSERT INTO items VALUES (1, 'dup')`]),
    ).rejects.toMatchObject({ code: '23505' });
    expect(await sql`SELECT id FROM items ORDER BY id`).toEqual([{ id: 1 }, { id: 2 }]);

    await expect(
      sql.transaction([sql`INSERT INTO items VALUES (4, 'd')`], { readOnly: true, isolationLevel: 'Serializable' }),
    ).rejects.toMatchObject({ code: '25006' });
    const [iso] = await sql.transaction([sql`SELECT current_setting('transaction_isolation') AS level`], {
      isolationLevel: 'RepeatableRead',
      readOnly: true,
    });
    expect(iso).toEqual([{ level: 'repeatable read' }]);
  });

  test('protocol details: object rows and typed JSON when raw text output is off', async () => {
    const res = await fetch(proxy.fetchEndpoint(NEON_TEST_HOST, 5432), {
      method: 'POST',
      headers: { 'Neon-Connection-String': dbUrl, 'Content-Type': 'application/json' },
      body: JSON.stringify({
        query: "SELECT $1::int4 AS i, $2::int8 AS b, $3::jsonb AS j, ARRAY[1,NULL,3] AS a, '{\"x,y\",z}'::text[] AS t, 'NaN'::float8 AS f",
        params: [1, 2, { k: [true] }],
      }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      command: 'SELECT',
      rowCount: 1,
      rowAsArray: false,
      rows: [{ i: 1, b: '2', j: { k: [true] }, a: [1, null, 3], t: ['x,y', 'z'], f: 'NaN' }],
    });

    const bad = await fetch(proxy.fetchEndpoint(NEON_TEST_HOST, 5432), { method: 'POST', body: '{}', headers: { 'Neon-Connection-String': dbUrl } });
    expect(bad.status).toBe(400);
    // sql_over_http.rs: not a PostgreSQL error → code and severity are "" (not null), the rest null.
    expect(await bad.json()).toMatchObject({ code: '', severity: '', detail: null, message: expect.stringContaining('could not parse the HTTP request body') });
  });

  test('Prisma through PrismaNeonHttp runs $queryRaw', async () => {
    const prisma = new PrismaClient({ adapter: new PrismaNeonHttp(dbUrl, {}) });
    const before = proxy.received().http;
    try {
      const rows = await prisma.$queryRaw<{ n: number; at: Date; label: string | null }[]>`
        SELECT ${11}::int AS n, ${new Date('2020-01-02T03:04:05.000Z')}::timestamptz AS at, NULL::text AS label`;
      expect(rows).toEqual([{ n: 11, at: new Date('2020-01-02T03:04:05.000Z'), label: null }]);
      expect(proxy.received().http).toBeGreaterThan(before);

      // PrismaNeonHttp.startTransaction always rejects, so interactive and multi-query
      // batch $transaction fail before running anything (a one-query batch skips the
      // transaction and succeeds).
      await expect(
        prisma.$transaction([
          prisma.$executeRaw`INSERT INTO items VALUES (20, 'first')`,
          prisma.$executeRaw`INSERT INTO items VALUES (21, 'second')`,
        ]),
      ).rejects.toThrow(/Transactions are not supported in HTTP mode/);
      await expect(prisma.$transaction(async (tx) => tx.$queryRaw`SELECT 1`)).rejects.toThrow(
        /Transactions are not supported in HTTP mode/,
      );
      expect(await prisma.$queryRaw`SELECT id FROM items`).toEqual([]);
      expect(await prisma.$transaction([prisma.$queryRaw`SELECT 1 AS one`])).toEqual([[{ one: 1 }]]);
    } finally {
      await prisma.$disconnect();
    }
  });
});

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error('waitFor: condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
