// Shared headless-browser helper for Moat's e2e tests: completes an OAuth authorization in real Debian Chromium through Moat's login and consent pages.
//
// As an ES module (Node tests):
//   import { authorize } from './browser/authorize.mjs';
//   const { finalUrl, pages, consentText } = await authorize({ url, email, password, decision: 'approve' });
//
// As a CLI (Python, Rust, shell):
//   node tests/e2e/browser/authorize.mjs --url <authorization URL> --email E --password P \
//        [--decision approve|deny] [--expect-redirect-prefix URL] [--timeout-ms N] [--quiet]
//   prints one JSON line {"finalUrl": "...", "pages": ["login","consent"], "consentText": "..."} on stdout
//   (consentText: the consent page's visible text, absent when no consent page was shown); progress on
//   stderr; exit 1 with a clear message (and a screenshot in tests/e2e/.work/) on failure, 2 on
//   bad arguments. Works with the machine's Node 20 as well as with Node 22.
//
// What it does: launches /usr/bin/chromium headless with a fresh profile, opens the authorization
// URL, signs in on Moat's login page if it is shown (fields `email`, `password`), presses the
// consent button `decision` with the requested value, and waits until the browser has loaded the
// client's redirect URI (by default the `redirect_uri` of the authorization URL), so that the
// client's loopback callback server really receives the code. Any other page (Moat's error pages,
// a repeated login page after a wrong password, a redirect that cannot be loaded) is a failure
// that quotes the page's visible text.
// Limits: the redirect URI must be http(s) (a browser cannot load a private-use scheme such as
// com.example.app:/cb); ports Chromium calls unsafe (1, 9, 6000, …) cannot be used.

import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

export const CHROMIUM_PATH = process.env.MOAT_E2E_CHROMIUM || '/usr/bin/chromium';

// Flags from the machine notes: without the background-networking flags Chromium keeps trying to
// reach Google's hosts, which this machine's closed network refuses.
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const E2E_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const WORK_DIR = path.join(E2E_DIR, '.work');

/** An authorization that did not end at the client's redirect URI. */
export class AuthorizeError extends Error {
  constructor(message, { screenshot, pages, url } = {}) {
    super(screenshot ? `${message}\n  screenshot: ${screenshot}` : message);
    this.name = 'AuthorizeError';
    this.screenshot = screenshot;
    this.pages = pages;
    this.url = url;
  }
}

/**
 * Completes an authorization request in headless Chromium.
 *
 * @param {object} opts
 * @param {string} opts.url                 the authorization URL the client under test produced
 * @param {string} opts.email               Moat login email (used only if the login page is shown)
 * @param {string} opts.password            Moat login password
 * @param {'approve'|'deny'} [opts.decision='approve'] the consent button to press
 * @param {string} [opts.expectRedirectPrefix] where the flow must end; default: the URL's redirect_uri
 * @param {number} [opts.timeoutMs=60000]  overall deadline
 * @param {(msg: string) => void} [opts.log] progress messages (default: stderr)
 * @returns {Promise<{finalUrl: string, pages: string[], consentText?: string}>} `consentText`: the
 *   visible text of the consent page as shown (what the user read before deciding), if one was shown
 */
