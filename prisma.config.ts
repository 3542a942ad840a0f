import { defineConfig } from 'prisma/config';

// Migrations must use the direct (unpooled) URL: Neon's -pooler endpoint and any
// PgBouncer in transaction mode break the advisory locks and session state that
// the schema engine relies on. DATABASE_URL is the fallback when there is no pooler.
export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: {
    url: process.env.DIRECT_URL || process.env.DATABASE_URL || '',
  },
});
