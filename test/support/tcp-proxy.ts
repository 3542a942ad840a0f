// A fault-injecting TCP proxy in front of the database. It can make the network fail
// the ways real networks do while a connection is in use:
//
// - black hole: bytes stop arriving both ways, no FIN, no RST (a NAT or load balancer
//   that forgot the flow, a suspended Neon compute behind its proxy, a pulled cable);
// - hold / release: bytes are delayed, then delivered in order (a stall, not a loss);
// - reset (RST) and FIN of every connection;
// - protocol-aware cuts around COMMIT: the PostgreSQL frontend messages are parsed
//   (plaintext connections only: `sslmode=disable`), so a test can drop the connection
//   just before COMMIT reaches the server (nothing committed) or just after the server
//   answered it (committed, but the client never hears so).
//
// What a black-holed connection is after `heal()`: still dead. Its bytes were lost,
// so the byte streams no longer line up; like a NAT that forgot the flow, it stays
// silent forever. Only connections made after `heal()` work. One concession, so the
// server's view measures the app's sockets: when the client side closes its socket,
// the proxy closes the server side too (otherwise the server would keep a backend
// for a socket the app already destroyed, and "no backend of the app remains" could
// never be checked). The client side never learns anything of the server while silent.
import net from 'node:net';

export type CutMode = 'rst' | 'fin';

export interface FiredFault {
  kind: 'before-commit' | 'after-commit' | 'statement' | 'after-statement';
  mode: CutMode | 'silent';
  /**
   * How the cut went: 'committed' = the server answered COMMIT with tag COMMIT before the cut;
   * 'answered' = the server completed the statement (its CommandComplete swallowed) before the cut.
   */
  result?: 'dropped' | 'committed' | 'answered' | 'rolled-back-by-server' | 'connection-gone';
}

export interface TcpProxy {
  port: number;
  host: string;
  /** Existing connections stop forwarding in both directions (new ones work). */
  blackholeExisting(): void;
  /**
   * Existing connections are forgotten as a NAT or load balancer forgets an idle flow (an
   * AWS NLB after 350 s): the server side is closed, the client hears nothing until it
   * next sends, and then gets a reset. New connections work.
   */
  forgetExisting(): void;
  /** Existing and new connections go silent both ways; new connects are accepted but silent. */
  blackhole(): void;
  /** New connections work again; black-holed ones stay dead (see above). */
  heal(): void;
  /** Bytes of every connection (existing and new) are buffered instead of delivered. */
  hold(): void;
  /** Delivers what `hold()` buffered, in order, and forwards normally again. */
  release(): void;
  /** RST to the client (`resetAndDestroy`) and to the server, for every open connection. */
  resetAll(): void;
  /** FIN to the client and to the server, for every open connection. */
  finAll(): void;
  /**
   * Arms the next `times` COMMITs (one fault each, in order): the COMMIT message is not
   * forwarded, then the connection is cut (client side with `mode`; server side closed,
   * so the server rolls the transaction back).
   */
  dropBeforeCommit(mode: CutMode, times?: number): void;
  /**
   * Arms the next `times` COMMITs: COMMIT is forwarded, the server's CommandComplete and
   * ReadyForQuery are swallowed, then the client side is cut with `mode`.
   */
  dropAfterCommit(mode: CutMode, times?: number): void;
  /**
   * Arms the next COMMIT: it is held until `hook(backendPid)` settles, then forwarded.
   * (E.g. the hook terminates the backend: 57P01 during COMMIT.)
   */
  onNextCommit(hook: (backendPid: number | undefined) => Promise<void>): void;
  /**
   * Arms the next `times` statements whose SQL (simple Query or Parse) matches `pattern`:
   * the statement is not forwarded and the connection is cut (client side with `mode`,
   * server side closed). A cut on a unit's last statement is a loss before COMMIT is sent.
   */
  dropOnStatement(pattern: RegExp, mode: CutMode, times?: number): void;
  /**
   * Arms the next `times` statements whose SQL (simple Query or Parse) matches `pattern`:
   * the statement is forwarded, the server's CommandComplete and ReadyForQuery are
   * swallowed (outside a transaction: the statement has committed), then the client side
   * is cut with `mode`. The client never hears that its statement ran.
   */
  dropAfterStatement(pattern: RegExp, mode: CutMode, times?: number): void;
  /**
   * Arms the next statement whose SQL (simple Query or Parse) matches `pattern`: it is not
   * forwarded and its connection goes silent both ways (a black hole that falls just after
   * the connection was made, with its first statement in flight).
   */
  silenceOnStatement(pattern: RegExp): void;
  /** Faults fired so far, in order, with how each went. */
  readonly fired: readonly FiredFault[];
  /** COMMIT messages seen from clients (plaintext connections). */
  readonly commitsSeen: number;
  /**
   * Round trips clients asked for (plaintext connections): Sync and simple Query messages,
   * each answered by one ReadyForQuery that the client waits for.
   */
  readonly roundTrips: number;
  /** The SQL of every statement seen from clients (simple Query or Parse), in order (plaintext connections). */
  readonly statementsSeen: readonly string[];
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Connections open through the proxy now. */
  open(): number;
  close(): Promise<void>;
}

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;

