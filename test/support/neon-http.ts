/**
 * Test fixture: a local implementation of Neon's SQL-over-HTTP endpoint (`POST /sql`),
 * executing for real against PostgreSQL, so the real `neon()` HTTP driver and
 * `PrismaNeonHttp` can be tested without Neon.
 *
 * It follows Neon's documented protocol and the behaviour of Neon's proxy
 * (proxy/src/serverless/sql_over_http.rs, json.rs) as closely as a test needs:
 *
 *   request   POST /sql, JSON body `{ query, params?, arrayMode? }` or
 *             `{ queries: [{ query, params?, arrayMode? }, ...] }` (one transaction)
 *   headers   Neon-Connection-String (required; user/password/database/host/port)
 *             Neon-Raw-Text-Output: "true" -> every value is Postgres' text output
 *             Neon-Array-Mode: "true"      -> rows as arrays (default for each query)
 *             Neon-Batch-Isolation-Level: ReadUncommitted|ReadCommitted|RepeatableRead|Serializable
 *             Neon-Batch-Read-Only / Neon-Batch-Deferrable: "true"
 *             (like Neon, anything but the exact string "true" means false)
 *   response  200 `{ rowAsArray, fields: [{ name, dataTypeID, tableID, columnID,
 *             dataTypeSize, dataTypeModifier, format: "text" }], rows, command, rowCount }`,
 *             or `{ results: [...] }` for a batch
 *   errors    400 JSON `{ message, code, detail, hint, position, internalPosition,
 *             internalQuery, severity, where, table, column, schema, dataType,
 *             constraint, file, line, routine }` (absent fields are null) for SQL errors,
 *             bad payloads/headers and authentication failures; 500 when the database
 *             cannot be reached. The driver only parses the JSON body on 400.
 *
 * Queries run with the extended protocol (like Neon), so a multi-statement string
 * is rejected by PostgreSQL exactly as on Neon. Params arrive as JSON and are turned
 * into text like Neon does (null -> NULL, strings verbatim, numbers/booleans/objects
 * as JSON text, arrays as a Postgres array literal). Each request gets its own
 * short-lived `pg` client whose type parsers return the raw text; the driver does
 * the type parsing, as it does against Neon.
 *
 * Deliberately not modelled: Neon's connection pooling, JWT/Authorization auth,
 * response-size limits, query cancellation on client disconnect.
 */
import http from 'node:http';
import type tls from 'node:tls';
import { Client, DatabaseError, type FieldDef, type QueryArrayConfig, type QueryArrayResult } from 'pg';

export interface NeonHttpFixtureOptions {
  /** SSL for the upstream `pg` connection (the dev server has a self-signed cert). */
  ssl?: boolean | tls.ConnectionOptions;
  /**
   * Where to connect instead of the host/port in `Neon-Connection-String`. Needed for
   * `poolQueryViaFetch`, whose synthesised connection string drops the port.
   */
  upstream?: { host: string; port: number };
  /** Upstream connect timeout; default 10 s. */
  connectionTimeoutMillis?: number;
}

/** Matches `neonConfig.fetchEndpoint`'s function form (the third argument is ignored). */
export type NeonFetchEndpointFn = (host: string, port: number | string, options?: { jwtAuth?: boolean }) => string;

export interface NeonHttpFixture {
  readonly port: number;
  /** Full endpoint URL, `http://127.0.0.1:<port>/sql`. */
  readonly url: string;
  /** Value for `neonConfig.fetchEndpoint` (a function, so any database host maps here). */
  readonly fetchEndpoint: NeonFetchEndpointFn;
  /** Number of `/sql` requests served so far (proves traffic really came here). */
  readonly requestCount: () => number;
  /** Stops listening, ends in-flight upstream clients and open HTTP connections. */
  close(): Promise<void>;
}

interface QueryData {
  query: string;
  params: (string | null)[];
  arrayMode: boolean | undefined;
}

interface FieldJson {
  name: string;
  dataTypeID: number;
  tableID: number;
  columnID: number;
  dataTypeSize: number;
  dataTypeModifier: number;
  format: 'text';
}

type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

interface QueryResultJson {
  rowAsArray: boolean;
  fields: FieldJson[];
  rows: JsonValue[];
  command: string;
  rowCount: number | null;
}

