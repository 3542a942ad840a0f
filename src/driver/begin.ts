// A transaction's BEGIN, its isolation level and the unit's settings, sent with its first
// statement: one round trip for what took up to four.
//
// Prisma's adapters open a transaction with statements of their own before the caller's
// first one: `BEGIN`, then `SET TRANSACTION ISOLATION LEVEL …` when a level is asked for,
// each a round trip (@prisma/adapter-pg and adapter-neon, startTransaction); the unit of
// work then sends its settings (read-only, local timeouts: unit-of-work.ts), one more.
// Npgsql does what this module does: BEGIN is answered at once and held back, and the
// first statement that follows carries it, and the settings, so that if BEGIN fails the
// statement never runs (outside the transaction it was meant for):
//
// - extended protocol (a statement with parameters): Parse/Bind/Execute of BEGIN and of
//   the settings go on the wire ahead of the statement's own messages, and ONE Sync ends
//   them all: after an error the server skips everything up to the Sync;
// - simple protocol (no parameters; the text may hold several statements, which the
//   extended protocol refuses): one Query message, `BEGIN;` ahead of the text. The server
//   stops a multi-statement Query at its first error. But it parses the whole text before
//   running any of it: a syntax error anywhere refuses BEGIN too. So an error that comes
//   before BEGIN's completion means nothing ran, and the connection (client.ts) sends
//   BEGIN on its own, then the statement again, which fails inside the transaction as it
//   would have under Prisma. Settings need bind parameters, so with settings, they carry
//   BEGIN in one round trip and the statement follows.
//
// An isolation level's `SET TRANSACTION` is held too and goes right after BEGIN. It is not
// folded into BEGIN (`BEGIN ISOLATION LEVEL …`): a hot standby refuses SERIALIZABLE there
// before any transaction block exists, and the statements after it would then run outside
// one; refused after BEGIN, it leaves the block aborted and everything after it fails, as
// with Prisma's own two statements. A transaction that ends before any statement was sent
// (COMMIT or ROLLBACK with BEGIN still held) sends nothing at all. A named statement, or a
// portal read in pages, gets what is held in a round trip of its own first.
//
// The carrier wraps one instance of the driver's own Query class (node-postgres', and
// the copy bundled in @neondatabase/serverless): its `submit` writes the messages of the
// statements ahead first; their completions and rows are taken before its own.
// test/driver/begin.test.ts fails when node-postgres changes under it.

/** What the driver's Query class offers that the carrier relies on. */
interface DriverQuery {
  submit(connection: WireConnection): Error | null | undefined;
  handleCommandComplete(msg: unknown, connection: WireConnection): void;
  handleDataRow(msg: unknown): void;
  requiresPreparation(): boolean;
}

/** The part of node-postgres' Connection the carrier writes with. */
interface WireConnection {
  stream: { cork?(): void; uncork?(): void };
  parse(msg: { text: string; name: string; types: unknown[] }): void;
  bind(msg: { portal: string; statement: string; values: unknown[] }): void;
  execute(msg: { portal: string; rows: number }): void;
}

export type QueryClass = new (config: unknown, values: unknown, callback: (err: unknown, result?: unknown) => void) => DriverQuery;

/** The driver's Query class, if it has what the carrier needs (else BEGIN is sent on its own, as Prisma does). */
export function queryClassOf(Client: unknown): QueryClass | undefined {
  const Query = (Client as { Query?: unknown }).Query;
  if (typeof Query !== 'function') return undefined;
  const proto = (Query as { prototype?: Partial<DriverQuery> }).prototype;
  const usable = (['submit', 'handleCommandComplete', 'handleDataRow', 'requiresPreparation'] as const).every((m) => typeof proto?.[m] === 'function');
  return usable ? (Query as QueryClass) : undefined;
}

interface StatementConfig {
  text?: unknown;
  values?: unknown;
  name?: unknown;
  rows?: unknown;
}

const asConfig = (config: unknown): StatementConfig | undefined => (typeof config === 'object' && config !== null ? (config as StatementConfig) : undefined);

/** The statement's parameters: in its config (adapter-pg) or beside it (adapter-neon). */
const valuesOf = (c: StatementConfig, values: unknown): unknown => (values === undefined ? c.values : values);

