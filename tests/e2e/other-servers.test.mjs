// Suite other_servers: the TypeScript (SDK + jose) and Python (SDK + PyJWT) MCP servers of docs/protecting-typescript-and-python-servers.md (tests/e2e/servers/) against a real Moat: metadata, 401 challenges, a token for another server refused, tools with a real token, 403 step-up, and a todo:write token accepted.
//
// Run: tests/e2e/node_modules/node/bin/node --test --test-reporter=spec tests/e2e/other-servers.test.mjs

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { E2E_DIR, freePort, sleep } from './lib/moat.mjs';
import { startStack } from './lib/stack.mjs';
import { mcpPost, openSession, rpc, userToken } from './lib/clients.mjs';

const log = (m) => process.stderr.write(`[other-servers] ${m}\n`);
let stack;
let failed = false;
const servers = {};

const KINDS = {
  typescript: { cmd: () => [process.execPath, path.join(E2E_DIR, 'servers', 'ts-todo-server.mjs')] },
  python: { cmd: () => [path.join(E2E_DIR, '.venv', 'bin', 'python'), path.join(E2E_DIR, 'servers', 'py_todo_server.py')] },
};

async function startServer(kind) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/mcp`;
  const resource = await stack.registerResource(`Todo ${kind}`, url);
  const logPath = path.join(stack.dir, `${kind}-server.log`);
  const [bin, ...args] = KINDS[kind].cmd();
  const proc = spawn(bin, args, {
    cwd: stack.dir,
    env: { ...process.env, MCP_URL: url, MOAT_ISSUER: resource.issuer, MOAT_JWKS_URL: `${stack.moat.baseUrl}/keys`, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out = createWriteStream(logPath);
  proc.stdout.pipe(out);
  proc.stderr.pipe(out);
  process.once('exit', () => proc.kill('SIGKILL'));
  const prmUrl = `http://127.0.0.1:${port}/.well-known/oauth-protected-resource/mcp`;
  for (let i = 0; ; i++) {
    if (proc.exitCode !== null) throw new Error(`${kind} server exited:\n${await readFile(logPath, 'utf8')}`);
    try {
      if ((await fetch(prmUrl)).status === 200) break;
    } catch {
      // not yet
    }
    if (i > 300) throw new Error(`${kind} server did not serve ${prmUrl} within 30 s:\n${await readFile(logPath, 'utf8')}`);
    await sleep(100);
  }
  log(`${kind} server on ${url} (resource ${resource.id})`);
  return { kind, url, prmUrl, resource, proc, logPath };
}

before(async () => {
  stack = await startStack('other-servers', { log });
  for (const kind of Object.keys(KINDS)) servers[kind] = await startServer(kind);
});

after(async () => {
  for (const s of Object.values(servers)) {
    if (failed) log(`--- ${s.kind} server log ---\n${await readFile(s.logPath, 'utf8').catch(() => '')}`);
    s.proc.kill('SIGTERM');
  }
  await stack?.stop({ keep: failed });
});

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

/** A tool result's data: structuredContent, or the JSON text the Python SDK returns for a dict. */
const data = (result) => result.structuredContent ?? JSON.parse(result.content[0].text);

/** What each server's 401 challenge looks like (the Python SDK writes its own). */
function expected401(s, kind) {
  if (s.kind === 'typescript') {
    const base = `Bearer resource_metadata="${s.prmUrl}", scope="todo:read"`;
    return kind === 'none' ? base : `${base}, error="invalid_token", error_description="token is not valid for this server"`;
  }
  return `Bearer error="invalid_token", error_description="Authentication required", resource_metadata="${s.prmUrl}"`;
}

for (const kind of Object.keys(KINDS)) {
  it(`${kind}: metadata, 401 challenges, tools with a real Moat token, 403 step-up, write token`, async (t) => {
    const s = servers[kind];
    const prm = await (await fetch(s.prmUrl)).json();
    assert.equal(prm.resource, s.url);
    assert.deepEqual(prm.authorization_servers, [s.resource.issuer]);
    assert.deepEqual(prm.scopes_supported, ['todo:read']);

    const none = await mcpPost(s.url, rpc('tools/list'));
    assert.equal(none.status, 401, none.text);
    assert.equal(none.www, expected401(s, 'none'));

    // A real Moat token for another MCP server (todo-mcp's resource) is refused.
    const foreign = (await userToken(stack, stack.resource, { log })).access_token;
    const r = await mcpPost(s.url, rpc('tools/list'), { token: foreign });
    assert.equal(r.status, 401, r.text);
    assert.equal(r.www, expected401(s, 'bad'));
    const garbage = await mcpPost(s.url, rpc('tools/list'), { token: 'e30.e30.e30' });
    assert.equal(garbage.status, 401);

    // A todo:read token from Moat's real pages: tools work, add_todo asks for step-up.
    const read = (await userToken(stack, s.resource, { scope: 'todo:read', log })).access_token;
    await openSession(s.url, read);
    const tools = await mcpPost(s.url, rpc('tools/list', {}, 2), { token: read });
    assert.equal(tools.status, 200, tools.text);
    assert.deepEqual(tools.json.result.tools.map((x) => x.name).sort(), ['add_todo', 'list_todos']);
    const listed = await mcpPost(s.url, rpc('tools/call', { name: 'list_todos', arguments: {} }, 3), { token: read });
    assert.equal(listed.status, 200, listed.text);
    assert.deepEqual(data(listed.json.result), { todos: [] }, JSON.stringify(listed.json));
    const add = rpc('tools/call', { name: 'add_todo', arguments: { title: `from ${kind}` } }, 4);
    const refused = await mcpPost(s.url, add, { token: read });
    assert.equal(refused.status, 403, refused.text);
    assert.match(refused.www, new RegExp(`^Bearer error="insufficient_scope", scope="todo:read todo:write", resource_metadata="${s.prmUrl}"`));

    const write = (await userToken(stack, s.resource, { scope: 'todo:read todo:write', log })).access_token;
    const added = await mcpPost(s.url, add, { token: write });
    assert.equal(added.status, 200, added.text);
    assert.equal(data(added.json.result).todo.title, `from ${kind}`, JSON.stringify(added.json));
    const again = await mcpPost(s.url, rpc('tools/call', { name: 'list_todos', arguments: {} }, 5), { token: write });
    assert.deepEqual(data(again.json.result).todos.map((x) => x.title), [`from ${kind}`]);
    t.diagnostic(`${kind}: 401 "${none.www}"; 403 "${refused.www}"`);
  });
}
