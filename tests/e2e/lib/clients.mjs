// Helpers shared by the MCP-client suites: an HTTP trace of what an SDK really sent and got (statuses the SDKs hide), a loopback callback server that takes any number of redirects, raw MCP requests for exact status/challenge assertions, and token helpers.

import http from 'node:http';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { authorize } from '../browser/authorize.mjs';
import { freePort } from './moat.mjs';
import { authorizationUrl, pkce, tokenRequest } from './oauth.mjs';

export const MCP_PROTOCOL = '2025-11-25';

/**
 * A `fetch` that records every exchange: `{ method, url, status, www, grantType, resource, scope }`
 * (the last three for form posts such as token requests). Pass it to an SDK as its fetch.
 */
export function recordingFetch(trace, inner = globalThis.fetch) {
  return async (input, init = {}) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const method = (init.method ?? (typeof input === 'object' && 'method' in input ? input.method : 'GET')).toUpperCase();
    const entry = { method, url };
    const body = init.body;
    if (body instanceof URLSearchParams || (typeof body === 'string' && /^[\w.%+-]+=/.test(body) && !body.startsWith('{'))) {
      const form = new URLSearchParams(body);
      entry.grantType = form.get('grant_type') ?? undefined;
      entry.resource = form.get('resource') ?? undefined;
      entry.scope = form.get('scope') ?? undefined;
    } else if (typeof body === 'string' && body.startsWith('{')) {
      try {
        const j = JSON.parse(body);
        entry.rpc = Array.isArray(j) ? j.map((m) => m.method).join(',') : j.method;
        if (j?.method === 'tools/call') entry.tool = j.params?.name;
      } catch {
        // not JSON
      }
    }
    const response = await inner(input, init);
    entry.status = response.status;
    entry.www = response.headers.get('www-authenticate') ?? undefined;
    trace.push(entry);
    return response;
  };
}

/** One line per exchange, for failure messages. */
export function formatTrace(trace) {
  return trace
    .map((e) => {
      const u = new URL(e.url);
      const what = [e.rpc, e.tool, e.grantType && `grant_type=${e.grantType}`].filter(Boolean).join(' ');
      return `  ${e.method} ${u.pathname}${what ? ` (${what})` : ''} → ${e.status}${e.www ? `  WWW-Authenticate: ${e.www}` : ''}`;
    })
    .join('\n');
}

/**
 * Listens on 127.0.0.1:port for redirects to `path`, any number of them; `next()` resolves to the
 * next callback URL received (in order). Always `close()` it.
 */