/** Splits a byte stream into PostgreSQL messages: untyped ones during startup, then typed ones. */
class MessageReader {
  private buf: Buffer = Buffer.alloc(0);
  /** Untyped (Int32 length first) messages still expected: the startup packet(s). */
  untyped: boolean;
  constructor(untyped: boolean) {
    this.untyped = untyped;
  }
  push(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
  }
  /** The next complete message (type '' for untyped ones), or undefined. */
  next(): { type: string; body: Buffer; raw: Buffer } | undefined {
    const head = this.untyped ? 0 : 1;
    if (this.buf.length < head + 4) return undefined;
    const len = this.buf.readInt32BE(head);
    const total = head + len;
    if (this.buf.length < total) return undefined;
    const raw = this.buf.subarray(0, total);
    this.buf = this.buf.subarray(total);
    return { type: head === 0 ? '' : String.fromCharCode(raw[0]!), body: raw.subarray(head + 4), raw };
  }
  /** Bytes not yet forming a message (passed through once the stream is opaque). */
  rest(): Buffer {
    const r = this.buf;
    this.buf = Buffer.alloc(0);
    return r;
  }
}

const cstring = (b: Buffer, from = 0): string => {
  const end = b.indexOf(0, from);
  return b.subarray(from, end < 0 ? b.length : end).toString('utf8');
};
const isCommitSql = (sql: string): boolean => /^\s*(COMMIT|END)(\s+(WORK|TRANSACTION))?\s*;?\s*$/i.test(sql);

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  silent: boolean;
  held: { toServer: Buffer[]; toClient: Buffer[] } | undefined;
  /** 'parse' until TLS is negotiated (then 'opaque': bytes pass unparsed). */
  protocol: 'parse' | 'opaque';
  /** An SSL/GSS request was sent: the server's next byte is its one-byte answer. */
  awaitingSslAnswer: boolean;
  front: MessageReader;
  back: MessageReader;
  pid: number | undefined;
  /** Set once a COMMIT fault fired on this pair: what to do with the server's answer. */
  fault: { record: FiredFault; tag: string | undefined } | undefined;
  /** Frontend bytes after a held COMMIT, delivered when the hook settles. */
  pending: Buffer[] | undefined;
  /** Forgotten (forgetExisting): the client's next bytes get a reset. */
  resetOnSend: boolean;
  done: boolean;
}

type Armed = { kind: 'before-commit' | 'after-commit'; mode: CutMode } | { kind: 'hook'; hook: (pid: number | undefined) => Promise<void> };
interface StatementCut {
  pattern: RegExp;
  mode: CutMode | 'silent';
}

