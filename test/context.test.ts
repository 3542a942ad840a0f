// The ambient context (src/context.ts): every ambient value of the layer in one
// AsyncLocalStorage, one slot per concern.
import fs from 'node:fs';
import path from 'node:path';
import { ContextSlot } from '../src/context';

const tick = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 1));

describe('ContextSlot', () => {
  it('is visible to everything the run starts (awaits, timers, promise chains) and nowhere else', async () => {
    const slot = new ContextSlot<string>();
    const seen: (string | undefined)[] = [];
    await slot.run('a', async () => {
      seen.push(slot.get());
      await tick();
      seen.push(slot.get());
      await new Promise<void>((resolve) =>
        setTimeout(() => {
          seen.push(slot.get());
          resolve();
        }, 1),
      );
      await Promise.resolve().then(() => seen.push(slot.get()));
    });
    expect(seen).toEqual(['a', 'a', 'a', 'a']);
    expect(slot.get()).toBeUndefined();
  });

  it('keeps the other slots of the caller when one slot is run', async () => {
    const unit = new ContextSlot<string>();
    const scope = new ContextSlot<number>();
    const inner = await scope.run(7, () => unit.run('tx', async () => [scope.get(), unit.get()]));
    expect(inner).toEqual([7, 'tx']);
    // A nested run of the same slot shadows it for its own work only.
    const shadowed = await unit.run('outer', async () => {
      const nested = await unit.run('inner', async () => unit.get());
      return [nested, unit.get()];
    });
    expect(shadowed).toEqual(['inner', 'outer']);
  });

  it('sets two slots in one run (runWith), keeping the other slots of the caller, and only for that run', async () => {
    const unit = new ContextSlot<string>();
    const limits = new ContextSlot<number>();
    const scope = new ContextSlot<string>();
    const seen = await scope.run('s', () =>
      unit.runWith('tx', limits, 30, async () => {
        await tick();
        return [unit.get(), limits.get(), scope.get()];
      }),
    );
    expect(seen).toEqual(['tx', 30, 's']);
    expect([unit.get(), limits.get(), scope.get()]).toEqual([undefined, undefined, undefined]);
  });

  it('keeps concurrent runs apart', async () => {
    const slot = new ContextSlot<number>();
    const seen = await Promise.all(
      [1, 2, 3].map((n) =>
        slot.run(n, async () => {
          await tick();
          return slot.get();
        }),
      ),
    );
    expect(seen).toEqual([1, 2, 3]);
  });

  it('starts a lazy thenable (a Prisma query) returned by the function inside the run', async () => {
    const slot = new ContextSlot<string>();
    let calledWith: string | undefined = 'then() not called';
    // As a PrismaPromise: nothing runs until something calls `then`.
    const lazy = { then: (resolve: (v: string | undefined) => void) => resolve((calledWith = slot.get())) };
    expect(await slot.run('scope', () => lazy)).toBe('scope');
    expect(calledWith).toBe('scope');
  });

  it('is the only AsyncLocalStorage of the layer (each one more taxes every promise of the process on Node 20)', () => {
    const src = path.resolve(__dirname, '../src');
    const files = fs.readdirSync(src, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
    const users = files.filter((f) => /new AsyncLocalStorage\b/.test(fs.readFileSync(path.join(src, f), 'utf8')));
    expect(users).toEqual(['context.ts']);
  });
});
