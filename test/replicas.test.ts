// Read replicas for real: a streaming replica (pg_basebackup -R) of a dedicated primary.
// Reads land on the replica, writes on the primary, a write in a read-only unit fails
// with a typed error, a stopped or lagging replica is skipped without the caller seeing it.
import { createDb, ConfigError, DatabaseConnectionError, DeadlineExceededError, DatabaseQueryError, classifyError, type Db, type DatalayerError } from '../src/index';
import fs from 'node:fs';
import path from 'node:path';
import { PrismaClient } from '../src/generated/prisma/client';
import { startCluster, startReplica, type Cluster, type Replica } from './support/cluster';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy';
import { buildTemplate } from './support/template';
import { holdConnection, rejectionOf, sleep, waitFor } from './support/async';

let primary: Cluster;
let replica: Replica;
let db: Db<PrismaClient>;
let proxy: TcpProxy;

beforeAll(async () => {
  primary = await startCluster({ name: 'repl-primary' });
  await buildTemplate(primary.info(), 'repl_template');
  await primary.query('CREATE DATABASE repl_app TEMPLATE repl_template');
  replica = await startReplica(primary.info(), { name: 'repl-replica' });
  await replica.waitForCatchUp();
  proxy = await startTcpProxy({ host: replica.host, port: replica.port });
  db = createDb({
    PrismaClient,
    url: primary.url('repl_app', { sslmode: 'require' }),
    replicas: [replica.url('repl_app', { sslmode: 'require' })],
    replica: { lagCheckIntervalMs: 0, retryAfterMs: 300, maxLagMs: 1000 },
  });
}, 120_000);
afterAll(async () => {
  await db?.close();
  await proxy?.close();
  await replica?.destroy();
  await primary?.destroy();
});

const onReplica = (): Promise<boolean> =>
  db.read(async (tx) => (await tx.$queryRaw<{ r: boolean }[]>`SELECT pg_is_in_recovery() AS r`)[0]!.r);

it('sends reads to the replica and writes to the primary', async () => {
  await expect(onReplica()).resolves.toBe(true);
  await expect(db.transaction(async (tx) => tx.$queryRaw<{ r: boolean }[]>`SELECT pg_is_in_recovery() AS r`)).resolves.toEqual([{ r: false }]);
  const created = await db.transaction((tx) => tx.account.create({ data: { owner: 'replicated', balance: 5 } }));
  await replica.waitForCatchUp();
  await expect(db.read((tx) => tx.account.findUnique({ where: { id: created.id } }))).resolves.toMatchObject({ owner: 'replicated' });
  expect(db.replicas()).toEqual([expect.objectContaining({ up: true, lagMs: 0 })]);
});

it('reads from a client extended from the Db go to the replica with its extensions, routed as the Db routes', async () => {
  const seen: string[] = [];
  const x = db.$extends({ query: { account: { findMany: ({ args, query }) => (seen.push('findMany'), query(args)) } } });
  const read = await x.read(async (tx) => ({
    inRecovery: (await tx.$queryRaw<{ r: boolean }[]>`SELECT pg_is_in_recovery() AS r`)[0]!.r,
    rows: await tx.account.findMany({ take: 1 }),
  }));
  expect(read.inRecovery).toBe(true);
  expect(seen).toEqual(['findMany']);
  expect(x.replicas()).toEqual(db.replicas());
});

it('fails a write inside a read-only unit with a typed error', async () => {
  const err = await db.read((tx) => tx.account.create({ data: { owner: 'nope' } })).catch((e: unknown) => e);
  expect(classifyError(err)).toBeInstanceOf(DatabaseQueryError);
  expect(classifyError(err).sqlState).toBe('25006');
  // Read-only on the primary too (the flag is not only the replica's doing).
  const onPrimary = await db.transaction((tx) => tx.account.create({ data: { owner: 'nope' } }), { readOnly: true, nested: 'join' })
    .catch((e: unknown) => e);
  expect(classifyError(onPrimary).sqlState).toBe('25006');
});

it('runs a SERIALIZABLE read-only unit on the primary: a hot standby refuses that level', async () => {
  const inRecovery = await db.transaction(async (tx) => (await tx.$queryRaw<{ r: boolean }[]>`SELECT pg_is_in_recovery() AS r`)[0]!.r, {
    readOnly: true,
    isolationLevel: 'Serializable',
  });
  expect(inRecovery).toBe(false);
  await expect(onReplica()).resolves.toBe(true);
});

