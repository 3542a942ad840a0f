// A database restart under a pooled client, through both drivers: once the server is
// back, the next statement and the next unit of work succeed without the caller seeing
// the dead connections. Own cluster (it gets stopped), own file (it is slow).
import { createDb } from '../src/index';
import { PrismaClient } from '../src/generated/prisma/client';
import { startCluster, type Cluster } from './support/cluster';
import { startNeonBridge, type NeonBridge } from './support/neon-bridge';
import { buildTemplate } from './support/template';

let cluster: Cluster;
let bridge: NeonBridge;

beforeAll(async () => {
  cluster = await startCluster({ name: 'restart' });
  await buildTemplate(cluster.info(), 'restart_template');
  await cluster.query('CREATE DATABASE restart_app TEMPLATE restart_template');
  bridge = await startNeonBridge({ pgHost: cluster.host, pgPort: cluster.port });
}, 120_000);
afterAll(async () => {
  await bridge?.close();
  await cluster?.destroy();
});

const options = {
  pg: () => ({ url: cluster.url('restart_app', { sslmode: 'require' }) }),
  neon: () => ({
    url: cluster.url('restart_app'),
    driver: 'neon' as const,
    neon: { wsProxy: bridge.wsProxy, useSecureWebSocket: false },
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
