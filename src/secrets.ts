// The one place secrets are removed from anything that may reach a log, an error or an
// HTTP response, and hidden on objects a developer may print.
//
// Passwords are removed by their known values as well as by shape, because drivers echo
// them in forms a pattern cannot foresee (URL-encoded, inside a DSN, in a hint).

import { inspect } from 'node:util';

const known = new Set<string>();

/** Remember a secret so that `redact` removes it wherever it appears, in any encoding. */
export function registerSecret(secret: string | undefined): void {
  if (!secret || secret.length < 3) return;
  known.add(secret);
  known.add(encodeURIComponent(secret));
}

/** Remember the password of a connection URL (a malformed URL has nothing to remember). */
export function registerUrlSecret(url: string | undefined): void {
  if (url === undefined) return;
  try {
    const password = new URL(url).password;
    if (password !== '') registerSecret(decodeURIComponent(password));
  } catch {
    // Not a URL, or a malformed escape: redaction by shape still applies.
  }
}

const URL_CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/)([^:/@\s]*):([^@\s]*)@/gi;
const URL_USERINFO = /(\b[a-z][a-z0-9+.-]*:\/\/)[^/@\s]*@/gi;
const KEYWORD_PASSWORD = /\b(password|passwd|pwd)(\s*[=:]\s*)('[^']*'|"[^"]*"|[^\s&;,'"]+)/gi;
const URL_PASSWORD_PARAM = /([?&](?:password|sslpassword)=)[^&\s]+/gi;

/** `text` without passwords: URL credentials, `password=` pairs and every registered secret. */
export function redact(text: string): string {
  let out = text
    .replace(URL_CREDENTIALS, (_m, scheme: string, user: string) => `${scheme}${user}:***@`)
    .replace(URL_PASSWORD_PARAM, '$1***')
    .replace(KEYWORD_PASSWORD, '$1$2***');
  for (const secret of known) {
    if (out.includes(secret)) out = out.split(secret).join('***');
  }
  return out;
}

/**
 * SQL's string constants: '…' (with '' inside), E'…' (with backslash escapes) and
 * $tag$…$tag$. SQL spells a password as one (`ALTER ROLE r PASSWORD 'secret'`), which
 * KEYWORD_PASSWORD (`password=`) does not see, and so do values written into a statement
 * instead of bound (`$executeRawUnsafe` with interpolation).
 */
const SQL_STRING_CONSTANT = /\b[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|\$([A-Za-z_][A-Za-z_0-9]*)?\$[\s\S]*?\$\1\$/g;

/**
 * Comments and quoted identifiers, matched at the same positions as the constants and
 * first, so that an apostrophe in them (`-- don't`, `"it's"`) does not start a "constant"
 * that ends at the next real one's opening quote and leaves that one's value in clear.
 */
const SQL_TOKEN = new RegExp(`--[^\\n]*|/\\*[\\s\\S]*?\\*/|"(?:[^"]|"")*"|${SQL_STRING_CONSTANT.source}`, 'g');
const QUOTED = /'(?:[^']|'')*'/g;

/** SQL text fit for a log or an event: `redact`, and every string constant replaced, as pg_stat_statements does with constants. */
export function redactSql(sql: string): string {
  return redact(
    sql.replace(SQL_TOKEN, (token) => {
      if (token.startsWith('"')) return token;
      // A comment stays, its quoted parts replaced (sqlcommenter's key='value' pairs).
      if (token.startsWith('--') || token.startsWith('/*')) return token.replace(QUOTED, "'…'");
      return "'…'";
    }),
  );
}

/** Stricter than `redact` for engine output: the whole user-info part of any URL goes. */
export function redactUrls(text: string): string {
  return redact(text.replace(URL_USERINFO, '$1***@'));
}

/** A URL fit for a log line: scheme, host, port and database only. */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.hostname}${u.port ? `:${u.port}` : ''}${u.pathname}`;
  } catch {
    return '<unparseable url>';
  }
}

/**
 * Makes each of `keys` non-enumerable on `holder` (so JSON.stringify, spreads and
 * structured loggers skip them) and gives `holder` an inspect form that shows `****` in
 * their place (console.log, util.inspect). Code that reads a property still gets the
 * value — as pg-pool does with its password.
 */
export function hideSecrets<T extends object>(holder: T, keys: readonly (keyof T & string)[]): T {
  for (const key of keys) {
    Object.defineProperty(holder, key, { value: holder[key], enumerable: false, writable: false, configurable: false });
  }
  Object.defineProperty(holder, inspect.custom, {
    enumerable: false,
    value(depth: number, options: { depth?: number | null }, show: typeof inspect) {
      const masked: Record<string, unknown> = { ...(holder as Record<string, unknown>) };
      for (const key of keys) if (holder[key] !== undefined) masked[key] = '****';
      if (depth < 0) return '[Object]';
      return show(masked, { ...options, depth: options.depth == null ? null : options.depth - 1 });
    },
  });
  return holder;
}

/** The properties of a driver's error (and its causes') that may quote a connection string. */
const ERROR_TEXTS = ['message', 'stack', 'originalMessage', 'detail', 'hint'] as const;

/**
 * `err` with `redact` applied in place to its texts and to its causes' (drivers wrap: a
 * DriverAdapterError's cause holds the driver's original message). In place, not a copy,
 * so that Prisma still recognises the driver's error and maps it (SQLSTATE, constraint).
 */
export function redactError<T>(err: T): T {
  let e: unknown = err;
  for (let depth = 0; depth < 6 && typeof e === 'object' && e !== null; depth++) {
    const holder = e as Record<string, unknown>;
    for (const key of ERROR_TEXTS) {
      const text = holder[key];
      if (typeof text !== 'string') continue;
      const clean = redact(text);
      if (clean === text) continue;
      try {
        holder[key] = clean;
      } catch {
        // A frozen error: nothing to do but leave it; the layer's own errors are built redacted.
      }
    }
    e = holder.cause;
  }
  return err;
}