it("runs a read inside db.session() on the session's connection: its settings, temporary tables and writes are seen", async () => {
  const seen = await db.session(async () => {
    await db.$executeRawUnsafe("SELECT set_config('app.tenant', 'acme', false)");
    await db.$executeRawUnsafe('CREATE TEMP TABLE session_scratch (id int)');
    await db.$executeRawUnsafe('INSERT INTO session_scratch VALUES (1), (2)');
    const { pid } = (await db.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`)[0]!;
    // Before: on the replica, another connection: tenant null, 42P01 for the temporary table.
    const read = await db.read(async (tx) => (await tx.$queryRaw<{ tenant: string | null; pid: number; n: number }[]>`
      SELECT current_setting('app.tenant', true) AS tenant, pg_backend_pid() AS pid, (SELECT count(*)::int FROM session_scratch) AS n`)[0]!);
    return { sessionPid: pid, ...read };
  });
  expect(seen).toMatchObject({ tenant: 'acme', n: 2 });
  expect(seen.pid).toBe(seen.sessionPid);
  await expect(onReplica()).resolves.toBe(true);
});

it('connected to a standby, a SERIALIZABLE unit fails, and what fn sends after swallowing that error does not run outside a transaction', async () => {
  // BEGIN goes out with the first statement (src/driver/begin.ts); the standby refuses the
  // isolation level after BEGIN, so the transaction is aborted, not absent.
  const standby = createDb({ PrismaClient, url: replica.url('repl_app', { sslmode: 'require' }) });
  try {
    const outcomes: string[] = [];
    const unit = standby.transaction(
      async (tx) => {
        await tx.$queryRaw`SELECT ${1}::int AS one`.then(
          () => outcomes.push('first ran'),
          (err: unknown) => outcomes.push(`first refused ${classifyError(err).sqlState}`),
        );
        await tx.$queryRaw`SELECT ${2}::int AS two`.then(
          () => outcomes.push('second ran'),
          (err: unknown) => {
            outcomes.push(`second refused ${classifyError(err).sqlState}`);
            throw err;
          },
        );
      },
      { isolationLevel: 'Serializable' },
    );
    await expect(unit).rejects.toBeInstanceOf(Error);
    expect(outcomes).toEqual(['first refused 0A000', 'second refused 25P02']);
  } finally {
    await standby.close();
  }
});

it('skips a lagging replica and reads from the primary', async () => {
  await replica.query('SELECT pg_wal_replay_pause()');
  try {
    await primary.query('CREATE TABLE lag_marker (id int)', [], { db: 'repl_app' });
    await new Promise((r) => setTimeout(r, 1300));
    await expect(onReplica()).resolves.toBe(false);
    expect(db.replicas()[0]).toMatchObject({ up: false });
    expect(db.replicas()[0]!.lastError).toMatch(/lagging/);
  } finally {
    await replica.query('SELECT pg_wal_replay_resume()');
  }
  await replica.waitForCatchUp();
  await expect(onReplica()).resolves.toBe(true);
});

it('falls back to the primary without an error when the replica is down, and reports it', async () => {
  await expect(onReplica()).resolves.toBe(true);
  await replica.stop();
  try {
    await expect(onReplica()).resolves.toBe(false);
    expect(db.replicas()[0]).toMatchObject({ up: false });
    const health = await db.health({ timeoutMs: 2000 });
    expect(health.status).toBe('healthy');
    expect(health.replicas).toEqual([expect.objectContaining({ up: false })]);
  } finally {
    await replica.start();
  }
  await new Promise((r) => setTimeout(r, 350)); // retryAfterMs
  await replica.waitForCatchUp();
  await expect(onReplica()).resolves.toBe(true);
});

type Options = Parameters<typeof createDb<PrismaClient>>[0];

/** A Db of its own on the primary and the replica (or `replicaUrl`), lag checked on every read. */
function ownDb(extra: Partial<Options> = {}, replicaUrl = replica.url('repl_app', { sslmode: 'require' })): Db<PrismaClient> {
  return createDb({
    PrismaClient,
    url: primary.url('repl_app', { sslmode: 'require' }),
    replicas: [replicaUrl],
    replica: { lagCheckIntervalMs: 0, retryAfterMs: 300, maxLagMs: 1000 },
    ...extra,
  } as Options);
}

const inRecovery = (on: Db<PrismaClient>, options: { timeoutMs?: number; maxWaitMs?: number } = {}): Promise<boolean> =>
  on.read(async (tx) => (await tx.$queryRaw<{ r: boolean }[]>`SELECT pg_is_in_recovery() AS r`)[0]!.r, options);

describe('close() during a replica read', () => {
  it('fails the read with the non-retryable closed error: not re-run on the primary, the replica not marked down', async () => {
    const own = ownDb();
    await expect(inRecovery(own)).resolves.toBe(true);
    let runs = 0;
    const read = rejectionOf(
      own.read(async (tx) => {
        runs++;
        await tx.$queryRaw`SELECT pg_sleep(5)::text`;
      }),
    );
    await sleep(300);
    await own.close({ deadlineMs: 100 });
    const err = await read;
    expect(err).toBeInstanceOf(DatabaseConnectionError);
    expect((err as DatabaseConnectionError).retryable).toBe(false);
    expect(runs).toBe(1);
    expect(own.replicas()[0]).toMatchObject({ up: true, lastError: undefined });
  });
});

describe('a replica that refuses connections', () => {
  it('refusing a new one between lag checks (pg_hba reject): the read runs on the primary and the replica is taken out of rotation', async () => {
    // The lag reading stays good for the whole test: only the read's own connection finds the refusal.
    const own = ownDb({ replica: { lagCheckIntervalMs: 600_000, retryAfterMs: 60_000, maxLagMs: 1000 } });
    const hba = path.join(replica.dataDir, 'pg_hba.conf');
    const original = fs.readFileSync(hba, 'utf8');
    try {
      await expect(inRecovery(own)).resolves.toBe(true);
      fs.writeFileSync(hba, `host repl_app all 0.0.0.0/0 reject\n${original}`);
      await replica.query('SELECT pg_reload_conf()');
      // The replica's one open connection is busy: the next read needs a new one.
      const release = await holdConnection({ transaction: (fn: () => Promise<void>) => own.read(fn) });
      try {
        // Before: DatabaseConnectionError 'pg_hba.conf rejects connection' (retryable: false) for a read the primary could serve, the replica still up.
        await expect(inRecovery(own)).resolves.toBe(false);
        expect(own.replicas()[0]).toMatchObject({ up: false, lastError: expect.stringMatching(/pg_hba\.conf rejects/) });
        await expect(inRecovery(own)).resolves.toBe(false);
      } finally {
        await release();
      }
    } finally {
      fs.writeFileSync(hba, original);
      await replica.query('SELECT pg_reload_conf()');
      await own.close();
    }
  });
});

describe('close() and the replicas', () => {
  it("resolves once the replicas' connections are closed too: every connection opened is closed, each with its remove event", async () => {
    const own = ownDb();
    const removed: string[] = [];
    own.on('remove', (info) => removed.push(info.pool));
    await own.$queryRawUnsafe('SELECT 1');
    await expect(inRecovery(own)).resolves.toBe(true);
    await own.close();
    const { connectionsOpened, connectionsClosed } = own.stats().counters;
    // Before: 2 opened, 1 closed and only the primary's remove when close() resolved (the replica's came later).
    expect(connectionsOpened).toBe(2);
    expect(connectionsClosed).toBe(2);
    expect(removed.sort()).toEqual(['primary', own.replicas()[0]!.name].sort());
  });
});

describe('$disconnect() and the replicas', () => {
  it("closes the replicas' connections too and leaves them in use: the next read goes to the replica again on a new connection", async () => {
    const own = ownDb({ applicationName: 'repl-disconnect' });
    try {
      const removed: string[] = [];
      own.on('remove', (info) => removed.push(info.pool));
      for (let invocation = 1; invocation <= 2; invocation++) {
        try {
          await own.$queryRawUnsafe('SELECT 1');
          await expect(inRecovery(own)).resolves.toBe(true);
        } finally {
          await own.$disconnect();
        }
        expect(own.stats().counters.connectionsClosed).toBe(own.stats().counters.connectionsOpened);
        expect(removed.filter((pool) => pool !== 'primary')).toHaveLength(invocation);
        const onReplica = await replica.query<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'repl-disconnect'`);
        expect(onReplica[0]!.n).toBe('0');
      }
      expect(own.replicas()[0]).toMatchObject({ up: true, pool: { open: 0 } });
    } finally {
      await own.close();
    }
  });
});

