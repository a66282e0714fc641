// Suite cimd: real MCP clients identify themselves with Client ID Metadata Documents (an https URL as client_id) to todo-mcp protected by a real Moat that has dynamic registration turned off: the TypeScript SDK (clientMetadataUrl), the Python SDK (client_metadata_url, cimd-python-sdk.py) and mcp-remote (--client-metadata-url), each through login and consent in headless Chromium and a real tool call.
//
// Run: tests/e2e/node_modules/node/bin/node --test --test-reporter=spec tests/e2e/cimd.test.mjs
//
// The documents are served by a real HTTPS server (lib/cimd-docs.mjs) at
// https://clients.test:<port>/<name>.json, with a certificate from a CA made with openssl for this
// run. Only Moat fetches them: it is started with MOAT_CIMD_ALLOW_LOOPBACK=true,
// MOAT_CIMD_EXTRA_ROOT_CA=<that CA> and MOAT_CIMD_RESOLVE=clients.test=127.0.0.1. The todo resource
// is registered with --no-dcr, so a client that silently fell back to DCR fails here (and its trace
// would show the POST …/register). For every client the suite checks: the access token's client_id
// is the document URL (decoded, and through Moat's introspection with a confidential client), the
// document server saw exactly one fetch, from Moat's fetcher (it is served with max-age=300, so the
// token endpoint's lookup is a cache hit), Moat's metrics count it (moat_cimd_events_total
// kind="fetched" / "cache_hit"), the consent page showed the client_id's host, the client is listed
// by `moat client list` as a metadata-document client, and a tool call on todo-mcp succeeded.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { authorize } from './browser/authorize.mjs';
import { E2E_DIR, REPO_DIR, freePort, makeWorkDir } from './lib/moat.mjs';
import { startStack } from './lib/stack.mjs';
import { CimdDocs, LOGO_PNG } from './lib/cimd-docs.mjs';
import { asMetadata, formatTrace, peek, recordingFetch, startCallbackQueue } from './lib/clients.mjs';
import { tokenRequest } from './lib/oauth.mjs';

const log = (m) => process.stderr.write(`[cimd] ${m}\n`);
const HOST = 'clients.test';
const TOOLS = ['add_todo', 'complete_todo', 'delete_todo', 'list_todos'];
const PYTHON = path.join(E2E_DIR, '.venv', 'bin', 'python');
const MCP_REMOTE = path.join(E2E_DIR, 'node_modules', 'mcp-remote', 'dist');
const RUN_TIMEOUT_MS = 90_000;

let tlsDir;
let docs;
let stack;
let introspector; // a confidential client of the todo resource, for RFC 7662 introspection
let metadata;
let failed = false;

/** `test`, remembering failures so that `after` keeps the work dirs and prints the logs. */
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
  tlsDir = await makeWorkDir('cimd-tls');
  docs = await CimdDocs.start(tlsDir, { host: HOST, log: (m) => log(`[docs] ${m}`) });
  stack = await startStack('cimd', { log, moatEnv: docs.moatEnv, resourceArgs: ['--no-dcr'] });
  // prettier-ignore
  introspector = await stack.moat.cliJson([
    'client', 'create', '--resource', stack.resource.id, '--name', 'cimd e2e introspector', '--grant', 'client-credentials',
  ]);
  metadata = await asMetadata(stack.resource.issuer);
});

after(async () => {
  if (failed && stack) log(`${await stack.logTails(40)}\n--- requests to the document server ---\n${docs?.formatRequests()}`);
  await docs?.stop();
  await stack?.stop({ keep: failed });
  if (tlsDir && !failed && !process.env.MOAT_E2E_KEEP) await rm(tlsDir, { recursive: true, force: true });
  else if (tlsDir) log(`CA and certificates kept: ${path.relative(REPO_DIR, tlsDir)}`);
});

// ---- shared checks ------------------------------------------------------------------------------

