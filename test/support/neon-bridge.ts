/**
 * Test fixture: a local stand-in for Neon's WebSocket proxy ("wsproxy").
 *
 * The Neon serverless driver (`@neondatabase/serverless` Pool/Client) never opens
 * TCP itself: its `net.Socket` shim opens a WebSocket to `neonConfig.wsProxy`
 * (`ws[s]://<wsProxy(host, port)>`) and expects that endpoint to relay the raw
 * PostgreSQL wire protocol to `host:port`, one binary WebSocket message per chunk,
 * both ways. That is all Neon's wsproxy does, and all this bridge does, so the real
 * driver (startup, SCRAM auth, extended protocol, transactions) talks to a plain
 * local PostgreSQL. See docs/neon-notes.md for the driver settings it needs.
 *
 * Target selection mirrors wsproxy: a request like `/v2?address=host:port` goes to
 * that address; without `address` it goes to the configured `pgHost:pgPort`.
 * The listener is bound to 127.0.0.1 only, because it relays to any address a
 * client names: fine for tests, not something to expose.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { IncomingMessage } from 'node:http';
import { WebSocketServer, WebSocket, type RawData } from 'ws';

export interface NeonBridgeOptions {
  /** Upstream used when the client does not name one via `?address=host:port`. */
  pgHost: string;
  pgPort: number;
  /**
   * Optional TLS to the upstream PostgreSQL. The driver speaks plaintext PG inside
   * the tunnel (`forceDisablePgSSL`), so a server that only accepts `hostssl` needs
   * the bridge to do the SSLRequest + TLS handshake on the upstream leg, which is
   * what Neon's own proxy does towards its computes. Omit for a plain TCP pipe.
   */
  upstreamTls?: tls.ConnectionOptions;
}

/** The `wsProxy` shape the driver accepts: host and port of the database, no scheme. */
export type NeonWsProxyFn = (host: string, port: number | string) => string;

export interface NeonBridge {
  /** Port the WebSocket server listens on (127.0.0.1). */
  readonly port: number;
  /** Value for `neonConfig.wsProxy` / `client.neonConfig.wsProxy`. */
  readonly wsProxy: NeonWsProxyFn;
  /** Number of tunnels currently open (handy for leak assertions). */
  readonly openTunnels: () => number;
  /** Stops listening, tears down every open tunnel, resolves when all are gone. */
  close(): Promise<void>;
}

// PostgreSQL SSLRequest: length 8, code 80877103.
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

function parseAddress(value: string): { host: string; port: number } | undefined {
  // Accept "host:port" and "[v6]:port"; the driver sends `${host}:${port}` verbatim.
  const idx = value.lastIndexOf(':');
  if (idx <= 0) return undefined;
  let host = value.slice(0, idx);
  const port = Number(value.slice(idx + 1));
  if (!Number.isInteger(port) || port <= 0 || port > 65535) return undefined;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return { host, port };
}

function rawToBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/** Opens the upstream socket; with `upstreamTls`, negotiates PG SSL first. */
function openUpstream(
  host: string,
  port: number,
  upstreamTls: tls.ConnectionOptions | undefined,
  onReady: (socket: net.Socket) => void,
  onFail: (err: Error) => void,
): net.Socket {
  const raw = net.connect({ host, port });
  raw.setNoDelay(true);
  if (!upstreamTls) {
    raw.once('connect', () => onReady(raw));
    raw.once('error', onFail);
    return raw;
  }
  raw.once('error', onFail);
  raw.once('connect', () => {
    raw.write(SSL_REQUEST);
    raw.once('data', (answer: Buffer) => {
      if (answer[0] !== 0x53 /* 'S' */) {
        onFail(new Error('upstream PostgreSQL refused SSL'));
        raw.destroy();
        return;
      }
      // `host` drives certificate identity checks (an IP must match an IP SAN); SNI
      // is only legal for DNS names.
      const secure = tls.connect({ host, servername: net.isIP(host) ? '' : host, ...upstreamTls, socket: raw });
      raw.removeListener('error', onFail);
      secure.once('error', onFail);
      secure.once('secureConnect', () => {
        secure.removeListener('error', onFail);
        onReady(secure);
      });
    });
  });
  return raw;
}