describe('a replica whose WAL stream is broken', () => {
  // As the application connects: the app role sees only pg_stat_wal_receiver's pid.
  const asApp = (): string => replica.url('repl_app', { sslmode: 'require' }, { user: 'app' });
  const walReceivers = async (): Promise<number> => (await replica.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_wal_receiver'))[0]!.n;

  it('is not fresh: reads go to the primary and see its latest writes; status says why', async () => {
    // maxLagMs 0: a replica fits only while it provably has everything the primary sent.
    const own = ownDb({ replica: { lagCheckIntervalMs: 0, retryAfterMs: 300, maxLagMs: 0 } }, asApp());
    const conninfo = (await replica.query<{ c: string }>("SELECT current_setting('primary_conninfo') AS c"))[0]!.c;
    try {
      await replica.waitForCatchUp();
      await expect(inRecovery(own)).resolves.toBe(true);
      await replica.query("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1 connect_timeout=1'");
      await replica.query('SELECT pg_reload_conf()');
      await waitFor(async () => (await walReceivers()) === 0, 20_000);
      const created = await own.account.create({ data: { owner: 'wal-broken', balance: 1 } });
      await expect(own.read((tx) => tx.account.findUnique({ where: { id: created.id } }))).resolves.toMatchObject({ owner: 'wal-broken' });
      expect(own.replicas()[0]).toMatchObject({ up: false, lastError: expect.stringMatching(/not receiving WAL/) });
    } finally {
      await replica.query(`ALTER SYSTEM SET primary_conninfo = '${conninfo.replace(/'/g, "''")}'`);
      await replica.query('SELECT pg_reload_conf()');
      await own.close();
    }
    await replica.waitForCatchUp();
  }, 60_000);
});

describe("a read's own limits bound its lag check", () => {
  afterEach(() => proxy.heal());

  it('a replica that does not answer: the read is answered by the primary within its timeoutMs, not the connect timeout', async () => {
    const own = ownDb({ timeouts: { connectMs: 20_000 } }, replica.url('repl_app', { sslmode: 'require' }, { port: proxy.port }));
    try {
      proxy.blackhole();
      const started = Date.now();
      await expect(inRecovery(own, { timeoutMs: 1500 })).resolves.toBe(false);
      expect(Date.now() - started).toBeLessThan(6000);
    } finally {
      await own.close({ deadlineMs: 0 });
    }
  }, 60_000);

  it("a replica pool with no free connection: the read waits its maxWaitMs, goes to the primary, and the replica stays up", async () => {
    const own = ownDb({ pool: { size: 1, maxOverflow: 0 }, timeouts: { connectMs: 20_000 } });
    try {
      await expect(inRecovery(own)).resolves.toBe(true);
      const release = await holdConnection({ transaction: (fn: () => Promise<void>) => own.read(fn) });
      const started = Date.now();
      await expect(inRecovery(own, { maxWaitMs: 500 })).resolves.toBe(false);
      expect(Date.now() - started).toBeLessThan(6000);
      expect(own.replicas()[0]).toMatchObject({ up: true });
      await release();
    } finally {
      await own.close({ deadlineMs: 0 });
    }
  }, 60_000);

  it('a replica pool busy for longer than the connect timeout: its lag check gives up as a pool timeout, and the replica stays in rotation', async () => {
    const own = ownDb({ pool: { size: 1, maxOverflow: 0 }, timeouts: { connectMs: 1000 } });
    try {
      await expect(inRecovery(own)).resolves.toBe(true);
      const release = await holdConnection({ transaction: (fn: () => Promise<void>) => own.read(fn) });
      try {
        await expect(inRecovery(own, { maxWaitMs: 300 })).resolves.toBe(false);
        // The lag check the read left behind waits out the connect timeout for the held connection.
        await sleep(2000);
        // Before: up: false, "did not answer its lag check within the connect timeout": a busy replica taken out of rotation.
        expect(own.replicas()[0]).toMatchObject({ up: true, lastError: undefined });
      } finally {
        await release();
      }
      await expect(inRecovery(own)).resolves.toBe(true);
    } finally {
      await own.close({ deadlineMs: 0 });
    }
  }, 60_000);

  it('a replica that stops answering mid-read uses up the read\'s timeoutMs: the read fails with its deadline, not re-run on the primary with a fresh one', async () => {
    const own = ownDb({ replica: { lagCheckIntervalMs: 600_000, retryAfterMs: 300, maxLagMs: 1000 } }, replica.url('repl_app', { sslmode: 'require' }, { port: proxy.port }));
    try {
      await expect(inRecovery(own)).resolves.toBe(true);
      proxy.blackhole();
      let runs = 0;
      const err = await rejectionOf(
        own.read(async (tx) => {
          runs++;
          return tx.$queryRaw`SELECT 1 AS one`;
        }, { timeoutMs: 1500 }),
      );
      expect(err).toBeInstanceOf(DeadlineExceededError);
      expect(runs).toBe(1);
      expect(own.replicas()[0]).toMatchObject({ up: false });
    } finally {
      await own.close({ deadlineMs: 0 });
    }
  }, 60_000);
});

describe('work on a replica is the Db\'s work', () => {
  it('its slow queries, counters and failures reach db.on, db.stats() and the logger', async () => {
    const logged: unknown[] = [];
    const logger = { info: () => {}, warn: () => {}, error: (obj: unknown) => logged.push(obj) };
    // 1 s: far above what a fast statement takes on a loaded machine (200 ms was crossed by SELECT pg_is_in_recovery() in CI).
    const own = ownDb({ slowQueryMs: 1000, logger });
    try {
      const slow: string[] = [];
      own.on('slowQuery', (info) => slow.push(info.sql));
      const before = own.stats().counters;
      await expect(
        own.read(async (tx) => {
          await tx.$queryRaw`SELECT pg_sleep(1.2)::text`;
          return (await tx.$queryRaw<{ r: boolean }[]>`SELECT pg_is_in_recovery() AS r`)[0]!.r;
        }),
      ).resolves.toBe(true);
      expect(slow).toEqual([expect.stringMatching(/pg_sleep/)]);
      const after = own.stats().counters;
      expect(after.transactions - before.transactions).toBe(1);
      expect(after.slowQueries - before.slowQueries).toBe(1);
      await own.read((tx) => tx.$executeRawUnsafe('SELECT 1/0')).catch(() => {});
      expect(own.stats().lastError).toMatchObject({ kind: 'query', sqlState: '22012' });
      expect(own.stats().counters.queryErrors).toBeGreaterThanOrEqual(1);
    } finally {
      await own.close();
    }
    const dead = ownDb({ logger }, replica.url('repl_app', { sslmode: 'require' }, { port: 1 }));
    try {
      const errors: DatalayerError[] = [];
      dead.on('error', (err) => errors.push(err));
      await expect(inRecovery(dead)).resolves.toBe(false);
      expect(errors).toEqual([expect.objectContaining({ kind: 'connection' })]);
      expect(dead.stats().lastError).toMatchObject({ kind: 'connection' });
      expect(logged).toContainEqual(expect.objectContaining({ event: 'error', kind: 'connection' }));
    } finally {
      await dead.close();
    }
  });

  it("db.on's events and the logger's error lines name the pool they are about: 'primary' or the replica's name in db.replicas()", async () => {
    const logged: Record<string, unknown>[] = [];
    const logger = { info: () => {}, warn: (obj: Record<string, unknown>) => void logged.push(obj), error: (obj: Record<string, unknown>) => void logged.push(obj) };
    const own = ownDb({ slowQueryMs: 1000, logger });
    const dead = ownDb({ logger }, replica.url('repl_app', { sslmode: 'require' }, { port: 1 }));
    try {
      const seen: string[] = [];
      for (const event of ['connect', 'acquire', 'release'] as const) own.on(event, (info) => seen.push(`${event} ${info.pool}`));
      own.on('slowQuery', (info) => seen.push(`slowQuery ${info.pool}`));
      await own.$queryRawUnsafe('SELECT 1');
      await own.read((tx) => tx.$queryRaw`SELECT pg_sleep(1.1)::text`);
      const name = own.replicas()[0]!.name;
      // Before: no pool at all (pids only): a dashboard could not tell the replica's connections or slow reads from the primary's.
      expect(seen).toEqual([
        'connect primary',
        'acquire primary',
        'release primary',
        // The lag check, then the read, on the replica's pool.
        `connect ${name}`,
        `acquire ${name}`,
        `release ${name}`,
        `acquire ${name}`,
        `slowQuery ${name}`,
        `release ${name}`,
      ]);
      expect(logged).toContainEqual(expect.objectContaining({ event: 'slowQuery', pool: name }));
      const errors: string[] = [];
      dead.on('error', (err, info) => errors.push(`${err.kind} ${info.pool}`));
      await expect(inRecovery(dead)).resolves.toBe(false);
      expect(errors).toEqual([`connection ${dead.replicas()[0]!.name}`]);
      expect(logged).toContainEqual(expect.objectContaining({ event: 'error', kind: 'connection', pool: dead.replicas()[0]!.name }));
    } finally {
      await own.close();
      await dead.close();
    }
  });

  it('a read the replica could not take and the primary ran counts as one unit, committed: no rollback', async () => {
    // Lag known good for long: the read goes to the replica without a check first.
    const own = ownDb({ pool: { size: 1, maxOverflow: 0 }, replica: { lagCheckIntervalMs: 600_000, retryAfterMs: 300, maxLagMs: 1000 } });
    try {
      await expect(inRecovery(own)).resolves.toBe(true);
      const release = await holdConnection({ transaction: (fn: () => Promise<void>) => own.read(fn) });
      try {
        const before = own.stats().counters;
        await expect(inRecovery(own, { maxWaitMs: 500 })).resolves.toBe(false);
        const after = own.stats().counters;
        // Before: transactions +2 and rollbacks +1 for one read that succeeded.
        expect({
          transactions: after.transactions - before.transactions,
          commits: after.commits - before.commits,
          rollbacks: after.rollbacks - before.rollbacks,
          poolTimeouts: after.poolTimeouts - before.poolTimeouts,
        }).toEqual({ transactions: 1, commits: 1, rollbacks: 0, poolTimeouts: 1 });
      } finally {
        await release();
      }
    } finally {
      await own.close();
    }
  });

  it("its statements raise Prisma's query events on db.$on, as the primary's do (prisma.log reaches every client)", async () => {
    const own = createDb({
      PrismaClient,
      url: primary.url('repl_app', { sslmode: 'require' }),
      replicas: [replica.url('repl_app', { sslmode: 'require' })],
      replica: { lagCheckIntervalMs: 0 },
      prisma: { log: [{ emit: 'event', level: 'query' }] },
    });
    try {
      const queries: string[] = [];
      own.$on('query', (e) => queries.push(e.query));
      await expect(own.read(async (tx) => (await tx.$queryRaw<{ r: boolean }[]>`SELECT pg_is_in_recovery() AS r, 1 AS replica_read`)[0]!.r)).resolves.toBe(true);
      await own.$queryRaw`SELECT 1 AS primary_read`;
      expect(queries).toEqual(expect.arrayContaining([expect.stringContaining('replica_read'), expect.stringContaining('primary_read')]));
    } finally {
      await own.close();
    }
  });

  it('db.replicas() tells a replica nothing has checked yet, and shows its own pool', async () => {
    const own = ownDb();
    try {
      expect(own.replicas()[0]).toMatchObject({ up: true, checked: false, pool: { open: 0 } });
      await expect(inRecovery(own)).resolves.toBe(true);
      expect(own.replicas()[0]).toMatchObject({ up: true, checked: true, pool: { open: 1 } });
    } finally {
      await own.close();
    }
  });
});

describe('db.health() and the replicas', () => {
  it('checks each replica before reporting it, within the health timeout: live, refused and black-holed', async () => {
    const silent = await startTcpProxy({ host: replica.host, port: replica.port });
    silent.blackhole();
    const own = createDb({
      PrismaClient,
      url: primary.url('repl_app', { sslmode: 'require' }),
      replicas: [
        replica.url('repl_app', { sslmode: 'require' }),
        replica.url('repl_app', { sslmode: 'require' }, { port: 1 }),
        replica.url('repl_app', { sslmode: 'require' }, { port: silent.port }),
      ],
      replica: { lagCheckIntervalMs: 60_000, retryAfterMs: 60_000, maxLagMs: 10_000 },
      timeouts: { connectMs: 20_000 },
    });
    try {
      // No read yet: db.replicas() presumes them up (and says so with checked: false).
      expect(own.replicas().map((r) => [r.up, r.checked])).toEqual([[true, false], [true, false], [true, false]]);
      // The primary's first connection and Prisma's engine, before the timed check (a statement goes to the primary).
      await own.$queryRawUnsafe('SELECT 1');
      expect(own.replicas().map((r) => [r.up, r.checked])).toEqual([[true, false], [true, false], [true, false]]);
      const started = Date.now();
      const health = await own.health({ timeoutMs: 2000 });
      expect(Date.now() - started).toBeLessThan(6000);
      expect(health.status).toBe('healthy');
      // Before: all three up: true, checked: false, although two could not be reached.
      expect(health.replicas).toEqual([
        expect.objectContaining({ up: true, checked: true, lagMs: expect.any(Number), lastError: undefined }),
        expect.objectContaining({ up: false, checked: true, lastError: expect.stringMatching(/connect/i) }),
        expect.objectContaining({ up: false, checked: false, lastError: expect.stringMatching(/health timeout \(2000 ms\)/) }),
      ]);
      // Reads are routed on what the checks found: the live replica serves them.
      await expect(inRecovery(own)).resolves.toBe(true);
    } finally {
      await own.close({ deadlineMs: 0 });
      await silent.close();
    }
  }, 60_000);
});

describe('db.health() and a replica that goes silent after answering', () => {
  it('reports it not up when its due lag check does not answer within the health timeout, as reads skip it', async () => {
    const silent = await startTcpProxy({ host: replica.host, port: replica.port });
    const own = ownDb({ timeouts: { connectMs: 20_000 } }, replica.url('repl_app', { sslmode: 'require' }, { port: silent.port }));
    try {
      await expect(inRecovery(own)).resolves.toBe(true);
      expect((await own.health({ timeoutMs: 2000 })).replicas[0]).toMatchObject({ up: true, lagMs: 0 });
      silent.blackhole();
      const health = await own.health({ timeoutMs: 1500 });
      expect(health.status).toBe('healthy');
      // Before: up: true, lagMs 0, no error: the last answer's figures, for a replica that no longer answers.
      expect(health.replicas[0]).toMatchObject({ up: false, lastError: expect.stringMatching(/health timeout \(1500 ms\)/) });
      await expect(inRecovery(own, { timeoutMs: 2000 })).resolves.toBe(false);
    } finally {
      await own.close({ deadlineMs: 0 });
      await silent.close();
    }
  }, 60_000);
});

describe('a bad replica URL', () => {
  const secret = 'S3cr3t-replica-pw';
  const bad = `postgresql://user:${secret}@127.0.0.1:5432/db?sslmode=bogus`;
  const problemOf = (make: () => unknown): ConfigError => {
    try {
      make();
    } catch (err) {
      return err as ConfigError;
    }
    throw new Error('no ConfigError');
  };

  it.each([
    ['the replicas option', { replicas: ['postgresql://user@127.0.0.1:5432/db', bad] }, {}, 'replicas[1] parameter sslmode'],
    ['DATABASE_REPLICA_URL', {}, { DATABASE_REPLICA_URL: bad }, 'DATABASE_REPLICA_URL[0] parameter sslmode'],
    // A URL that does not parse at all names its index too (the third of three).
    ['a malformed entry of DATABASE_REPLICA_URL', {}, { DATABASE_REPLICA_URL: `postgresql://127.0.0.1/a,postgresql://127.0.0.1/b,postgres://app:${secret}@127.0.0.1:99999/c` }, 'DATABASE_REPLICA_URL[2]'],
  ])('from %s: the ConfigError names that setting, never the password', (_from, options, env, setting) => {
    const err = problemOf(() => createDb({ PrismaClient, url: primary.url('repl_app'), env, ...options }));
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.issues.map((i) => i.setting)).toEqual([setting]);
    expect(`${err.message} ${JSON.stringify(err)}`).not.toContain(secret);
  });
});
