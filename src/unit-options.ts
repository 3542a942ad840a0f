// The options of one unit of work, checked before anything is sent: each becomes part of
// a statement or a timer, so a value that is not what it claims to be (a string carrying
// SQL, an object whose valueOf() lies, NaN, a duration Node's timers cannot honour) is
// refused with a ConfigError naming the option.

import { ISOLATION_LEVELS, type IsolationLevel } from './config.ts';
import { MAX_TIMER_MS } from './deadline.ts';
import { ConfigError, type ConfigIssue } from './errors.ts';

export interface TransactionOptions {
  isolationLevel?: IsolationLevel;
  readOnly?: boolean;
  /** How long the unit may run, BEGIN to COMMIT, before it is rolled back. */
  timeoutMs?: number;
  /** How long to wait for a connection. */
  maxWaitMs?: number;
  /** Re-runs after 40001 / 40P01 / P2034. */
  retries?: number;
  /** Inside another unit: `join` it (default) or open a SAVEPOINT that can roll back alone. */
  nested?: 'join' | 'savepoint';
  /** Travels into every error this unit raises. */
  correlationId?: string;
}

export interface SessionOptions {
  correlationId?: string;
}

/** PostgreSQL's own maximum for statement_timeout (INT_MAX ms); also within Node's timers. */
const MAX_UNIT_MS = MAX_TIMER_MS;

/**
 * The check every option of a call takes (units of work, scopes, verify): a whole number in
 * [min, max], a real number — not a string, NaN or an object whose valueOf() says so.
 */
export function wholeOption(issues: ConfigIssue[], setting: string, value: unknown, min: number, max: number, unit = 'milliseconds', example = '5000'): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    issues.push({ setting, problem: `must be a whole number${unit ? ` of ${unit}` : ''} from ${min} to ${max}, e.g. ${example} (got ${describe(value)})` });
  }
}

/** A value as a ConfigIssue names it: its type and size, never its content (it may be a secret). */
/**
 * The `timeoutMs` of an options object that holds only that (db.scope's, db.handler's,
 * db.health's), checked before anything runs: a ConfigError for a non-object, another
 * option (Prisma's `timeout`, a misspelling: dropped, it left the work without the deadline
 * asked for), or a timeout that is not a whole number of milliseconds Node's timers can
 * honour (NaN or Infinity would leave the work without its deadline). Undefined when not given.
 */
export function timeoutOption(options: unknown, what: string, example: number): number | undefined {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new ConfigError([{ setting: `${what} options`, problem: `must be an object such as { timeoutMs: ${example} } (got ${describe(options)})` }]);
  }
  const issues: ConfigIssue[] = [];
  for (const name of Object.keys(options)) {
    if (name === 'timeoutMs') continue;
    const problem = name === 'timeout' ? `is not an option of ${what}: it takes timeoutMs (milliseconds)` : `is not an option of ${what} (its one option is timeoutMs)`;
    issues.push({ setting: `${what} option ${name}`, problem });
  }
  const ms = (options as { timeoutMs?: unknown }).timeoutMs;
  wholeOption(issues, `${what} option timeoutMs`, ms, 1, MAX_TIMER_MS, 'milliseconds', String(example));
  if (issues.length > 0) throw new ConfigError(issues);
  return ms as number | undefined;
}

export function describe(value: unknown): string {
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') return `a string of ${value.length} characters`;
  return value === null ? 'null' : `a value of type ${typeof value}`;
}

/** Every option of a unit (the compiler checks the list is complete). */
const UNIT_OPTION_NAMES: Record<keyof TransactionOptions, true> = {
  isolationLevel: true, readOnly: true, timeoutMs: true, maxWaitMs: true, retries: true, nested: true, correlationId: true,
};
/** Prisma's `$transaction` option names, which code moved from `$transaction` to a unit brings along. */
const PRISMA_NAMES: Readonly<Record<string, keyof TransactionOptions>> = { timeout: 'timeoutMs', maxWait: 'maxWaitMs' };

/**
 * An option the unit does not know is refused, never ignored: Prisma's `timeout: 60_000`
 * (shared with a `$transaction` call, or in plain JavaScript) was dropped, and the unit was
 * cut at the default 15 s deadline the caller had asked to raise.
 */
function unknownOptions(issues: ConfigIssue[], options: object): void {
  for (const name of Object.keys(options)) {
    if (Object.hasOwn(UNIT_OPTION_NAMES, name)) continue;
    const ours = Object.hasOwn(PRISMA_NAMES, name) ? PRISMA_NAMES[name] : undefined;
    const problem = ours === undefined ? 'is not an option of a unit of work' : `is Prisma's $transaction option: a unit of work takes ${ours} (milliseconds)`;
    issues.push({ setting: `transaction option ${name}`, problem });
  }
}