export async function startNeonBridge(options: NeonBridgeOptions): Promise<NeonBridge> {
  const tunnels = new Set<{ ws: WebSocket; upstream: net.Socket }>();
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });

  wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
    const url = new URL(req.url ?? '/', 'http://bridge.invalid');
    const named = url.searchParams.get('address');
    const target = named ? parseAddress(named) : { host: options.pgHost, port: options.pgPort };
    if (!target) {
      ws.close(1008, 'invalid address');
      return;
    }

    // The driver writes the startup packet as soon as the WebSocket opens, often
    // before the upstream is connected (or TLS-negotiated): queue until ready.
    const pending: Buffer[] = [];
    let ready: net.Socket | undefined;

    const fail = (): void => {
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1011, 'upstream error');
      upstream.destroy();
    };

    const upstream = openUpstream(
      target.host,
      target.port,
      options.upstreamTls,
      (socket) => {
        ready = socket;
        for (const chunk of pending.splice(0)) socket.write(chunk);
        socket.on('data', (chunk: Buffer) => {
          if (ws.readyState === WebSocket.OPEN) ws.send(chunk, { binary: true });
        });
        socket.on('error', fail);
        socket.on('close', () => {
          if (ws.readyState === WebSocket.OPEN) ws.close(1000);
        });
      },
      fail,
    );
    const tunnel = { ws, upstream };
    tunnels.add(tunnel);

    ws.on('message', (data: RawData) => {
      const chunk = rawToBuffer(data);
      if (ready) ready.write(chunk);
      else pending.push(chunk);
    });
    ws.on('error', () => upstream.destroy());
    ws.on('close', () => {
      tunnels.delete(tunnel);
      // destroy (not end): the client is gone, nothing useful can still flow.
      (ready ?? upstream).destroy();
    });
    upstream.on('close', () => {
      if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
    });
  });

  await new Promise<void>((resolve, reject) => {
    wss.once('listening', resolve);
    wss.once('error', reject);
  });
  const address = wss.address();
  if (address === null || typeof address === 'string') throw new Error('bridge: unexpected listen address');
  const port = address.port;

  const bridge: NeonBridge = {
    port,
    wsProxy: (host, pgPort) => `127.0.0.1:${port}/v2?address=${host}:${pgPort}`,
    openTunnels: () => tunnels.size,
    async close() {
      const closed: Promise<void>[] = [];
      for (const { ws, upstream } of tunnels) {
        closed.push(new Promise<void>((resolve) => ws.once('close', () => resolve())));
        upstream.destroy();
        ws.terminate();
      }
      await Promise.all(closed);
      // ws 8: close() on a server that created its own HTTP listener closes it too.
      await new Promise<void>((resolve, reject) => wss.close((err) => (err ? reject(err) : resolve())));
    },
  };
  try {
    await probe(port, options);
    // The probe's tunnel is gone on the bridge side too before anyone counts tunnels.
    const until = Date.now() + PROBE_DEADLINE_MS;
    while (tunnels.size > 0) {
      if (Date.now() > until) throw new Error('bridge: the probe tunnel did not close');
      await new Promise((r) => setTimeout(r, 10));
    }
  } catch (err) {
    await bridge.close();
    throw err;
  }
  return bridge;
}

const PROBE_DEADLINE_MS = 15_000;

/**
 * Readiness, proven end to end before any test uses the bridge: 'listening' only says
 * the WebSocket server is bound, not that a tunnel reaches PostgreSQL. The probe opens a
 * tunnel to the default upstream and sends an SSLRequest; any answer from the server
 * ('S'/'N' on a plain upstream, an ErrorResponse inside an upstream TLS session) shows
 * WebSocket accept, upstream connect (and TLS) and relaying in both directions work.
 */
async function probe(port: number, options: NeonBridgeOptions): Promise<void> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v2?address=${options.pgHost}:${options.pgPort}`);
  let timer: NodeJS.Timeout | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`bridge: no answer through the tunnel within ${PROBE_DEADLINE_MS} ms`)), PROBE_DEADLINE_MS);
      ws.once('open', () => ws.send(SSL_REQUEST, { binary: true }));
      ws.once('message', () => resolve());
      ws.once('error', reject);
      ws.once('close', (code) => reject(new Error(`bridge: tunnel closed (${code}) before PostgreSQL answered`)));
    });
  } finally {
    clearTimeout(timer);
    ws.removeAllListeners();
    ws.on('error', () => undefined);
    ws.terminate();
  }
}
