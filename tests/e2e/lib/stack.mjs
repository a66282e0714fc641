// The stack the MCP-client suites run against: a real `moat serve`, the todo resource registered with the CLI, a user, and a real `todo-mcp` protected by moat-guard; also a CLI that runs a command (the Python suites) with the stack's coordinates in its environment.
//
// As a module:
//   const stack = await startStack('ts-sdk', { log });
//   stack.todo.url (the MCP endpoint), stack.resource (resource create --json), stack.email, stack.password
//   await stack.stop();
// As a CLI (Python suites):
//   node tests/e2e/lib/stack.mjs [--signing-alg ES256|EdDSA|RS256] -- <command> [args…]
//   runs <command> with MOAT_E2E_STACK = the stack as JSON (see stackEnv()), stops everything
//   after it, and exits with its exit code.
//
// The resource is registered exactly as the README shows: scopes todo:read and todo:write, default
// scope todo:read (what the 401 challenge and the metadata advertise), so that a client's first
// authorization gets todo:read and todo:write comes by step-up (403 insufficient_scope).

import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { access, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { realpathSync } from 'node:fs';
import { E2E_DIR, REPO_DIR, Moat, freePort, makeWorkDir, sleep } from './moat.mjs';

export const EMAIL = 'alice@example.com';
export const BROWSER_HELPER = path.join(E2E_DIR, 'browser', 'authorize.mjs');

/** Path of the todo-mcp binary under test: env TODO_MCP_BIN, default target/debug/todo-mcp. */
export function todoBin() {
  return path.resolve(REPO_DIR, process.env.TODO_MCP_BIN || 'target/debug/todo-mcp');
}

/** The `node` to run the browser helper with from another language: Node 22 from setup.sh, else this one. */
export function nodeForHelper() {
  return process.execPath;
}

/**
 * A running `todo-mcp`. `serverUrl` is the URL clients use (and tokens carry); it may differ from
 * the listen address when a proxy sits in front (the conformance suite).
 */
export class TodoMcp {
  static async start(dir, { issuer, port, serverUrl, log = () => {}, env = {}, name = 'todo-mcp', readyTimeoutMs = 30_000 }) {
    const bin = todoBin();
    try {
      await access(bin);
    } catch {
      throw new Error(`todo-mcp binary not found at ${bin}: build it first (cargo build -p todo-mcp) or set TODO_MCP_BIN`);
    }
    const t = new TodoMcp(dir, port, serverUrl ?? `http://127.0.0.1:${port}/mcp`, name);
    await t.#spawn(bin, issuer, log, env, readyTimeoutMs);
    return t;
  }

  constructor(dir, port, serverUrl, name) {
    this.dir = dir;
    this.port = port;
    this.base = `http://127.0.0.1:${port}`;
    this.url = serverUrl;
    this.listenUrl = `${this.base}${new URL(serverUrl).pathname}`;
    this.prmUrl = `${new URL(serverUrl).origin}/.well-known/oauth-protected-resource${new URL(serverUrl).pathname}`;
    this.logPath = path.join(dir, `${name}.log`);
    this.proc = null;
    this.exited = null;
  }

  async #spawn(bin, issuer, log, env, readyTimeoutMs) {
    const out = createWriteStream(this.logPath);
    const args = [
      '--listen', `127.0.0.1:${this.port}`,
      '--server-url', this.url,
      '--issuer', issuer,
      '--database', `sqlite://${path.join(this.dir, `${path.basename(this.logPath, '.log')}.db`)}`,
    ];
    log(`starting todo-mcp on ${this.base} for ${this.url} (log: ${path.relative(REPO_DIR, this.logPath)})`);
    const childEnv = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', NO_COLOR: '1', ...env };
    for (const k of Object.keys(childEnv)) if (k.startsWith('TODO_MCP_')) delete childEnv[k];
    this.proc = spawn(bin, args, { cwd: this.dir, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout.pipe(out);
    this.proc.stderr.pipe(out);
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve({ code, signal })));
    const killer = () => this.proc?.kill('SIGKILL');
    process.once('exit', killer);
    this.exited.then(() => process.removeListener('exit', killer));

    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      const exited = await Promise.race([this.exited, sleep(0).then(() => null)]);
      if (exited) throw new Error(`todo-mcp exited (code ${exited.code}, signal ${exited.signal}) before it was ready:\n${await this.logTail()}`);
      try {
        const r = await fetch(`${this.base}/healthz`, { signal: AbortSignal.timeout(2_000) });
        if (r.status === 200) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`todo-mcp did not answer GET /healthz within ${readyTimeoutMs} ms:\n${await this.logTail()}`);
      }
      await sleep(100);
    }
    log(`todo-mcp is ready (pid ${this.proc.pid})`);
  }

  async logTail(lines = 40) {
    try {
      return (await readFile(this.logPath, 'utf8')).split('\n').slice(-lines).join('\n');
    } catch {
      return '(no todo-mcp log)';
    }
  }

  async stop() {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    const done = await Promise.race([this.exited, sleep(5_000).then(() => null)]);
    if (!done) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
  }
}

/**
 * Starts Moat, registers the todo resource for a todo-mcp on a free port, creates the user and
 * starts todo-mcp. Options: `moatEnv` (extra MOAT_* settings, e.g. MOAT_SIGNING_ALG),
 * `serverUrl(todoPort)` to register another URL (a proxy in front), `resourceArgs` (extra
 * `resource create` flags).
 */
