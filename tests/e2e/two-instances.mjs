// Suite two_instances: one Moat deployment made of two `moat serve` processes on one PostgreSQL schema, behind a round-robin reverse proxy that is the public URL, used by the real TypeScript MCP SDK client: DCR, authorization through the real pages in headless Chromium, token, tools on todo-mcp, refreshes; consecutive OAuth requests alternate between the two instances.
//
// Run: tests/e2e/node_modules/node/bin/node --test --test-reporter=spec tests/e2e/two-instances.mjs
// PostgreSQL: MOAT_TEST_POSTGRES_URL if set (then it must be reachable), else
// postgres://postgres@127.0.0.1:5432/test when a server answers there, else the suite says why it
// skips and passes. It works in a fresh schema moat_e2e_<unix time>_<random> (dropped afterwards;
// leftovers of interrupted runs are swept after 15 minutes), selected by the database URL's
// `options=-c search_path=…`.
//
// The proxy: the interactive OAuth requests (authorize, login, consent, token) strictly
// alternate between the two instances, so every form is posted to the other instance than the
// one that rendered it, and the code exchange and each refresh land on the other instance than
// the step before. Everything else (metadata, DCR, JWKS, stylesheet, favicon) is balanced
// round-robin on its own, so that the browser's sub-resource requests cannot shift the rotation.
// It adds X-Forwarded-For, which the instances trust (MOAT_TRUSTED_PROXY_HEADER).
//
// The client asks for `todo:read todo:write` through the SDK's `auth()` (todo-mcp's challenge
// names only todo:read, and this SDK refreshes instead of stepping up, see ts-sdk.test.mjs), then
// connects with those tokens. Refreshes are the SDK's own: the stored access token is made
// invalid (as an expired one would be), todo-mcp answers 401 invalid_token, and the transport
// refreshes and retries.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { execFile, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { authorize } from './browser/authorize.mjs';
import { REPO_DIR, freePort, makeWorkDir, moatBin, sleep } from './lib/moat.mjs';
import { TodoMcp } from './lib/stack.mjs';
import { formatTrace, peek, recordingFetch, startCallbackQueue } from './lib/clients.mjs';

const log = (m) => process.stderr.write(`[two-instances] ${m}\n`);
const DEFAULT_PG = 'postgres://postgres@127.0.0.1:5432/test';
const SCHEMA_PREFIX = 'moat_e2e_';
const STALE_AFTER_SECS = 900;
const EMAIL = 'alice@example.com';
const SCOPE = 'todo:read todo:write';

// ---- PostgreSQL -----------------------------------------------------------------------------------

/** A connected admin client, or a reason to skip (throws when MOAT_TEST_POSTGRES_URL is set but unreachable). */
async function connectPostgres() {
  const explicit = process.env.MOAT_TEST_POSTGRES_URL || '';
  const url = explicit || DEFAULT_PG;
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  try {
    await client.connect();
  } catch (e) {
    if (explicit) throw new Error(`MOAT_TEST_POSTGRES_URL is set but ${url} is unreachable: ${e.message}`);
    return { skip: `no PostgreSQL at ${url} (${e.message}) and MOAT_TEST_POSTGRES_URL is not set` };
  }
  return { url, client };
}

