// A small MCP server written in TypeScript/JavaScript (MCP TypeScript SDK + express) protected by Moat with `jose`: the complete, tested version of docs/protecting-typescript-and-python-servers.md (the `other_servers` e2e suite runs it against a real Moat).
//
// Run: node tests/e2e/servers/ts-todo-server.mjs   with
//   MCP_URL        the exact URL registered with `moat resource create --server-url` (e.g. http://127.0.0.1:3001/mcp)
//   MOAT_ISSUER    the resource's issuer (`issuer` of `moat resource create --json`)
//   MOAT_JWKS_URL  Moat's key set ({MOAT_PUBLIC_URL}/keys)
//   PORT           where to listen on 127.0.0.1 (default: the port of MCP_URL)

import express from 'express';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify } from 'jose';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';

const MCP_URL = process.env.MCP_URL;
const ISSUER = process.env.MOAT_ISSUER;
const JWKS_URL = process.env.MOAT_JWKS_URL;
const PORT = Number(process.env.PORT || new URL(MCP_URL).port);

// ---- 1. Token validation: only the key set URL, the issuer and the audience -------------------
const jwks = createRemoteJWKSet(new URL(JWKS_URL)); // caches keys, refetches on an unknown kid

async function verifyAccessToken(token) {
  const { payload } = await jwtVerify(token, jwks, {
    issuer: ISSUER, // exact string
    audience: MCP_URL, // Moat puts the registered server URL (and the res_ id) in aud
    typ: 'at+jwt', // RFC 9068 access tokens
    clockTolerance: 30,
    requiredClaims: ['exp', 'iat', 'sub'],
  }); // the algorithm comes from the key (ES256, EdDSA or RS256); none/HMAC never verify
  return payload;
}

// ---- 2. Scopes: what each tool needs, and write implies read ---------------------------------
const TOOL_SCOPES = { list_todos: ['todo:read'], add_todo: ['todo:write'] };
const IMPLIES = { 'todo:write': ['todo:read'] };
const OUR_SCOPES = ['todo:read', 'todo:write'];
const effective = (granted) => new Set(granted.flatMap((s) => [s, ...(IMPLIES[s] ?? [])]));

// ---- 3. Protected resource metadata (RFC 9728) and challenges --------------------------------
const mcpPath = new URL(MCP_URL).pathname;
const PRM_PATH = `/.well-known/oauth-protected-resource${mcpPath}`;
const PRM_URL = new URL(PRM_PATH, MCP_URL).href;
const PRM = {
  resource: MCP_URL,
  authorization_servers: [ISSUER],
  scopes_supported: ['todo:read'], // the minimal set for basic use; write comes by step-up
  bearer_methods_supported: ['header'],
};

function reject(res, status, { error, description, scope = PRM.scopes_supported.join(' ') } = {}) {
  // 401: resource_metadata + scope (+ error="invalid_token" when a token was sent and failed).
  // 403: error="insufficient_scope" and every scope the operation needs.
  const params = status === 403 ? [`error="${error}"`, `scope="${scope}"`, `resource_metadata="${PRM_URL}"`] : [`resource_metadata="${PRM_URL}"`, `scope="${scope}"`];
  if (status !== 403 && error) params.push(`error="${error}"`);
  if (description) params.push(`error_description="${description.replace(/[^\x20-\x21\x23-\x5b\x5d-\x7e]/g, '')}"`);
  res.set('WWW-Authenticate', `Bearer ${params.join(', ')}`);
  res.set('Access-Control-Expose-Headers', 'WWW-Authenticate');
  res.status(status).json({ error: error ?? 'invalid_token', error_description: description ?? 'an access token is required' });
}

async function guard(req, res, next) {
  // DNS-rebinding defence (MCP transports): a browser Origin must be our own.
  const origin = req.headers.origin;
  if (origin && origin !== new URL(MCP_URL).origin) return res.status(403).json({ error: 'forbidden origin' });
  if ('access_token' in req.query) {
    return reject(res, 401, { error: 'invalid_request', description: 'access tokens are accepted only in the Authorization header' });
  }
  const m = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i.exec(req.headers.authorization ?? '');
  if (!m) return reject(res, 401);
  let claims;
  try {
    claims = await verifyAccessToken(m[1]);
  } catch (e) {
    const description = e instanceof joseErrors.JWTExpired ? 'token has expired' : 'token is not valid for this server';
    return reject(res, 401, { error: 'invalid_token', description });
  }
  const granted = typeof claims.scope === 'string' ? claims.scope.split(' ') : [];
  const have = effective(granted);
  const msg = req.body;
  const needed = msg?.method === 'tools/call' ? (TOOL_SCOPES[msg.params?.name] ?? []) : [];
  const missing = needed.filter((s) => !have.has(s));
  if (missing.length) {
    const scope = [...new Set([...granted.filter((s) => OUR_SCOPES.includes(s)), ...needed])].sort().join(' ');
    return reject(res, 403, { error: 'insufficient_scope', scope, description: `token lacks ${missing.join(' ')}` });
  }
  // The SDK hands req.auth to tool handlers as extra.authInfo.
  req.auth = { token: m[1], clientId: claims.client_id, scopes: granted, expiresAt: claims.exp, extra: { sub: claims.sub, iss: claims.iss } };
  delete req.headers.authorization; // never pass the client's token on
  next();
}

// ---- 4. The MCP server ------------------------------------------------------------------------
const todos = new Map(); // `${iss} ${sub}` -> [{ id, title }]
const owner = (extra) => `${extra.authInfo.extra.iss} ${extra.authInfo.extra.sub}`;

function buildServer() {
  const server = new McpServer({ name: 'todo-ts', version: '1.0.0' });
  server.registerTool('list_todos', { description: 'List your todos. Needs todo:read.', inputSchema: {} }, async (_args, extra) => {
    const list = todos.get(owner(extra)) ?? [];
    return { content: [{ type: 'text', text: JSON.stringify(list) }], structuredContent: { todos: list } };
  });
  server.registerTool('add_todo', { description: 'Add a todo. Needs todo:write.', inputSchema: { title: z.string().min(1) } }, async ({ title }, extra) => {
    const list = todos.get(owner(extra)) ?? [];
    const todo = { id: list.length + 1, title };
    todos.set(owner(extra), [...list, todo]);
    return { content: [{ type: 'text', text: `added ${title}` }], structuredContent: { todo } };
  });
  return server;
}

const app = express();
app.get([PRM_PATH, '/.well-known/oauth-protected-resource'], (_req, res) => res.set('Access-Control-Allow-Origin', '*').json(PRM));
app.post(mcpPath, express.json({ limit: '4mb' }), guard, async (req, res) => {
  // Stateless: a server and transport per request.
  const server = buildServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on('close', () => {
    transport.close();
    server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, req.body);
});
app.all(mcpPath, express.json(), guard, (_req, res) => res.status(405).set('Allow', 'POST').end());
app.get('/healthz', (_req, res) => res.send('ok'));

app.listen(PORT, '127.0.0.1', () => process.stderr.write(`todo-ts listening on 127.0.0.1:${PORT} for ${MCP_URL}\n`));
