/**
 * Test helper: several real `geodr server` processes that know each other as peers,
 * each on a port chosen up front (peers are configured by URL). With `proxied`, each
 * server reaches the others through a forwarder process of its own, so cutting the
 * network between servers is killing those processes, while clients still reach
 * every server directly.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { freePort } from '../../server/testing/ports.js';
import { spawnServer, type ServerProcess } from '../../server/testing/spawn.js';
import { api } from '../../server/testing/http.js';
import { startProxy, type ProxyProcess } from './proxy.js';

export { freePort };

export interface ClusterNode {
  name: string;
  port: number;
  url: string;
  server: ServerProcess;
  api: ReturnType<typeof api>;
}

export interface ClusterOptions {
  /** Route server-to-server traffic through killable proxies. */
  proxied?: boolean;
  /** Extra config per server. */
  config?: (name: string) => Record<string, unknown>;
}

export class Cluster {
  readonly nodes = new Map<string, ClusterNode>();
  /** proxies[from][to]: the forwarder `from` uses to reach `to`. */
  private readonly proxies = new Map<string, ProxyProcess>();
  private readonly proxyPorts = new Map<string, number>();

  private constructor(private readonly opts: ClusterOptions) {}

  static async start(names: string[], opts: ClusterOptions = {}): Promise<Cluster> {
    const c = new Cluster(opts);
    const ports = new Map<string, number>();
    for (const n of names) ports.set(n, await freePort());
    if (opts.proxied === true) for (const a of names) for (const b of names) if (a !== b) c.proxyPorts.set(`${a}>${b}`, await freePort());
    const dirs = new Map(names.map((n) => [n, mkdtempSync(path.join(tmpdir(), `geodr-${n}-`))]));
    const started = await Promise.all(
      names.map(async (n) => {
        const peers = names
          .filter((p) => p !== n)
          .map((p) => ({ name: p, url: `http://127.0.0.1:${opts.proxied === true ? c.proxyPorts.get(`${n}>${p}`)! : ports.get(p)!}`, token: 'admin-token-0123456789abcdef' }));
        const server = await spawnServer({
          dataDir: dirs.get(n)!,
          port: ports.get(n)!,
          config: { name: n, region: `region-${n}`, peers, replication: { heartbeatMs: 100, peerTimeoutMs: 1000, maxBackoffMs: 200 }, ...(opts.config?.(n) ?? {}) },
        });
        return { name: n, port: ports.get(n)!, url: server.url, server, api: api(server.url, server.adminToken) } satisfies ClusterNode;
      }),
    );
    for (const s of started) c.nodes.set(s.name, s);
    if (opts.proxied === true) await c.heal();
    return c;
  }

  node(name: string): ClusterNode {
    const n = this.nodes.get(name);
    if (n === undefined) throw new Error(`no node ${name}`);
    return n;
  }

  api(name: string): ReturnType<typeof api> {
    return this.node(name).api;
  }

  async kill(name: string): Promise<void> {
    await this.node(name).server.kill();
  }

  async restart(name: string): Promise<ClusterNode> {
    const n = this.node(name);
    const server = await n.server.restart();
    const next = { ...n, server, url: server.url, api: api(server.url, server.adminToken) };
    this.nodes.set(name, next);
    return next;
  }

  /** Cuts every path between servers (both directions): the proxies are killed. */
  async cut(): Promise<void> {
    await Promise.all([...this.proxies.values()].map((p) => p.kill()));
    this.proxies.clear();
  }

  /** Cuts the paths between two servers only (both directions). */
  async cutBetween(a: string, b: string): Promise<void> {
    for (const key of [`${a}>${b}`, `${b}>${a}`]) {
      await this.proxies.get(key)?.kill();
      this.proxies.delete(key);
    }
  }

  /** Brings the paths back. */
  async heal(): Promise<void> {
    for (const [key, port] of this.proxyPorts) {
      if (this.proxies.has(key)) continue;
      const to = key.split('>')[1]!;
      this.proxies.set(key, await startProxy(port, this.nodes.get(to)?.port ?? 0));
    }
  }

  async stop(): Promise<void> {
    await this.cut();
    await Promise.all([...this.nodes.values()].map((n) => n.server.kill()));
    for (const n of this.nodes.values()) n.server.cleanup();
  }
}

/** Polls until fn returns a truthy value (or throws after timeoutMs). */
export async function eventually<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 15_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last !== undefined ? `: ${last instanceof Error ? last.message : JSON.stringify(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
