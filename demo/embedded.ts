// An embedded PostgreSQL for the demo: PGlite (Postgres compiled to wasm, in this
// process) behind pglite-socket's wire-protocol server, so the demo talks to it over TCP
// with the same driver, pool and schema engine as a real server.
//
// Both packages are ESM-only in spirit (and devDependencies): they are loaded with a
// dynamic import(), which TypeScript (module Node16) keeps as a real import() in this
// CommonJS output, so nothing loads them unless the embedded database is used.

export interface EmbeddedDatabase {
  /** postgresql:// URL of the server, sslmode=disable (the socket server has no TLS). */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Milliseconds from the call to a listening server. */
  readonly startupMs: number;
  /** Stops the socket server, then closes PGlite. Idempotent. */
  stop(): Promise<void>;
}

/**
 * PGlite is a single backend: every socket connection is multiplexed onto it and the
 * server queues statements, keeping an open transaction's statements to the connection
 * that began it. The default is one connection; the schema engine opens up to four and
 * the demo's pool two, so the limit is raised above their sum.
 */
const MAX_CONNECTIONS = 8;

export async function startEmbedded(): Promise<EmbeddedDatabase> {
  const started = Date.now();
  const { PGlite } = await import('@electric-sql/pglite');
  const { PGLiteSocketServer } = await import('@electric-sql/pglite-socket');

  const pglite = await PGlite.create(); // in memory: nothing is left on disk
  const server = new PGLiteSocketServer({ db: pglite, host: '127.0.0.1', port: 0, maxConnections: MAX_CONNECTIONS });
  try {
    // Port 0: the OS picks a free port at bind time, so there is no probe-then-bind race.
    await server.start();
  } catch (err) {
    await pglite.close();
    throw err;
  }
  const [host = '127.0.0.1', portText = ''] = server.getServerConn().split(':');
  const port = Number(portText);

  let stopping: Promise<void> | undefined;
  return {
    // PGlite accepts any user and password; `postgres` is its only database.
    url: `postgresql://postgres:postgres@${host}:${port}/postgres?sslmode=disable`,
    host,
    port,
    startupMs: Date.now() - started,
    stop: () =>
      (stopping ??= (async () => {
        // The server first: it detaches every handler (rolling back a transaction a
        // client left open) before the database under it goes away.
        await server.stop();
        await pglite.close();
      })()),
  };
}
