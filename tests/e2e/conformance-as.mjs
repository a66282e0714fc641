// Runs the official MCP conformance suite's `authorization` scenarios against a real `moat serve` with a public pre-registered client, completing login and consent in headless Chromium; then checks a confidential client's code flow through the same pages.
//
// Usage (from the repo root, after tests/e2e/setup.sh and `cargo build -p moat-server --bin moat`):
//   tests/e2e/node_modules/node/bin/node tests/e2e/conformance-as.mjs
// Env: MOAT_BIN (default target/debug/moat); MOAT_E2E_KEEP=1 keeps the work dir under tests/e2e/.work/ after a pass.
//
// Pass criteria: every check of the suite succeeds; no warning is accepted (Moat advertises
// Client ID Metadata Documents, so `authorization-server-metadata-cimd` succeeds too); a warning,
// failure or skipped check of any kind fails the run.
// The suite is not run with --client-secret: conformance 0.2.0-alpha.12 (scenario
// authorization-code-grant, selectTokenAuthMethod()) authenticates with `none` whenever the
// metadata lists `none`, even when given a secret, and a correct server must refuse that
// (RFC 6749 §3.2.1). The confidential client is instead exercised by this harness itself:
// refused without authentication, accepted with client_secret_basic and client_secret_post.
// Exit code 0 = pass, 1 = fail.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { authorize } from './browser/authorize.mjs';
import { E2E_DIR, REPO_DIR, Moat, freePort, makeWorkDir } from './lib/moat.mjs';
import { authorizationUrl, pkce, startCallbackServer, tokenRequest } from './lib/oauth.mjs';

const SUITE_JS = path.join(E2E_DIR, 'node_modules', '@modelcontextprotocol', 'conformance', 'dist', 'index.js');
const EXPECTED_SCENARIOS = ['authorization-server-metadata-endpoint', 'authorization-code-grant'];
const ACCEPTED_WARNINGS = new Set(); // none: every warning fails the run
const RUN_TIMEOUT_MS = 4 * 60_000;
const BROWSER_TIMEOUT_MS = 60_000;
const EMAIL = 'alice@example.com';

const log = (m) => process.stdout.write(`[conformance-as] ${m}\n`);

async function main() {
  if (Number(process.versions.node.split('.')[0]) < 22) {
    console.error(
      `conformance-as: the conformance suite needs Node >= 22, this is ${process.version}; ` +
        'run it with tests/e2e/node_modules/node/bin/node (installed by tests/e2e/setup.sh)',
    );
    return 1;
  }
  const started = Date.now();
  const dir = await makeWorkDir('conformance-as');
  log(`work dir: ${path.relative(REPO_DIR, dir)}`);
  let moat;
  const results = [];
  try {
    moat = await Moat.start(dir, { log });
    const password = `pw-${randomBytes(12).toString('hex')}`;
    const mcpPort = await freePort(); // nothing listens there: the suite only talks to Moat

    // prettier-ignore
    const resource = await moat.cliJson([
      'resource', 'create', '--name', 'Conformance', '--server-url', `http://127.0.0.1:${mcpPort}/mcp`,
      '--scope', 'todo:read', '--scope', 'todo:write',
    ]);
    if (!resource.id || !resource.issuer) throw new Error(`resource create --json lacks id/issuer: ${JSON.stringify(resource)}`);
    log(`resource ${resource.id}, issuer ${resource.issuer}`);
    await moat.cli(['user', 'create', '--email', EMAIL, '--password-stdin'], { input: password });
    log(`user ${EMAIL} created`);

    for (const kind of ['public', 'confidential']) {
      const cbPort = await freePort();
      const redirectUri = `http://127.0.0.1:${cbPort}/callback`;
      // prettier-ignore
      const client = await moat.cliJson([
        'client', 'create', '--resource', resource.id, '--name', `conformance-${kind}`,
        ...(kind === 'public' ? ['--public'] : []), '--redirect-uri', redirectUri,
      ]);
      if (!client.client_id) throw new Error(`client create --json lacks client_id: ${JSON.stringify(client)}`);
      if (kind === 'confidential' && !client.client_secret) {
        throw new Error(`client create --json (confidential) printed no client_secret (keys: ${Object.keys(client).join(', ')})`);
      }
      log(`${kind} client ${client.client_id}, redirect ${redirectUri}`);
      if (kind === 'public') {
        results.push(await runSuite({ label: kind, dir, issuer: resource.issuer, client, cbPort, redirectUri, password }));
      } else {
        results.push(await confidentialClientCheck({ issuer: resource.issuer, resource, client, redirectUri, password, cbPort }));
      }
    }
  } catch (e) {
    results.push({ label: 'setup', ok: false, problems: [e.message] });
  } finally {
    if (moat) {
      await moat.stop();
      if (results.some((r) => !r.ok)) {
        log(`moat serve log (last lines of ${path.relative(REPO_DIR, moat.logPath)}):\n${indent(await moat.logTail(30))}`);
      }
    }
  }

  // ---- summary ----
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  console.log('\n=== conformance authorization against Moat: summary ===');
  for (const r of results) {
    if (r.counts) {
      const c = r.counts;
      const status = r.ok ? 'PASS' : 'FAIL';
      console.log(
        `${status} ${r.label}: ${c.SUCCESS} passed, ${c.FAILURE} failed, ${c.WARNING} warnings` +
          (r.acceptedWarnings.length ? ` (accepted: ${r.acceptedWarnings.join(', ')})` : '') +
          `, ${c.SKIPPED} skipped [${r.secs}s]`,
      );
      for (const s of r.scenarios) {
        const good = s.failed === 0 && s.warnings.every((w) => ACCEPTED_WARNINGS.has(w));
        const warn = s.warnings.length ? `, warnings: ${s.warnings.join(', ')}` : '';
        console.log(`     ${good ? '✓' : '✗'} ${s.name}: ${s.passed} passed, ${s.failed} failed${warn}`);
      }
    } else {
      console.log(`${r.ok ? 'PASS' : 'FAIL'} ${r.label}${r.secs ? ` [${r.secs}s]` : ''}`);
      for (const n of r.notes ?? []) console.log(`     ✓ ${n}`);
    }
    for (const p of r.problems) console.log(indent(p, '     - '));
  }
  const failed = results.filter((r) => !r.ok).length;
  const passed = results.length - failed;
  // Two results: the suite run with the public client, and the confidential client harness check.
  const ok = failed === 0 && results.length === 2;
  if (ok && !process.env.MOAT_E2E_KEEP) await rm(dir, { recursive: true, force: true });
  else console.log(`work dir kept: ${path.relative(REPO_DIR, dir)} (moat.log, results-*/…/checks.json)`);
  console.log(`conformance-as: ${ok ? 'PASS' : 'FAIL'} in ${secs}s`);
  console.log(`${passed} passed, ${failed} failed`);
  return ok ? 0 : 1;
}

