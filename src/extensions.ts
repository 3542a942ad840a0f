// `db.$extends(...)`: a Db's extended clients (Prisma client extensions) and the units of
// work started from them. Each client of a Db's family — the Db itself, each client
// extended from it, each extended from those — has its own units of work, run on its own
// (extended) Prisma clients, one per pool (primary, replicas). A unit runs with the
// extensions of the client it was started from, and whatever joins it (a nested unit, a
// session, `current()`) gets the unit's transaction with at least the extensions of the
// client it was called on:
//   - the unit's client or one it was extended from (the Db): the unit's own transaction,
//     whose extensions include the caller's;
//   - a client extended from the unit's: the same transaction seen through the caller's
//     extensions (Prisma builds it: `transactionThrough`);
//   - a client extended separately (neither extends the other): refused with a ConfigError,
//     as the transaction cannot carry both sets and dropping one (a tenant filter) is silent.
//
// `transactionThrough` is the one place this module reaches into Prisma's client internals:
// test/extensions.test.ts fails when they move.

import { ContextSlot } from './context.ts';
import { ConfigError } from './errors.ts';
import type { SessionOptions, TransactionOptions, TxClient, UnitOfWork, UnitsOfWork } from './unit-of-work.ts';

/** One client of a Db's family: the Db or a client extended from it. */
export interface Member {
  /** The Db this client belongs to (its root member). */
  readonly family: object;
  /** The client this one was extended from; undefined for the Db itself. */
  readonly parent: Member | undefined;
  /** The (extended) Prisma client of each pool: [primary, ...replicas]. */
  readonly clients: readonly unknown[];
}

/** Which client started a unit of work or session, on which pool: a unit's is kept in its own context (unit-of-work.ts). */
interface Origin {
  member: Member;
  stack: number;
}

/** The owner of the unit or session the caller runs in, and its client. */
interface Owner extends Origin {
  /** The transaction client (a unit) or the member's client (a session outside any unit). */
  client: unknown;
  unit: boolean;
}

/** Sessions outside any unit (a unit's owner is its context's origin). */
const sessions = new ContextSlot<Owner>();

function extendsOrIs(member: Member, ancestor: Member): boolean {
  for (let m: Member | undefined = member; m !== undefined; m = m.parent) if (m === ancestor) return true;
  return false;
}

/** The client `member` gets inside `owner`'s unit or session: see the header. */
function clientIn(member: Member, owner: Owner): unknown {
  if (extendsOrIs(owner.member, member)) return owner.client;
  if (extendsOrIs(member, owner.member)) {
    const own = member.clients[owner.stack];
    return owner.unit ? transactionThrough(own, owner.client) : own;
  }
  throw new ConfigError([
    {
      setting: '$extends',
      problem: 'this client and the one the running unit of work was started from were extended separately (neither extends the other): the unit cannot run with both sets of extensions. Start the unit from the client whose extensions it needs',
    },
  ]);
}

/** The owner of the Db's unit the caller runs in (`units` knows the Db), if a member started it. */
function unitOwner(units: UnitOfWork<unknown>): Owner | undefined {
  const unit = units.running();
  const origin = unit?.origin as Origin | undefined;
  return origin === undefined ? undefined : { member: origin.member, stack: origin.stack, client: unit!.tx, unit: true };
}

/** The owner of the unit, else of the session of `member`'s Db, the caller runs in. */
function ownerFor(member: Member, units: UnitOfWork<unknown>): Owner | undefined {
  if (units.running() !== undefined) return unitOwner(units);
  const session = sessions.get();
  return session?.member.family === member.family ? session : undefined;
}

/**
 * A member's units of work on one pool: `units` (built on the member's client of that
 * pool) with the owner recorded, and a unit or session that joins a running unit given
 * the client the header describes.
 */
export function ownedUnits<C>(member: Member, stack: number, units: UnitOfWork<C>): UnitsOfWork<C> {
  const origin: Origin = { member, stack };
  const join = <T>(owner: Owner, run: (fn: (c: TxClient<C>) => Promise<T>) => Promise<T>, fn: (c: TxClient<C>) => Promise<T>): Promise<T> => {
    let client: unknown;
    try {
      client = clientIn(member, owner);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    if (client === owner.client) return run(() => fn(client as TxClient<C>));
    // The same transaction through this member's extensions: what joins it from here gets them too.
    return run(() => units.joinAs({ member, stack: owner.stack } satisfies Origin, client, () => fn(client as TxClient<C>)));
  };
  return {
    transaction: <T>(fn: (tx: TxClient<C>) => Promise<T>, options?: TransactionOptions) => {
      const owner = unitOwner(units);
      return owner === undefined ? units.transaction(fn, options, origin) : join(owner, (f) => units.transaction(f, options), fn);
    },
    session: <T>(fn: (c: TxClient<C>) => Promise<T>, options?: SessionOptions) => {
      const owner = unitOwner(units);
      if (owner !== undefined) return join(owner, (f) => units.session(f, options), fn);
      return units.session((c) => sessions.run({ ...origin, client: c, unit: false }, () => fn(c)), options);
    },
    current: () => {
      const owner = ownerFor(member, units);
      return owner === undefined ? units.current() : (clientIn(member, owner) as TxClient<C>);
    },
  };
}

/** Where Prisma 7 keeps an interactive transaction's client its scope ({ txId, scopeId, scopeState }). */
const TRANSACTION_SCOPE = Symbol.for('prisma.client.transaction.scope_context');

interface TransactionScope {
  kind: 'nested';
  txId: string;
  scopeId: unknown;
  scopeState: unknown;
}

/** The method Prisma 7's client builds a transaction's client with (`$transaction` calls it). */
type ItxFactory = (transaction: { kind: 'itx'; id: string; payload: undefined }, scopeId: unknown, scopeState: unknown) => unknown;

/**
 * The open transaction `tx` (of another client of the same Prisma instance) as a client
 * with `client`'s extensions: Prisma's own transaction client, built as `$transaction`
 * builds it, on the same transaction id and nesting scope. Throws when Prisma no longer
 * keeps them there, rather than hand out a client without the extensions.
 */
export function transactionThrough(client: unknown, tx: unknown): unknown {
  const scope = (tx as Record<symbol, Partial<TransactionScope> | undefined>)[TRANSACTION_SCOPE];
  const factory = (client as { _createItxClient?: ItxFactory })._createItxClient;
  if (scope?.kind !== 'nested' || typeof scope.txId !== 'string' || typeof factory !== 'function') {
    throw new Error("Prisma's transaction client is not built where Prisma 7.10 builds it: the running unit of work cannot be given this client's extensions");
  }
  return factory.call(client, { kind: 'itx', id: scope.txId, payload: undefined }, scope.scopeId, scope.scopeState);
}
