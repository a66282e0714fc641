// Suite negative: what todo-mcp (moat-guard, configured against a real Moat) answers to bad requests — no token, malformed, expired, another MCP server's token, wrong issuer, alg none, HMAC signed with the public key, unknown kid, a token in the query string — each with the exact 401 challenge; and the 403 step-up challenge for add_todo with a todo:read token.
//
// Run: tests/e2e/node_modules/node/bin/node --test --test-reporter=spec tests/e2e/negative.test.mjs
// Real tokens come from Moat through its real pages (lib/clients.mjs userToken). Bad tokens that
// must fail whatever their signature are forged here (wrong issuer, alg none, HMAC, unknown kid,
// expired). An expired token forged here fails on its signature before its expiry is looked at, so
// expiry is also checked with a genuine Moat token presented to a second todo-mcp whose clock runs
// two hours ahead (libfaketime, installed by setup.sh).

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { SignJWT, base64url, generateKeyPair } from 'jose';
import { freePort } from './lib/moat.mjs';
import { TodoMcp, startStack } from './lib/stack.mjs';
import { challenge401, initializeBody, mcpPost, openSession, peek, rpc, userToken } from './lib/clients.mjs';

const log = (m) => process.stderr.write(`[negative] ${m}\n`);
const FAKETIME_LIB = ['/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/faketime/libfaketime.so.1'].find((p) => existsSync(p));

let stack;
let failed = false;
let readToken; // a real todo:read token for todo-mcp
let moatKid; // the kid of Moat's signing key
let moatJwk; // its public JWK
let forgeKey; // an ES256 key pair of ours, never published

function it(name, fn) {
  test(name, async (t) => {
    try {
      await fn(t);
    } catch (e) {
      failed = true;
      throw e;
    }
  });
}

before(async () => {
  stack = await startStack('negative', { log });
  readToken = (await userToken(stack, stack.resource, { scope: 'todo:read', log })).access_token;
  const jwks = await (await fetch(`${stack.moat.baseUrl}/keys`)).json();
  assert.equal(jwks.keys.length, 1, JSON.stringify(jwks));
  moatJwk = jwks.keys[0];
  moatKid = moatJwk.kid;
  forgeKey = await generateKeyPair('ES256', { extractable: true });
});

after(async () => {
  if (failed && stack) log(await stack.logTails());
  await stack?.stop({ keep: failed });
});

/** Claims as Moat would issue them for todo-mcp, overridden by `over`. */
function claims(over = {}) {
  const now = Math.floor(Date.now() / 1000);
  const { claims: real } = peek(readToken);
  return { ...real, iat: now, nbf: now, exp: now + 600, jti: `jti-${now}-${Math.random()}`, ...over };
}

async function forge({ header = {}, payload = {} } = {}) {
  return new SignJWT(claims(payload)).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: moatKid, ...header }).sign(forgeKey.privateKey);
}

/** An unsigned JWS (RFC 7515 "none"), built by hand. */
function unsigned(header, payload) {
  const enc = (o) => base64url.encode(JSON.stringify(o));
  return `${enc(header)}.${enc(payload)}.`;
}

/** POST initialize with `token` (or none) → asserts 401 and the exact challenge. */
async function expect401(token, expected, { url = stack.todo.url } = {}) {
  const r = await mcpPost(url, initializeBody(), { token });
  assert.equal(r.status, 401, `${r.status} ${r.www ?? ''} ${r.text}`);
  assert.equal(r.www, expected);
  assert.equal(r.headers.get('cache-control'), 'no-store');
  return r;
}

const invalid = (description) => challenge401(stack.todo.prmUrl, { error: 'invalid_token', description });

it('control: the real todo:read token is accepted', async () => {
  const session = await openSession(stack.todo.url, readToken);
  const r = await mcpPost(stack.todo.url, rpc('tools/call', { name: 'list_todos', arguments: {} }, 2), { token: readToken, session });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.result.structuredContent, { todos: [] });
});

it('protected resource metadata names Moat and the default scope', async () => {
  const r = await fetch(stack.todo.prmUrl);
  assert.equal(r.status, 200);
  const prm = await r.json();
  assert.deepEqual(prm, {
    resource: stack.todo.url,
    authorization_servers: [stack.resource.issuer],
    scopes_supported: ['todo:read'],
    bearer_methods_supported: ['header'],
    resource_name: 'Todo MCP',
  });
  // The same document Moat generates for the resource, apart from resource_name.
  const fromMoat = stack.resource.protected_resource_metadata;
  if (fromMoat) {
    for (const k of ['resource', 'authorization_servers', 'scopes_supported', 'bearer_methods_supported']) {
      assert.deepEqual(prm[k], fromMoat[k], `PRM ${k} differs from moat resource create --json`);
    }
  }
});

it('no token → 401 with resource_metadata and scope, no error code', async () => {
  await expect401(undefined, challenge401(stack.todo.prmUrl));
  const get = await fetch(stack.todo.url, { headers: { accept: 'text/event-stream' } });
  assert.equal(get.status, 401);
  assert.equal(get.headers.get('www-authenticate'), challenge401(stack.todo.prmUrl));
});

