// Test-only reverse proxy for running token-unaware test clients (the MCP conformance suite's `server` scenarios) against an authenticated MCP server: adds `Authorization: Bearer <token>` and forwards everything else — method, path, body, and the `Host` and `Origin` headers — unchanged, streaming responses (SSE) back as they come.
//
// It never disables or bypasses authentication in the server: the server validates the injected,
// real token exactly as it validates any client's. Only for tests.

import http from 'node:http';

/**
 * Starts the proxy on 127.0.0.1:`port`, forwarding to `target` (e.g. http://127.0.0.1:3000).
 * `token()` is read per request (so a test can swap it). Returns { url, requests, close }.
 * `requests` records { method, path, host, origin, status } per proxied request.
 */
export async function startTokenProxy({ port, target, token }) {
  const upstream = new URL(target);
  const requests = [];
  const server = http.createServer((req, res) => {
    const headers = { ...req.headers, authorization: `Bearer ${token()}` };
    const entry = { method: req.method, path: req.url, host: req.headers.host, origin: req.headers.origin };
    requests.push(entry);
    const forward = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers, setHost: false },
      (up) => {
        entry.status = up.statusCode;
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    forward.on('error', (e) => {
      entry.status = 502;
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`token proxy: upstream error: ${e.message}`);
    });
    req.pipe(forward);
    res.on('close', () => forward.destroy());
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}
