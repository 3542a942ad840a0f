// Every sslmode with libpq's meaning, checked on the server through pg_stat_ssl, against
// the shared TLS server and a dedicated server without TLS.
import { createDb, DatabaseConnectionError, type SslMode } from '../src/index';
import { PrismaClient } from '../src/generated/prisma/client';
import { startCluster, type Cluster } from './support/cluster';
import { createTestDatabase, testServer, type TestDatabase } from './support/db';
import { startTcpProxy } from './support/tcp-proxy';

let tlsDb: TestDatabase;
let plain: Cluster;

beforeAll(async () => {
  [tlsDb, plain] = await Promise.all([createTestDatabase(), startCluster({ ssl: false, name: 'nossl' })]);
});
afterAll(async () => {
  await Promise.all([tlsDb?.drop(), plain?.destroy()]);
});

async function negotiated(url: string, mode: SslMode, extra: { rootCert?: string } = {}): Promise<boolean> {
  const db = createDb({ PrismaClient, url, ssl: { mode, ...extra } });
  try {
    const [row] = await db.$queryRaw<{ ssl: boolean }[]>`SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`;
    return row!.ssl;
  } finally {
    await db.close();
  }
}

describe('sslmode against a server with TLS', () => {
  // The harness certificate is valid for 127.0.0.1 and localhost, signed by its own CA.
  const url = (): string => tlsDb.urlWith();

  it.each([
    ['disable', false],
    ['allow', false], // libpq: plaintext first, TLS only if the server insists
    ['prefer', true],
    ['require', true], // encrypted; the self-signed chain is NOT verified (libpq semantics)
  ] as const)('%s → encrypted: %s', async (mode, encrypted) => {
    await expect(negotiated(url(), mode)).resolves.toBe(encrypted);
  });

  it('verify-ca and verify-full succeed with the right CA', async () => {
    await expect(negotiated(url(), 'verify-ca', { rootCert: tlsDb.caFile })).resolves.toBe(true);
    await expect(negotiated(url(), 'verify-full', { rootCert: tlsDb.caFile })).resolves.toBe(true);
  });

  it('verify-ca and verify-full fail with the wrong CA, with a typed error', async () => {
    for (const mode of ['verify-ca', 'verify-full'] as const) {
      const err = await negotiated(url(), mode, { rootCert: tlsDb.wrongCaFile }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DatabaseConnectionError);
      expect((err as Error).message).not.toContain(tlsDb.password);
    }
  });

  it("a certificate failure names the SSL settings that checked it and where each came from", async () => {
    const fromEnv = createDb({ PrismaClient, url: url(), env: { DB_SSLMODE: 'verify-full', DB_SSLROOTCERT: tlsDb.wrongCaFile } });
    const fromUrl = createDb({ PrismaClient, url: tlsDb.urlWith({ sslmode: 'verify-ca', sslrootcert: tlsDb.wrongCaFile }) });
    try {
      const envErr = await fromEnv.user.count().catch((e: unknown) => e);
      expect(envErr).toBeInstanceOf(DatabaseConnectionError);
      expect((envErr as Error).message).toMatch(/^Could not connect to the database: .*certificate.* \(sslmode=verify-full from DB_SSLMODE, root certificate \S+wrong-ca\.crt from DB_SSLROOTCERT\)$/);
      expect((envErr as DatabaseConnectionError).retryable).toBe(false);
      const urlErr = await fromUrl.transaction(async (tx) => tx.user.count()).catch((e: unknown) => e);
      expect((urlErr as Error).message).toMatch(/\(sslmode=verify-ca from url parameter sslmode, root certificate \S+wrong-ca\.crt from url parameter sslrootcert\)$/);
      expect((urlErr as Error).message).not.toContain(tlsDb.password);
    } finally {
      await Promise.all([fromEnv.close(), fromUrl.close()]);
    }
  });

  it('verify-full checks the host name; verify-ca does not', async () => {
    // The certificate names 127.0.0.1 and localhost; a proxy on 127.0.0.2 reaches the
    // same server under a name the certificate does not carry.
    const proxy = await startTcpProxy({ host: tlsDb.host, port: tlsDb.port }, '127.0.0.2');
    try {
      const otherName = url().replace(`@${tlsDb.host}:${tlsDb.port}/`, `@127.0.0.2:${proxy.port}/`);
      expect(otherName).not.toBe(url());
      await expect(negotiated(otherName, 'verify-ca', { rootCert: tlsDb.caFile })).resolves.toBe(true);
      const err = await negotiated(otherName, 'verify-full', { rootCert: tlsDb.caFile }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DatabaseConnectionError);
      expect((err as Error).message).toMatch(/altname|host ?name|IP: 127\.0\.0\.2/i);
    } finally {
      await proxy.close();
    }
  });

  it('the URL parameters sslmode and sslrootcert are honoured with the same meaning', async () => {
    const db = createDb({ PrismaClient, url: tlsDb.urlWith({ sslmode: 'verify-full', sslrootcert: tlsDb.wrongCaFile }) });
    await expect(db.$queryRaw`SELECT 1`).rejects.toBeInstanceOf(DatabaseConnectionError);
    await db.close();
  });
});

