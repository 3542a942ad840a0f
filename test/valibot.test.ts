// src/valibot.ts: the compiled library carries the valibot functions config.ts uses,
// tree-shaken by the build (scripts/build-lib.js), and validates exactly as valibot itself.
// These check the build that `npm test` made (dist/), as the package ships it.
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import path from 'node:path';
import { loadConfig as loadFromSource } from '../src/config';
import { ROOT } from './support/build';

const DIST = path.join(ROOT, 'dist');

it('an import of the compiled library loads no file of the valibot package, only its own small copy', () => {
  const program = `require('./dist/index.js'); process.stdout.write(JSON.stringify(Object.keys(require.cache)));`;
  const loaded = JSON.parse(execFileSync(process.execPath, ['-e', program], { cwd: ROOT, encoding: 'utf8' })) as string[];
  expect(loaded.filter((f) => f.includes(`${path.sep}node_modules${path.sep}valibot${path.sep}`))).toEqual([]);
  expect(loaded).toContain(path.join(DIST, 'valibot.js'));
  // valibot's whole CommonJS file is ~213 kB; the functions config.ts uses, with the license, ~8 kB.
  expect(statSync(path.join(DIST, 'valibot.js')).size).toBeLessThan(32 * 1024);
});

it('the compiled configuration accepts and refuses what the source does, with the same messages', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { loadConfig: loadFromDist } = require(path.join(DIST, 'config.js')) as { loadConfig: typeof loadFromSource };
  const outcome = (load: typeof loadFromSource, options: Parameters<typeof loadFromSource>[0], env: Record<string, string>) => {
    try {
      const config = load(options, env);
      return { mode: config.mode, driver: config.driver, pool: config.pool, sslMode: config.ssl.mode };
    } catch (err) {
      return { issues: (err as { issues?: unknown }).issues };
    }
  };
  const cases: [Parameters<typeof loadFromSource>[0], Record<string, string>][] = [
    [{ url: 'postgresql://u:p@db.example.com/app', pool: { size: 3, maxOverflow: 2 } }, {}],
    [{ url: 'postgresql://u:p@db.example.com/app' }, { DB_POOL_MODE: 'serverless', DB_SSLMODE: 'require', DB_POOL_SIZE: '7' }],
    // Every kind of refusal: picklists, whole numbers, text for the startup packet.
    [{ url: 'postgresql://u:p@db.example.com/app?sslmode=sometimes' }, { DB_POOL_MODE: 'nullpool', DB_POOL_SIZE: '2.5', DB_DRIVER: 'mysql', DB_APPLICATION_NAME: 'a\0b' }],
  ];
  for (const [options, env] of cases) {
    const fromDist = outcome(loadFromDist, options, env);
    expect(fromDist).toEqual(outcome(loadFromSource, options, env));
  }
  // The refusals really were refusals (the comparison above is not between two successes).
  expect(outcome(loadFromDist, ...cases[2]!)).toEqual({ issues: expect.arrayContaining([expect.objectContaining({ setting: 'DB_POOL_MODE' })]) });
  expect((outcome(loadFromDist, ...cases[2]!) as { issues: unknown[] }).issues.length).toBeGreaterThanOrEqual(4);
});