async function sweepStaleSchemas(db) {
  const { rows } = await db.query('SELECT nspname::text AS name FROM pg_namespace WHERE nspname LIKE $1', [`${SCHEMA_PREFIX}%`]);
  const cutoff = Math.floor(Date.now() / 1000) - STALE_AFTER_SECS;
  for (const { name } of rows) {
    const created = Number(name.slice(SCHEMA_PREFIX.length).split('_')[0]);
    if (Number.isInteger(created) && created < cutoff) await db.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`).catch(() => {});
  }
}

// ---- the load balancer ----------------------------------------------------------------------------

/** Requests the proxy alternates strictly: the interactive steps of an authorization and the token endpoint. */
function isStep(pathname) {
  return pathname === '/login' || pathname === '/consent' || /^\/resources\/[^/]+\/oauth\/(authorize|token)$/.test(pathname);
}

/** A short name for a logged request: `authorize`, `login GET`, `token authorization_code`, …. */
function stepName(method, pathname, grantType) {
  if (pathname.endsWith('/oauth/authorize')) return 'authorize';
  if (pathname.endsWith('/oauth/token')) return `token ${grantType ?? '?'}`;
  return `${pathname.slice(1)} ${method}`;
}

/**
 * A round-robin HTTP reverse proxy on a free loopback port: `url`, `setBackends(urls)`, `log`
 * (one entry per forwarded request: {step, name, method, path, backend}), `close()`.
 */
async function startProxy() {
  let backends = [];
  const counters = { step: 0, other: 0 };
  const entries = [];
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    const { pathname } = new URL(req.url, 'http://proxy');
    const step = isStep(pathname);
    const backend = step ? counters.step++ % backends.length : counters.other++ % backends.length;
    const grantType = pathname.endsWith('/oauth/token') ? new URLSearchParams(body.toString()).get('grant_type') : undefined;
    const entry = { step, name: stepName(req.method, pathname, grantType), method: req.method, path: pathname, backend };
    entries.push(entry);
    const target = new URL(backends[backend]);
    const headers = { ...req.headers, 'x-forwarded-for': req.socket.remoteAddress };
    delete headers.connection;
    delete headers['keep-alive'];
    const upstream = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers },
      (up) => {
        entry.status = up.statusCode;
        res.writeHead(up.statusCode, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', (e) => {
      entry.status = 502;
      res.writeHead(502, { 'content-type': 'text/plain' }).end(`proxy: ${e.message}`);
    });
    upstream.end(body);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    setBackends: (urls) => {
      backends = urls;
    },
    log: entries,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

// ---- moat processes --------------------------------------------------------------------------------

function moatEnv(extra) {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('MOAT_')) delete env[k];
  return { ...env, NO_COLOR: '1', ...extra };
}

/** One `moat serve` of the deployment, on a free port, with the deployment's settings. */
async function startInstance(name, { dir, database, publicUrl, env }) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const logPath = path.join(dir, `${name}.log`);
  const out = createWriteStream(logPath);
  const proc = spawn(moatBin(), ['serve', '--listen', `127.0.0.1:${port}`, '--public-url', publicUrl, '--database', database], {
    cwd: dir,
    env: moatEnv({ MOAT_LOG: 'info', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout.pipe(out);
  proc.stderr.pipe(out);
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const killer = () => proc.kill('SIGKILL');
  process.once('exit', killer);
  exited.then(() => process.removeListener('exit', killer));
  const logTail = async (lines = 30) => (await readFile(logPath, 'utf8').catch(() => '')).split('\n').slice(-lines).join('\n');
  const deadline = Date.now() + 30_000;
  for (;;) {
    const done = await Promise.race([exited, sleep(0).then(() => null)]);
    if (done) throw new Error(`${name} exited (code ${done.code}) before it was ready:\n${await logTail()}`);
    try {
      if ((await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2_000) })).status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${name} did not answer /healthz within 30 s:\n${await logTail()}`);
    await sleep(100);
  }
  log(`${name} is ready on ${base} (pid ${proc.pid}, log ${path.relative(REPO_DIR, logPath)})`);
  return {
    name,
    base,
    logTail,
    stop: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      if (!(await Promise.race([exited, sleep(5_000).then(() => null)]))) {
        proc.kill('SIGKILL');
        await exited;
      }
    },
  };
}

// ---- the deployment ----------------------------------------------------------------------------------

let db; // admin connection
let skipReason;
let schema;
let dir;
let proxy;
let instances = [];
let todo;
let callbacks;
let cli;
let resource;
const password = `pw-${randomBytes(12).toString('hex')}`;
let failed = false;

