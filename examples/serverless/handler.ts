// A serverless function (the fetch-style signature of Vercel, Netlify, Cloudflare and
// Deno Deploy; wrap it for Lambda). `mode: 'serverless'` keeps no connection between
// invocations: a frozen or recycled instance cannot hold a slot on the server, and the
// platform can run many instances against a small max_connections.
//
// `db.handler` makes each invocation one scope: however many statements and units it runs,
// it opens one connection (on its first statement), and that connection is closed when the
// invocation ends — returned, thrown or past `timeoutMs`. Without it every statement would
// pay its own TCP + TLS + authentication handshake.
//
// The Db itself lives in module scope (getDb): a warm instance reuses the configuration,
// the Prisma client and its compiled queries; only the connection is per invocation.

import { getDb } from '../../src/index.ts';
import { PrismaClient } from '../../src/generated/prisma/client.ts';
import { CORRELATION_HEADER, correlationIdFrom, HttpError, logFailure, toErrorResponse } from '../shared/http.ts';

export const db = getDb({ PrismaClient, mode: 'serverless', applicationName: 'example-serverless' });

function json(status: number, body: unknown, correlationId: string): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', [CORRELATION_HEADER]: correlationId },
  });
}

/** GET ?email=... looks a user up; POST {email, name} creates one, both in one unit of work. */
const respond = db.handler(
  async (request: Request, correlationId: string): Promise<Response> => {
    if (request.method === 'GET') {
      const email = new URL(request.url).searchParams.get('email');
      if (!email) throw new HttpError(400, 'invalid-input', 'email is required.');
      const user = await db.transaction((tx) => tx.user.findUnique({ where: { email } }), { correlationId, readOnly: true });
      if (!user) throw new HttpError(404, 'not-found', 'No such user.');
      return json(200, user, correlationId);
    }
    if (request.method === 'POST') {
      const input = (await request.json().catch(() => ({}))) as { email?: unknown; name?: unknown };
      if (typeof input.email !== 'string') throw new HttpError(400, 'invalid-input', 'email is required.');
      const data = { email: input.email, name: typeof input.name === 'string' ? input.name : null };
      const user = await db.transaction((tx) => tx.user.create({ data }), { correlationId });
      return json(201, user, correlationId);
    }
    throw new HttpError(405, 'method-not-allowed', 'Use GET or POST.');
  },
  // Below the platform's own limit, so the connection is closed before the instance is frozen.
  { timeoutMs: 10_000 },
);

export async function handler(request: Request): Promise<Response> {
  const correlationId = correlationIdFrom(request.headers.get(CORRELATION_HEADER));
  try {
    return await respond(request, correlationId);
  } catch (err) {
    const { status, body } = toErrorResponse(err, correlationId);
    logFailure(err, correlationId, status);
    return json(status, body, correlationId);
  }
}

export default handler;
