/** Test helper: a tiny JSON HTTP client (the SDK has its own tests; server tests stay independent of it). */
export interface JsonResponse {
  status: number;
  body: any;  
  headers: Headers;
}

export function api(base: string, token?: string) {
  return async (method: string, route: string, body?: unknown, opts: { raw?: string; contentType?: string; token?: string; headers?: Record<string, string> } = {}): Promise<JsonResponse> => {
    const headers: Record<string, string> = { ...opts.headers };
    const tok = opts.token ?? token;
    if (tok !== undefined) headers.authorization = `Bearer ${tok}`;
    let payload: string | undefined;
    if (opts.raw !== undefined) payload = opts.raw;
    else if (body !== undefined) payload = JSON.stringify(body);
    if (payload !== undefined) headers['content-type'] = opts.contentType ?? 'application/json';
    const r = await fetch(`${base}${route}`, { method, headers, body: payload });
    const text = await r.text();
    let parsed: unknown = text;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      // not JSON (metrics)
    }
    return { status: r.status, body: parsed, headers: r.headers };
  };
}
