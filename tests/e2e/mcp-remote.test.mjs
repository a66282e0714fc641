// Suite mcp_remote: `mcp-remote-client` (mcp-remote 0.15.1) connects to todo-mcp through a real Moat: discovery, DCR with its `http://localhost:<port>/oauth/callback` redirect, login and consent in headless Chromium (its "open the browser" step is handed to the shared helper through BROWSER), token, tools/list; a second run reuses the stored tokens without a browser.
//
// Run: tests/e2e/node_modules/node/bin/node --test --test-reporter=spec tests/e2e/mcp-remote.test.mjs
// mcp-remote opens the browser with the npm package `open`, which runs its bundled xdg-open; with
// no desktop, xdg-open runs $BROWSER with the URL: browser/open-url.sh, which runs the helper.
// mcp-remote-client exits when its stdin closes, so stdin is a pipe kept open until it is done;
// its token store goes to MCP_REMOTE_CONFIG_DIR in the work dir (never ~/.mcp-auth).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { E2E_DIR, freePort } from './lib/moat.mjs';
import { startStack } from './lib/stack.mjs';
import { peek } from './lib/clients.mjs';

const log = (m) => process.stderr.write(`[mcp-remote] ${m}\n`);
const CLIENT_JS = path.join(E2E_DIR, 'node_modules', 'mcp-remote', 'dist', 'client.js');
const TOOLS = ['add_todo', 'complete_todo', 'delete_todo', 'list_todos'];
const RUN_TIMEOUT_MS = 90_000;

let stack;
let failed = false;
let cbPort;
let configDir;
let browserLog;

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
  stack = await startStack('mcp-remote', { log });
  cbPort = await freePort();
  configDir = path.join(stack.dir, 'mcp-auth');
  browserLog = path.join(stack.dir, 'browser.log');
  await writeFile(browserLog, '');
});

after(async () => {
  if (failed && stack) log(await stack.logTails());
  await stack?.stop({ keep: failed });
});

/** Runs mcp-remote-client against todo-mcp; resolves to { code, stderr, stdout }. */
async function runClient() {
  const child = spawn(process.execPath, [CLIENT_JS, stack.todo.url, String(cbPort)], {
    cwd: stack.dir,
    stdio: ['pipe', 'pipe', 'pipe'], // stdin stays open until the client exits
    env: {
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
    },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
  const { code, signal } = await new Promise((resolve) => child.on('exit', (c, s) => resolve({ code: c, signal: s })));
  clearTimeout(timer);
  child.stdin.end();
  return { code, signal, stdout, stderr };
}

/** The tool names in the JSON mcp-remote-client prints after "Tools:". */
function toolNames(stderr) {
  const start = stderr.indexOf('] Tools:');
  if (start < 0) return [];
  const end = stderr.indexOf('Requesting resource list', start);
  const block = stderr.slice(start, end < 0 ? undefined : end);
  return [...block.matchAll(/"name": "([^"]+)"/g)].map((m) => m[1]).sort();
}

async function storedFiles() {
  const dir = path.join(configDir, 'mcp-remote-v1');
  const files = await readdir(dir);
  const read = async (suffix) => {
    const f = files.find((x) => x.endsWith(suffix));
    assert.ok(f, `no *${suffix} in ${dir}: ${files.join(', ')}`);
    return JSON.parse(await readFile(path.join(dir, f), 'utf8'));
  };
  return { tokens: await read('_tokens.json'), client: await read('_client_info.json') };
}

/**
 * The browser log once the helper has finished: mcp-remote-client may exit as soon as its callback
 * got the code, while the detached helper is still closing Chromium.
 */
async function finishedBrowserLog(timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await readFile(browserLog, 'utf8');
    if (/^\{"finalUrl"/m.test(text) || /FAILED/.test(text) || Date.now() > deadline) return text;
    await new Promise((r) => setTimeout(r, 100));
  }
}

it('connects through DCR, login and consent, and lists the tools', async (t) => {
  const r = await runClient();
  const browser = await finishedBrowserLog();
  const context = `exit ${r.code ?? r.signal}\n--- mcp-remote stderr ---\n${r.stderr.slice(-6000)}\n--- browser log ---\n${browser}`;
  assert.equal(r.code, 0, context);
  assert.match(r.stderr, /Connected successfully!/, context);
  assert.deepEqual(toolNames(r.stderr), TOOLS, context);

  // The browser step went through our helper: login, consent, then mcp-remote's callback.
  const result = browser.split('\n').map((l) => (l.startsWith('{"finalUrl"') ? JSON.parse(l) : null)).find(Boolean);
  assert.ok(result, `the helper printed no result:\n${browser}`);
  assert.deepEqual(result.pages, ['login', 'consent']);
  const callback = new URL(result.finalUrl);
  assert.equal(`${callback.origin}${callback.pathname}`, `http://localhost:${cbPort}/oauth/callback`);
  assert.equal(callback.searchParams.get('iss'), stack.resource.issuer);
  const opened = new URL(/open-url: (\S+)/.exec(browser)[1]);
  assert.equal(opened.searchParams.get('resource'), stack.todo.url);
  assert.equal(opened.searchParams.get('scope'), 'todo:read', 'mcp-remote asks for the challenged scope');
  t.diagnostic(`authorization URL scope=${opened.searchParams.get('scope')}, redirect_uri=${opened.searchParams.get('redirect_uri')}`);

  // What mcp-remote stored: a DCR registration Moat knows, and a token for todo-mcp.
  const { tokens, client } = await storedFiles();
  assert.match(client.client_id, /^cli_/);
  assert.deepEqual(client.redirect_uris, [`http://localhost:${cbPort}/oauth/callback`]);
  const listed = JSON.parse(await stack.moat.cli(['client', 'list', '--resource', stack.resource.id, '--json']));
  const rows = Array.isArray(listed) ? listed : (listed.clients ?? []);
  assert.ok(rows.some((c) => (c.client_id ?? c.id) === client.client_id), `moat client list lacks ${client.client_id}: ${JSON.stringify(listed)}`);
  const { header, claims } = peek(tokens.access_token);
  assert.equal(header.typ, 'at+jwt');
  assert.equal(claims.iss, stack.resource.issuer);
  assert.deepEqual(claims.aud, [stack.todo.url, stack.resource.id]);
  assert.equal(claims.scope, 'todo:read');
  assert.equal(claims.client_id, client.client_id);
  assert.ok(tokens.refresh_token, 'mcp-remote registers the refresh_token grant and gets a refresh token');
});

it('a second run reuses the stored tokens: no browser, same client', async () => {
  const before = await readFile(browserLog, 'utf8');
  const { client: clientBefore } = await storedFiles();
  const r = await runClient();
  const context = `exit ${r.code ?? r.signal}\n--- mcp-remote stderr ---\n${r.stderr.slice(-6000)}`;
  assert.equal(r.code, 0, context);
  assert.deepEqual(toolNames(r.stderr), TOOLS, context);
  assert.equal(await readFile(browserLog, 'utf8'), before, 'the browser was not opened again');
  const { client } = await storedFiles();
  assert.equal(client.client_id, clientBefore.client_id);
});
