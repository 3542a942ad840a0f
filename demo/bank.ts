// The demo's application code: a repository and one unit of work, written the way an
// application would use the library. Repository functions take no client parameter:
// `db.current()` is the open transaction's client inside a unit of work and the plain
// client outside one, so the same function works in both places.

import type { Db } from '../src/index.ts';
import type { Account, PrismaClient } from '../src/generated/prisma/client.ts';

export type DemoDb = Db<PrismaClient>;

/** The business rule the rolled-back unit of work breaks. Not a database error. */
export class InsufficientFundsError extends Error {
  constructor(
    readonly accountId: number,
    readonly balance: number,
    readonly amount: number,
  ) {
    super(`insufficient funds: account #${accountId} has ${cents(balance)}, transfer needs ${cents(amount)}`);
    this.name = 'InsufficientFundsError';
  }
}

export function cents(amount: number): string {
  return (amount / 100).toFixed(2);
}

export function accountsRepository(db: DemoDb) {
  return {
    open: (owner: string, balance: number): Promise<Account> => db.current().account.create({ data: { owner, balance } }),

    /** Moves the balance first and checks it after: the UPDATE's row lock serialises concurrent debits. */
    async debit(id: number, amount: number): Promise<Account> {
      const account = await db.current().account.update({ where: { id }, data: { balance: { decrement: amount } } });
      if (account.balance < 0) throw new InsufficientFundsError(id, account.balance + amount, amount);
      return account;
    },

    credit: (id: number, amount: number): Promise<Account> =>
      db.current().account.update({ where: { id }, data: { balance: { increment: amount } } }),

    balances: (ids: number[]): Promise<Account[]> =>
      db.current().account.findMany({ where: { id: { in: ids } }, orderBy: { id: 'asc' } }),

    transfersBetween: (ids: number[]): Promise<number> =>
      db.current().transfer.count({ where: { fromId: { in: ids }, toId: { in: ids } } }),
  };
}

/**
 * One unit of work: debit, credit and the transfer record commit together or not at all.
 * `reference` is unique in the schema, so a retried unit can never record a transfer twice.
 */
export function transfer(db: DemoDb, fromId: number, toId: number, amount: number, reference: string): Promise<void> {
  const accounts = accountsRepository(db);
  return db.transaction(
    async (tx) => {
      await accounts.debit(fromId, amount);
      await accounts.credit(toId, amount);
      await tx.transfer.create({ data: { fromId, toId, amount, reference } });
    },
    { correlationId: reference },
  );
}
