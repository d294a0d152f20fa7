/**
 * The geodr server as a library: start one in-process, or load its configuration.
 *
 * @example
 * import { GeodrServer, loadConfig } from 'geodr/server'
 * const server = await GeodrServer.start(loadConfig({ file: 'server.json', env: process.env }))
 * console.log(server.url)
 */
export { GeodrServer, type StartOptions } from './server.js';
export { loadConfig, ServerConfigSchema, ENVIRONMENT, type ServerConfig, type Limits, type TokenConfig } from './config.js';
export { validateName, MAX_NAME_LENGTH } from './names.js';
export { checkStatement, splitStatements, checkScript, type CheckedStatement, type TxControl } from './sqlguard.js';
