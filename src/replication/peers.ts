/**
 * Calls between servers: the peers a server replicates with, by name, each reached
 * at a configured URL with that peer's token. Every call has a timeout, so a cut
 * network turns into an UNAVAILABLE error rather than a hang, and a peer's error
 * body comes back as the same GeodrError it raised.
 */
import { GeodrError, ERROR_CODES, type ErrorCode } from '../errors.js';
import type { PeerConfig } from '../server/config.js';

export interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
  body?: unknown;
}

export class Peers {
  private readonly byName = new Map<string, PeerConfig>();

  constructor(
    peers: PeerConfig[],
    readonly self: string,
    private readonly timeoutMs: number,
  ) {
    for (const p of peers) this.byName.set(p.name, p);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  get(name: string): PeerConfig {
    const p = this.byName.get(name);
    if (p === undefined) {
      throw new GeodrError('NOT_FOUND', `server ${JSON.stringify(name)} is not a known peer of ${this.self}; add it under "peers" in the server configuration`, { details: { server: name } });
    }
    return p;
  }

  /** Base URL of a peer (no trailing slash). */
  url(name: string): string {
    return this.get(name).url.replace(/\/+$/, '');
  }

  /** A JSON call; resolves with the parsed body, throws the peer's error or UNAVAILABLE. */
  async call<T>(name: string, method: string, path: string, opts: CallOptions = {}): Promise<T> {
    const res = await this.fetch(name, method, path, opts);
    const text = await res.text();
    if (!res.ok) throw peerError(name, path, res.status, text);
    return (text === '' ? undefined : JSON.parse(text)) as T;
  }

  /**
   * A raw request (for streams and downloads). The timeout covers the response
   * headers only when `stream` is set; the caller owns the body after that.
   */
  async fetch(name: string, method: string, path: string, opts: CallOptions & { stream?: boolean } = {}): Promise<Response> {
    const peer = this.get(name);
    const timeout = AbortSignal.timeout(opts.timeoutMs ?? this.timeoutMs);
    const headerTimer = new AbortController();
    const signals = [opts.stream === true ? headerTimer.signal : timeout, ...(opts.signal !== undefined ? [opts.signal] : [])];
    let timer: NodeJS.Timeout | undefined;
    if (opts.stream === true) timer = setTimeout(() => headerTimer.abort(new Error('timeout')), opts.timeoutMs ?? this.timeoutMs);
    try {
      const res = await fetch(`${this.url(name)}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${peer.token}`,
          'geodr-peer': this.self,
          ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        signal: AbortSignal.any(signals),
      });
      return res;
    } catch (e) {
      if (opts.signal?.aborted === true) throw new GeodrError('CANCELLED', `call to ${name} cancelled`, { details: { server: name, path } }, { cause: e });
      throw new GeodrError('UNAVAILABLE', `server ${name} did not answer ${method} ${path}: ${(e as Error).message}`, { details: { server: name, path } }, { cause: e });
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }
}

/** Rebuilds a peer's JSON error as a GeodrError with the same code. */
export function peerError(server: string, path: string, status: number, text: string): GeodrError {
  let body: { error?: { code?: string; message?: string; [k: string]: unknown } } | undefined;
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    body = undefined;
  }
  const e = body?.error;
  const code = (e?.code !== undefined && e.code in ERROR_CODES ? e.code : status >= 500 ? 'UNAVAILABLE' : 'INTERNAL') as ErrorCode;
  const message = String(e?.message ?? text.slice(0, 200)).replace(/^[A-Z_]+: /, '').replace(/ \(.*\)$/, '');
  const { code: _c, message: _m, retryable: _r, ...context } = e ?? {};
  return new GeodrError(code, `${server}: ${message}`, { ...(context as Record<string, unknown>), details: { ...((context as { details?: Record<string, unknown> }).details ?? {}), server, path } });
}