interface Headers {
  rawOutput: boolean;
  arrayMode: boolean;
  isolationLevel: string | undefined;
  readOnly: boolean;
  deferrable: boolean;
}

/** An error answered as Neon answers it: status + the JSON error body. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const ISOLATION_SQL: Record<string, string> = {
  ReadUncommitted: 'READ UNCOMMITTED',
  ReadCommitted: 'READ COMMITTED',
  RepeatableRead: 'REPEATABLE READ',
  Serializable: 'SERIALIZABLE',
};

const ERROR_FIELDS = [
  'code',
  'detail',
  'hint',
  'position',
  'internalPosition',
  'internalQuery',
  'severity',
  'where',
  'table',
  'column',
  'schema',
  'dataType',
  'constraint',
  'file',
  'line',
  'routine',
] as const;

// --- params: JSON -> Postgres text (Neon's json_to_pg_text) -------------------------

function jsonToPgText(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) return jsonArrayToPgArray(value);
  return JSON.stringify(value);
}

function jsonArrayToPgArray(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (Array.isArray(value)) return `{${value.map((v) => jsonArrayToPgArray(v) ?? 'NULL').join(',')}}`;
  // Inside an array literal strings must be quoted/escaped: JSON string syntax does it.
  if (typeof value === 'object') return JSON.stringify(JSON.stringify(value));
  return JSON.stringify(value);
}

// --- rows: Postgres text -> JSON when raw output is off (Neon's pg_text_to_json) ------

const OID = { bool: 16, int2: 21, int4: 23, float4: 700, float8: 701, json: 114, jsonb: 3802 } as const;

function pgTextToJson(text: string, oid: number, arrayElem: Map<number, number>): JsonValue {
  const elem = arrayElem.get(oid);
  if (elem !== undefined) return parsePgArray(text, elem, arrayElem);
  switch (oid) {
    case OID.bool:
      return text === 't';
    case OID.int2:
    case OID.int4:
      return Number.parseInt(text, 10);
    case OID.float4:
    case OID.float8: {
      const n = Number(text);
      return Number.isFinite(n) ? n : text; // NaN/Infinity stay strings, as on Neon
    }
    case OID.json:
    case OID.jsonb:
      return JSON.parse(text) as JsonValue;
    default:
      return text; // int8, numeric, dates, ... stay strings
  }
}

function parsePgArray(input: string, elem: number, arrayElem: Map<number, number>): JsonValue[] {
  let s = input;
  if (s.startsWith('[')) s = s.slice(s.indexOf('=') + 1); // drop bounds decoration
  let i = 0;
  const skipWs = (): void => {
    while (i < s.length && /\s/.test(s[i] ?? '')) i++;
  };
  const parseList = (): JsonValue[] => {
    skipWs();
    if (s[i] !== '{') throw new Error('unbalanced array');
    i++;
    const out: JsonValue[] = [];
    skipWs();
    if (s[i] === '}') {
      i++;
      return out;
    }
    for (;;) {
      skipWs();
      if (s[i] === '{') out.push(parseList());
      else if (s[i] === '"') {
        i++;
        let q = '';
        while (i < s.length && s[i] !== '"') {
          if (s[i] === '\\') i++;
          q += s[i] ?? '';
          i++;
        }
        i++;
        out.push(pgTextToJson(q, elem, arrayElem));
      } else {
        let j = i;
        while (j < s.length && s[j] !== ',' && s[j] !== '}') j++;
        const item = s.slice(i, j).trim();
        i = j;
        out.push(item === 'NULL' ? null : pgTextToJson(item, elem, arrayElem));
      }
      skipWs();
      if (s[i] === ',') {
        i++;
        continue;
      }
      if (s[i] !== '}') throw new Error('unbalanced array');
      i++;
      return out;
    }
  };
  return parseList();
}

// --- request handling --------------------------------------------------------------

function parseHeaders(req: http.IncomingMessage): Headers {
  const header = (name: string): string | undefined => {
    const v = req.headers[name.toLowerCase()];
    return Array.isArray(v) ? v[0] : v;
  };
  const level = header('Neon-Batch-Isolation-Level');
  if (level !== undefined && !(level in ISOLATION_SQL)) throw new HttpError(400, 'invalid isolation level');
  return {
    rawOutput: header('Neon-Raw-Text-Output') === 'true',
    arrayMode: header('Neon-Array-Mode') === 'true',
    isolationLevel: level,
    readOnly: header('Neon-Batch-Read-Only') === 'true',
    deferrable: header('Neon-Batch-Deferrable') === 'true',
  };
}

function parseQueryData(value: unknown): QueryData | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { query, params, arrayMode } = value as Record<string, unknown>;
  if (typeof query !== 'string') return undefined;
  if (params !== undefined && !Array.isArray(params)) return undefined;
  if (arrayMode !== undefined && typeof arrayMode !== 'boolean') return undefined;
  return { query, params: (params ?? []).map(jsonToPgText), arrayMode };
}

/** Neon's payload is an untagged enum: a single query wins over a batch. */
function parsePayload(body: string): QueryData | QueryData[] {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (e) {
    throw new HttpError(400, `could not parse request body: ${(e as Error).message}`);
  }
  const single = parseQueryData(json);
  if (single) return single;
  const queries = typeof json === 'object' && json !== null ? (json as Record<string, unknown>).queries : undefined;
  if (Array.isArray(queries)) {
    const parsed = queries.map(parseQueryData);
    if (parsed.every((q): q is QueryData => q !== undefined)) return parsed;
  }
  throw new HttpError(400, 'invalid request body: expected { query, params } or { queries: [...] }');
}

