/**
 * PostgreSQL wire-protocol pieces for the Neon proxy fixture (neon-proxy.ts): message
 * framing, the messages Neon's proxy writes itself, and the proxy's own connection to the
 * compute (TLS + SCRAM-SHA-256 with the password the client sent in cleartext).
 *
 * Sources (neondatabase/neon):
 * - proxy/src/pqproto.rs: StartupMessageParams, `write_error` (ErrorResponse with exactly
 *   `S ERROR`, `C <code>`, `M <msg>`), SQLSTATE_INTERNAL_ERROR = XX000, BeMessage encodings.
 * - proxy/src/compute/mod.rs + proxy/src/compute/tls.rs: the proxy opens TCP to the compute,
 *   negotiates TLS, authenticates with SCRAM keys (postgres_client `authenticate`).
 * - proxy/src/cancellation.rs: the client gets the proxy's own BackendKeyData; a cancel
 *   request with it is forwarded to the compute with the compute's real key.
 */
import crypto from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';

export const PROTOCOL_3 = 196608;
export const SSL_REQUEST_CODE = 80877103;
export const CANCEL_REQUEST_CODE = 80877102;

export interface PgMessage {
  type: string;
  body: Buffer;
  /** The whole message as it was on the wire (type byte + length + body). */
  raw: Buffer;
}

/** Fields of a backend ErrorResponse/NoticeResponse, keyed by their one-letter code. */
export type ErrorFields = Record<string, string>;

export function parseErrorFields(body: Buffer): ErrorFields {
  const fields: ErrorFields = {};
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const code = String.fromCharCode(body[i] ?? 0);
    const end = body.indexOf(0, i + 1);
    fields[code] = body.toString('utf8', i + 1, end);
    i = end + 1;
  }
  return fields;
}

export function message(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}

const cstr = (s: string): Buffer => Buffer.from(s + '\0', 'utf8');

/** proxy/src/pqproto.rs `write_error`: severity ERROR, the given code, the message. Nothing else. */
export function errorResponse(msg: string, code = 'XX000'): Buffer {
  return message('E', Buffer.concat([cstr('SERROR'), cstr('C' + code), cstr('M' + msg), Buffer.from([0])]));
}

export const authCleartextPassword = (): Buffer => message('R', int32(3));
export const authOk = (): Buffer => message('R', int32(0));
export const backendKeyData = (pid: number, secret: number): Buffer => message('K', Buffer.concat([int32(pid), int32(secret)]));
export const readyForQuery = (): Buffer => message('Z', Buffer.from('I'));

export function startupMessage(params: Record<string, string>): Buffer {
  const pairs = Object.entries(params).map(([k, v]) => Buffer.concat([cstr(k), cstr(v)]));
  const body = Buffer.concat([int32(PROTOCOL_3), ...pairs, Buffer.from([0])]);
  return Buffer.concat([int32(body.length + 4), body]);
}

export function cancelRequest(pid: number, secret: number): Buffer {
  return Buffer.concat([int32(16), int32(CANCEL_REQUEST_CODE), int32(pid), int32(secret)]);
}

/** Parses a StartupMessage body (after length + version) into its key/value pairs. */
export function parseStartupParams(body: Buffer): Record<string, string> {
  const params: Record<string, string> = {};
  const parts = body.toString('utf8').split('\0');
  for (let i = 0; i + 1 < parts.length; i += 2) {
    const key = parts[i];
    if (!key) break;
    params[key] = parts[i + 1] ?? '';
  }
  return params;
}

/** Accumulates bytes and cuts them into messages. */
export class Framer {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
  }

  /** The untyped first message of a frontend (startup, SSL or cancel request): [code, body]. */
  nextUntyped(): { code: number; body: Buffer } | undefined {
    if (this.buf.length < 8) return undefined;
    const len = this.buf.readInt32BE(0);
    if (this.buf.length < len) return undefined;
    const code = this.buf.readInt32BE(4);
    const body = this.buf.subarray(8, len);
    this.buf = this.buf.subarray(len);
    return { code, body };
  }

  next(): PgMessage | undefined {
    if (this.buf.length < 5) return undefined;
    const len = this.buf.readInt32BE(1);
    if (this.buf.length < len + 1) return undefined;
    const raw = this.buf.subarray(0, len + 1);
    this.buf = this.buf.subarray(len + 1);
    return { type: String.fromCharCode(raw[0] ?? 0), body: raw.subarray(5), raw };
  }

  hasData(): boolean {
    return this.buf.length > 0;
  }

  /** Whatever is buffered and not yet cut (pipelined bytes to forward verbatim). */
  drain(): Buffer {
    const rest: Buffer = this.buf;
    this.buf = Buffer.alloc(0);
    return rest;
  }
}

