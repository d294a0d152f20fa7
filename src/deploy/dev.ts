/**
 * `geodr dev up|down|status`: every server of a deployment as a separate local process
 * on loopback, with state under one directory (default `.geodr-dev`) that survives
 * down/up: data directories, generated tokens, configs, logs and pid files.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { GeodrError } from '../errors.js';
import { sha256Hex } from '../server/auth.js';
import type { Deployment, RegionSpec, ServerSpec } from './deployment.js';

export const SERVER_MAIN = fileURLToPath(new URL('../server/main.js', import.meta.url));
export const DEFAULT_STATE_DIR = '.geodr-dev';

export interface DevTokens {
  admin: string;
  app: string;
}

export interface DevServer {
  name: string;
  region: string;
  pairedRegion: string;
  url: string;
  pid: number | undefined;
  state: 'ready' | 'running' | 'stopped';
  dataDir: string;
  log: string;
}

export interface DevState {
  stateDir: string;
  deployment: Deployment;
  tokens: DevTokens;
  servers: DevServer[];
}

function serverDir(stateDir: string, name: string): string {
  return path.join(stateDir, 'servers', name);
}

/** Tokens are generated once per state directory and kept, so clients keep working across down/up. */
export function devTokens(stateDir: string): DevTokens {
  const file = path.join(stateDir, 'tokens.json');
  if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8')) as DevTokens;
  fs.mkdirSync(stateDir, { recursive: true });
  const tokens = { admin: `gda_${randomBytes(24).toString('base64url')}`, app: `gdd_${randomBytes(24).toString('base64url')}` };
  fs.writeFileSync(file, JSON.stringify(tokens, null, 2), { mode: 0o600 });
  return tokens;
}

function readPid(stateDir: string, name: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(path.join(serverDir(stateDir, name), 'pid'), 'utf8'));
    return Number.isInteger(pid) && pid > 0 && isOurServer(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** A pid is ours only if that process still runs the server entry (pids get reused). */
function isOurServer(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('main.js');
  } catch {
    return true; // no /proc: trust the signal probe
  }
}

/** fs vault paths in a deployment are relative to the dev state directory unless absolute. */
function resolveVault(v: RegionSpec['vault'], stateDir: string): RegionSpec['vault'] {
  return v.type === 'fs' ? { type: 'fs', path: path.resolve(stateDir, v.path) } : v;
}

function urlOf(s: ServerSpec): string {
  return `http://${s.address}`;
}

async function isReady(url: string): Promise<boolean> {
  try {
    const r = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1000) });
    await r.arrayBuffer();
    return r.ok;
  } catch {
    return false;
  }
}

function savedDeployment(stateDir: string): Deployment | undefined {
  const file = path.join(stateDir, 'deployment.json');
  return fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as Deployment) : undefined;
}

/**
 * Starts every server of the deployment that is not already running, waits until all
 * are ready, and creates their pools. Idempotent.
 */
