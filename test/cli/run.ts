// Runs the CLI in-process with a given environment and captures what it prints.
import path from 'node:path';
import { main } from '../../src/cli/index';

export interface CliRun {
  code: number;
  out: string;
  err: string;
}

export async function runCli(
  argv: string[],
  env: Record<string, string | undefined>,
  cwd: string = path.resolve(__dirname, '..', '..'),
): Promise<CliRun> {
  let out = '';
  let err = '';
  const code = await main(argv, {
    env,
    cwd,
    out: (t) => void (out += t),
    err: (t) => void (err += t),
  });
  return { code, out, err };
}
