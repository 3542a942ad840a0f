// Polling and handle counting shared by the tests.

/** Polls `check` until it holds; fails after `timeoutMs`. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 5000, everyMs = 25): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Open sockets of this process (TCP, TLS, pipes): what a leaked connection leaves behind. */
export function sockets(): number {
  return process.getActiveResourcesInfo().filter((r) => /TCP|TLS|Pipe/.test(r)).length;
}
