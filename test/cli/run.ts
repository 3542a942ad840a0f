// Runs the CLI in-process with a given environment and captures what it prints.
import path from 'node:path';
import { main } from '../../src/cli/index';

export interface CliRun {
  code: number;
  out: string;
  err: string;
}

export async function runCli(argv: string[], env: Record<string, string | undefined>): Promise<CliRun> {
  let out = '';
  let err = '';
  const code = await main(argv, {
    env,
    cwd: path.resolve(__dirname, '..', '..'),
    out: (t) => void (out += t),
    err: (t) => void (err += t),
  });
  return { code, out, err };
}
