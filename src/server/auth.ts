/**
 * Bearer-token authentication. Tokens are compared by SHA-256 digest, so the
 * configuration may hold digests instead of secrets, and a secret never needs to be
 * logged or kept in memory beyond the request that carries it.
 */
import { createHash } from 'node:crypto';
import { GeodrError } from '../errors.js';
import type { TokenConfig } from './config.js';

export interface Principal {
  name: string;
  role: 'admin' | 'data';
  /** For data tokens: databases it may use by name. */
  databases: ReadonlySet<string>;
  /** For data tokens: pools whose databases it may use. */
  pools: ReadonlySet<string>;
}

export function sha256Hex(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

export class Authenticator {
  private readonly byDigest = new Map<string, Principal>();

  constructor(tokens: readonly TokenConfig[]) {
    for (const t of tokens) {
      const digest = t.sha256 ?? sha256Hex(t.secret!);
      this.byDigest.set(digest, { name: t.name, role: t.role, databases: new Set(t.databases ?? []), pools: new Set(t.pools ?? []) });
    }
  }

  /** Resolves an Authorization header to a principal, or throws UNAUTHENTICATED saying why. */
  authenticate(header: string | undefined): Principal {
    if (header === undefined || header === '') throw new GeodrError('UNAUTHENTICATED', 'missing Authorization header; send "Authorization: Bearer <token>"');
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (m === null) throw new GeodrError('UNAUTHENTICATED', 'the Authorization header must be "Bearer <token>"');
    const p = this.byDigest.get(sha256Hex(m[1]!));
    if (p === undefined) throw new GeodrError('UNAUTHENTICATED', 'unknown token');
    return p;
  }
}

export function requireAdmin(p: Principal): void {
  if (p.role !== 'admin') throw new GeodrError('FORBIDDEN', `token ${p.name} has the data role; this request needs an admin token`);
}

/** Admins may use every database; data tokens only those named, or in a named pool. */
export function requireDatabaseAccess(p: Principal, database: string, pool: string | undefined): void {
  if (p.role === 'admin') return;
  if (p.databases.has(database) || (pool !== undefined && p.pools.has(pool))) return;
  throw new GeodrError('FORBIDDEN', `token ${p.name} may not use database ${database}`, { database });
}
