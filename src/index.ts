// The public API of prisma-datalayer.
export { createDb, getDb, resetDb } from './client.ts';
export type { CreateDbOptions, Db, DatalayerApi, DbStats, PrismaClientClass, PrismaClientOptions } from './client.ts';
export { loadConfig, DEFAULTS, SSL_MODES, ISOLATION_LEVELS } from './config.ts';
export type { DbConfig, DbOptions, Driver, IsolationLevel, NeonOptions, PoolMode, SslMode } from './config.ts';
export {
  ConfigError,
  DatabaseConnectionError,
  DatabaseQueryError,
  DatabaseTransactionError,
  DatalayerError,
  PoolTimeoutError,
  StatementTimeoutError,
} from './errors.ts';
export type { ConfigIssue, ErrorKind, TransactionOutcome } from './errors.ts';
export type { PoolCounters, PoolEvents, PoolFigures } from './pool.ts';
export { DatabaseClosedError } from './events.ts';
export type { CloseOnSignalsOptions, CloseOptions, DbCounters, DbEvents, DbLogger, LastError, LifecycleState, LogMethod, SlowQueryInfo } from './events.ts';
export type { HealthOptions, HealthReport } from './health.ts';
export type { SessionOptions, TransactionOptions, TxClient } from './session.ts';
export { redact } from './redact.ts';
export type { ReplicaStatus } from './replicas.ts';
export { deploy, drift, status, MigrationError } from './migrate.ts';
export type { MigrateOptions } from './migrate.ts';
