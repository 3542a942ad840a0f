// Secret removal for anything that may reach a log or an HTTP response.
// Passwords are removed by their known values as well as by shape, because drivers
// echo them in forms a pattern cannot foresee (URL-encoded, inside a DSN, in a hint).

const known = new Set<string>();

/** Remember a secret so that `redact` removes it wherever it appears, in any encoding. */
export function registerSecret(secret: string | undefined): void {
  if (!secret || secret.length < 3) return;
  known.add(secret);
  known.add(encodeURIComponent(secret));
}

const URL_CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/)([^:/@\s]*):([^@\s]*)@/gi;
const KEYWORD_PASSWORD = /\b(password|passwd|pwd)(\s*[=:]\s*)('[^']*'|"[^"]*"|[^\s&;,'"]+)/gi;
const URL_PASSWORD_PARAM = /([?&](?:password|sslpassword)=)[^&\s]+/gi;

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

/** A URL fit for a log line: scheme, host, port and database only. */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.hostname}${u.port ? `:${u.port}` : ''}${u.pathname}`;
  } catch {
    return '<unparseable url>';
  }
}
