// The type of `db.$extends(...)`: Prisma's own `$extends` signature (ExtendsHook in Prisma
// 7's runtime types), with one change: it returns the extended client with the layer's API
// on it, `Db<extended client>`, where Prisma's returns the bare extended client. The
// arguments are typed exactly as Prisma types them (query, model, result and client
// extensions, the function form of Prisma.defineExtension).

import type { Types } from '@prisma/client/runtime/client';
import type { Db } from './client.ts';

type InternalArgs = Types.Extensions.InternalArgs;
type TypeMapDef = Types.Extensions.TypeMapDef;
type TypeMapCbDef = Types.Extensions.TypeMapCbDef;
type Call<F extends TypeMapCbDef, P> = Types.Utils.Call<F, P>;
type Extended<TypeMapCb extends TypeMapCbDef, Args extends InternalArgs> = Types.Extensions.DynamicClientExtensionThis<Call<TypeMapCb, { extArgs: Args }>, TypeMapCb, Args>;

/** Prisma's ExtendsHook<'extends', ...>, returning a Db. */
export interface DbExtendsHook<TypeMapCb extends TypeMapCbDef, ExtArgs extends InternalArgs, TypeMap extends TypeMapDef = Call<TypeMapCb, { extArgs: ExtArgs }>> {
  extArgs: ExtArgs;
  <
    R_ extends { [K in TypeMap['meta']['modelProps'] | '$allModels']?: unknown },
    R,
    M_ extends { [K in TypeMap['meta']['modelProps'] | '$allModels']?: unknown },
    M,
    Q_ extends { [K in TypeMap['meta']['modelProps'] | '$allModels' | keyof TypeMap['other']['operations'] | '$allOperations']?: unknown },
    C_ extends { [K in string]?: unknown },
    C,
    // eslint-disable-next-line @typescript-eslint/no-empty-object-type
    Args extends InternalArgs = Types.Extensions.InternalArgs<R, M, {}, C>,
    MergedArgs extends InternalArgs = Types.Extensions.MergeExtArgs<TypeMap, ExtArgs, Args>,
  >(
    extension:
      | ((client: Types.Extensions.DynamicClientExtensionThis<TypeMap, TypeMapCb, ExtArgs>) => { $extends: { extArgs: Args } })
      | {
          name?: string;
          query?: Types.Extensions.DynamicQueryExtensionArgs<Q_, TypeMap>;
          result?: Types.Extensions.DynamicResultExtensionArgs<R_, TypeMap> & R;
          model?: Types.Extensions.DynamicModelExtensionArgs<M_, TypeMap, TypeMapCb, ExtArgs> & M;
          client?: Types.Extensions.DynamicClientExtensionArgs<C_, TypeMap, TypeMapCb, ExtArgs> & C;
        },
  ): Db<Extended<TypeMapCb, MergedArgs>>;
}

/**
 * A Prisma client type with its `$extends` returning a Db. An intersection, not an Omit:
 * the Db stays assignable to the app's client type (a function taking `PrismaClient`),
 * and a call resolves to the first signature, this one. Any other type (a client without
 * Prisma 7's `$extends`) is left as it is.
 */
export type WithDbExtends<C> = C extends { $extends: Types.Extensions.ExtendsHook<'extends', infer TypeMapCb, infer ExtArgs extends InternalArgs, infer TypeMap> }
  ? { $extends: DbExtendsHook<TypeMapCb, ExtArgs, TypeMap> } & C
  : C;
