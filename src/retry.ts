// When the layer re-runs work on its own, and how often. Two policies, each named once:
//
// - Recovery: work that landed on a pooled connection which had died while idle never
//   reached a live backend, so it is re-run on another connection. A restart kills every
//   idle connection at once, so the budget is one re-run per connection the pool can hold.
//   A fresh connection's failure is never re-run: that is the server being unreachable.
//   A statement outside a transaction commits as it runs, so a lost connection re-runs it
//   only when it cannot have run (statementMayRerun); a unit of work has not committed
//   before its COMMIT, so it re-runs on any loss before BEGIN was confirmed.
// - Conflicts: a unit of work that failed with a serialization failure or deadlock is
//   re-run as a whole, `transaction.retries` times, with full-jitter backoff.

import type { DbConfig } from './config.ts';
import { DeadlineExceededError } from './errors.ts';
import { isConnectFailure, isConnectionLoss, isGivenUp, isPermanentConnectFailure, mayHaveRun } from './failures.ts';

/**
 * Did this work fail because the pooled connection it got had died while idle, so that it
 * never reached a live backend and may run again on another one? Never for a fresh
 * connection or a failed connect (the server is unreachable), a deadline (the peer may be
 * slow, not gone), work the layer gave up while it ran (close()'s deadline, a scope's end:
 * it may have happened) or a failure a retry cannot fix.
 */
export function diedWhileIdle(err: unknown, reused: boolean): boolean {
  return reused && isConnectionLoss(err) && !isConnectFailure(err) && !(err instanceof DeadlineExceededError) && !isGivenUp(err) && !isPermanentConnectFailure(err);
}

/**
 * May a statement sent outside a transaction (autocommit) run again on another connection?
 * Only when its connection had died while idle and it cannot have run there: the server may
 * have run and committed a statement whose answer was lost (a reset or close mid-statement
 * looks the same as a connection found dead), and a write run twice is applied twice.
 */
export function statementMayRerun(err: unknown, reused: boolean): boolean {
  return diedWhileIdle(err, reused) && !mayHaveRun(err);
}

/** How many dead pooled connections one statement, unit start or health check may skip. */
export function recoveryBudget(config: DbConfig): number {
  return config.pool.size + config.pool.maxOverflow;
}

/** Full-jitter exponential backoff: spreads competing retries apart. */
export function backoffMs(attempt: number): number {
  const cap = Math.min(1000, 25 * 2 ** attempt);
  return Math.floor(Math.random() * cap);
}