it('malformed token → 401 invalid_token', async () => {
  await expect401('not-a-jwt', invalid('malformed token: expected three base64url segments separated by dots'));
  await expect401('a.b.c', invalid('malformed token: header is not base64url'));
  await expect401(`${base64url.encode('hello')}.e30.c2ln`, invalid('malformed token: header is not a JSON object'));
  await expect401(`${readToken.split('.').slice(0, 2).join('.')}.`, invalid('malformed token: empty signature'));
});

it('expired token (forged: rejected, on its signature) → 401 invalid_token', async () => {
  const now = Math.floor(Date.now() / 1000);
  const token = await forge({ payload: { iat: now - 7200, nbf: now - 7200, exp: now - 3600 } });
  await expect401(token, invalid('token signature does not verify'));
});

it('expired token (genuine Moat token, todo-mcp clock two hours ahead) → 401 "token has expired"', async (t) => {
  assert.ok(FAKETIME_LIB, 'libfaketime is not installed: run tests/e2e/setup.sh (it installs the Debian package faketime)');
  const dir = stack.dir;
  const port = await freePort();
  // A second todo-mcp for the same MCP server (same server URL and issuer), living in the future.
  const late = await TodoMcp.start(dir, {
    issuer: stack.resource.issuer,
    port,
    serverUrl: stack.todo.url,
    name: 'todo-mcp-2h-later',
    log,
    env: { LD_PRELOAD: FAKETIME_LIB, FAKETIME: '+2h', FAKETIME_DONT_FAKE_MONOTONIC: '1', FAKETIME_NO_CACHE: '1' },
  });
  try {
    const url = late.listenUrl;
    const { claims: c } = peek(readToken);
    t.diagnostic(`token exp ${c.exp} (lifetime ${c.exp - c.iat}s); the second todo-mcp sees now + 7200s`);
    // Its PRM and challenge name the same server URL as the first one.
    await expect401(readToken, challenge401(stack.todo.prmUrl, { error: 'invalid_token', description: 'token has expired' }), { url });
  } finally {
    await late.stop();
  }
});

it('a real token for another MCP server registered in the same Moat → 401 invalid_token', async () => {
  const otherUrl = `http://127.0.0.1:${await freePort()}/mcp`;
  const other = await stack.registerResource('Other', otherUrl);
  const token = (await userToken(stack, other, { log })).access_token;
  const { claims: c } = peek(token);
  assert.deepEqual(c.aud, [otherUrl, other.id]);
  assert.equal(c.iss, other.issuer);
  // Every resource has its own issuer, so the issuer check refuses it before the audience check.
  await expect401(token, invalid('token issuer is not accepted by this resource'));
});

it('wrong issuer (forged, valid in every other way) → 401 invalid_token', async () => {
  for (const iss of [`${stack.moat.baseUrl}/resources/res_0000000000000000000000`, 'https://evil.example/resources/' + stack.resource.id, `${stack.resource.issuer}/`]) {
    await expect401(await forge({ payload: { iss } }), invalid('token issuer is not accepted by this resource'));
  }
});

it('alg none → 401 invalid_token', async () => {
  const token = unsigned({ alg: 'none', typ: 'at+jwt', kid: moatKid }, claims());
  await expect401(token, invalid('token algorithm none is not accepted'));
});

it('HMAC signed with Moat’s public key (algorithm confusion) → 401 invalid_token', async () => {
  // The classic attack: the verifier's public key used as an HMAC secret (as JWK JSON and PEM-ish bytes).
  const secrets = [new TextEncoder().encode(JSON.stringify(moatJwk)), new TextEncoder().encode(moatJwk.x ?? moatJwk.n)];
  for (const secret of secrets) {
    const token = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: moatKid }).sign(secret);
    await expect401(token, invalid('token algorithm HS256 is not accepted'));
  }
});

it('unknown kid → 401 invalid_token; our own key under Moat’s kid → bad signature', async () => {
  const token = await forge({ header: { kid: 'kid-nobody-published' } });
  await expect401(token, invalid('no published signing key matches the token key id'));
  // Our own public key under Moat's kid: the signature check refuses it.
  await expect401(await forge(), invalid('token signature does not verify'));
});

it('wrong typ → 401 invalid_token', async () => {
  await expect401(await forge({ header: { typ: 'JWT' } }), invalid('token type is not at+jwt as RFC 9068 section 4 requires'));
});

it('token in the query string → 401 invalid_request, the token is never used', async () => {
  const expected = challenge401(stack.todo.prmUrl, { error: 'invalid_request', description: 'access tokens are accepted only in the Authorization header' });
  const url = `${stack.todo.url}?access_token=${encodeURIComponent(readToken)}`;
  await expect401(undefined, expected, { url });
  // Even next to a valid header.
  await expect401(readToken, expected, { url });
});

it('add_todo with a todo:read token → 403 insufficient_scope naming todo:read todo:write', async () => {
  const session = await openSession(stack.todo.url, readToken);
  for (const [tool, args] of [['add_todo', { title: 'x' }], ['complete_todo', { id: 1 }], ['delete_todo', { id: 1 }]]) {
    const r = await mcpPost(stack.todo.url, rpc('tools/call', { name: tool, arguments: args }, 3), { token: readToken, session });
    assert.equal(r.status, 403, `${tool}: ${r.status} ${r.text}`);
    assert.equal(
      r.www,
      `Bearer error="insufficient_scope", scope="todo:read todo:write", resource_metadata="${stack.todo.prmUrl}", error_description="token lacks a scope this operation needs: todo:write"`,
      tool,
    );
  }
});