function clientConfigFrom(connectionString: string | undefined, options: NeonHttpFixtureOptions): ConstructorParameters<typeof Client>[0] {
  if (!connectionString) throw new HttpError(400, 'missing Neon-Connection-String header');
  let url: URL;
  try {
    url = new URL(connectionString);
  } catch {
    throw new HttpError(400, 'Neon-Connection-String is not a valid URL');
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new HttpError(400, 'Neon-Connection-String must use postgres:// or postgresql://');
  }
  const database = decodeURIComponent(url.pathname.slice(1));
  if (!url.username || !database) throw new HttpError(400, 'Neon-Connection-String must name a user and a database');
  const host = options.upstream?.host ?? url.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = options.upstream?.port ?? (url.port ? Number(url.port) : 5432);
  return {
    host,
    port,
    user: decodeURIComponent(url.username),
    password: decodeURIComponent(url.password),
    database,
    // Only application_name is honoured from the URL; sslmode etc. are the proxy's business.
    application_name: url.searchParams.get('application_name') ?? undefined,
    ssl: options.ssl ?? false,
    connectionTimeoutMillis: options.connectionTimeoutMillis ?? 10_000,
    // Raw text for every type: the fixture must hand Postgres' text output to the driver.
    types: { getTypeParser: () => (value: string) => value },
  };
}

async function runQuery(client: Client, data: QueryData, headers: Headers): Promise<QueryResultJson> {
  const config: QueryArrayConfig & { queryMode: 'extended' } = {
    text: data.query,
    values: data.params,
    rowMode: 'array',
    queryMode: 'extended', // like Neon: one statement per query, even without params
  };
  const result: QueryArrayResult<(string | null)[]> = await client.query(config);
  const fields: FieldJson[] = result.fields.map((f: FieldDef) => ({
    name: f.name,
    dataTypeID: f.dataTypeID,
    tableID: f.tableID,
    columnID: f.columnID,
    dataTypeSize: f.dataTypeSize,
    dataTypeModifier: f.dataTypeModifier,
    format: 'text',
  }));
  const arrayMode = data.arrayMode ?? headers.arrayMode;

  let arrayElem = new Map<number, number>();
  if (!headers.rawOutput && fields.length > 0) {
    // Typed JSON output needs to know which columns are arrays (and of what).
    const lookup: QueryArrayResult<[string, string]> = await client.query({
      text: "SELECT oid::text, typelem::text FROM pg_type WHERE typcategory = 'A' AND oid = ANY($1::oid[])",
      values: [fields.map((f) => String(f.dataTypeID))],
      rowMode: 'array',
    });
    arrayElem = new Map(lookup.rows.map(([oid, elem]) => [Number(oid), Number(elem)]));
  }
  const convert = (value: string | null, i: number): JsonValue => {
    if (value === null) return null;
    if (headers.rawOutput) return value;
    return pgTextToJson(value, fields[i]?.dataTypeID ?? 0, arrayElem);
  };
  const rows: JsonValue[] = result.rows.map((row) =>
    arrayMode ? row.map(convert) : Object.fromEntries(row.map((v, i) => [fields[i]?.name ?? '', convert(v, i)])),
  );
  return { rowAsArray: arrayMode, fields, rows, command: result.command, rowCount: result.rowCount };
}