/** One conformance run for one client; resolves to { label, ok, counts, scenarios, problems, acceptedWarnings, metadata }. */
async function runSuite({ label, dir, issuer, client, cbPort, redirectUri, password }) {
  const started = Date.now();
  const outDir = path.join(dir, `results-${label}`);
  // prettier-ignore
  const args = [SUITE_JS, 'authorization', '--url', issuer, '--client-id', client.client_id, '--port', String(cbPort), '--output-dir', outDir];
  if (client.client_secret) args.push('--client-secret', client.client_secret);
  log(
    `[${label}] conformance authorization --url ${issuer} --client-id ${client.client_id}` +
      `${client.client_secret ? ' --client-secret ***' : ''} --port ${cbPort}`,
  );

  const problems = [];
  const child = spawn(process.execPath, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const killer = () => child.kill('SIGKILL');
  process.once('exit', killer);
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  exited.then(() => process.removeListener('exit', killer));

  const stdoutLines = [];
  let sawUrlMarker = false;
  let browser = null; // promise of { ok, pages?, finalUrl?, error? }
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    stdoutLines.push(line);
    process.stdout.write(`  [suite ${label}] ${line}\n`);
    // The suite prints "Access the following URL in your browser …" and the URL on the next line.
    if (line.startsWith('Access the following URL in your browser')) {
      sawUrlMarker = true;
      return;
    }
    if (sawUrlMarker && !browser && /^https?:\/\//.test(line.trim())) {
      log(`[${label}] completing login and consent in headless Chromium`);
      browser = authorize({
        url: line.trim(),
        email: EMAIL,
        password,
        decision: 'approve',
        expectRedirectPrefix: redirectUri,
        timeoutMs: BROWSER_TIMEOUT_MS,
        log: (m) => process.stdout.write(`  [browser ${label}] ${m}\n`),
      }).then(
        (r) => ({ ok: true, ...r }),
        (e) => ({ ok: false, error: e.message }),
      );
    }
  });
  readline.createInterface({ input: child.stderr }).on('line', (line) => process.stdout.write(`  [suite ${label} stderr] ${line}\n`));

  // Wait for the suite to exit; if the browser fails first, stop the suite at once (it would wait 5 minutes).
  const deadline = timeout(RUN_TIMEOUT_MS);
  let browserResult = null;
  let exit = null;
  while (!exit) {
    const pending = [exited.then((x) => ({ exit: x })), deadline.promise.then(() => ({ timeout: true }))];
    if (browser && !browserResult) pending.push(browser.then((b) => ({ browser: b })));
    const ev = await Promise.race(pending);
    if (ev.timeout) {
      problems.push(`the conformance suite did not finish within ${RUN_TIMEOUT_MS / 1000}s`);
      child.kill('SIGKILL');
      exit = await exited;
    } else if (ev.browser) {
      browserResult = ev.browser;
      if (!browserResult.ok) {
        child.kill('SIGTERM');
        exit = await exited;
      }
    } else {
      exit = ev.exit;
    }
  }
  deadline.cancel();
  // The suite may exit as soon as its callback got the code, before Chromium has closed.
  if (browser && !browserResult) browserResult = await browser;
  if (browserResult) {
    if (browserResult.ok) log(`[${label}] browser: pages ${JSON.stringify(browserResult.pages)}, redirected to ${redactCode(browserResult.finalUrl)}`);
    else problems.push(`browser: ${browserResult.error}`);
  }
  if (exit.code !== 0) problems.push(`the conformance suite exited with ${exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`}`);
  if (!sawUrlMarker) problems.push('the conformance suite never printed an authorization URL');

  // ---- results: one checks.json per scenario ----
  const counts = { SUCCESS: 0, FAILURE: 0, WARNING: 0, SKIPPED: 0, INFO: 0 };
  let cimdCheck = null; // the CIMD metadata check must have run and succeeded, not just be absent
  const scenarios = [];
  const acceptedWarnings = [];
  const failures = [];
  let metadata = null;
  let files = [];
  try {
    files = (await readdir(outDir, { recursive: true })).filter((f) => f.endsWith('checks.json'));
  } catch {
    problems.push(`no results directory ${outDir}`);
  }
  for (const f of files) {
    const checks = JSON.parse(await readFile(path.join(outDir, f), 'utf8'));
    const name = EXPECTED_SCENARIOS.find((s) => path.dirname(f).startsWith(`authorization-server-${s}-`)) ?? path.dirname(f);
    const sc = { name, passed: 0, failed: 0, warnings: [] };
    for (const c of checks) {
      counts[c.status] = (counts[c.status] ?? 0) + 1;
      if (c.id === 'authorization-server-metadata' && c.details?.body) metadata = c.details.body;
      if (c.id === 'authorization-server-metadata-cimd') cimdCheck = c;
      if (c.status === 'SUCCESS') sc.passed++;
      if (c.status === 'FAILURE') {
        sc.failed++;
        failures.push(c);
        problems.push(`FAILURE ${c.id}: ${c.description}${c.errorMessage ? ` — ${c.errorMessage}` : ''}`);
      }
      if (c.status === 'WARNING') {
        sc.warnings.push(c.id);
        if (ACCEPTED_WARNINGS.has(c.id)) acceptedWarnings.push(c.id);
        else problems.push(`WARNING ${c.id} (not accepted): ${c.description}${c.errorMessage ? ` — ${c.errorMessage}` : ''}`);
      }
      if (c.status === 'SKIPPED') problems.push(`SKIPPED ${c.id}: ${c.errorMessage ?? c.description}`);
    }
    scenarios.push(sc);
  }
  scenarios.sort((a, b) => EXPECTED_SCENARIOS.indexOf(a.name) - EXPECTED_SCENARIOS.indexOf(b.name));
  if (files.length && cimdCheck?.status !== 'SUCCESS') {
    problems.push(`check authorization-server-metadata-cimd: ${cimdCheck ? cimdCheck.status : 'did not run'} (client_id_metadata_document_supported must be true)`);
  }
  for (const s of EXPECTED_SCENARIOS) {
    if (!scenarios.some((x) => x.name === s)) problems.push(`scenario ${s} did not run (no checks.json)`);
  }
  // Cross-check with the suite's own closing line.
  const total = stdoutLines.map((l) => /^Total: (\d+) passed, (\d+) failed$/.exec(l.trim())).find(Boolean);
  if (!total) problems.push('the conformance suite printed no "Total: N passed, M failed" line');
  else if (Number(total[2]) !== counts.FAILURE || Number(total[1]) !== counts.SUCCESS) {
    problems.push(`the suite's summary (${total[0]}) disagrees with its checks.json files (${counts.SUCCESS} passed, ${counts.FAILURE} failed)`);
  }

  const ok = problems.length === 0;
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  log(`[${label}] ${ok ? 'PASS' : 'FAIL'} in ${secs}s`);
  return {
    label: `${label} client`, ok, counts, scenarios, problems, acceptedWarnings, failures, metadata, secs,
    exitCode: exit.code, browserOk: browserResult?.ok === true,
  };
}