export interface ComputeAddress {
  host: string;
  port: number;
  /**
   * TLS towards the compute (compute/tls.rs negotiates it when the control plane names the
   * server, cplane_proxy_v1.rs do_wake_compute). Absent: plain TCP, no SSLRequest (SslMode::Disable),
   * as towards a compute's PgBouncer (compute/etc/pgbouncer.ini client_tls_sslmode=disable).
   */
  tls?: tls.ConnectionOptions;
}

/** The compute refused the startup: its ErrorResponse fields. */
export class ComputeDbError extends Error {
  constructor(readonly fields: ErrorFields) {
    super(fields.M ?? 'compute error');
  }
  get code(): string {
    return this.fields.C ?? '';
  }
}

/** TCP/TLS to the compute failed or it hung up during the startup. */
export class ComputeIoError extends Error {}

export interface ComputeSession {
  socket: net.Socket;
  pid: number;
  secret: number;
  /** ParameterStatus / NoticeResponse messages to forward to the client (proxy/mod.rs forward_compute_params_to_client). */
  greeting: Buffer[];
  /** Bytes the compute sent after ReadyForQuery (none in practice). */
  rest: Buffer;
}

function hmac(key: Buffer, data: string | Buffer): Buffer {
  return crypto.createHmac('sha256', key).update(data).digest();
}

/** Client side of SCRAM-SHA-256 (RFC 5802/7677), as postgres_client does it without channel binding. */
class Scram {
  private readonly nonce = crypto.randomBytes(18).toString('base64');
  private readonly bare = `n=*,r=${this.nonce}`;
  private serverSignature = '';

  constructor(private readonly password: string) {}

  initial(): Buffer {
    const first = Buffer.from(`n,,${this.bare}`);
    return message('p', Buffer.concat([cstr('SCRAM-SHA-256'), int32(first.length), first]));
  }

  continue(serverFirst: string): Buffer {
    const attrs = new Map(serverFirst.split(',').map((kv) => [kv[0] ?? '', kv.slice(2)] as const));
    const nonce = attrs.get('r') ?? '';
    if (!nonce.startsWith(this.nonce)) throw new ComputeIoError('SCRAM: server nonce mismatch');
    const salted = crypto.pbkdf2Sync(this.password, Buffer.from(attrs.get('s') ?? '', 'base64'), Number(attrs.get('i')), 32, 'sha256');
    const clientKey = hmac(salted, 'Client Key');
    const storedKey = crypto.createHash('sha256').update(clientKey).digest();
    const withoutProof = `c=biws,r=${nonce}`;
    const authMessage = `${this.bare},${serverFirst},${withoutProof}`;
    const signature = hmac(storedKey, authMessage);
    const proof = Buffer.from(clientKey.map((b, i) => b ^ (signature[i] ?? 0)));
    this.serverSignature = hmac(hmac(salted, 'Server Key'), authMessage).toString('base64');
    return message('p', Buffer.from(`${withoutProof},p=${proof.toString('base64')}`));
  }

  verify(serverFinal: string): void {
    if (serverFinal !== `v=${this.serverSignature}`) throw new ComputeIoError('SCRAM: bad server signature');
  }
}