export async function devUp(deployment: Deployment, opts: { stateDir?: string; timeoutMs?: number; log?: (line: string) => void } = {}): Promise<DevState> {
  const stateDir = path.resolve(opts.stateDir ?? DEFAULT_STATE_DIR);
  const log = opts.log ?? (() => undefined);
  const previous = savedDeployment(stateDir);
  if (previous !== undefined && previous.name !== deployment.name) {
    const running = previous.regions.flatMap((r) => r.servers).filter((s) => readPid(stateDir, s.name) !== undefined);
    if (running.length > 0) {
      throw new GeodrError('CONFLICT', `deployment ${previous.name} is running from ${stateDir}; run "geodr dev down" first`, { object: stateDir });
    }
  }
  fs.mkdirSync(stateDir, { recursive: true });
  fs.writeFileSync(path.join(stateDir, 'deployment.json'), JSON.stringify(deployment, null, 2));
  const tokens = devTokens(stateDir);
  const started: Array<{ spec: ServerSpec; exited: () => number | null; logFile: string }> = [];
  for (const region of deployment.regions) {
    for (const spec of region.servers) {
      const dir = serverDir(stateDir, spec.name);
      const logFile = path.join(dir, 'server.log');
      if (readPid(stateDir, spec.name) !== undefined) {
        log(`${spec.name}: already running`);
        started.push({ spec, exited: () => null, logFile });
        continue;
      }
      fs.mkdirSync(dir, { recursive: true });
      const [host, port] = [spec.address.slice(0, spec.address.lastIndexOf(':')), Number(spec.address.slice(spec.address.lastIndexOf(':') + 1))];
      const paired = deployment.regions.find((r) => r.name === region.pairedRegion)!;
      const config = {
        name: spec.name,
        region: region.name,
        pairedRegion: region.pairedRegion,
        vault: resolveVault(region.vault, stateDir),
        pairedVault: resolveVault(paired.vault, stateDir),
        host,
        port,
        dataDir: path.join(dir, 'data'),
        tokens: [
          { name: 'dev-admin', sha256: sha256Hex(tokens.admin), role: 'admin' },
          { name: 'dev-app', sha256: sha256Hex(tokens.app), role: 'data', pools: spec.pools.map((p) => p.name) },
        ],
        // Every other server of the deployment, so geo-replication works between any two.
        peers: deployment.regions.flatMap((r) => r.servers.filter((o) => o.name !== spec.name).map((o) => ({ name: o.name, url: urlOf(o), token: tokens.admin, region: r.name }))),
      };
      const configFile = path.join(dir, 'config.json');
      // It holds the admin token peers use: readable by its owner only.
      fs.writeFileSync(configFile, JSON.stringify(config, null, 2), { mode: 0o600 });
      const out = fs.openSync(logFile, 'a');
      const child = spawn(process.execPath, [SERVER_MAIN, '--config', configFile], { detached: true, stdio: ['ignore', out, out] });
      fs.closeSync(out);
      let exitCode: number | null = null;
      child.once('exit', (code, signal) => (exitCode = code ?? (signal !== null ? 128 : 1)));
      child.unref();
      fs.writeFileSync(path.join(dir, 'pid'), String(child.pid));
      log(`${spec.name}: started (pid ${child.pid}) on ${urlOf(spec)}`);
      started.push({ spec, exited: () => exitCode, logFile });
    }
  }
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (const s of started) {
    for (;;) {
      if (await isReady(urlOf(s.spec))) break;
      const code = s.exited();
      if (code !== null || Date.now() > deadline) {
        const tail = fs.existsSync(s.logFile) ? fs.readFileSync(s.logFile, 'utf8').split('\n').slice(-8).join('\n') : '';
        throw new GeodrError('UNAVAILABLE', `server ${s.spec.name} ${code !== null ? `exited with code ${code}` : 'did not become ready'}; last log lines:\n${tail}`, { object: s.logFile });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  for (const region of deployment.regions) {
    for (const spec of region.servers) {
      for (const pool of spec.pools) {
        const { name, ...settings } = pool;
        const r = await fetch(`${urlOf(spec)}/v1/elasticPools/${encodeURIComponent(name)}`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${tokens.admin}`, 'content-type': 'application/json' },
          body: JSON.stringify(settings),
        });
        if (!r.ok) throw new GeodrError('CONFLICT', `could not create pool ${name} on ${spec.name}: ${await r.text()}`);
        await r.arrayBuffer().catch(() => undefined);
      }
    }
  }
  return devStatus({ stateDir });
}

/** Stops the deployment's servers (SIGTERM, then SIGKILL after `graceMs`). */
export async function devDown(opts: { stateDir?: string; graceMs?: number; log?: (line: string) => void } = {}): Promise<number> {
  const stateDir = path.resolve(opts.stateDir ?? DEFAULT_STATE_DIR);
  const deployment = savedDeployment(stateDir);
  if (deployment === undefined) return 0;
  let stopped = 0;
  const waits = deployment.regions.flatMap((r) => r.servers).map(async (spec) => {
    const pid = readPid(stateDir, spec.name);
    fs.rmSync(path.join(serverDir(stateDir, spec.name), 'pid'), { force: true });
    if (pid === undefined) return;
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      return; // already gone
    }
    const deadline = Date.now() + (opts.graceMs ?? 20_000);
    let killed = false;
    while (isOurServer(pid)) {
      if (!killed && Date.now() > deadline) {
        killed = true;
        try {
          process.kill(pid, 'SIGKILL');
          opts.log?.(`${spec.name}: did not drain in time; killed`);
        } catch {
          // It exited between the check and the kill.
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    stopped++;
    opts.log?.(`${spec.name}: stopped`);
  });
  await Promise.all(waits);
  return stopped;
}

export async function devStatus(opts: { stateDir?: string } = {}): Promise<DevState> {
  const stateDir = path.resolve(opts.stateDir ?? DEFAULT_STATE_DIR);
  const deployment = savedDeployment(stateDir);
  if (deployment === undefined) throw new GeodrError('NOT_FOUND', `no dev deployment in ${stateDir}; run "geodr dev up" first`, { object: stateDir });
  const servers: DevServer[] = [];
  for (const region of deployment.regions) {
    for (const spec of region.servers) {
      const pid = readPid(stateDir, spec.name);
      const url = urlOf(spec);
      const state = pid === undefined ? 'stopped' : (await isReady(url)) ? 'ready' : 'running';
      const dir = serverDir(stateDir, spec.name);
      servers.push({ name: spec.name, region: region.name, pairedRegion: region.pairedRegion, url, pid, state, dataDir: path.join(dir, 'data'), log: path.join(dir, 'server.log') });
    }
  }
  return { stateDir, deployment, tokens: devTokens(stateDir), servers };
}