/** The options as given, once every one of them has been checked. */
export function checkUnitOptions(options: TransactionOptions): TransactionOptions {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigError([{ setting: 'transaction options', problem: `must be an object (got ${describe(options)})` }]);
  }
  const issues: ConfigIssue[] = [];
  unknownOptions(issues, options);
  wholeOption(issues, 'transaction option timeoutMs', options.timeoutMs, 1, MAX_UNIT_MS);
  wholeOption(issues, 'transaction option maxWaitMs', options.maxWaitMs, 1, MAX_UNIT_MS);
  wholeOption(issues, 'transaction option retries', options.retries, 0, 100, '', '3');
  if (options.isolationLevel !== undefined && !ISOLATION_LEVELS.includes(options.isolationLevel)) {
    issues.push({ setting: 'transaction option isolationLevel', problem: `must be one of ${ISOLATION_LEVELS.join(', ')} (got ${describe(options.isolationLevel)})` });
  }
  if (options.readOnly !== undefined && typeof options.readOnly !== 'boolean') {
    issues.push({ setting: 'transaction option readOnly', problem: `must be true or false (got ${describe(options.readOnly)})` });
  }
  if (options.nested !== undefined && options.nested !== 'join' && options.nested !== 'savepoint') {
    issues.push({ setting: 'transaction option nested', problem: `must be 'join' or 'savepoint' (got ${describe(options.nested)})` });
  }
  if (options.correlationId !== undefined && typeof options.correlationId !== 'string') {
    issues.push({ setting: 'transaction option correlationId', problem: `must be a string (got ${describe(options.correlationId)})` });
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return options;
}

/**
 * A session's options, checked before fn runs: `correlationId` is its one. A unit's
 * `timeoutMs` given to a session was dropped, and the session ran unbounded, holding its
 * connection, where the caller had asked for a deadline.
 */
export function checkSessionOptions(options: unknown): SessionOptions {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new ConfigError([{ setting: 'session options', problem: `must be an object such as { correlationId: 'request-1' } (got ${describe(options)})` }]);
  }
  const issues: ConfigIssue[] = [];
  for (const name of Object.keys(options)) {
    if (name === 'correlationId') continue;
    const problem =
      name === 'timeoutMs' || name === 'timeout'
        ? 'is not an option of a session, which has no deadline of its own: run it inside db.scope(fn, { timeoutMs }), or use a unit of work and its timeoutMs'
        : 'is not an option of a session (its one option is correlationId)';
    issues.push({ setting: `session option ${name}`, problem });
  }
  const correlationId = (options as SessionOptions).correlationId;
  if (correlationId !== undefined && typeof correlationId !== 'string') {
    issues.push({ setting: 'session option correlationId', problem: `must be a string (got ${describe(correlationId)})` });
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return options as SessionOptions;
}

/**
 * PostgreSQL's own default (`default_transaction_isolation`), which a unit runs at when
 * neither it nor the configuration asks for a level.
 */
export const SERVER_DEFAULT_ISOLATION: IsolationLevel = 'ReadCommitted';

/** PostgreSQL runs READ UNCOMMITTED as READ COMMITTED. */
const asRun = (level: IsolationLevel): IsolationLevel => (level === 'ReadUncommitted' ? 'ReadCommitted' : level);

/** What a nested unit joins: the transaction its outer unit opened. */
export interface OuterUnit {
  readonly isolationLevel: IsolationLevel;
}

/**
 * A nested unit runs in its outer unit's transaction (joined or as a savepoint), whose
 * isolation level BEGIN fixed. Run at another level than it asked for, the nested code
 * would silently get weaker guarantees (a Serializable transfer run at READ COMMITTED
 * allows write skew): as Spring's `validateExistingTransaction`, refused. `readOnly` is
 * not checked: a read (`db.read`) inside a unit joins it, to see the unit's own writes; a
 * write inside a read-only outer unit is refused by the server. `timeoutMs`, `maxWaitMs`
 * and `retries` are the outer unit's: a nested unit neither waits for a connection nor
 * commits on its own.
 */
export function checkNested(outer: OuterUnit, options: TransactionOptions): void {
  const asked = options.isolationLevel;
  if (asked !== undefined && asRun(asked) !== asRun(outer.isolationLevel)) {
    throw new ConfigError([
      {
        setting: 'transaction option isolationLevel',
        problem: `a nested unit runs in its outer unit's transaction, which runs at ${outer.isolationLevel} (asked: ${asked}); start the unit outside the outer one, or ask for the level there`,
      },
    ]);
  }
}
