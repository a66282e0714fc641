// Suite ts_sdk: the TypeScript MCP SDK's client (@modelcontextprotocol/sdk 1.x, streamable HTTP + its OAuth provider) against todo-mcp protected by a real Moat: discovery, DCR, authorization through the real pages in headless Chromium, token, tools; then step-up from todo:read to todo:write.
//
// Run: tests/e2e/node_modules/node/bin/node --test --test-reporter=spec tests/e2e/ts-sdk.test.mjs
// The SDK hides HTTP statuses, so every exchange it makes goes through a recording fetch and the
// tests assert the trace (401 challenge, PRM, AS metadata, register, token, 403 step-up, …).
//
// Known client behaviour (shared/mcp-auth-requirements.md): on a 403 insufficient_scope this SDK
// refreshes instead of re-authorizing when it holds a refresh token, and a refresh never widens
// scope, so its step-up then fails ("403 after trying upscoping"). The test "refresh never widens
// scope" pins exactly that, and the step-up test uses a client registered without the
// refresh_token grant, which re-authorizes.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { authorize } from './browser/authorize.mjs';
import { freePort } from './lib/moat.mjs';
import { startStack } from './lib/stack.mjs';
import { challenge401, formatTrace, mcpPost, openSession, peek, recordingFetch, rpc, startCallbackQueue } from './lib/clients.mjs';

const log = (m) => process.stderr.write(`[ts-sdk] ${m}\n`);
const TOOLS = ['add_todo', 'complete_todo', 'delete_todo', 'list_todos'];

let stack;
let callbacks;
let failed = false;

/** `test`, remembering failures so that `after` keeps the work dir and prints the server logs. */
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
  stack = await startStack('ts-sdk', { log });
  callbacks = await startCallbackQueue(await freePort());
});

after(async () => {
  await callbacks?.close();
  if (failed && stack) log(await stack.logTails());
  await stack?.stop({ keep: failed });
});

/** The SDK's OAuthClientProvider, in memory; the "browser" is the shared headless helper. */
class Provider {
  constructor(name, grantTypes) {
    this.name = name;
    this.grantTypes = grantTypes;
    this.authorizationUrls = [];
    this.savedTokens = [];
    this.registration = undefined;
    this._tokens = undefined;
    this._verifier = undefined;
  }

  get redirectUrl() {
    return callbacks.redirectUri;
  }

