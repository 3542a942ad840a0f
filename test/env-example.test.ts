// .env.example is the list of every variable the library and its CLI read: a variable read
// in src/ but missing there (or documented there but read nowhere) fails this test.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..');
const NAME = /\b(DB_[A-Z0-9_]+|DATABASE_[A-Z0-9_]*URL|DIRECT_URL)\b/g;

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'generated' ? [] : sources(file);
    return entry.name.endsWith('.ts') ? [file] : [];
  });
}

/** Every configuration variable name src/ mentions (env reads, error messages, advice). */
function namesInSources(): Set<string> {
  const names = new Set<string>();
  for (const file of sources(path.join(ROOT, 'src'))) {
    for (const match of readFileSync(file, 'utf8').matchAll(NAME)) names.add(match[1]!);
  }
  return names;
}

/** Variables .env.example documents: `# NAME=default` lines. */
function documented(): Set<string> {
  const text = readFileSync(path.join(ROOT, '.env.example'), 'utf8');
  return new Set([...text.matchAll(/^#?\s*([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!));
}

test('every variable src/ reads is documented in .env.example', () => {
  const names = namesInSources();
  // The scan itself must find the variables (a broken regex would pass vacuously).
  expect(names).toContain('DATABASE_URL');
  expect(names).toContain('DB_POOL_SIZE');
  const docs = documented();
  expect([...names].filter((name) => !docs.has(name)).sort()).toEqual([]);
});

test('.env.example documents no variable that src/ never mentions', () => {
  const names = namesInSources();
  const configName = new RegExp(`^${NAME.source}$`); // not /g: test() must not carry state
  const stale = [...documented()].filter((name) => configName.test(name) && !names.has(name));
  expect(stale).toEqual([]);
});
