// SQL text the layer writes itself (DDL, advice): names from configuration or users are
// quoted as identifiers, never pasted in.

/** `name` as a PostgreSQL identifier: in double quotes, inner quotes doubled. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
