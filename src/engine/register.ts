// `import 'prisma-datalayer/schema-engine/register';` as the first line of an application's
// prisma.config.ts makes plain `npx prisma …` (generate, validate, format, -v, migrate …)
// run offline: the prisma CLI loads its config before it looks for the native schema-engine
// binary, and it honours PRISMA_SCHEMA_ENGINE_BINARY, which this points at the wasm-backed
// replacement shipped here. A value already set (a native engine) is left alone.

import path from 'node:path';

/** Absolute path of the replacement executable (bin/prisma-datalayer-schema-engine.js). */
export const schemaEngineBinary = path.resolve(__dirname, '..', '..', 'bin', 'prisma-datalayer-schema-engine.js');

process.env.PRISMA_SCHEMA_ENGINE_BINARY ??= schemaEngineBinary;