/**
 * The confidential client's code flow done by the harness itself, through the same real pages:
 * an unauthenticated redemption is refused with 401 invalid_client, the same code is then redeemed
 * with client_secret_basic, and a second flow redeems with client_secret_post. Access tokens are
 * verified against Moat's JWKS.
 */
async function confidentialClientCheck({ issuer, resource, client, redirectUri, password, cbPort }) {
  const label = 'confidential client, harness check (none refused; client_secret_basic, client_secret_post)';
  const started = Date.now();
  const problems = [];
  const notes = [];
  let unauthenticatedRefused = false;
  try {
    const metaUrl = resource.authorization_server_metadata_url ?? wellKnown(issuer);
    const metadata = await (await fetch(metaUrl, { signal: AbortSignal.timeout(10_000) })).json();
    const jwks = createRemoteJWKSet(new URL(metadata.jwks_uri));

    for (const auth of ['basic', 'post']) {
      const { verifier, challenge } = pkce();
      const state = randomBytes(16).toString('base64url');
      const url = authorizationUrl(metadata, { clientId: client.client_id, redirectUri, challenge, state });
      const cb = await startCallbackServer(cbPort);
      let callbackUrl;
      let pages;
      try {
        const r = await authorize({
          url, email: EMAIL, password, expectRedirectPrefix: redirectUri, timeoutMs: BROWSER_TIMEOUT_MS,
          log: (m) => process.stdout.write(`  [browser harness ${auth}] ${m}\n`),
        });
        pages = r.pages;
        callbackUrl = new URL(await cb.callback);
      } finally {
        await cb.close();
      }
      const p = callbackUrl.searchParams;
      if (p.get('error')) throw new Error(`authorization error at the callback: ${p.get('error')} ${p.get('error_description') ?? ''}`);
      if (p.get('state') !== state) problems.push(`[${auth}] state was not echoed: ${p.get('state')}`);
      if (p.get('iss') !== issuer) problems.push(`[${auth}] iss ${p.get('iss')} !== issuer ${issuer}`);
      const code = p.get('code');
      if (!code) throw new Error(`no code at the callback: ${redactCode(callbackUrl.toString())}`);
      const params = { grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier };

      if (auth === 'basic') {
        // What the conformance suite sends for a confidential client: no client authentication.
        const bare = await tokenRequest(metadata.token_endpoint, params, { auth: 'none', clientId: client.client_id });
        if (bare.status === 401 && bare.body?.error === 'invalid_client') {
          unauthenticatedRefused = true;
          notes.push(`no client authentication → ${bare.status} ${bare.body.error} (as RFC 6749 §3.2.1 requires)`);
        } else {
          problems.push(`a token request without client authentication got ${bare.status} ${JSON.stringify(bare.body)}, expected 401 invalid_client`);
        }
      }
      const res = await tokenRequest(metadata.token_endpoint, params, { auth, clientId: client.client_id, clientSecret: client.client_secret });
      if (res.status !== 200) {
        problems.push(`client_secret_${auth}: token endpoint answered ${res.status} ${JSON.stringify(res.body)}`);
        continue;
      }
      if (!/no-store/i.test(res.headers['cache-control'] ?? '')) problems.push(`client_secret_${auth}: Cache-Control is ${res.headers['cache-control']}, not no-store`);
      if (String(res.body.token_type).toLowerCase() !== 'bearer') problems.push(`client_secret_${auth}: token_type ${res.body.token_type}`);
      const { payload, protectedHeader } = await jwtVerify(res.body.access_token, jwks, {
        issuer,
        audience: resource.server_url,
        typ: 'at+jwt',
      });
      if (payload.client_id !== client.client_id) problems.push(`client_secret_${auth}: client_id claim ${payload.client_id}`);
      notes.push(
        `client_secret_${auth}: pages ${JSON.stringify(pages)} → 200, ${protectedHeader.alg} at+jwt, aud ${JSON.stringify(payload.aud)}, scope "${payload.scope}"`,
      );
    }
  } catch (e) {
    problems.push(e.message);
  }
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  const ok = problems.length === 0;
  log(`[harness] ${ok ? 'PASS' : 'FAIL'} ${label} in ${secs}s`);
  return { label, ok, problems, notes, secs, unauthenticatedRefused };
}

function wellKnown(issuer) {
  const u = new URL(issuer);
  return `${u.origin}/.well-known/oauth-authorization-server${u.pathname.replace(/\/$/, '')}`;
}

function timeout(ms) {
  let timer;
  const promise = new Promise((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

function redactCode(u) {
  try {
    const url = new URL(u);
    if (url.searchParams.has('code')) url.searchParams.set('code', '…');
    return url.toString();
  } catch {
    return u;
  }
}

function indent(text, prefix = '    ') {
  return String(text)
    .split('\n')
    .map((l, i) => (i === 0 ? prefix : ' '.repeat(prefix.length)) + l)
    .join('\n');
}

// Exit explicitly: idle keep-alive sockets of fetch would otherwise hold the process for seconds.
process.exit(await main());
