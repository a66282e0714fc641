// Shared helpers for Moat's e2e suites: start a real `moat serve` on a free loopback port with a throw-away SQLite database, and drive the `moat` CLI against it.

import { spawn, execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, access } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const E2E_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_DIR = path.resolve(E2E_DIR, '..', '..');
export const WORK_DIR = path.join(E2E_DIR, '.work');

/** Path of the moat binary under test: env MOAT_BIN, default target/debug/moat (relative to the repo). */
export function moatBin() {
  return path.resolve(REPO_DIR, process.env.MOAT_BIN || 'target/debug/moat');
}

/** A fresh directory under tests/e2e/.work/ for one suite run. */
export async function makeWorkDir(prefix) {
  await mkdir(WORK_DIR, { recursive: true });
  return mkdtemp(path.join(WORK_DIR, `${prefix}-`));
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Environment for moat processes: the caller's, minus MOAT_* settings that would redirect the
// test to another database, config file or URL.
function moatEnv(extra = {}) {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('MOAT_')) delete env[k];
  return { ...env, ...extra };
}

/**
 * A running `moat serve` on 127.0.0.1 with its own SQLite database in `dir`.
 * Use `await Moat.start(dir)`, then `moat.cli([...])`, and always `await moat.stop()`.
 */
export class Moat {
  static async start(dir, { log = () => {}, readyTimeoutMs = 30_000, env = {} } = {}) {
    const bin = moatBin();
    try {
      await access(bin);
    } catch {
      throw new Error(`moat binary not found at ${bin}: build it first (cargo build -p moat-server --bin moat) or set MOAT_BIN`);
    }
    const port = await freePort();
    const m = new Moat(bin, dir, port);
    m.env = env; // extra MOAT_* settings for `moat serve` (e.g. MOAT_SIGNING_ALG)
    await m.#spawn(log, readyTimeoutMs);
    return m;
  }

  constructor(bin, dir, port) {
    this.bin = bin;
    this.dir = dir;
    this.port = port;
    this.baseUrl = `http://127.0.0.1:${port}`;
    this.database = `sqlite://${path.join(dir, 'moat.db')}`;
    this.logPath = path.join(dir, 'moat.log');
    this.proc = null;
    this.exited = null;
  }

  async #spawn(log, readyTimeoutMs) {
    const out = createWriteStream(this.logPath);
    log(`starting ${this.bin} serve on ${this.baseUrl} (log: ${path.relative(REPO_DIR, this.logPath)})`);
    // cwd = the run's directory, so no ./moat.toml of the developer's is picked up.
    this.proc = spawn(
      this.bin,
      ['serve', '--listen', `127.0.0.1:${this.port}`, '--public-url', this.baseUrl, '--database', this.database],
      { cwd: this.dir, env: moatEnv({ MOAT_LOG: 'info', NO_COLOR: '1', ...this.env }), stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.proc.stdout.pipe(out);
    this.proc.stderr.pipe(out);
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve({ code, signal })));
    // Make sure the server dies with us, whatever happens.
    const killer = () => this.proc?.kill('SIGKILL');
    process.once('exit', killer);
    this.exited.then(() => process.removeListener('exit', killer));

    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      const exited = await Promise.race([this.exited, sleep(0).then(() => null)]);
      if (exited) {
        throw new Error(`moat serve exited (code ${exited.code}, signal ${exited.signal}) before it was ready:\n${await this.logTail()}`);
      }
      try {
        const r = await fetch(`${this.baseUrl}/healthz`, { signal: AbortSignal.timeout(2_000) });
        if (r.status === 200) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`moat serve did not answer GET /healthz with 200 within ${readyTimeoutMs} ms:\n${await this.logTail()}`);
      }
      await sleep(100);
    }
    log(`moat serve is ready (pid ${this.proc.pid})`);
  }

  /** Runs `moat <args> --database … --public-url …`; returns stdout. `input` goes to stdin. */
  cli(args, { input } = {}) {
    const full = [...args, '--database', this.database, '--public-url', this.baseUrl];
    return new Promise((resolve, reject) => {
      const child = execFile(
        this.bin,
        full,
        { cwd: this.dir, env: moatEnv({ NO_COLOR: '1' }), timeout: 60_000, maxBuffer: 10 * 1024 * 1024 },
        (err, stdout, stderr) => {
          if (err) {
            reject(new Error(`moat ${args.join(' ')} failed (${err.code ?? err.signal}):\n${stderr || stdout}`));
          } else {
            resolve(stdout);
          }
        },
      );
      if (input !== undefined) child.stdin.end(input);
      else child.stdin.end();
    });
  }

  /** Runs a CLI command with --json and parses its output. */
  async cliJson(args, opts) {
    const out = await this.cli([...args, '--json'], opts);
    try {
      return JSON.parse(out);
    } catch {
      throw new Error(`moat ${args.join(' ')} --json printed no JSON:\n${out}`);
    }
  }

  /** Last lines of the server log, for error messages. */
  async logTail(lines = 40) {
    try {
      const text = await readFile(this.logPath, 'utf8');
      return text.split('\n').slice(-lines).join('\n');
    } catch {
      return '(no server log)';
    }
  }

  /** Stops the server (SIGTERM, then SIGKILL after 5 s). Safe to call twice. */
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

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}
