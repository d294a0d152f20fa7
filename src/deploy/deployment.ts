/**
 * A deployment file describes the regions of one geodr installation: each region's
 * paired region, its backup vault, and its servers with their pools. `geodr dev up`
 * runs one on loopback; later tools (recovery, repatriation) read the same file.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { GeodrError } from '../errors.js';
import { validateName } from '../server/names.js';

const name = (kind: 'pool' | 'server' | 'region') =>
  z.string().superRefine((v, ctx) => {
    try {
      validateName(kind, v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message.replace(/^INVALID_ARGUMENT: /, '') });
    }
  });

const PoolSchema = z.strictObject({
  name: name('pool'),
  maxDatabases: z.number().int().min(1).optional(),
  maxConcurrentOperations: z.number().int().min(1).max(64).optional(),
  storageQuotaBytes: z.number().int().min(0).optional(),
});

const ServerSchema = z.strictObject({
  name: name('server'),
  /** host:port on loopback for dev deployments. */
  address: z.string().regex(/^[A-Za-z0-9.-]+:\d{1,5}$/, 'address must be host:port'),
  pools: z.array(PoolSchema).default([]),
});

const VaultSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('fs'), path: z.string().min(1) }),
  z.strictObject({ type: z.literal('azure'), connectionString: z.string().min(1), container: z.string().min(3) }),
]);

const RegionSchema = z.strictObject({
  name: name('region'),
  pairedRegion: name('region'),
  vault: VaultSchema,
  servers: z.array(ServerSchema).min(1),
});

export const DeploymentSchema = z
  .strictObject({
    name: z.string().min(1).max(100),
    regions: z.array(RegionSchema).min(1),
  })
  .superRefine((d, ctx) => {
    const regions = new Set(d.regions.map((r) => r.name));
    const servers = new Set<string>();
    const addresses = new Set<string>();
    if (regions.size !== d.regions.length) ctx.addIssue({ code: 'custom', message: 'region names must be unique', path: ['regions'] });
    for (const [i, r] of d.regions.entries()) {
      if (!regions.has(r.pairedRegion)) ctx.addIssue({ code: 'custom', message: `paired region ${r.pairedRegion} is not defined`, path: ['regions', i, 'pairedRegion'] });
      if (r.pairedRegion === r.name) ctx.addIssue({ code: 'custom', message: 'a region cannot pair with itself', path: ['regions', i, 'pairedRegion'] });
      for (const [j, s] of r.servers.entries()) {
        if (servers.has(s.name)) ctx.addIssue({ code: 'custom', message: `server name ${s.name} is used twice`, path: ['regions', i, 'servers', j, 'name'] });
        if (addresses.has(s.address)) ctx.addIssue({ code: 'custom', message: `address ${s.address} is used twice`, path: ['regions', i, 'servers', j, 'address'] });
        servers.add(s.name);
        addresses.add(s.address);
      }
    }
  });

export type Deployment = z.infer<typeof DeploymentSchema>;
export type RegionSpec = Deployment['regions'][number];
export type ServerSpec = RegionSpec['servers'][number];

/** Two paired regions with one tenant server each, on loopback. */
export const DEFAULT_DEPLOYMENT: Deployment = {
  name: 'geodr-dev',
  regions: [
    {
      name: 'eastus',
      pairedRegion: 'westus',
      vault: { type: 'fs', path: 'vaults/eastus' },
      servers: [{ name: 'tenants1-eastus', address: '127.0.0.1:7481', pools: [{ name: 'Pool1', maxDatabases: 1000, maxConcurrentOperations: 2 }] }],
    },
    {
      name: 'westus',
      pairedRegion: 'eastus',
      vault: { type: 'fs', path: 'vaults/westus' },
      servers: [{ name: 'tenants1-westus', address: '127.0.0.1:7482', pools: [{ name: 'Pool1', maxDatabases: 1000, maxConcurrentOperations: 2 }] }],
    },
  ],
};

/** Reads and validates a deployment file; relative vault paths are resolved against it. */
export function loadDeployment(file: string | undefined): Deployment {
  if (file === undefined) return structuredClone(DEFAULT_DEPLOYMENT);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new GeodrError('INVALID_ARGUMENT', `cannot read deployment file ${file}: ${(e as Error).message}`, { object: file });
  }
  const parsed = DeploymentSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.length > 0 ? i.path.join('.') : '(top level)'}: ${i.message}`);
    throw new GeodrError('INVALID_ARGUMENT', `invalid deployment ${file}: ${problems.join('; ')}`, { object: file, details: { problems } });
  }
  const d = parsed.data;
  for (const r of d.regions) if (r.vault.type === 'fs') r.vault.path = path.resolve(path.dirname(file), r.vault.path);
  return d;
}
