// A transaction's BEGIN sent with its first statement: one round trip instead of two.
//
// Prisma's adapters open a transaction with statements of their own before the caller's
// first one: `BEGIN`, then `SET TRANSACTION ISOLATION LEVEL …` when a level is asked for,
// each a round trip (@prisma/adapter-pg and adapter-neon, startTransaction). Npgsql does
// what this module does: BEGIN is answered at once and held back, and the first statement
// that follows carries it, so that if BEGIN fails the statement never runs (outside the
// transaction it was meant for):
//
// - extended protocol (a statement with parameters): BEGIN's Parse/Bind/Execute go on the
//   wire ahead of the statement's own messages, and ONE Sync ends them both: after an
//   error the server skips everything up to the Sync;
// - simple protocol (no parameters; the text may hold several statements, which the
//   extended protocol refuses): one Query message, `BEGIN;` ahead of the text. The server
//   stops a multi-statement Query at its first error.
//
// An isolation level is folded into BEGIN (`BEGIN ISOLATION LEVEL …` takes the same
// transaction modes). A transaction that ends before any statement was sent (COMMIT or
// ROLLBACK with BEGIN still held) sends nothing at all. A named statement, or a portal
// read in pages, gets BEGIN on its own first, as before.
//
// The carrier wraps one instance of the driver's own Query class (node-postgres', and
// the copy bundled in @neondatabase/serverless): its `submit` writes BEGIN's messages
// first, its first `handleCommandComplete` is BEGIN's. test/driver/begin.test.ts fails
// when node-postgres changes under it.

/** What the driver's Query class offers that the carrier relies on. */
interface DriverQuery {
  submit(connection: WireConnection): Error | null | undefined;
  handleCommandComplete(msg: unknown, connection: WireConnection): void;
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
  const usable = typeof proto?.submit === 'function' && typeof proto.handleCommandComplete === 'function' && typeof proto.requiresPreparation === 'function';
  return usable ? (Query as QueryClass) : undefined;
}

interface StatementConfig {
  text?: unknown;
  values?: unknown;
  name?: unknown;
  rows?: unknown;
}

const asConfig = (config: unknown): StatementConfig | undefined => (typeof config === 'object' && config !== null ? (config as StatementConfig) : undefined);

/** A statement with no parameters, sent as the adapters send their own: `{ text, values: [] }`. */
function plainText(config: unknown, values: unknown): string | undefined {
  const c = asConfig(config);
  if (c === undefined || values !== undefined || typeof c.text !== 'string' || c.name !== undefined) return undefined;
  return Array.isArray(c.values) && c.values.length === 0 ? c.text : undefined;
}

/** Is this the adapters' BEGIN? */
export function isBegin(config: unknown, values: unknown): boolean {
  return plainText(config, values) === 'BEGIN';
}

const ISOLATION = /^SET TRANSACTION (ISOLATION LEVEL (?:READ UNCOMMITTED|READ COMMITTED|REPEATABLE READ|SERIALIZABLE))$/;

/** The adapters' isolation statement as BEGIN's transaction mode (`ISOLATION LEVEL …`), or undefined. */
export function isolationMode(config: unknown, values: unknown): string | undefined {
  const text = plainText(config, values);
  return text === undefined ? undefined : ISOLATION.exec(text)?.[1];
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

/**
 * The statement as a Query that carries `begin` ahead of it, or undefined when it cannot
 * (a named statement, a portal read in pages, or a config node-postgres would refuse
 * before writing anything). `confirmed` runs when BEGIN's completion arrives.
 */
export function carrying(
  Query: QueryClass,
  begin: string,
  config: unknown,
  values: unknown,
  callback: (err: unknown, result?: unknown) => void,
  confirmed: () => void,
): DriverQuery | undefined {
  const c = asConfig(config);
  if (c === undefined || values !== undefined || typeof c.text !== 'string' || !Array.isArray(c.values)) return undefined;
  // A named statement may be refused at submit (one name, two texts) after BEGIN went out; pages need a Sync of their own.
  if (c.name !== undefined || c.rows !== undefined) return undefined;
  const query = new Query(config, undefined, callback);
  if (!query.requiresPreparation()) {
    (query as DriverQuery & { text: string }).text = `${begin};${c.text}`;
    return confirmOnce(query, confirmed);
  }
  const submit = query.submit;
  query.submit = function submitWithBegin(this: DriverQuery, connection: WireConnection) {
    connection.stream.cork?.();
    try {
      connection.parse({ text: begin, name: '', types: [] });
      connection.bind({ portal: '', statement: '', values: [] });
      connection.execute({ portal: '', rows: 0 });
      return submit.call(this, connection);
    } finally {
      connection.stream.uncork?.();
    }
  };
  return confirmOnce(query, confirmed);
}

/**
 * The first completion is BEGIN's: taken as the confirmation, not as a result (node-postgres
 * would return an array of two). The statement's own results follow it.
 */
function confirmOnce(query: DriverQuery, confirmed: () => void): DriverQuery {
  const complete = query.handleCommandComplete;
  query.handleCommandComplete = function beginComplete() {
    query.handleCommandComplete = complete;
    confirmed();
  };
  return query;
}
