/**
 * SQL-over-HTTP payloads and results for the Neon proxy fixture (neon-proxy.ts), after
 * neondatabase/neon proxy/src/serverless/sql_over_http.rs (Payload, HttpHeaders,
 * query_to_json) and proxy/src/serverless/json.rs (json_to_pg_text, pg_text_row_to_json).
 * Moved here from the former test/support/neon-http.ts.
 */
import { type Client, type FieldDef, type QueryArrayConfig, type QueryArrayResult } from 'pg';

export interface QueryData {
  query: string;
  params: (string | null)[];
  arrayMode: boolean | undefined;
}

export interface FieldJson {
  name: string;
  dataTypeID: number;
  tableID: number;
  columnID: number;
  dataTypeSize: number;
  dataTypeModifier: number;
  format: 'text';
}

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export interface QueryResultJson {
  rowAsArray: boolean;
  fields: FieldJson[];
  rows: JsonValue[];
  command: string;
  rowCount: number | null;
}

/** sql_over_http.rs HttpHeaders: anything but the exact string "true" is false. */
export interface HttpHeaders {
  rawOutput: boolean;
  arrayMode: boolean;
  isolationLevel: string | undefined;
  readOnly: boolean;
  deferrable: boolean;
}

export const ISOLATION_SQL: Record<string, string> = {
  ReadUncommitted: 'READ UNCOMMITTED',
  ReadCommitted: 'READ COMMITTED',
  RepeatableRead: 'REPEATABLE READ',
  Serializable: 'SERIALIZABLE',
};

/** sql_over_http.rs query_to_json: the rows built so far exceed max_response_size_bytes. */
export class ResponseTooLarge extends Error {
  constructor(readonly limit: number) {
    super(`response is too large (max is ${limit} bytes)`);
  }
}

// --- params: JSON -> Postgres text (Neon's json_to_pg_text) -------------------------

export function jsonToPgText(value: unknown): string | null {
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

export function pgTextToJson(text: string, oid: number, arrayElem: Map<number, number>): JsonValue {
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

export function parseQueryData(value: unknown): QueryData | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { query, params, arrayMode } = value as Record<string, unknown>;
  if (typeof query !== 'string') return undefined;
  if (params !== undefined && !Array.isArray(params)) return undefined;
  if (arrayMode !== undefined && typeof arrayMode !== 'boolean') return undefined;
  return { query, params: (params ?? []).map(jsonToPgText), arrayMode };
}

export async function runQuery(client: Client, data: QueryData, headers: HttpHeaders, maxResponseBytes: number): Promise<QueryResultJson> {
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
  // query_to_json: the row buffer is checked before each row is added; past the limit
  // the whole request fails (no streaming, no truncation).
  const rows: JsonValue[] = [];
  let size = 0;
  for (const row of result.rows) {
    if (size > maxResponseBytes) throw new ResponseTooLarge(maxResponseBytes);
    const json = arrayMode ? row.map(convert) : Object.fromEntries(row.map((v, i) => [fields[i]?.name ?? '', convert(v, i)]));
    size += Buffer.byteLength(JSON.stringify(json)) + 1;
    rows.push(json);
  }
  return { rowAsArray: arrayMode, fields, rows, command: result.command, rowCount: result.rowCount };
}

