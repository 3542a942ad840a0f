// A database restart under a pooled client, through both drivers: once the server is
// back, the next statement and the next unit of work succeed without the caller seeing
// the dead connections. Own cluster (it gets stopped), own file (it is slow).
import { createDb } from '../src/index';
import { PrismaClient } from '../src/generated/prisma/client';
import { startCluster, type Cluster } from './support/cluster';
import { NEON_TEST_HOST, startNeonProxy, type NeonProxy } from './support/neon-proxy';
import { buildTemplate } from './support/template';

let cluster: Cluster;
let proxy: NeonProxy;

beforeAll(async () => {
  cluster = await startCluster({ name: 'restart' });
  await buildTemplate(cluster.info(), 'restart_template');
  await cluster.query('CREATE DATABASE restart_app TEMPLATE restart_template');
  proxy = await startNeonProxy({ upstream: cluster.info() });
}, 120_000);
afterAll(async () => {
  await proxy?.close();
  await cluster?.destroy();
});

const options = {
  pg: () => ({ url: cluster.url('restart_app', { sslmode: 'require' }) }),
  neon: () => ({
    url: cluster.url('restart_app', undefined, { host: NEON_TEST_HOST, port: 5432 }),
    neon: { wsProxy: proxy.wsProxy, useSecureWebSocket: false },
  }),
};

describe.each(['pg', 'neon'] as const)('%s driver', (driver) => {
  it('serves the next statement and unit of work once the restarted server is back', async () => {
    const db = createDb({ PrismaClient, ...options[driver](), applicationName: `restart-${driver}`, pool: { size: 3, maxOverflow: 0 } });
    await Promise.all([1, 2, 3].map(() => db.$queryRaw`SELECT pg_sleep(0.02)::text`));
    expect(db.stats().pool.open).toBe(3);

    await cluster.restart();

    expect(await db.account.count()).toBeGreaterThanOrEqual(0);
    const created = await db.transaction(async (tx) => tx.account.create({ data: { owner: `after-restart-${driver}`, balance: 1 } }));
    expect(created.id).toBeGreaterThan(0);
    await Promise.all([1, 2, 3].map(() => db.$queryRaw`SELECT 1`));
    await db.close();
  });
});
