// Minimal OAuth 2.1 client pieces for e2e checks the third-party clients do not cover: PKCE, a loopback callback server, token requests.

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';

/** A fresh PKCE pair (RFC 7636, S256). */
export function pkce() {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  return { verifier, challenge };
}

/**
 * Listens on 127.0.0.1:port for one request to `path`; `callback` resolves to the full URL it was
 * called with. Always `close()` it.
 */
export async function startCallbackServer(port, path = '/callback') {
  let resolveCb;
  const callback = new Promise((resolve) => {
    resolveCb = resolve;
  });
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, `http://127.0.0.1:${port}`);
    if (url.pathname !== path) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' }).end('Callback received; you can close this page.');
    resolveCb(url.toString());
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    callback,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** Builds an authorization URL from AS metadata. */
export function authorizationUrl(metadata, { clientId, redirectUri, challenge, state, scope, resource }) {
  const u = new URL(metadata.authorization_endpoint);
  u.searchParams.set('response_type', 'code');
  u.searchParams.set('client_id', clientId);
  u.searchParams.set('redirect_uri', redirectUri);
  u.searchParams.set('code_challenge', challenge);
  u.searchParams.set('code_challenge_method', 'S256');
  if (state) u.searchParams.set('state', state);
  if (scope) u.searchParams.set('scope', scope);
  if (resource) u.searchParams.set('resource', resource);
  return u.toString();
}

/**
 * POSTs a form to the token endpoint. `auth`: 'none' (client_id in the body), 'basic'
 * (RFC 6749 §2.3.1 header, form-urlencoded id and secret) or 'post' (both in the body).
 * Returns { status, headers, body } with the body parsed as JSON when it is JSON.
 */
export async function tokenRequest(tokenEndpoint, params, { auth = 'none', clientId, clientSecret } = {}) {
  const form = new URLSearchParams(params);
  const headers = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  if (auth === 'none') {
    form.set('client_id', clientId);
  } else if (auth === 'post') {
    form.set('client_id', clientId);
    form.set('client_secret', clientSecret);
  } else if (auth === 'basic') {
    const enc = (s) => encodeURIComponent(s).replace(/%20/g, '+');
    headers.authorization = `Basic ${Buffer.from(`${enc(clientId)}:${enc(clientSecret)}`).toString('base64')}`;
  } else {
    throw new TypeError(`tokenRequest: unknown auth ${auth}`);
  }
  const r = await fetch(tokenEndpoint, { method: 'POST', headers, body: form.toString(), signal: AbortSignal.timeout(15_000) });
  const text = await r.text();
  let body = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON; keep the text
  }
  return { status: r.status, headers: Object.fromEntries(r.headers), body };
}
