// The whole sslmode × sslrootcert matrix, run through psql (libpq 15) and through the
// layer with the very same URL against the same three servers: no TLS, TLS optional,
// TLS only. Both outcomes are recorded side by side (.tmp/ssl-matrix.txt); the layer
// must equal libpq in every cell except those in DOCUMENTED_DIFFERENCES.
// Also: prefer/allow fallback decided per connection attempt, under 50 concurrent
// first queries.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createDb, SSL_MODES, type SslMode } from '../src/index';
import { PrismaClient } from '../src/generated/prisma/client';
import { startCluster, type Cluster } from './support/cluster';

type Outcome = 'tls' | 'plain' | 'error';
type ServerKind = 'no-tls' | 'tls-optional' | 'tls-only';
type RootCert = 'none' | 'right-ca' | 'wrong-ca';
const SERVERS: ServerKind[] = ['no-tls', 'tls-optional', 'tls-only'];
const ROOT_CERTS: RootCert[] = ['none', 'right-ca', 'wrong-ca'];
const cellKey = (server: ServerKind, mode: SslMode, root: RootCert): string => `${server} ${mode} ${root}`;

/**
 * Cells where the layer deliberately differs from libpq, with the reason. Empty: the
 * layer is meant to match libpq everywhere. A cell added here must say why.
 */
const DOCUMENTED_DIFFERENCES: Record<string, { layer: Outcome; reason: string }> = {};

const PSQL = ['/usr/lib/postgresql/15/bin/psql', '/usr/bin/psql'].find((p) => existsSync(p)) ?? 'psql';
const SSL_QUERY = 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()';

let servers: Record<ServerKind, Cluster>;
/** HOME for psql: empty, so libpq finds no ~/.postgresql/root.crt and the 'none' column is deterministic. */
let emptyHome: string;

beforeAll(async () => {
  emptyHome = mkdtempSync(path.join(tmpdir(), 'ssl-matrix-home-'));
  const [noTls, optional, only] = await Promise.all([
    startCluster({ ssl: false, name: 'matrix-notls' }),
    startCluster({ name: 'matrix-tlsopt' }),
    startCluster({ requireSsl: true, name: 'matrix-tlsonly' }),
  ]);
  servers = { 'no-tls': noTls, 'tls-optional': optional, 'tls-only': only };
});

afterAll(async () => {
  await Promise.all(Object.values(servers ?? {}).map((s) => s.destroy()));
  if (emptyHome) rmSync(emptyHome, { recursive: true, force: true });
});

function urlFor(server: Cluster, mode: SslMode, root: RootCert): string {
  const params: Record<string, string> = { sslmode: mode };
  if (root === 'right-ca') params.sslrootcert = server.caFile;
  if (root === 'wrong-ca') params.sslrootcert = server.wrongCaFile;
  return server.url('postgres', params);
}

interface Observed {
  outcome: Outcome;
  detail: string;
}

function fromSsl(ssl: unknown): Outcome {
  return ssl === true || ssl === 't' ? 'tls' : 'plain';
}

/** Only libpq's own environment: no PG* variable of the test process leaks in. */
function psqlEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return { ...env, HOME: emptyHome, PGCONNECT_TIMEOUT: '5', PSQLRC: '/dev/null' };
}

function viaPsql(url: string): Promise<Observed> {
  return new Promise((resolve) => {
    execFile(PSQL, [url, '-X', '-Atc', SSL_QUERY], { env: psqlEnv(), timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) resolve({ outcome: 'error', detail: firstLine(stderr || err.message) });
      else resolve({ outcome: fromSsl(stdout.trim()), detail: '' });
    });
  });
}

async function viaLayer(url: string): Promise<Observed> {
  const db = createDb({ PrismaClient, url, env: {}, timeouts: { connectMs: 5000 } });
  try {
    const [row] = await db.$queryRawUnsafe<{ ssl: boolean }[]>(SSL_QUERY);
    return { outcome: fromSsl(row?.ssl), detail: '' };
  } catch (err) {
    return { outcome: 'error', detail: `${(err as Error).constructor.name}: ${firstLine((err as Error).message)}` };
  } finally {
    await db.close({ deadlineMs: 5000 }).catch(() => undefined);
  }
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0]!.slice(0, 160);
}

describe('sslmode × sslrootcert: the layer against psql (libpq 15)', () => {
  it('matches libpq in every cell, or the difference is documented', async () => {
    const rows: string[] = [];
    const mismatches: string[] = [];
    for (const server of SERVERS) {
      for (const mode of SSL_MODES) {
        for (const root of ROOT_CERTS) {
          const url = urlFor(servers[server], mode, root);
          const libpq = await viaPsql(url);
          const layer = await viaLayer(url);
          const key = cellKey(server, mode, root);
          const documented = DOCUMENTED_DIFFERENCES[key];
          const ok = layer.outcome === libpq.outcome || documented?.layer === layer.outcome;
          if (!ok) mismatches.push(`${key}: libpq=${libpq.outcome} layer=${layer.outcome}`);
          rows.push(
            [server.padEnd(12), mode.padEnd(11), root.padEnd(8), libpq.outcome.padEnd(6), layer.outcome.padEnd(6), ok ? (documented ? 'DOC' : 'ok') : 'DIFF', libpq.detail, '|', layer.detail].join(' '),
          );
        }
      }
    }
    const header = ['server'.padEnd(12), 'sslmode'.padEnd(11), 'rootcert'.padEnd(8), 'libpq'.padEnd(6), 'layer'.padEnd(6), 'match', 'libpq error | layer error'].join(' ');
    const table = [header, ...rows].join('\n');
    mkdirSync('.tmp', { recursive: true });
    writeFileSync(path.join('.tmp', 'ssl-matrix.txt'), `${table}\n`);
    console.log(`sslmode matrix (also in .tmp/ssl-matrix.txt):\n${table}`);
    expect(rows).toHaveLength(SERVERS.length * SSL_MODES.length * ROOT_CERTS.length);
    expect(mismatches).toEqual([]);
  });
});

describe('prefer / allow fallback under 50 concurrent first queries', () => {
  const cases: [SslMode, ServerKind, boolean][] = [
    ['prefer', 'no-tls', false],
    ['allow', 'tls-only', true],
    ['prefer', 'tls-only', true],
    ['allow', 'no-tls', false],
  ];
  it.each(cases)('sslmode=%s against the %s server: all 50 succeed (ssl=%s)', async (mode, server, encrypted) => {
    // 50 connections at once, so every query is some connection's first.
    const db = createDb({ PrismaClient, url: servers[server].url('postgres', { sslmode: mode }), env: {}, pool: { size: 25, maxOverflow: 25 } });
    try {
      const settled = await Promise.allSettled(Array.from({ length: 50 }, () => db.$queryRawUnsafe<{ ssl: boolean }[]>(SSL_QUERY)));
      const failures = settled.flatMap((s) => (s.status === 'rejected' ? [firstLine((s.reason as Error).message)] : []));
      expect(failures).toEqual([]);
      const ssl = settled.map((s) => (s.status === 'fulfilled' ? s.value[0]?.ssl : undefined));
      expect(new Set(ssl)).toEqual(new Set([encrypted]));
    } finally {
      await db.close({ deadlineMs: 5000 });
    }
  });
});
