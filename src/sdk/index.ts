/**
 * geodr SDK: a typed client for a geodr server's management API and SQL endpoint.
 *
 * @example
 * import { GeodrClient, GeodrApiError } from 'geodr/sdk'
 *
 * const geodr = new GeodrClient({ url: 'http://127.0.0.1:7480', token: process.env.GEODR_TOKEN })
 * const op = await geodr.verifyDatabase('tenant-42')
 * await geodr.waitForOperation(op.id, { onProgress: (o) => console.log(o.percentComplete) })
 */
export { GeodrClient, QueryResult, Transaction, type GeodrClientOptions, type Statement, type WaitOptions } from './client.js';
export { GeodrApiError, type ApiErrorCode, type ApiErrorContext } from './errors.js';
export { comparePositions, type ListenerClientOptions, type SqlCallOptions } from './client.js';
export type {
  AddSecondaryOptions,
  AddSecondaryResult,
  CopySyncResult,
  CreateSecondaryOptions,
  Durability,
  FailoverGroup,
  FailoverGroupFailoverResult,
  FailoverGroupSettings,
  FailoverResult,
  ListenerKind,
  ListenerTarget,
  LostTransactionsReport,
  Position,
  RemovedLink,
  ReplicationLink,
  ReplicationLinkState,
  WaitForCopySyncOptions,
} from './types.js';
export type {
  BackupStatus,
  CreateMode,
  Database,
  DroppedDatabase,
  Health,
  LongTermBackup,
  LongTermRetentionPolicy,
  Operation,
  OperationState,
  Pool,
  PoolSettings,
  RecoverableDatabase,
  RestoreMode,
  RestoreOptions,
  RestorePoint,
  RestorePoints,
  RetentionResult,
  ServerInfo,
} from './types.js';
export { toWire, type IntMode, type SqlParam, type SqlParams, type SqlValue, type WireTagged, type WireValue } from './values.js';
export * from './routing.js';