export async function authorize(opts) {
  const {
    url,
    email,
    password,
    decision = 'approve',
    timeoutMs = 60_000,
    log = (m) => process.stderr.write(`[authorize] ${m}\n`),
  } = opts;
  if (!url) throw new TypeError('authorize: `url` is required');
  if (decision !== 'approve' && decision !== 'deny') {
    throw new TypeError(`authorize: decision must be "approve" or "deny", not ${JSON.stringify(decision)}`);
  }
  let authUrl;
  try {
    authUrl = new URL(url);
  } catch {
    throw new TypeError(`authorize: not an absolute URL: ${url}`);
  }
  const redirectPrefix = opts.expectRedirectPrefix || authUrl.searchParams.get('redirect_uri');
  if (!redirectPrefix) {
    throw new TypeError('authorize: the URL has no redirect_uri parameter; pass expectRedirectPrefix');
  }
  const moatOrigin = authUrl.origin;
  const deadline = Date.now() + timeoutMs;
  const remaining = () => Math.max(1, deadline - Date.now());

  const pages = [];
  let consentText;
  const profile = await mkdtemp(path.join(tmpdir(), 'moat-e2e-chromium-'));
  let context;
  let page;

  // The redirect to the client is watched at the network level: the flow is done once the browser
  // got a response from the redirect URI (the client then has the code), or failed when the
  // request to it failed.
  let callbackOutcome = null;
  let resolveCallback;
  const callbackSeen = new Promise((resolve) => {
    resolveCallback = resolve;
  });
  const isCallback = (u) => u.startsWith(redirectPrefix);

  const fail = async (message) => {
    let screenshot;
    if (page) {
      try {
        await mkdir(WORK_DIR, { recursive: true });
        screenshot = path.join(WORK_DIR, `authorize-failure-${new Date().toISOString().replace(/[:.]/g, '-')}.png`);
        await page.screenshot({ path: screenshot, fullPage: true, timeout: 5_000 });
      } catch (e) {
        screenshot = undefined;
        log(`could not take a screenshot: ${e.message}`);
      }
    }
    throw new AuthorizeError(message, { screenshot, pages: [...pages], url: page?.url() });
  };

  // Visible text of the current page, trimmed, for error messages.
  const visibleText = async () => {
    try {
      const text = await page.evaluate(() => document.body?.innerText ?? '');
      return text.replace(/\n{2,}/g, '\n').trim().slice(0, 2000) || '(empty page)';
    } catch (e) {
      return `(page text unavailable: ${e.message})`;
    }
  };

  // Runs an action that makes the main frame navigate, then waits for the new document, or for the
  // callback outcome (the redirect to the client), whichever comes first.
  const navigate = async (what, action) => {
    const navigated = page
      .waitForEvent('framenavigated', { predicate: (f) => f === page.mainFrame(), timeout: remaining() })
      .then(() => page.waitForLoadState('domcontentloaded', { timeout: remaining() }))
      .then(() => 'page');
    navigated.catch(() => {});
    try {
      await action();
    } catch (e) {
      // page.goto throws when the navigation itself fails (e.g. a redirect straight to a callback
      // that refused the connection); the callback outcome below says so more precisely.
      if (!callbackOutcome) await Promise.race([callbackSeen, sleep(500)]);
      if (!callbackOutcome) await fail(`${what} failed: ${stripAnsi(e.message)}`);
    }
    let timer;
    const timedOut = new Promise((resolve) => {
      timer = setTimeout(() => resolve('timeout'), remaining());
    });
    const first = await Promise.race([callbackSeen.then(() => 'callback'), navigated.catch(() => 'timeout'), timedOut]);
    clearTimeout(timer);
    if (first === 'timeout' && !callbackOutcome) {
      await fail(`timed out after ${timeoutMs} ms waiting for a page after ${what} (at ${page.url()})`);
    }
  };

  try {
    log(`launching ${CHROMIUM_PATH}`);
    try {
      context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM_PATH,
        headless: true,
        args: CHROMIUM_ARGS,
        timeout: Math.min(30_000, remaining()),
      });
    } catch (e) {
      throw new AuthorizeError(`could not launch Chromium at ${CHROMIUM_PATH} (did tests/e2e/setup.sh run?): ${e.message}`);
    }
    page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(timeoutMs);

    page.on('response', (resp) => {
      const req = resp.request();
      if (!callbackOutcome && req.isNavigationRequest() && req.frame() === page.mainFrame() && isCallback(req.url())) {
        callbackOutcome = { ok: true, url: req.url(), status: resp.status() };
        resolveCallback();
      }
    });
    page.on('requestfailed', (req) => {
      if (!callbackOutcome && req.isNavigationRequest() && isCallback(req.url())) {
        callbackOutcome = { ok: false, url: req.url(), error: req.failure()?.errorText ?? 'unknown error' };
        resolveCallback();
      }
    });

    log(`opening ${authUrl.origin}${authUrl.pathname}`);
    await navigate('opening the authorization URL', () => page.goto(url, { waitUntil: 'commit', timeout: remaining() }));

    for (;;) {
      if (callbackOutcome) break;
      if (Date.now() >= deadline) await fail(`timed out after ${timeoutMs} ms (at ${page.url()})`);
      const current = page.url();
      const kind = await classify(page);

      if (kind === 'login') {
        if (pages.includes('login')) {
          await fail(`Moat showed the login page again after signing in as ${email}\n  page text:\n${indent(await visibleText())}`);
        }
        pages.push('login');
        log(`login page: signing in as ${email}`);
        const form = page.locator('form[action$="/login"]');
        await form.locator('input[name="email"]').fill(email ?? '');
        await form.locator('input[name="password"]').fill(password ?? '');
        await navigate('submitting the login form', () => form.locator('button[type="submit"], input[type="submit"]').first().click());
      } else if (kind === 'consent') {
        if (pages.includes('consent')) {
          await fail(`Moat showed the consent page again after "${decision}"\n  page text:\n${indent(await visibleText())}`);
        }
        pages.push('consent');
        consentText = await visibleText();
        log(`consent page: pressing "${decision}"`);
        const button = page.locator(`form[action$="/consent"] button[name="decision"][value="${decision}"]`);
        if ((await button.count()) !== 1) {
          await fail(`the consent page has no single button name="decision" value="${decision}"\n  page text:\n${indent(await visibleText())}`);
        }
        await navigate(`pressing "${decision}" on the consent page`, () => button.click());
      } else {
        const status = await mainDocumentStatus(page);
        const where = current.startsWith(moatOrigin) ? 'Moat showed an error page' : 'the browser ended on an unexpected page';
        await fail(`${where} instead of redirecting to ${redirectPrefix}\n  url: ${current}${status ? ` (HTTP ${status})` : ''}\n  page text:\n${indent(await visibleText())}`);
      }
    }

    if (!callbackOutcome.ok) {
      const hint = /CONNECTION_REFUSED/.test(callbackOutcome.error) ? " (is the client's callback server listening?)" : '';
      await fail(`Moat redirected to ${callbackOutcome.url}, but the browser could not load it: ${callbackOutcome.error}${hint}`);
    }
    log(`redirected to the client (HTTP ${callbackOutcome.status} from its callback)`);
    return consentText === undefined ? { finalUrl: callbackOutcome.url, pages } : { finalUrl: callbackOutcome.url, pages, consentText };
  } finally {
    if (context) await context.close().catch(() => {});
    await rm(profile, { recursive: true, force: true }).catch(() => {});
  }
}