/** A statement with no parameters, sent as the adapters send their own: `{ text, values: [] }` or `({ text }, [])`. */
function plainText(config: unknown, values: unknown): string | undefined {
  const c = asConfig(config);
  if (c === undefined || typeof c.text !== 'string' || c.name !== undefined) return undefined;
  const v = valuesOf(c, values);
  return Array.isArray(v) && v.length === 0 ? c.text : undefined;
}

/** Is this the adapters' BEGIN? */
export function isBegin(config: unknown, values: unknown): boolean {
  return plainText(config, values) === 'BEGIN';
}

const ISOLATION = /^SET TRANSACTION ISOLATION LEVEL (?:READ UNCOMMITTED|READ COMMITTED|REPEATABLE READ|SERIALIZABLE)$/;

/** The adapters' isolation statement (`SET TRANSACTION ISOLATION LEVEL …`), or undefined. */
export function isolationStatement(config: unknown, values: unknown): string | undefined {
  const text = plainText(config, values);
  return text !== undefined && ISOLATION.test(text) ? text : undefined;
}

/** The adapters' COMMIT or ROLLBACK, or undefined. */
export function transactionEnd(config: unknown, values: unknown): 'COMMIT' | 'ROLLBACK' | undefined {
  const text = plainText(config, values);
  return text === 'COMMIT' || text === 'ROLLBACK' ? text : undefined;
}

/** What node-postgres answers for a statement that returns no rows; the adapters read `rowCount`. */
export function answered(command: string): { command: string; rowCount: null; oid: null; rows: unknown[]; fields: unknown[] } {
  return { command, rowCount: null, oid: null, rows: [], fields: [] };
}

/** A statement that goes ahead of the carrier's own: BEGIN, the isolation level, the unit's settings (with bind parameters). */
export interface Ahead {
  text: string;
  values?: readonly unknown[];
}

/**
 * The statement as a Query that carries `ahead` (BEGIN first) in front
 * of it, or undefined when it cannot (a named statement, a portal read in pages, a config
 * node-postgres would refuse before writing anything, or settings, which need bind
 * parameters, ahead of a simple-protocol statement). `confirmed` runs when BEGIN's
 * completion arrives: the connection was alive when the transaction began.
 */
export function carrying(
  Query: QueryClass,
  ahead: readonly Ahead[],
  config: unknown,
  values: unknown,
  callback: (err: unknown, result?: unknown) => void,
  confirmed: () => void,
): DriverQuery | undefined {
  const c = asConfig(config);
  if (c === undefined || typeof c.text !== 'string' || !Array.isArray(valuesOf(c, values))) return undefined;
  // A named statement may be refused at submit (one name, two texts) after BEGIN went out; pages need a Sync of their own.
  if (c.name !== undefined || c.rows !== undefined) return undefined;
  const query = new Query(config, values, callback);
  if (!query.requiresPreparation()) {
    if (ahead.some((a) => a.values !== undefined && a.values.length > 0)) return undefined;
    (query as DriverQuery & { text: string }).text = `${ahead.map((a) => a.text).join(';')};${c.text}`;
    return answersAfter(query, ahead.length, confirmed);
  }
  const submit = query.submit;
  query.submit = function submitAhead(this: DriverQuery, connection: WireConnection) {
    connection.stream.cork?.();
    try {
      // Unnamed statement and portal, each replaced by the next; no Describe: nothing to decode.
      for (const a of ahead) {
        connection.parse({ text: a.text, name: '', types: [] });
        connection.bind({ portal: '', statement: '', values: [...(a.values ?? [])] });
        connection.execute({ portal: '', rows: 0 });
      }
      return submit.call(this, connection);
    } finally {
      connection.stream.uncork?.();
    }
  };
  return answersAfter(query, ahead.length, confirmed);
}

/**
 * The first `count` completions are those of the statements ahead, BEGIN's first: not
 * results (node-postgres would return an array), and their rows (a settings SELECT's) are
 * dropped. The statement's own results follow them.
 */
function answersAfter(query: DriverQuery, count: number, confirmed: () => void): DriverQuery {
  const complete = query.handleCommandComplete;
  const row = query.handleDataRow;
  let done = 0;
  query.handleDataRow = function aheadRow() {};
  query.handleCommandComplete = function aheadComplete() {
    if (++done === 1) confirmed();
    if (done < count) return;
    query.handleCommandComplete = complete;
    query.handleDataRow = row;
  };
  return query;
}