before(async () => {
  const pgc = await connectPostgres();
  if (pgc.skip) {
    skipReason = pgc.skip;
    log(`skipped: ${skipReason}`);
    return;
  }
  db = pgc.client;
  await sweepStaleSchemas(db);
  schema = `${SCHEMA_PREFIX}${Math.floor(Date.now() / 1000)}_${randomBytes(5).toString('hex')}`;
  await db.query(`CREATE SCHEMA "${schema}"`);
  const database = `${pgc.url}${pgc.url.includes('?') ? '&' : '?'}options=-c%20search_path%3D${schema}`;
  dir = await makeWorkDir('two-instances');
  log(`work dir ${path.relative(REPO_DIR, dir)}, schema ${schema}`);

  proxy = await startProxy();
  const masterKey = randomBytes(32).toString('base64');
  // One explicit master key and one public URL for the whole deployment; management commands
  // get the same settings.
  const env = { MOAT_MASTER_KEY: masterKey, MOAT_TRUSTED_PROXY_HEADER: 'X-Forwarded-For' };
  cli = (args, { input } = {}) =>
    new Promise((resolve, reject) => {
      const child = execFile(
        moatBin(),
        [...args, '--database', database, '--public-url', proxy.url],
        { cwd: dir, env: moatEnv(env), timeout: 60_000 },
        (err, stdout, stderr) => (err ? reject(new Error(`moat ${args.join(' ')} failed:\n${stderr || stdout}`)) : resolve(stdout)),
      );
      child.stdin.end(input ?? '');
    });

  assert.equal((await cli(['migrate'])).trim(), 'migrations applied (postgres)');
  // As in a rolling deployment: the first instance creates the first signing key, then the
  // second joins (neither applies migrations: `moat migrate` did).
  const serveEnv = { ...env, MOAT_MIGRATE_ON_START: 'false' };
  instances.push(await startInstance('moat-a', { dir, database, publicUrl: proxy.url, env: serveEnv }));
  instances.push(await startInstance('moat-b', { dir, database, publicUrl: proxy.url, env: serveEnv }));
  proxy.setBackends(instances.map((i) => i.base));

  const todoPort = await freePort();
  const todoUrl = `http://127.0.0.1:${todoPort}/mcp`;
  // prettier-ignore
  resource = JSON.parse(await cli([
    'resource', 'create', '--name', 'Todo', '--server-url', todoUrl,
    '--scope', 'todo:read=Read your todos', '--scope', 'todo:write=Change your todos', '--json',
  ]));
  assert.equal(resource.issuer, `${proxy.url}/resources/${resource.id}`, 'issuers are built from the one public URL');
  await cli(['user', 'create', '--email', EMAIL, '--name', 'Alice', '--password-stdin'], { input: password });
  todo = await TodoMcp.start(dir, { issuer: resource.issuer, port: todoPort, serverUrl: todoUrl, log });
  callbacks = await startCallbackQueue(await freePort());
});

after(async () => {
  await callbacks?.close();
  if (failed) {
    for (const i of instances) log(`--- ${i.name} ---\n${await i.logTail()}`);
    if (todo) log(`--- todo-mcp ---\n${await todo.logTail()}`);
  }
  await todo?.stop();
  for (const i of instances) await i.stop();
  await proxy?.close();
  if (db) {
    if (schema && !failed) await db.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await db.end();
  }
  if (dir && !failed && !process.env.MOAT_E2E_KEEP) await rm(dir, { recursive: true, force: true });
  else if (dir) log(`work dir kept: ${path.relative(REPO_DIR, dir)}${failed ? `; schema ${schema} kept` : ''}`);
});

/** The SDK's OAuthClientProvider, in memory; "opening the browser" is the shared headless helper. */
class Provider {
  constructor() {
    this.registration = undefined;
    this._tokens = undefined;
    this._verifier = undefined;
    this.savedTokens = [];
    this.pages = [];
  }

  get redirectUrl() {
    return callbacks.redirectUri;
  }