// Which of Moat's pages is shown: 'login', 'consent' or 'other' (error pages and anything else).
async function classify(page) {
  if ((await page.locator('form[action$="/login"] input[name="password"]').count()) > 0) return 'login';
  if ((await page.locator('form[action$="/consent"] button[name="decision"]').count()) > 0) return 'consent';
  return 'other';
}

async function mainDocumentStatus(page) {
  try {
    const entry = await page.evaluate(() => performance.getEntriesByType('navigation')[0]?.responseStatus ?? 0);
    return entry || null;
  } catch {
    return null;
  }
}

function indent(text) {
  return text
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');
}

function stripAnsi(text) {
  return String(text).replace(/\x1b\[[0-9;]*m/g, '');
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// ---- CLI -------------------------------------------------------------------------------------

const USAGE =
  'usage: node tests/e2e/browser/authorize.mjs --url <authorization URL> --email E --password P ' +
  '[--decision approve|deny] [--expect-redirect-prefix URL] [--timeout-ms N] [--quiet]';

async function main(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        url: { type: 'string' },
        email: { type: 'string' },
        password: { type: 'string' },
        decision: { type: 'string', default: 'approve' },
        'expect-redirect-prefix': { type: 'string' },
        'timeout-ms': { type: 'string', default: '60000' },
        quiet: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
      strict: true,
    }));
  } catch (e) {
    process.stderr.write(`authorize: ${e.message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const missing = ['url', 'email', 'password'].filter((k) => values[k] === undefined);
  const timeoutMs = Number(values['timeout-ms']);
  if (missing.length || !['approve', 'deny'].includes(values.decision) || !(timeoutMs > 0)) {
    if (missing.length) process.stderr.write(`authorize: missing ${missing.map((k) => `--${k}`).join(', ')}\n`);
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  try {
    const result = await authorize({
      url: values.url,
      email: values.email,
      password: values.password,
      decision: values.decision,
      expectRedirectPrefix: values['expect-redirect-prefix'],
      timeoutMs,
      log: values.quiet ? () => {} : undefined,
    });
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`authorize: FAILED: ${e.message}\n`);
    return 1;
  }
}

const invokedDirectly = (() => {
  try {
    return process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
})();

if (invokedDirectly) {
  process.exitCode = await main(process.argv.slice(2));
}
