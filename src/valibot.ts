// The part of valibot that config.ts uses. valibot is built to be tree-shaken: its one
// CommonJS file holds every schema and action (213 kB), and requiring it cost a cold start
// ~5 ms and ~0.7 MB of heap. The build (scripts/build-lib.js) replaces this module's
// compiled output with an esbuild bundle of just these exports (~8 kB, its license
// included), so an import loads only what createDb needs; tests and type checks use
// valibot itself through this same file.
export { picklist, pipe, rawTransform, safeParse, unknown } from 'valibot';
export type { GenericSchema } from 'valibot';