  get clientMetadata() {
    return {
      client_name: 'moat-e2e two instances',
      redirect_uris: [callbacks.redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      scope: SCOPE,
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
    return this._verifier;
  }

  async redirectToAuthorization(url) {
    const r = await authorize({ url: url.toString(), email: EMAIL, password, log: (m) => log(`[browser] ${m}`) });
    this.pages.push(...r.pages);
  }

  /** Makes the stored access token invalid (its signature no longer matches), as an expired one would be. */
  spoilAccessToken() {
    const t = this._tokens.access_token;
    const last = t.at(-1) === 'A' ? 'B' : 'A';
    this._tokens = { ...this._tokens, access_token: `${t.slice(0, -1)}${last}` };
  }
}

// `before` runs first, so the skip decision must be taken when the test runs, not declared.
test('two instances, one deployment: TypeScript SDK client through a round-robin load balancer', async (t) => {
  if (skipReason) {
    t.skip(`no PostgreSQL: ${skipReason}`);
    return;
  }
  try {
    await flow(t);
  } catch (e) {
    failed = true;
    throw e;
  }
});

async function flow(t) {
  assert.notEqual(instances[0].base, instances[1].base);
  // Both instances serve the same keys (one deployment).
  const jwks = await Promise.all(instances.map(async (i) => (await fetch(`${i.base}/keys`)).json()));
  assert.deepEqual(jwks[0], jwks[1], 'both instances serve the same JWKS');

  const trace = [];
  const fetchFn = recordingFetch(trace);
  const provider = new Provider();
  const serverUrl = new URL(todo.url);

  // Authorization: discovery, DCR, the browser through login and consent, the code exchange.
  const started = await auth(provider, { serverUrl, scope: SCOPE, fetchFn });
  assert.equal(started, 'REDIRECT');
  assert.deepEqual(provider.pages, ['login', 'consent']);
  const cb = await callbacks.next();
  assert.equal(cb.searchParams.get('iss'), resource.issuer, 'iss in the authorization response (RFC 9207)');
  const code = cb.searchParams.get('code');
  assert.ok(code, `no code in ${cb}`);
  assert.equal(await auth(provider, { serverUrl, authorizationCode: code, fetchFn }), 'AUTHORIZED');
  const first = provider.tokens();
  assert.equal(first.scope, SCOPE);
  assert.ok(first.refresh_token, 'a refresh token');
  const { claims } = peek(first.access_token);
  assert.equal(claims.iss, resource.issuer);
  assert.deepEqual(claims.aud, [todo.url, resource.id]);
  assert.match(provider.registration.client_id, /^cli_/);

  // Tools on todo-mcp, which validates the tokens with the deployment's JWKS (fetched through the
  // load balancer, from either instance).
  const transport = new StreamableHTTPClientTransport(serverUrl, { authProvider: provider, fetch: fetchFn });
  const client = new Client({ name: 'moat-e2e-two-instances', version: '1.0.0' });
  await client.connect(transport);
  try {
    const tools = (await client.listTools()).tools.map((x) => x.name).sort();
    assert.deepEqual(tools, ['add_todo', 'complete_todo', 'delete_todo', 'list_todos']);
    const added = await client.callTool({ name: 'add_todo', arguments: { title: 'before refresh' } });
    assert.equal(added.isError, false, JSON.stringify(added));
    let listed = await client.callTool({ name: 'list_todos', arguments: {} });
    assert.deepEqual(listed.structuredContent.todos.map((x) => x.title), ['before refresh']);

    // Refresh 1: the access token is no longer valid; todo-mcp says 401 invalid_token, the SDK
    // refreshes and retries.
    provider.spoilAccessToken();
    listed = await client.callTool({ name: 'list_todos', arguments: {} });
    assert.equal(listed.isError, false, JSON.stringify(listed));
    const second = provider.tokens();
    assert.notEqual(second.refresh_token, first.refresh_token, 'the refresh token rotated');
    assert.equal(second.scope, SCOPE, 'a refresh keeps the scope');

    // Refresh 2, then a write with the refreshed token.
    provider.spoilAccessToken();
    const again = await client.callTool({ name: 'add_todo', arguments: { title: 'after refresh' } });
    assert.equal(again.isError, false, JSON.stringify(again));
    const third = provider.tokens();
    assert.notEqual(third.refresh_token, second.refresh_token);
    listed = await client.callTool({ name: 'list_todos', arguments: {} });
    assert.deepEqual(listed.structuredContent.todos.map((x) => x.title), ['before refresh', 'after refresh']);
  } finally {
    await client.close();
  }
  t.diagnostic(`SDK trace:\n${formatTrace(trace)}`);
  const refreshes = trace.filter((e) => e.grantType === 'refresh_token');
  assert.equal(refreshes.length, 2, `two refreshes:\n${formatTrace(trace)}`);
  assert.ok(refreshes.every((e) => e.status === 200));
  assert.equal(trace.filter((e) => e.status === 401 && e.www?.includes('invalid_token')).length, 2, 'each refresh followed a 401 invalid_token');

  // The load balancer's view: every step alternated between the two instances.
  const steps = proxy.log.filter((e) => e.step);
  t.diagnostic(`steps:\n${steps.map((e) => `  ${e.name} → ${instances[e.backend].name} (${e.status})`).join('\n')}`);
  assert.deepEqual(
    steps.map((e) => e.name),
    ['authorize', 'login GET', 'login POST', 'consent GET', 'consent POST', 'token authorization_code', 'token refresh_token', 'token refresh_token'],
  );
  steps.forEach((e, i) => {
    if (i > 0) assert.notEqual(e.backend, steps[i - 1].backend, `${e.name} went to the same instance as ${steps[i - 1].name}`);
    assert.ok(e.status < 400, `${e.name}: ${e.status}`);
  });
  const others = proxy.log.filter((e) => !e.step);
  assert.ok(new Set(others.map((e) => e.backend)).size === 2, 'metadata, DCR and JWKS were served by both instances too');

  // The database: exactly one refresh family for the client, live, with one token per rotation.
  const clientId = provider.registration.client_id;
  const fams = await db.query(`SELECT id, revoked_at FROM "${schema}".refresh_families WHERE client_id = $1`, [clientId]);
  assert.equal(fams.rows.length, 1, 'exactly one refresh family');
  assert.equal(fams.rows[0].revoked_at, null, 'the family is live');
  const toks = await db.query(`SELECT rotated_at FROM "${schema}".refresh_tokens WHERE family_id = $1`, [fams.rows[0].id]);
  assert.equal(toks.rows.length, 3, 'the first token and two successors');
  assert.equal(toks.rows.filter((r) => r.rotated_at === null).length, 1, 'one live end of the family');
}
