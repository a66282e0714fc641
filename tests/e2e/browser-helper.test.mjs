// Tests the shared headless-browser helper (browser/authorize.mjs, module and CLI) against a real `moat serve`: approve, deny, wrong password, Moat's error page, an unreachable callback.
//
// Run: tests/e2e/node_modules/node/bin/node --test tests/e2e/browser-helper.test.mjs
// (needs tests/e2e/setup.sh and a built target/debug/moat, or MOAT_BIN)

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AuthorizeError, authorize } from './browser/authorize.mjs';
import { Moat, freePort, makeWorkDir } from './lib/moat.mjs';
import { authorizationUrl, pkce, startCallbackServer, tokenRequest } from './lib/oauth.mjs';

const HELPER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'browser', 'authorize.mjs');
const EMAIL = 'bob@example.com';
const PASSWORD = `pw-${randomBytes(12).toString('hex')}`;
const quiet = () => {};

let dir;
let moat;
let metadata;
let client; // public client with a loopback redirect on cbPort
let cbPort;
let redirectUri;

before(async () => {
  dir = await makeWorkDir('browser-helper');
  moat = await Moat.start(dir);
  // prettier-ignore
  const resource = await moat.cliJson([
    'resource', 'create', '--name', 'Browser helper', '--server-url', `http://127.0.0.1:${await freePort()}/mcp`,
    '--scope', 'todo:read', '--scope', 'todo:write',
  ]);
  await moat.cli(['user', 'create', '--email', EMAIL, '--password-stdin'], { input: PASSWORD });
  cbPort = await freePort();
  redirectUri = `http://127.0.0.1:${cbPort}/callback`;
  // prettier-ignore
  client = await moat.cliJson([
    'client', 'create', '--resource', resource.id, '--name', 'helper-test', '--public', '--redirect-uri', redirectUri,
  ]);
  metadata = await (await fetch(resource.authorization_server_metadata_url)).json();
});

after(async () => {
  await moat?.stop();
  if (dir && !process.env.MOAT_E2E_KEEP && process.exitCode !== 1) await rm(dir, { recursive: true, force: true });
});

function newRequest(overrides = {}) {
  const { verifier, challenge } = pkce();
  const state = randomBytes(12).toString('base64url');
  const url = authorizationUrl(metadata, { clientId: client.client_id, redirectUri, challenge, state, ...overrides });
  return { url, verifier, state };
}

function runCli(args) {
  return new Promise((resolve) => {
    execFile(process.execPath, [HELPER, ...args], { timeout: 90_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr });
    });
  });
}

test('CLI: login + consent + approve delivers a code the client can redeem', async () => {
  const { url, verifier, state } = newRequest();
  const cb = await startCallbackServer(cbPort);
  let res;
  try {
    res = await runCli(['--url', url, '--email', EMAIL, '--password', PASSWORD, '--decision', 'approve']);
  } finally {
    await cb.close();
  }
  assert.equal(res.code, 0, `helper failed:\n${res.stderr}`);
  const lines = res.stdout.trim().split('\n');
  assert.equal(lines.length, 1, `stdout must be one JSON line, got:\n${res.stdout}`);
  const out = JSON.parse(lines[0]);
  assert.deepEqual(out.pages, ['login', 'consent']);
  const final = new URL(out.finalUrl);
  assert.equal(`${final.origin}${final.pathname}`, redirectUri);
  assert.equal(final.searchParams.get('state'), state);
  assert.equal(final.searchParams.get('iss'), metadata.issuer);
  // The callback server really received the same URL.
  assert.equal(await cb.callback, out.finalUrl);
  const token = await tokenRequest(
    metadata.token_endpoint,
    { grant_type: 'authorization_code', code: final.searchParams.get('code'), redirect_uri: redirectUri, code_verifier: verifier },
    { auth: 'none', clientId: client.client_id },
  );
  assert.equal(token.status, 200, JSON.stringify(token.body));
  assert.equal(token.body.token_type.toLowerCase(), 'bearer');
});

test('module: deny ends at the redirect URI with error=access_denied, state and iss', async () => {
  const { url, state } = newRequest();
  const cb = await startCallbackServer(cbPort);
  try {
    const out = await authorize({ url, email: EMAIL, password: PASSWORD, decision: 'deny', log: quiet });
    assert.deepEqual(out.pages, ['login', 'consent']);
    const final = new URL(out.finalUrl);
    assert.equal(final.searchParams.get('error'), 'access_denied');
    assert.equal(final.searchParams.get('state'), state);
    assert.equal(final.searchParams.get('iss'), metadata.issuer);
    assert.equal(final.searchParams.get('code'), null);
  } finally {
    await cb.close();
  }
});

test('module: a wrong password fails loudly with the login page text and a screenshot', async () => {
  const { url } = newRequest();
  const err = await authorize({ url, email: EMAIL, password: 'not-the-password', log: quiet }).then(
    () => null,
    (e) => e,
  );
  assert.ok(err instanceof AuthorizeError, `expected an AuthorizeError, got ${err}`);
  assert.match(err.message, /login page again/);
  assert.deepEqual(err.pages, ['login']);
  assert.ok(err.screenshot && existsSync(err.screenshot), `no screenshot at ${err.screenshot}`);
  await rm(err.screenshot, { force: true });
});

test("module: Moat's error page (unknown client) fails loudly with the page text", async () => {
  const { url } = newRequest({ clientId: 'cli_doesnotexist0000000' });
  const err = await authorize({ url, email: EMAIL, password: PASSWORD, log: quiet }).then(
    () => null,
    (e) => e,
  );
  assert.ok(err instanceof AuthorizeError, `expected an AuthorizeError, got ${err}`);
  assert.match(err.message, /Moat showed an error page/);
  assert.match(err.message, /page text:/);
  assert.deepEqual(err.pages, []);
  if (err.screenshot) await rm(err.screenshot, { force: true });
});

test('CLI: a redirect nobody listens for fails with a clear message', async () => {
  const { url } = newRequest(); // no callback server on cbPort this time
  const res = await runCli(['--url', url, '--email', EMAIL, '--password', PASSWORD, '--quiet']);
  assert.equal(res.code, 1);
  assert.equal(res.stdout, '');
  assert.match(res.stderr, /could not load it: net::ERR_CONNECTION_REFUSED/);
  const shot = /screenshot: (\S+)/.exec(res.stderr)?.[1];
  if (shot) await rm(shot, { force: true });
});

test('CLI: bad arguments exit 2 with the usage', async () => {
  const res = await runCli(['--url', 'http://127.0.0.1:1/x', '--decision', 'maybe']);
  assert.equal(res.code, 2);
  assert.match(res.stderr, /usage: node tests\/e2e\/browser\/authorize\.mjs/);
});