  get clientMetadata() {
    return {
      client_name: `moat-e2e ${this.name}`,
      redirect_uris: [callbacks.redirectUri],
      grant_types: this.grantTypes,
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  clientInformation() {
    return this.registration;
  }

  saveClientInformation(info) {
    this.registration = info;
  }

  tokens() {
    return this._tokens;
  }

  saveTokens(tokens) {
    this._tokens = tokens;
    this.savedTokens.push(tokens);
  }

  saveCodeVerifier(v) {
    this._verifier = v;
  }

  codeVerifier() {
    if (!this._verifier) throw new Error('no code verifier saved');
    return this._verifier;
  }

  // The SDK calls this to "open the browser": complete login and consent in headless Chromium;
  // the redirect lands on our loopback callback server.
  async redirectToAuthorization(url) {
    this.authorizationUrls.push(new URL(url));
    const r = await authorize({ url: url.toString(), email: stack.email, password: stack.password, log: (m) => log(`[browser ${this.name}] ${m}`) });
    assert.deepEqual(r.pages, ['login', 'consent'], 'a dynamically registered client sees login and consent');
  }
}

/** The code from the next redirect; checks `iss` (RFC 9207) and that no error came back. */
async function nextCode() {
  const cb = await callbacks.next();
  assert.equal(cb.searchParams.get('error'), null, `authorization error: ${cb}`);
  assert.equal(cb.searchParams.get('iss'), stack.resource.issuer, 'iss in the authorization response');
  const code = cb.searchParams.get('code');
  assert.ok(code, `no code in ${cb}`);
  return code;
}

/** Connects a fresh Client, completing the authorization the first attempt starts. */
async function connect(provider, trace) {
  const fetch = recordingFetch(trace);
  let transport = new StreamableHTTPClientTransport(new URL(stack.todo.url), { authProvider: provider, fetch });
  let client = new Client({ name: `moat-e2e-${provider.name}`, version: '1.0.0' });
  await assert.rejects(client.connect(transport), UnauthorizedError, 'the first connection needs authorization');
  await transport.finishAuth(await nextCode());
  await client.close().catch(() => {});
  transport = new StreamableHTTPClientTransport(new URL(stack.todo.url), { authProvider: provider, fetch });
  client = new Client({ name: `moat-e2e-${provider.name}`, version: '1.0.0' });
  await client.connect(transport);
  return { client, transport };
}

function assertAuthorizationUrl(u, scope) {
  assert.equal(u.origin + u.pathname, `${stack.resource.issuer}/oauth/authorize`);
  assert.equal(u.searchParams.get('resource'), stack.todo.url, 'resource = the PRM resource, verbatim');
  assert.equal(u.searchParams.get('scope'), scope);
  assert.equal(u.searchParams.get('code_challenge_method'), 'S256');
  assert.equal(u.searchParams.get('redirect_uri'), callbacks.redirectUri);
}

function assertAccessToken(token, scope) {
  const { header, claims } = peek(token);
  assert.equal(header.typ, 'at+jwt');
  assert.equal(header.alg, 'ES256');
  assert.equal(claims.iss, stack.resource.issuer);
  assert.deepEqual(claims.aud, [stack.todo.url, stack.resource.id]);
  assert.equal(claims.scope, scope);
  assert.match(claims.sub, /^usr_/);
  return claims;
}

const names = (list) => list.tools.map((t) => t.name).sort();

let readClient; // the client of the first test, registered with the refresh_token grant

it('DCR, authorization through the real pages, token, then tools/list and tools/call', async (t) => {
  const trace = [];
  const provider = new Provider('refreshing', ['authorization_code', 'refresh_token']);
  const { client } = await connect(provider, trace);
  try {
    t.diagnostic(`trace:\n${formatTrace(trace)}`);
    // The discovery the SDK did, as HTTP saw it.
    const first = trace[0];
    assert.equal(first.status, 401, formatTrace(trace));
    assert.equal(first.www, challenge401(stack.todo.prmUrl), 'the 401 challenge');
    const paths = trace.map((e) => `${e.method} ${new URL(e.url).pathname} ${e.status}`);
    const rid = stack.resource.id;
    for (const p of [
      'GET /.well-known/oauth-protected-resource/mcp 200',
      `GET /.well-known/oauth-authorization-server/resources/${rid} 200`,
      `POST /resources/${rid}/oauth/register 201`,
      `POST /resources/${rid}/oauth/token 200`,
    ]) {
      assert.ok(paths.includes(p), `expected ${p} in the trace:\n${formatTrace(trace)}`);
    }
    const tokenReq = trace.find((e) => e.grantType === 'authorization_code');
    assert.equal(tokenReq.resource, stack.todo.url, 'resource on the token request');

    // DCR echoed the metadata; the authorization asked for the challenged scope only.
    assert.match(provider.registration.client_id, /^cli_/);
    assert.deepEqual(provider.registration.redirect_uris, [callbacks.redirectUri]);
    assert.equal(provider.authorizationUrls.length, 1);
    assertAuthorizationUrl(provider.authorizationUrls[0], 'todo:read');
    const tokens = provider.tokens();
    assert.equal(tokens.token_type.toLowerCase(), 'bearer');
    assert.equal(tokens.scope, 'todo:read');
    assert.ok(tokens.refresh_token, 'a client registered with refresh_token gets one');
    const claims = assertAccessToken(tokens.access_token, 'todo:read');
    assert.equal(claims.client_id, provider.registration.client_id);

    assert.deepEqual(names(await client.listTools()), TOOLS);
    const listed = await client.callTool({ name: 'list_todos', arguments: {} });
    assert.equal(listed.isError, false, JSON.stringify(listed));
    assert.deepEqual(listed.structuredContent, { todos: [] });
    readClient = { client, provider, trace };
  } catch (e) {
    await client.close();
    throw e;
  }
});

it('refresh never widens scope: a refreshing client cannot step up (the SDK limitation)', async (t) => {
  assert.ok(readClient, 'needs the first test');
  const { client, provider, trace } = readClient;
  try {
    const before = trace.length;
    const oldToken = provider.tokens().access_token;
    await assert.rejects(
      client.callTool({ name: 'add_todo', arguments: { title: 'needs write' } }),
      (e) => /403 after trying upscoping/.test(e.message),
      'the SDK refreshes, gets the same scope back, and gives up',
    );
    const steps = trace.slice(before);
    t.diagnostic(`trace:\n${formatTrace(steps)}`);
    const stepUp = `Bearer error="insufficient_scope", scope="todo:read todo:write", resource_metadata="${stack.todo.prmUrl}", error_description="token lacks a scope this operation needs: todo:write"`;
    assert.equal(steps[0].status, 403, formatTrace(steps));
    assert.equal(steps[0].www, stepUp);
    const refresh = steps.find((e) => e.grantType === 'refresh_token');
    assert.ok(refresh, `the SDK refreshed:\n${formatTrace(steps)}`);
    assert.equal(refresh.status, 200, 'Moat refreshes');
    assert.equal(provider.authorizationUrls.length, 1, 'no new authorization was started');
    const refreshed = provider.tokens();
    assert.notEqual(refreshed.access_token, oldToken);
    assertAccessToken(refreshed.access_token, 'todo:read');
    assert.equal(steps.at(-1).status, 403, 'still 403 with the refreshed token');

    // The raw HTTP view with the refreshed token: the exact step-up challenge.
    const session = await openSession(stack.todo.url, refreshed.access_token);
    const r = await mcpPost(stack.todo.url, rpc('tools/call', { name: 'add_todo', arguments: { title: 'x' } }, 2), { token: refreshed.access_token, session });
    assert.equal(r.status, 403);
    assert.equal(r.www, stepUp);
  } finally {
    await client.close();
  }
});

it('step-up: todo:read token → 403 on add_todo → re-authorization for todo:read todo:write → success', async (t) => {
  const trace = [];
  // Registered without the refresh_token grant, so the SDK re-authorizes on 403 (see the header).
  const provider = new Provider('step-up', ['authorization_code']);
  const { client, transport } = await connect(provider, trace);
  try {
    assertAuthorizationUrl(provider.authorizationUrls[0], 'todo:read');
    assert.equal(provider.tokens().refresh_token, undefined, 'no refresh token without the grant');
    assertAccessToken(provider.tokens().access_token, 'todo:read');
    assert.equal((await client.callTool({ name: 'list_todos', arguments: {} })).isError, false);

    const before = trace.length;
    await assert.rejects(client.callTool({ name: 'add_todo', arguments: { title: 'after step-up' } }), UnauthorizedError, 'the 403 starts a new authorization');
    await transport.finishAuth(await nextCode());
    const steps = trace.slice(before);
    t.diagnostic(`trace:\n${formatTrace(steps)}`);
    assert.equal(steps[0].status, 403);
    assert.match(steps[0].www, /^Bearer error="insufficient_scope", scope="todo:read todo:write", /);
    assert.equal(provider.authorizationUrls.length, 2);
    assertAuthorizationUrl(provider.authorizationUrls[1], 'todo:read todo:write');
    const code = steps.find((e) => e.grantType === 'authorization_code');
    assert.equal(code?.status, 200, formatTrace(steps));
    assertAccessToken(provider.tokens().access_token, 'todo:read todo:write');

    const added = await client.callTool({ name: 'add_todo', arguments: { title: 'after step-up' } });
    assert.equal(added.isError, false, JSON.stringify(added));
    assert.equal(added.structuredContent.todo.title, 'after step-up');
    const listed = await client.callTool({ name: 'list_todos', arguments: {} });
    assert.deepEqual(listed.structuredContent.todos.map((x) => x.title), ['after step-up']);
    const done = await client.callTool({ name: 'complete_todo', arguments: { id: added.structuredContent.todo.id } });
    assert.equal(done.isError, false, JSON.stringify(done));
    assert.equal(trace.at(-1).status, 200);
  } finally {
    await client.close();
  }
});