/** Moat's moat_cimd_events_total counters, by kind. */
async function cimdCounters() {
  const r = await fetch(`${stack.moat.baseUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
  assert.equal(r.status, 200, 'GET /metrics');
  const counts = {};
  for (const m of (await r.text()).matchAll(/^moat_cimd_events_total\{kind="([^"]+)"\} (\d+)$/gm)) counts[m[1]] = Number(m[2]);
  return counts;
}

/** RFC 7662 introspection of `token` by the confidential introspector client. */
async function introspect(token) {
  const r = await fetch(metadata.introspection_endpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${encodeURIComponent(introspector.client_id)}:${encodeURIComponent(introspector.client_secret)}`).toString('base64')}`,
    },
    body: new URLSearchParams({ token }).toString(),
    signal: AbortSignal.timeout(10_000),
  });
  const body = await r.json();
  assert.equal(r.status, 200, `introspection: ${JSON.stringify(body)}`);
  return body;
}

/**
 * What every CIMD client must show: the token is the document URL's, Moat fetched the document
 * exactly once (then used its cache), the consent page named the host, the client is recorded.
 */
async function checkCimdClient({ docUrl, clientName, accessToken, consentText, countersBefore, scope = 'todo:read' }) {
  const docPath = new URL(docUrl).pathname;
  const context = `document server requests:\n${docs.formatRequests()}`;

  // The token: client_id is the document URL, for todo-mcp, as Moat itself says too.
  const { header, claims } = peek(accessToken);
  assert.equal(header.typ, 'at+jwt');
  assert.equal(claims.client_id, docUrl, 'the access token names the document URL as client_id');
  assert.equal(claims.iss, stack.resource.issuer);
  assert.deepEqual(claims.aud, [stack.todo.url, stack.resource.id]);
  assert.equal(claims.scope, scope);
  assert.match(claims.sub, /^usr_/);
  const intro = await introspect(accessToken);
  assert.equal(intro.active, true, JSON.stringify(intro));
  assert.equal(intro.client_id, docUrl, `introspection: ${JSON.stringify(intro)}`);

  // The document: fetched by Moat (its fetcher's User-Agent), once; the later lookup (token
  // endpoint) was served from the cache the document's Cache-Control allowed.
  const hits = docs.hits(docPath);
  assert.equal(hits.length, 1, `Moat fetched ${docPath} once (max-age=300):\n${context}`);
  assert.match(hits[0].userAgent, /^Moat\/\S+ \(client metadata fetcher\)$/, `who fetched ${docPath}:\n${context}`);
  assert.equal(hits[0].host, new URL(docUrl).host, 'the fetch went to the document URL host (Host header)');
  assert.deepEqual(docs.tlsErrors, [], 'nobody that does not trust the test CA (an SDK) tried to fetch a document');
  const after = await cimdCounters();
  const delta = (k) => (after[k] ?? 0) - (countersBefore[k] ?? 0);
  assert.equal(delta('fetched'), 1, `moat_cimd_events_total{kind="fetched"} grew by one: before ${JSON.stringify(countersBefore)}, after ${JSON.stringify(after)}`);
  assert.ok(delta('cache_hit') >= 1, `the token endpoint's lookup hit the cache: before ${JSON.stringify(countersBefore)}, after ${JSON.stringify(after)}`);
  const rejected = Object.keys(after).filter((k) => !['fetched', 'cache_hit'].includes(k) && delta(k) > 0);
  assert.deepEqual(rejected, [], `no CIMD rejections: before ${JSON.stringify(countersBefore)}, after ${JSON.stringify(after)}`);

  // The consent page: the client's name and, on a line of its own, the host of its client_id.
  assert.ok(consentText, 'the browser helper returned the consent page text');
  assert.ok(consentText.includes(clientName), `consent shows the document's client_name ${clientName}:\n${consentText}`);
  assert.match(consentText, new RegExp(`(^|\\s)${HOST.replace('.', '\\.')}(\\s|$)`, 'm'), `consent shows the host ${HOST}:\n${consentText}`);
  assert.ok(consentText.includes(docUrl), `consent shows the client_id URL:\n${consentText}`);
  assert.doesNotMatch(consentText, /registered itself automatically/, 'no dynamic-registration warning for a CIMD client');

  // Moat recorded the client for this resource, from the document.
  const listed = await stack.moat.cliJson(['client', 'list', '--resource', stack.resource.id]);
  const rows = Array.isArray(listed) ? listed : (listed.clients ?? []);
  const row = rows.find((c) => (c.client_id ?? c.id) === docUrl);
  assert.ok(row, `moat client list lacks ${docUrl}: ${JSON.stringify(listed)}`);
  assert.equal(row.kind, 'cimd', JSON.stringify(row));
  assert.equal(row.name ?? row.client_name, clientName, JSON.stringify(row));
  return claims;
}