/** Opens TCP, negotiates TLS (SSLRequest first, as compute/tls.rs does with TlsNegotiation::Postgres). */
function openTls(addr: ComputeAddress, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const addrTls = addr.tls;
    const raw = net.connect({ host: addr.host, port: addr.port });
    // compute/mod.rs connect_raw: TcpStream::connect under `config.timeout`.
    const timer = setTimeout(() => fail(new ComputeIoError(`exceeded connection timeout ${timeoutMs}ms`)), timeoutMs);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      raw.destroy();
      reject(err instanceof ComputeIoError ? err : new ComputeIoError(err.message));
    };
    raw.once('error', fail);
    raw.once('connect', () => {
      raw.setNoDelay(true);
      if (addrTls === undefined) {
        clearTimeout(timer);
        raw.removeListener('error', fail);
        return resolve(raw);
      }
      raw.write(Buffer.concat([int32(8), int32(SSL_REQUEST_CODE)]));
      raw.once('data', (answer: Buffer) => {
        if (answer[0] !== 0x53) return fail(new ComputeIoError('compute refused TLS'));
        const secure = tls.connect({ ...addrTls, socket: raw, servername: net.isIP(addr.host) ? undefined : addr.host });
        secure.once('error', fail);
        secure.once('secureConnect', () => {
          clearTimeout(timer);
          secure.removeListener('error', fail);
          raw.removeListener('error', fail);
          resolve(secure);
        });
      });
    });
  });
}

/**
 * The proxy's own startup towards the compute: filtered params, SCRAM with the client's
 * password, then collects ParameterStatus/BackendKeyData up to ReadyForQuery.
 */
export async function connectCompute(
  addr: ComputeAddress,
  params: Record<string, string>,
  password: string,
  timeoutMs: number,
): Promise<ComputeSession> {
  const socket = await openTls(addr, timeoutMs);
  const framer = new Framer();
  const scram = new Scram(password);
  const greeting: Buffer[] = [];
  let pid = 0;
  let secret = 0;
  return new Promise<ComputeSession>((resolve, reject) => {
    const timer = setTimeout(() => fail(new ComputeIoError('compute startup timed out')), timeoutMs);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      socket.removeAllListeners('data');
      socket.destroy();
      reject(err);
    };
    const onMessage = (m: PgMessage): boolean => {
      if (m.type === 'R') {
        const code = m.body.readInt32BE(0);
        if (code === 10) socket.write(scram.initial());
        else if (code === 11) socket.write(scram.continue(m.body.toString('utf8', 4)));
        else if (code === 12) scram.verify(m.body.toString('utf8', 4));
        else if (code !== 0) throw new ComputeIoError(`unsupported compute auth method ${code}`);
      } else if (m.type === 'S' || m.type === 'N') greeting.push(m.raw);
      else if (m.type === 'K') {
        pid = m.body.readInt32BE(0);
        secret = m.body.readInt32BE(4);
      } else if (m.type === 'E') throw new ComputeDbError(parseErrorFields(m.body));
      else if (m.type === 'Z') return true;
      return false;
    };
    socket.on('data', (chunk: Buffer) => {
      framer.push(chunk);
      try {
        for (let m = framer.next(); m; m = framer.next()) {
          if (onMessage(m)) {
            clearTimeout(timer);
            socket.removeAllListeners('data');
            socket.removeAllListeners('error');
            socket.removeAllListeners('close');
            resolve({ socket, pid, secret, greeting, rest: framer.drain() });
            return;
          }
        }
      } catch (err) {
        fail(err as Error);
      }
    });
    socket.once('error', (err) => fail(new ComputeIoError(err.message)));
    socket.once('close', () => fail(new ComputeIoError('compute closed the connection during startup')));
    socket.write(startupMessage(params));
  });
}

/** Sends a CancelRequest for (pid, secret) to the compute, over TLS like every compute connection. */
export async function cancelOnCompute(addr: ComputeAddress, pid: number, secret: number): Promise<void> {
  // PostgreSQL accepts a CancelRequest after SSL negotiation too.
  const socket = await openTls(addr, 5_000).catch(() => undefined);
  if (!socket) return;
  await new Promise<void>((resolve) => {
    socket.once('close', () => resolve());
    socket.once('error', () => resolve());
    // Sent, then the compute's close awaited without closing our side first: a CancelRequest
    // needs no more, and PgBouncer 1.18 (the harness's) dies when a cancel client hangs up
    // before PgBouncer has finished with it (pgbouncer#801, fixed by pgbouncer#846).
    socket.resume();
    socket.write(cancelRequest(pid, secret));
    setTimeout(() => {
      socket.destroy();
      resolve();
    }, 2_000).unref();
  });
}
