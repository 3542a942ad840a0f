// The public API of prisma-datalayer.
export { createDb, getDb, resetDb } from './client.ts';
export type { CreateDbOptions, Db, DatalayerApi, LogEvent, LogEvents, PrismaClientClass, PrismaClientOptions, PrismaOptions, QueryEvent } from './client.ts';
export { loadConfig, DEFAULTS, SSL_MODES, ISOLATION_LEVELS } from './config.ts';
export type { DbConfig, DbOptions, Driver, IsolationLevel, NeonOptions, PoolMode, SslMode } from './config.ts';
export {
  ConfigError,
  DatabaseClosedError,
  DatabaseConnectionError,
  DatabaseQueryError,
  DatabaseTransactionError,
  DatalayerError,
  DeadlineExceededError,
  MigrationError,
  PoolTimeoutError,
  ScopeEndedError,
  StatementTimeoutError,
  VerificationError,
} from './errors.ts';
export type { ConfigIssue, Deadline, ErrorKind, TransactionOutcome, VerificationFailure } from './errors.ts';
export { classifyError, isDatabaseFailure as isDatabaseError } from './failures.ts';
export type { DbEvents, PoolEvents, SlowQueryInfo } from './events.ts';
export type { DbCounters, DbStats, LastError, LifecycleState, PoolCounters, PoolFigures } from './stats.ts';
export type { CloseOnSignalsOptions, CloseOptions, DbLogger, LogMethod } from './lifecycle.ts';
export type { HealthOptions, HealthReport } from './health.ts';
export type { SessionOptions, TransactionOptions, TxClient } from './unit-of-work.ts';
export type { ScopeOptions } from './scope.ts';
export { redact } from './secrets.ts';
export type { ReplicaStatus } from './replicas.ts';
export { deploy, drift, status } from './migrate-entry.ts';
export type { DeployResult, DriftResult, MigrateOptions, MigrationStatus } from './migrate.ts';
export type { TelemetryOptions } from './telemetry.ts';
export type { VerifyOptions, VerifyReport } from './verify.ts';
export type { DoctorFacts, Finding, FindingStatus } from './audit.ts';