export async function startCallbackQueue(port, path = '/callback', host = '127.0.0.1') {
  const received = [];
  const waiters = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, `http://${req.headers.host ?? `${host}:${port}`}`);
    if (url.pathname !== path) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' }).end('Authorization received; you can close this page.');
    const w = waiters.shift();
    if (w) w(url);
    else received.push(url);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return {
    redirectUri: `http://${host}:${port}${path}`,
    next: (timeoutMs = 30_000) =>
      received.length
        ? Promise.resolve(received.shift())
        : new Promise((resolve, reject) => {
            const t = setTimeout(() => reject(new Error(`no redirect reached ${path} on port ${port} within ${timeoutMs} ms`)), timeoutMs);
            waiters.push((u) => {
              clearTimeout(t);
              resolve(u);
            });
          }),
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** Decoded header and claims of a JWT (no verification: for assertions on tokens an SDK holds). */
export function peek(token) {
  return { header: decodeProtectedHeader(token), claims: decodeJwt(token) };
}

/** A JSON-RPC request body. */
export function rpc(method, params = {}, id = 1) {
  return { jsonrpc: '2.0', id, method, params };
}

export function initializeBody(id = 1) {
  return rpc('initialize', { protocolVersion: MCP_PROTOCOL, capabilities: {}, clientInfo: { name: 'moat-e2e', version: '1' } }, id);
}

/**
 * POSTs a JSON-RPC message to an MCP endpoint with an optional bearer token; returns
 * `{ status, www, headers, text, json }` (json: the JSON-RPC message, also from an SSE stream).
 */
export async function mcpPost(url, body, { token, session, headers = {} } = {}) {
  const h = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers };
  if (token !== undefined) h.authorization = `Bearer ${token}`;
  if (session) {
    h['mcp-session-id'] = session;
    h['mcp-protocol-version'] = MCP_PROTOCOL;
  }
  const r = await fetch(url, { method: 'POST', headers: h, body: JSON.stringify(body), signal: AbortSignal.timeout(15_000) });
  const text = await r.text();
  let json;
  if ((r.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
    json = text
      .split('\n')
      .filter((l) => l.startsWith('data:'))
      .map((l) => {
        try {
          return JSON.parse(l.slice(5).trim());
        } catch {
          return null;
        }
      })
      .find((m) => m && ('result' in m || 'error' in m));
  } else {
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
  }
  return { status: r.status, www: r.headers.get('www-authenticate') ?? undefined, headers: r.headers, text, json, session: r.headers.get('mcp-session-id') ?? undefined };
}

/** initialize + notifications/initialized with `token`; returns the session id (or undefined). */
export async function openSession(url, token) {
  const init = await mcpPost(url, initializeBody(), { token });
  if (init.status !== 200) throw new Error(`initialize with a valid token got ${init.status} ${init.www ?? ''} ${init.text}`);
  const note = await mcpPost(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, { token, session: init.session });
  if (note.status !== 202) throw new Error(`notifications/initialized got ${note.status} ${note.text}`);
  return init.session;
}

/** The AS metadata of an issuer (RFC 8414 path insertion). */
export async function asMetadata(issuer) {
  const u = new URL(issuer);
  const r = await fetch(`${u.origin}/.well-known/oauth-authorization-server${u.pathname}`, { signal: AbortSignal.timeout(10_000) });
  if (r.status !== 200) throw new Error(`AS metadata for ${issuer}: HTTP ${r.status}`);
  return r.json();
}

/**
 * A user access token from real Moat for `resource`: a pre-registered public client, the
 * authorization code flow with PKCE through Moat's real pages in headless Chromium (the shared
 * helper), and the token request. Returns the token response.
 */
export async function userToken(stack, resource, { scope, log = () => {} } = {}) {
  const cb = await startCallbackQueue(await freePort());
  try {
    const client = await stack.moat.cliJson(['client', 'create', '--resource', resource.id, '--name', 'e2e helper', '--public', '--redirect-uri', cb.redirectUri]);
    const metadata = await asMetadata(resource.issuer);
    const { verifier, challenge } = pkce();
    const url = authorizationUrl(metadata, { clientId: client.client_id, redirectUri: cb.redirectUri, challenge, state: 'e2e', scope, resource: resource.server_url });
    await authorize({ url, email: stack.email, password: stack.password, log: (m) => log(`[browser] ${m}`) });
    const callback = await cb.next();
    const code = callback.searchParams.get('code');
    if (!code) throw new Error(`no code in the redirect: ${callback}`);
    const res = await tokenRequest(metadata.token_endpoint, { grant_type: 'authorization_code', code, redirect_uri: cb.redirectUri, code_verifier: verifier, resource: resource.server_url }, { clientId: client.client_id });
    if (res.status !== 200) throw new Error(`token request: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body;
  } finally {
    await cb.close();
  }
}

/** The exact 401 challenge moat-guard sends for `error` (undefined: no token at all). */
export function challenge401(prmUrl, { error, description, scope = 'todo:read' } = {}) {
  let v = `Bearer resource_metadata="${prmUrl}", scope="${scope}"`;
  if (error) v += `, error="${error}"`;
  if (description) v += `, error_description="${description}"`;
  return v;
}