function errorBody(err: unknown): Record<string, string | null> {
  const body: Record<string, string | null> = { message: err instanceof Error ? err.message : String(err) };
  for (const key of ERROR_FIELDS) {
    const v = err instanceof DatabaseError ? err[key] : undefined;
    body[key] = v ?? null;
  }
  return body;
}

export async function startNeonHttpFixture(options: NeonHttpFixtureOptions = {}): Promise<NeonHttpFixture> {
  const activeClients = new Set<Client>();
  const inFlight = new Set<Promise<void>>();
  let requests = 0;
  let closing = false;

  const send = (res: http.ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void => {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(text),
      'Access-Control-Allow-Origin': '*',
      ...extra,
    });
    res.end(text);
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const path = new URL(req.url ?? '/', 'http://fixture.invalid').pathname;
    if (path !== '/sql') return send(res, 404, { message: 'not found' });
    if (req.method !== 'POST') return send(res, 405, { message: 'method not allowed' });
    requests++;

    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);

    let client: Client | undefined;
    try {
      const headers = parseHeaders(req);
      const payload = parsePayload(Buffer.concat(chunks).toString('utf8'));
      const connectionString = req.headers['neon-connection-string'];
      client = new Client(clientConfigFrom(Array.isArray(connectionString) ? connectionString[0] : connectionString, options));
      // An upstream connection dropping mid-request must not crash the test process.
      client.on('error', () => undefined);
      activeClients.add(client);
      try {
        await client.connect();
      } catch (err) {
        // Auth and similar server-reported failures are the user's (400); an
        // unreachable database is the service's (500), as Neon classifies them.
        throw err instanceof DatabaseError ? err : new HttpError(500, `could not connect to database: ${(err as Error).message}`);
      }

      if (!Array.isArray(payload)) {
        return send(res, 200, await runQuery(client, payload, headers));
      }

      const modes: string[] = [];
      if (headers.isolationLevel) modes.push(`ISOLATION LEVEL ${ISOLATION_SQL[headers.isolationLevel]}`);
      if (headers.readOnly) modes.push('READ ONLY');
      if (headers.deferrable) modes.push('DEFERRABLE');
      await client.query(`START TRANSACTION${modes.length ? ' ' + modes.join(', ') : ''}`);
      const results: QueryResultJson[] = [];
      try {
        for (const q of payload) results.push(await runQuery(client, q, headers));
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
      // Neon echoes the batch settings it applied.
      const echo: Record<string, string> = {};
      if (headers.readOnly) echo['Neon-Batch-Read-Only'] = 'true';
      if (headers.deferrable) echo['Neon-Batch-Deferrable'] = 'true';
      if (headers.isolationLevel) echo['Neon-Batch-Isolation-Level'] = headers.isolationLevel;
      return send(res, 200, { results }, echo);
    } catch (err) {
      if (err instanceof HttpError) return send(res, err.status, errorBody(err));
      return send(res, 400, errorBody(err));
    } finally {
      if (client) {
        activeClients.delete(client);
        await client.end().catch(() => undefined);
      }
    }
  };

  const server = http.createServer((req, res) => {
    if (closing) {
      res.writeHead(503, { Connection: 'close' }).end();
      return;
    }
    const p = handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, errorBody(err));
      else res.destroy();
    });
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('neon-http fixture: unexpected listen address');
  const port = address.port;
  const url = `http://127.0.0.1:${port}/sql`;

  return {
    port,
    url,
    fetchEndpoint: () => url,
    requestCount: () => requests,
    async close() {
      closing = true;
      const stopped = new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
      // End upstream clients so a long query cannot hold close() hostage.
      await Promise.all([...activeClients].map((c) => c.end().catch(() => undefined)));
      await Promise.all([...inFlight]);
      server.closeAllConnections(); // keep-alive sockets from the driver's fetch()
      await stopped;
    },
  };
}