describe('sslmode over a unix socket', () => {
  // libpq ignores sslmode there (PostgreSQL offers no TLS on its socket). Before: require and
  // verify-* sent an SSLRequest and every connect failed with "does not support SSL connections".
  it.each(['disable', 'prefer', 'require', 'verify-ca', 'verify-full'] as const)('%s connects, unencrypted', async (mode) => {
    const db = createDb({ PrismaClient, host: testServer().socketDir, port: tlsDb.port, user: tlsDb.user, password: tlsDb.password, database: tlsDb.name, ssl: { mode, rootCert: tlsDb.caFile }, env: {} });
    try {
      const [row] = await db.$queryRaw<{ ssl: boolean; addr: string | null }[]>`SELECT ssl, client_addr::text AS addr FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE pid = pg_backend_pid()`;
      expect(row).toEqual({ ssl: false, addr: null });
    } finally {
      await db.close();
    }
  });
});

describe('sslmode against a server without TLS', () => {
  const url = (): string => plain.url('postgres');

  it.each([
    ['disable', false],
    ['allow', false],
    ['prefer', false], // falls back to plaintext, as libpq does
  ] as const)('%s connects in plaintext', async (mode, encrypted) => {
    await expect(negotiated(url(), mode)).resolves.toBe(encrypted);
  });

  it('require fails with a clear, typed error instead of falling back to plaintext', async () => {
    const err = await negotiated(url(), 'require').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatabaseConnectionError);
    expect((err as Error).message).toMatch(/does not support SSL/i);
    expect((err as Error).message).not.toContain(plain.password);
  });
});

describe("channel_binding=require (libpq's meaning: SCRAM-SHA-256-PLUS over SSL, or no connection)", () => {
  async function bound(url: string, mode: SslMode): Promise<unknown> {
    const withBinding = new URL(url);
    withBinding.searchParams.set('channel_binding', 'require');
    const db = createDb({ PrismaClient, url: withBinding.toString(), ssl: { mode } });
    try {
      const [row] = await db.$queryRaw<{ ssl: boolean }[]>`SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`;
      return row!.ssl;
    } catch (err) {
      return err;
    } finally {
      await db.close();
    }
  }

  it('connects over SSL to a SCRAM server (channel bound)', async () => {
    await expect(bound(tlsDb.urlWith(), 'require')).resolves.toBe(true);
  });

  it.each([
    ['sslmode=disable to a server with TLS', () => tlsDb.urlWith(), 'disable'],
    ['sslmode=prefer to a server without TLS', () => plain.url('postgres'), 'prefer'],
  ] as const)('%s: refused before any password is sent, not connected in plaintext', async (_name, url, mode) => {
    const err = await bound(url(), mode);
    expect(err).toBeInstanceOf(DatabaseConnectionError);
    expect((err as DatabaseConnectionError).message).toMatch(/^channel_binding=require: the server asked for SCRAM on a connection without SSL.*the password was not sent/);
    expect((err as DatabaseConnectionError).retryable).toBe(false);
  });
});
