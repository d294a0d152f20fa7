/** geodr: business continuity for database-per-tenant SQLite apps. */
export { GeodrError, isGeodrError, ERROR_CODES, type ErrorCode, type ErrorContext } from './errors.js';
export * as engine from './engine/index.js';