export async function startTcpProxy(target: { host: string; port: number }, listenHost = '127.0.0.1'): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  let silentNew = false;
  let holding = false;
  const armed: Armed[] = [];
  const statementCuts: StatementCut[] = [];
  const answerCuts: Array<{ pattern: RegExp; mode: CutMode }> = [];
  const fired: FiredFault[] = [];
  let commitsSeen = 0;
  let roundTrips = 0;
  const statementsSeen: string[] = [];
  let accepted = 0;

  const end = (pair: Pair): void => {
    if (pair.done) return;
    pair.done = true;
    pairs.delete(pair);
    pair.client.destroy();
    pair.upstream.destroy();
  };

  const cut = (pair: Pair, mode: CutMode): void => {
    pair.silent = true; // nothing more goes either way
    if (mode === 'rst') {
      pair.client.resetAndDestroy();
      pair.upstream.resetAndDestroy();
    } else {
      pair.client.end();
      pair.upstream.end();
      // Sockets that do not close after the FIN exchange are destroyed a little later.
      setTimeout(() => end(pair), 2000).unref();
    }
  };

  const toServer = (pair: Pair, data: Buffer): void => {
    if (pair.silent || data.length === 0) return;
    if (pair.pending) pair.pending.push(data);
    else if (pair.held) pair.held.toServer.push(data);
    else pair.upstream.write(data);
  };
  const toClient = (pair: Pair, data: Buffer): void => {
    if (pair.silent || data.length === 0) return;
    if (pair.held) pair.held.toClient.push(data);
    else pair.client.write(data);
  };

  /** A COMMIT from the client: forwards it, drops it, or holds it, as armed. */
  const onCommit = (pair: Pair, raw: Buffer): void => {
    commitsSeen++;
    const plan = armed.shift();
    if (!plan) return toServer(pair, raw);
    if (plan.kind === 'hook') {
      pair.pending = [];
      const resume = (): void => {
        const queued = pair.pending ?? [];
        pair.pending = undefined;
        toServer(pair, raw);
        queued.forEach((b) => toServer(pair, b));
      };
      plan.hook(pair.pid).then(resume, resume);
      return;
    }
    const fault: FiredFault = { kind: plan.kind, mode: plan.mode };
    fired.push(fault);
    if (plan.kind === 'before-commit') {
      fault.result = 'dropped';
      cut(pair, plan.mode);
      return;
    }
    pair.fault = { record: fault, tag: undefined };
    toServer(pair, raw);
  };

  const fromClient = (pair: Pair, chunk: Buffer): void => {
    if (pair.resetOnSend) {
      pair.client.resetAndDestroy();
      end(pair);
      return;
    }
    if (pair.silent) return;
    if (pair.protocol === 'opaque') return toServer(pair, chunk);
    pair.front.push(chunk);
    for (let m = pair.front.next(); m; m = pair.silent ? undefined : pair.front.next()) {
      if (m.type === '') {
        const code = m.body.length >= 4 ? m.body.readInt32BE(0) : 0;
        // After an SSL/GSS request the server answers one byte; the startup packet follows.
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) pair.awaitingSslAnswer = true;
        else pair.front.untyped = false;
        toServer(pair, m.raw);
        continue;
      }
      const sql = m.type === 'Q' ? cstring(m.body) : m.type === 'P' ? cstring(m.body, m.body.indexOf(0) + 1) : undefined;
      if (m.type === 'Q' || m.type === 'S') roundTrips++;
      if (sql !== undefined) statementsSeen.push(sql);
      const cutAt = sql === undefined ? -1 : statementCuts.findIndex((c) => c.pattern.test(sql));
      const answerCutAt = sql === undefined || cutAt >= 0 ? -1 : answerCuts.findIndex((c) => c.pattern.test(sql));
      if (answerCutAt >= 0) {
        const [c] = answerCuts.splice(answerCutAt, 1);
        const record: FiredFault = { kind: 'after-statement', mode: c!.mode };
        fired.push(record);
        pair.fault = { record, tag: undefined };
        toServer(pair, m.raw);
      } else if (cutAt >= 0) {
        const [c] = statementCuts.splice(cutAt, 1);
        fired.push({ kind: 'statement', mode: c!.mode, result: 'dropped' });
        if (c!.mode === 'silent') pair.silent = true;
        else cut(pair, c!.mode);
      } else if (sql !== undefined && isCommitSql(sql)) onCommit(pair, m.raw);
      else toServer(pair, m.raw);
    }
  };

  const fromServer = (pair: Pair, chunk: Buffer): void => {
    if (pair.silent) return;
    if (pair.protocol === 'opaque') return toClient(pair, chunk);
    let data = chunk;
    if (pair.awaitingSslAnswer && data.length > 0) {
      pair.awaitingSslAnswer = false;
      const answer = String.fromCharCode(data[0]!);
      toClient(pair, data.subarray(0, 1));
      data = data.subarray(1);
      if (answer === 'S' || answer === 'G') {
        // Encrypted from here on: nothing more to parse on this connection.
        pair.protocol = 'opaque';
        toServer(pair, pair.front.rest());
        return toClient(pair, data);
      }
    }
    pair.back.push(data);
    for (let m = pair.back.next(); m; m = pair.back.next()) {
      if (m.type === 'K' && m.body.length >= 4) pair.pid = m.body.readInt32BE(0);
      const fault = pair.fault;
      if (fault && m.type === 'C' && fault.tag === undefined) {
        fault.tag = cstring(m.body);
        continue; // swallowed: the client never hears the answer to COMMIT
      }
      if (fault && m.type === 'Z') {
        pair.fault = undefined;
        if (fault.tag === undefined) {
          // COMMIT failed (an error came instead of CommandComplete): nothing to cut.
          fault.record.result = 'rolled-back-by-server';
        } else {
          fault.record.result = fault.record.kind === 'after-statement' ? 'answered' : fault.tag === 'COMMIT' ? 'committed' : 'rolled-back-by-server';
          cut(pair, fault.record.mode as CutMode); // armed by a COMMIT or an answer cut: never silent
          return;
        }
      }
      toClient(pair, m.raw);
    }
  };

  const server = net.createServer((client) => {
    accepted++;
    const upstream = net.connect(target.port, target.host);
    const pair: Pair = {
      client,
      upstream,
      silent: silentNew,
      held: holding ? { toServer: [], toClient: [] } : undefined,
      protocol: 'parse',
      awaitingSslAnswer: false,
      front: new MessageReader(true),
      back: new MessageReader(false),
      pid: undefined,
      fault: undefined,
      pending: undefined,
      resetOnSend: false,
      done: false,
    };
    pairs.add(pair);
    client.on('data', (d: Buffer) => fromClient(pair, d));
    upstream.on('data', (d: Buffer) => fromServer(pair, d));
    // The client closing always reaches the server (see the header); the server
    // closing reaches a silent client never.
    client.on('close', () => end(pair)).on('error', () => end(pair));
    const upstreamGone = (): void => {
      const fault = pair.fault;
      if (fault && fault.record.result === undefined) {
        fault.record.result = 'connection-gone';
        pair.fault = undefined;
      }
      if (pair.silent) {
        upstream.destroy();
        return;
      }
      end(pair);
    };
    upstream.on('close', upstreamGone).on('error', upstreamGone);
  });
  await new Promise<void>((r) => server.listen(0, listenHost, r));

  const arm = (kind: 'before-commit' | 'after-commit', mode: CutMode, times = 1): void => {
    for (let i = 0; i < times; i++) armed.push({ kind, mode });
  };

  return {
    port: (server.address() as net.AddressInfo).port,
    host: listenHost,
    blackholeExisting: () => pairs.forEach((p) => (p.silent = true)),
    forgetExisting: () =>
      pairs.forEach((p) => {
        p.silent = true;
        p.resetOnSend = true;
        p.upstream.destroy();
      }),
    blackhole: () => {
      silentNew = true;
      pairs.forEach((p) => (p.silent = true));
    },
    heal: () => {
      silentNew = false;
    },
    hold: () => {
      holding = true;
      pairs.forEach((p) => (p.held ??= { toServer: [], toClient: [] }));
    },
    release: () => {
      holding = false;
      pairs.forEach((p) => {
        const held = p.held;
        p.held = undefined;
        held?.toServer.forEach((b) => toServer(p, b));
        held?.toClient.forEach((b) => toClient(p, b));
      });
    },
    resetAll: () => pairs.forEach((p) => cut(p, 'rst')),
    finAll: () => pairs.forEach((p) => cut(p, 'fin')),
    dropBeforeCommit: (mode, times) => arm('before-commit', mode, times),
    dropAfterCommit: (mode, times) => arm('after-commit', mode, times),
    onNextCommit: (hook) => void armed.push({ kind: 'hook', hook }),
    dropOnStatement: (pattern, mode, times = 1) => {
      for (let i = 0; i < times; i++) statementCuts.push({ pattern, mode });
    },
    silenceOnStatement: (pattern) => void statementCuts.push({ pattern, mode: 'silent' }),
    dropAfterStatement: (pattern, mode, times = 1) => {
      for (let i = 0; i < times; i++) answerCuts.push({ pattern, mode });
    },
    get fired() {
      return fired;
    },
    get commitsSeen() {
      return commitsSeen;
    },
    get roundTrips() {
      return roundTrips;
    },
    statementsSeen,
    get accepted() {
      return accepted;
    },
    open: () => pairs.size,
    close: async () => {
      pairs.forEach((p) => end(p));
      await new Promise((r) => server.close(r));
    },
  };
}
