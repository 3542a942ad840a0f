// A small HTTP service on Hono (runs on Node, Bun, Deno, Cloudflare, Vercel, Lambda).
//
// - Every request gets a correlation id (the caller's x-request-id, or a new one),
//   echoed in the response and carried by every database error of that request.
// - Each write runs as one unit of work: all of it commits, or none of it.
// - /health is db.health(): one SELECT with a timeout; 503 when unhealthy.
// - /metrics is the pools' OpenTelemetry metrics in Prometheus' format (see metrics.ts).
// - Errors become a sanitized JSON body: no SQL, no values, no hosts, no passwords.

import { Hono } from 'hono';
import type { Db } from '../../src/index.ts';
import type { PrismaClient } from '../../src/generated/prisma/client.ts';
import { PROMETHEUS_CONTENT_TYPE } from './metrics.ts';
import { CORRELATION_HEADER, correlationIdFrom, HttpError, logFailure, toErrorResponse } from '../shared/http.ts';

type AppEnv = { Variables: { correlationId: string } };

function parseId(raw: string): number {
  if (!/^\d{1,9}$/.test(raw)) throw new HttpError(400, 'invalid-input', 'The id must be a positive integer.');
  return Number(raw);
}

export function createApp(db: Db<PrismaClient>, options: { scrapeMetrics?: () => Promise<string> } = {}): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.use('*', async (c, next) => {
    const id = correlationIdFrom(c.req.header(CORRELATION_HEADER));
    c.set('correlationId', id);
    c.header(CORRELATION_HEADER, id);
    await next();
  });

  app.get('/health', async (c) => {
    const report = await db.health({ timeoutMs: 2000 });
    return c.json(report, report.status === 'healthy' ? 200 : 503);
  });

  const { scrapeMetrics } = options;
  if (scrapeMetrics) {
    app.get('/metrics', async (c) => c.body(await scrapeMetrics(), 200, { 'content-type': PROMETHEUS_CONTENT_TYPE }));
  }

  app.post('/users', async (c) => {
    const input = await c.req.json<{ email?: unknown; name?: unknown }>().catch(() => ({}) as { email?: unknown; name?: unknown });
    if (typeof input.email !== 'string' || !input.email.includes('@')) {
      throw new HttpError(400, 'invalid-input', 'email is required.');
    }
    const data = { email: input.email, name: typeof input.name === 'string' ? input.name : null };
    const user = await db.transaction((tx) => tx.user.create({ data }), { correlationId: c.get('correlationId') });
    return c.json(user, 201);
  });

  app.get('/users/:id', async (c) => {
    const id = parseId(c.req.param('id'));
    const user = await db.session((client) => client.user.findUnique({ where: { id } }), { correlationId: c.get('correlationId') });
    if (!user) throw new HttpError(404, 'not-found', 'No such user.');
    return c.json(user);
  });

  // Raw SQL taking the search text as a parameter; the server rejects a non-numeric
  // code and quotes it back in its message: the error body must not repeat it.
  app.get('/users/by-code/:code', async (c) => {
    const code = c.req.param('code');
    const rows = await db.session((client) => client.$queryRaw<{ id: number }[]>`SELECT id FROM users WHERE id = ${code}::int`, {
      correlationId: c.get('correlationId'),
    });
    return c.json(rows);
  });

  app.post('/transfers', async (c) => {
    const input = await c.req.json<{ from?: unknown; to?: unknown; amount?: unknown; reference?: unknown }>().catch(() => ({}));
    const { from, to, amount, reference } = input as Record<string, unknown>;
    if (typeof from !== 'number' || typeof to !== 'number' || typeof amount !== 'number' || amount <= 0 || !Number.isInteger(amount) || typeof reference !== 'string') {
      throw new HttpError(400, 'invalid-input', 'from, to, amount (positive whole cents) and reference are required.');
    }
    const transfer = await db.transaction(
      async (tx) => {
        // Conditional debit: the balance check and the update are one statement.
        const debited = await tx.account.updateMany({ where: { id: from, balance: { gte: amount } }, data: { balance: { decrement: amount } } });
        if (debited.count !== 1) throw new HttpError(422, 'insufficient-funds', 'The source account cannot cover the amount.');
        await tx.account.update({ where: { id: to }, data: { balance: { increment: amount } } });
        return tx.transfer.create({ data: { fromId: from, toId: to, amount, reference } });
      },
      { correlationId: c.get('correlationId') },
    );
    return c.json(transfer, 201);
  });

  app.notFound((c) => c.json({ error: { code: 'not-found', message: 'No such route.', correlationId: c.get('correlationId') } }, 404));

  app.onError((err, c) => {
    const correlationId = c.get('correlationId') ?? correlationIdFrom(undefined);
    const { status, body } = toErrorResponse(err, correlationId);
    logFailure(err, correlationId, status);
    c.header(CORRELATION_HEADER, correlationId);
    return c.json(body, status as 400);
  });

  return app;
}