export async function startStack(prefix, { log = () => {}, moatEnv = {}, serverUrl, resourceArgs = [] } = {}) {
  const dir = await makeWorkDir(prefix);
  log(`work dir: ${path.relative(REPO_DIR, dir)}`);
  const stack = new Stack(dir, log);
  try {
    stack.moat = await Moat.start(dir, { log, env: moatEnv });
    const todoPort = await freePort();
    const url = serverUrl ? serverUrl(todoPort) : `http://127.0.0.1:${todoPort}/mcp`;
    stack.resource = await stack.registerResource('Todo', url, resourceArgs);
    log(`resource ${stack.resource.id} for ${url}, issuer ${stack.resource.issuer}`);
    stack.password = `pw-${randomBytes(12).toString('hex')}`;
    await stack.moat.cli(['user', 'create', '--email', EMAIL, '--name', 'Alice', '--password-stdin'], { input: stack.password });
    log(`user ${EMAIL} created`);
    stack.todo = await TodoMcp.start(dir, { issuer: stack.resource.issuer, port: todoPort, serverUrl: url, log });
    return stack;
  } catch (e) {
    await stack.stop({ keep: true });
    throw e;
  }
}

class Stack {
  constructor(dir, log) {
    this.dir = dir;
    this.log = log;
    this.email = EMAIL;
    this.password = null;
    this.moat = null;
    this.todo = null;
    this.resource = null;
  }

  /** `moat resource create` with the README's todo scopes; returns its --json output. */
  async registerResource(name, serverUrl, extra = []) {
    // prettier-ignore
    const r = await this.moat.cliJson([
      'resource', 'create', '--name', name, '--server-url', serverUrl,
      '--scope', 'todo:read=Read your todos', '--scope', 'todo:write=Change your todos',
      '--default-scope', 'todo:read', ...extra,
    ]);
    if (!r.id || !r.issuer) throw new Error(`resource create --json lacks id/issuer: ${JSON.stringify(r)}`);
    return r;
  }

  /** What the Python suites get in MOAT_E2E_STACK. */
  toJSON() {
    return {
      dir: this.dir,
      moat_url: this.moat.baseUrl,
      moat_bin: this.moat.bin,
      moat_database: this.moat.database,
      mcp_url: this.todo.url,
      prm_url: this.todo.prmUrl,
      resource: this.resource,
      email: this.email,
      password: this.password,
      node: nodeForHelper(),
      browser_helper: BROWSER_HELPER,
    };
  }

  /** Log tails of both servers, for failure messages. */
  async logTails(lines = 25) {
    const parts = [];
    if (this.moat) parts.push(`--- moat serve (${path.relative(REPO_DIR, this.moat.logPath)}) ---\n${await this.moat.logTail(lines)}`);
    if (this.todo) parts.push(`--- todo-mcp (${path.relative(REPO_DIR, this.todo.logPath)}) ---\n${await this.todo.logTail(lines)}`);
    return parts.join('\n');
  }

  /** Stops both servers; removes the work dir unless `keep` or MOAT_E2E_KEEP is set. */
  async stop({ keep = false } = {}) {
    await this.todo?.stop();
    await this.moat?.stop();
    if (!keep && !process.env.MOAT_E2E_KEEP) await rm(this.dir, { recursive: true, force: true });
    else this.log(`work dir kept: ${path.relative(REPO_DIR, this.dir)}`);
  }
}

// ---- CLI ----------------------------------------------------------------------------------------

async function main(argv) {
  const sep = argv.indexOf('--');
  if (sep < 0 || sep === argv.length - 1) {
    process.stderr.write('usage: node tests/e2e/lib/stack.mjs [--signing-alg ALG] [--name PREFIX] -- <command> [args…]\n');
    return 2;
  }
  const opts = argv.slice(0, sep);
  const command = argv.slice(sep + 1);
  const moatEnv = {};
  let prefix = path.basename(command[command.length - 1] ?? 'stack').replace(/\.[a-z]+$/, '');
  for (let i = 0; i < opts.length; i += 2) {
    if (opts[i] === '--signing-alg') moatEnv.MOAT_SIGNING_ALG = opts[i + 1];
    else if (opts[i] === '--name') prefix = opts[i + 1];
    else {
      process.stderr.write(`stack: unknown option ${opts[i]}\n`);
      return 2;
    }
  }
  const log = (m) => process.stdout.write(`[stack] ${m}\n`);
  let stack;
  try {
    stack = await startStack(prefix, { log, moatEnv });
  } catch (e) {
    process.stderr.write(`stack: could not start Moat and todo-mcp: ${e.message}\n`);
    return 1;
  }
  const child = spawn(command[0], command.slice(1), {
    stdio: 'inherit',
    env: { ...process.env, MOAT_E2E_STACK: JSON.stringify(stack) },
  });
  const forward = (sig) => child.kill(sig);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  const { code, signal } = await new Promise((resolve) => child.on('exit', (c, s) => resolve({ code: c, signal: s })));
  const ok = code === 0;
  if (!ok) process.stdout.write(`[stack] ${command.join(' ')} failed (${signal ?? `exit ${code}`}); server logs:\n${await stack.logTails()}\n`);
  await stack.stop({ keep: !ok });
  return code ?? 1;
}

const invokedDirectly = (() => {
  try {
    return process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
})();

if (invokedDirectly) {
  process.exit(await main(process.argv.slice(2)));
}