// ---- the resource ---------------------------------------------------------------------------------

it('the todo resource advertises CIMD and has no registration endpoint (DCR off)', async () => {
  assert.equal(metadata.client_id_metadata_document_supported, true, JSON.stringify(metadata));
  assert.equal(metadata.registration_endpoint, undefined, 'no registration_endpoint with --no-dcr');
  assert.equal(stack.resource.cimd_enabled, true, JSON.stringify(stack.resource));
  assert.equal(stack.resource.dcr_enabled, false, JSON.stringify(stack.resource));
  const r = await fetch(`${stack.resource.issuer}/oauth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ client_name: 'x', redirect_uris: ['http://127.0.0.1/callback'], token_endpoint_auth_method: 'none' }),
  });
  assert.notEqual(r.status, 201, 'registration is refused');
});

// ---- TypeScript SDK -----------------------------------------------------------------------------

/** The SDK's OAuthClientProvider, in memory, identified by a metadata document URL. */
class CimdProvider {
  constructor(docUrl, redirectUri) {
    this.clientMetadataUrl = docUrl; // what the SDK uses as client_id when the AS advertises CIMD
    this.redirectUri = redirectUri;
    this.authorizationUrls = [];
    this.browser = [];
    this.infos = [];
    this._tokens = undefined;
    this._verifier = undefined;
    this._info = undefined;
  }

  get redirectUrl() {
    return this.redirectUri;
  }

  // Only used for DCR, which must not happen here.
  get clientMetadata() {
    return {
      client_name: 'moat-e2e ts-sdk (CIMD, DCR fallback)',
      redirect_uris: [this.redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  clientInformation() {
    return this._info;
  }

  saveClientInformation(info) {
    this.infos.push(info);
    this._info = info;
  }

  tokens() {
    return this._tokens;
  }

  saveTokens(tokens) {
    this._tokens = tokens;
  }

  saveCodeVerifier(v) {
    this._verifier = v;
  }

  codeVerifier() {
    if (!this._verifier) throw new Error('no code verifier saved');
    return this._verifier;
  }

  async redirectToAuthorization(url) {
    this.authorizationUrls.push(new URL(url));
    this.browser.push(await authorize({ url: url.toString(), email: stack.email, password: stack.password, log: (m) => log(`[browser ts-sdk] ${m}`) }));
  }
}

it('TypeScript SDK with clientMetadataUrl: no DCR, consent shows the host, token for the document URL, tools', async (t) => {
  const callbacks = await startCallbackQueue(await freePort());
  const clientName = 'Moat e2e TypeScript SDK client';
  const docUrl = docs.publish('ts-sdk', { client_name: clientName, redirect_uris: [callbacks.redirectUri], logo_uri: docs.logoUrl, client_uri: `${docs.origin}/` });
  const countersBefore = await cimdCounters();
  const trace = [];
  const fetchFn = recordingFetch(trace);
  const provider = new CimdProvider(docUrl, callbacks.redirectUri);
  let client;
  try {
    let transport = new StreamableHTTPClientTransport(new URL(stack.todo.url), { authProvider: provider, fetch: fetchFn });
    client = new Client({ name: 'moat-e2e-cimd', version: '1.0.0' });
    await assert.rejects(client.connect(transport), UnauthorizedError, 'the first connection needs authorization');
    const cb = await callbacks.next();
    assert.equal(cb.searchParams.get('error'), null, `authorization error: ${cb}`);
    assert.equal(cb.searchParams.get('iss'), stack.resource.issuer);
    await transport.finishAuth(cb.searchParams.get('code'));
    await client.close().catch(() => {});
    transport = new StreamableHTTPClientTransport(new URL(stack.todo.url), { authProvider: provider, fetch: fetchFn });
    client = new Client({ name: 'moat-e2e-cimd', version: '1.0.0' });
    await client.connect(transport);
    t.diagnostic(`trace:\n${formatTrace(trace)}`);

    // The SDK used the URL as its client_id and never registered.
    const rid = stack.resource.id;
    const paths = trace.map((e) => `${e.method} ${new URL(e.url).pathname} ${e.status}`);
    assert.ok(!paths.some((p) => p.includes('/oauth/register')), `the SDK tried DCR:\n${formatTrace(trace)}`);
    assert.ok(paths.includes(`GET /.well-known/oauth-authorization-server/resources/${rid} 200`), formatTrace(trace));
    assert.ok(paths.includes(`POST /resources/${rid}/oauth/token 200`), formatTrace(trace));
    assert.ok(!trace.some((e) => new URL(e.url).host === new URL(docUrl).host), 'the SDK did not fetch its own document');
    assert.deepEqual(provider.infos.map((i) => i.client_id), [docUrl], 'the SDK saved the URL as its client information');
    assert.equal(provider.authorizationUrls.length, 1);
    const authUrl = provider.authorizationUrls[0];
    assert.equal(authUrl.searchParams.get('client_id'), docUrl);
    assert.equal(authUrl.searchParams.get('redirect_uri'), callbacks.redirectUri);
    assert.equal(authUrl.searchParams.get('scope'), 'todo:read');
    assert.deepEqual(provider.browser[0].pages, ['login', 'consent']);

    const tokens = provider.tokens();
    assert.ok(tokens.refresh_token, 'the document lists refresh_token, so Moat issues one');
    await checkCimdClient({ docUrl, clientName, accessToken: tokens.access_token, consentText: provider.browser[0].consentText, countersBefore });

    // A real tool call on todo-mcp with that token.
    assert.deepEqual((await client.listTools()).tools.map((x) => x.name).sort(), TOOLS);
    const listed = await client.callTool({ name: 'list_todos', arguments: {} });
    assert.equal(listed.isError, false, JSON.stringify(listed));
    assert.ok(Array.isArray(listed.structuredContent?.todos), JSON.stringify(listed));
    assert.equal(trace.at(-1).status, 200);

    // The logo: fetched by Moat through its fetcher, served from Moat's own origin.
    const logoHits = docs.hits('/logo.png');
    assert.equal(logoHits.length, 1, `Moat fetched the logo once:\n${docs.formatRequests()}`);
    assert.match(logoHits[0].userAgent, /^Moat\//);
    const key = createHash('sha256').update(docs.logoUrl).digest('hex');
    const logo = await fetch(`${stack.moat.baseUrl}/logos/${key}`);
    assert.equal(logo.status, 200, `GET /logos/${key}`);
    assert.equal(logo.headers.get('content-type'), 'image/png');
    assert.equal(logo.headers.get('x-content-type-options'), 'nosniff');
    assert.deepEqual(Buffer.from(await logo.arrayBuffer()), LOGO_PNG);

    // The refresh token works for the CIMD client (the token endpoint looks it up again).
    const refreshed = await tokenRequest(metadata.token_endpoint, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, resource: stack.todo.url }, { clientId: docUrl });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.equal(peek(refreshed.body.access_token).claims.client_id, docUrl);
    assert.equal(docs.hits(new URL(docUrl).pathname).length, 1, 'the refresh used the cached document');
  } finally {
    await client?.close().catch(() => {});
    await callbacks.close();
  }
});

// ---- Python SDK ---------------------------------------------------------------------------------

it('Python SDK with client_metadata_url: no DCR, consent shows the host, token for the document URL, tools', async (t) => {
  const clientName = 'Moat e2e Python SDK client';
  // A native app cannot know its loopback port in advance: it publishes the port-less loopback
  // URI and Moat accepts any port at runtime (RFC 8252 §7.3); the script's callback picks a port.
  const docUrl = docs.publish('python-sdk', { client_name: clientName, redirect_uris: ['http://127.0.0.1/callback'] });
  const countersBefore = await cimdCounters();
  const child = spawn(PYTHON, [path.join(E2E_DIR, 'cimd-python-sdk.py')], {
    cwd: stack.dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, MOAT_E2E_STACK: JSON.stringify(stack), MOAT_E2E_CIMD_URL: docUrl },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
  const { code, signal } = await new Promise((resolve) => child.on('exit', (c, s) => resolve({ code: c, signal: s })));
  clearTimeout(timer);
  const context = `exit ${code ?? signal}\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr.slice(-8000)}`;
  t.diagnostic(stdout.split('\n').filter((l) => l && !l.startsWith('CIMD_RESULT ')).join('\n')); // not the token
  assert.equal(code, 0, context);
  const line = stdout.split('\n').find((l) => l.startsWith('CIMD_RESULT '));
  assert.ok(line, `the script printed no CIMD_RESULT line:\n${context}`);
  const result = JSON.parse(line.slice('CIMD_RESULT '.length));
  assert.equal(result.client_id, docUrl, context);
  await checkCimdClient({ docUrl, clientName, accessToken: result.access_token, consentText: result.consent_text, countersBefore });
});

// ---- mcp-remote ---------------------------------------------------------------------------------

/** Runs mcp-remote's `client.js` (mcp-remote-client) or `proxy.js` (mcp-remote) with `args`. */
function runMcpRemote(script, args, env, { stdinLines = null, until = null } = {}) {
  const child = spawn(process.execPath, [path.join(MCP_REMOTE, script), ...args], { cwd: stack.dir, stdio: ['pipe', 'pipe', 'pipe'], env });
  let stdout = '';
  let stderr = '';
  const done = new Promise((resolve) => child.on('exit', (c, s) => resolve({ code: c, signal: s })));
  child.stdout.on('data', (d) => {
    stdout += d;
    if (until?.(stdout)) child.stdin.end();
  });
  child.stderr.on('data', (d) => (stderr += d));
  if (stdinLines) for (const l of stdinLines) child.stdin.write(`${JSON.stringify(l)}\n`);
  const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
  return done.then(({ code, signal }) => {
    clearTimeout(timer);
    child.stdin.end();
    return { code, signal, stdout, stderr };
  });
}

it('mcp-remote with --client-metadata-url: no DCR, consent shows the host, token for the document URL, a tool call through the proxy', async (t) => {
  const clientName = 'Moat e2e mcp-remote client';
  const cbPort = await freePort();
  const docUrl = docs.publish('mcp-remote', { client_name: clientName, redirect_uris: [`http://localhost:${cbPort}/oauth/callback`] });
  const countersBefore = await cimdCounters();
  const configDir = path.join(stack.dir, 'mcp-auth');
  const browserLog = path.join(stack.dir, 'mcp-remote-browser.log');
  await writeFile(browserLog, '');
  const env = {
    ...process.env,
    MCP_REMOTE_CONFIG_DIR: configDir,
    BROWSER: path.join(E2E_DIR, 'browser', 'open-url.sh'),
    MOAT_E2E_NODE: process.execPath,
    MOAT_E2E_EMAIL: stack.email,
    MOAT_E2E_PASSWORD: stack.password,
    MOAT_E2E_BROWSER_LOG: browserLog,
    DISPLAY: '',
    WAYLAND_DISPLAY: '',
    XDG_CURRENT_DESKTOP: '',
  };
  const args = [stack.todo.url, String(cbPort), '--client-metadata-url', docUrl];

  // 1. mcp-remote-client: discovery, the metadata document as client_id, login and consent, tools/list.
  const r = await runMcpRemote('client.js', args, env);
  let browser = await readFile(browserLog, 'utf8');
  for (let i = 0; i < 300 && !/^\{"finalUrl"/m.test(browser) && !/FAILED/.test(browser); i++) {
    await new Promise((res) => setTimeout(res, 100)); // the detached helper may still be closing Chromium
    browser = await readFile(browserLog, 'utf8');
  }
  const context = `exit ${r.code ?? r.signal}\n--- mcp-remote-client stderr ---\n${r.stderr.slice(-6000)}\n--- browser log ---\n${browser}`;
  assert.equal(r.code, 0, context);
  assert.match(r.stderr, /Using client metadata document: /, context);
  assert.match(r.stderr, /Connected successfully!/, context);
  for (const name of TOOLS) assert.ok(r.stderr.includes(`"name": "${name}"`), `tools/list lacks ${name}:\n${context}`);
  const result = browser.split('\n').map((l) => (l.startsWith('{"finalUrl"') ? JSON.parse(l) : null)).find(Boolean);
  assert.ok(result, `the browser helper printed no result:\n${context}`);
  assert.deepEqual(result.pages, ['login', 'consent']);
  const opened = new URL(/open-url: (\S+)/.exec(browser)[1]);
  assert.equal(opened.searchParams.get('client_id'), docUrl, 'mcp-remote used the document URL as client_id');
  assert.equal(opened.searchParams.get('redirect_uri'), `http://localhost:${cbPort}/oauth/callback`);
  const callback = new URL(result.finalUrl);
  assert.equal(callback.searchParams.get('iss'), stack.resource.issuer);

  // What mcp-remote stored: tokens, and no client registration (it never caches a CIMD client id).
  const storeDir = path.join(configDir, 'mcp-remote-v1');
  const files = await readdir(storeDir);
  assert.ok(!files.some((f) => f.endsWith('_client_info.json')), `no stored registration: ${files.join(', ')}`);
  const tokensFile = files.find((f) => f.endsWith('_tokens.json'));
  assert.ok(tokensFile, `no *_tokens.json in ${storeDir}: ${files.join(', ')}`);
  const tokens = JSON.parse(await readFile(path.join(storeDir, tokensFile), 'utf8'));
  await checkCimdClient({ docUrl, clientName, accessToken: tokens.access_token, consentText: result.consentText, countersBefore });

  // 2. The mcp-remote stdio proxy with the same arguments reuses those tokens: a real tools/call.
  const call = { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'list_todos', arguments: {} } };
  const p = await runMcpRemote('proxy.js', args, env, {
    stdinLines: [
      { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'moat-e2e-cimd', version: '1' } } },
      { jsonrpc: '2.0', method: 'notifications/initialized' },
      call,
    ],
    until: (out) => out.split('\n').some((l) => l.includes('"id":2')),
  });
  const pcontext = `exit ${p.code ?? p.signal}\n--- mcp-remote stdout ---\n${p.stdout}\n--- mcp-remote stderr ---\n${p.stderr.slice(-6000)}`;
  const responses = p.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  const reply = responses.find((m) => m.id === 2);
  t.diagnostic(`tools/call through mcp-remote: ${JSON.stringify(reply)}`);
  assert.ok(reply, `no reply to tools/call:\n${pcontext}`);
  assert.equal(reply.error, undefined, pcontext);
  assert.equal(reply.result.isError, false, pcontext);
  assert.ok(Array.isArray(reply.result.structuredContent?.todos), pcontext);
  assert.equal(await readFile(browserLog, 'utf8'), browser, 'the proxy reused the stored tokens: no browser');
  assert.equal(docs.hits(new URL(docUrl).pathname).length, 1, `no new fetch of the document:\n${docs.formatRequests()}`);
});
