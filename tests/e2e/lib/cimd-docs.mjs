// A real HTTPS server publishing Client ID Metadata Documents for the CIMD suite: a throw-away CA and a server certificate for a test host name (default `clients.test`) made with the openssl CLI, a Node `https` server on 127.0.0.1 serving the published documents (and a logo), and a log of every request it got (so a test can prove who fetched what, and how often).
//
//   const docs = await CimdDocs.start(dir);           // dir: a work dir under tests/e2e/.work/
//   const url = docs.publish('ts-sdk', { client_name: 'x', redirect_uris: [...] });
//       // → https://clients.test:<port>/ts-sdk.json, served with client_id = that URL exactly
//   docs.moatEnv    // MOAT_CIMD_ALLOW_LOOPBACK, MOAT_CIMD_EXTRA_ROOT_CA, MOAT_CIMD_RESOLVE for `moat serve`
//   docs.hits('/ts-sdk.json')  // requests received for a path: [{ method, path, userAgent, host, at }]
//   docs.tlsErrors             // failed TLS handshakes (someone not trusting the CA tried to connect)
//   await docs.stop();
//
// Only Moat needs to trust the CA and resolve the name (through the env above): the MCP clients
// under test never fetch their own documents.

import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A 1×1 PNG, the logo every document may point at. */
export const LOGO_PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==',
  'base64',
);

async function openssl(args, cwd) {
  try {
    await run('openssl', args, { cwd, timeout: 30_000 });
  } catch (e) {
    throw new Error(`openssl ${args.join(' ')} failed (is the openssl CLI installed?): ${e.stderr || e.message}`);
  }
}

/**
 * A CA (ca.pem) and a certificate for `host` signed by it (server.pem, server.key), P-256, valid
 * for two days, written to `dir`. Returns the paths.
 */
export async function makeCertificates(dir, host) {
  const p = (f) => path.join(dir, f);
  // prettier-ignore
  await openssl([
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Moat e2e CIMD test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ], dir);
  // prettier-ignore
  await openssl([
    'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'server.key', '-out', 'server.csr', '-subj', `/CN=${host}`,
  ], dir);
  await writeFile(
    p('server.ext'),
    `subjectAltName=DNS:${host}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n`,
  );
  // prettier-ignore
  await openssl([
    'x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext',
  ], dir);
  return { ca: p('ca.pem'), cert: p('server.pem'), key: p('server.key') };
}

export class CimdDocs {
  /**
   * Makes the certificates in `dir` and starts the HTTPS server on 127.0.0.1 (a free port).
   * `cacheControl` is sent with every document (default: cacheable for five minutes).
   */
  static async start(dir, { host = 'clients.test', cacheControl = 'public, max-age=300', log = () => {} } = {}) {
    const files = await makeCertificates(dir, host);
    const docs = new CimdDocs(host, files, cacheControl, log);
    await docs.#listen();
    return docs;
  }

  constructor(host, files, cacheControl, log) {
    this.host = host;
    this.files = files;
    this.cacheControl = cacheControl;
    this.log = log;
    this.documents = new Map(); // path → JSON text
    this.requests = [];
    this.tlsErrors = []; // failed TLS handshakes: a client that does not trust the CA tried to fetch
    this.server = null;
    this.port = 0;
  }

  async #listen() {
    const [key, cert] = await Promise.all([readFile(this.files.key), readFile(this.files.cert)]);
    this.server = https.createServer({ key, cert }, (req, res) => this.#handle(req, res));
    this.server.on('tlsClientError', (err) => {
      this.tlsErrors.push(err.message);
      this.log(`TLS handshake failed: ${err.message}`);
    });
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    this.port = this.server.address().port;
    this.origin = `https://${this.host}:${this.port}`;
    this.log(`CIMD document server on ${this.origin} (127.0.0.1:${this.port}), CA ${this.files.ca}`);
  }

  #handle(req, res) {
    const pathname = new URL(req.url, this.origin).pathname;
    this.requests.push({ method: req.method, path: pathname, userAgent: req.headers['user-agent'] ?? '', host: req.headers.host ?? '', at: Date.now() });
    this.log(`${req.method} ${req.url} (User-Agent: ${req.headers['user-agent'] ?? '-'})`);
    if (req.method !== 'GET') {
      res.writeHead(405, { allow: 'GET' }).end();
      return;
    }
    if (pathname === '/logo.png') {
      res.writeHead(200, { 'content-type': 'image/png', 'cache-control': this.cacheControl, 'content-length': LOGO_PNG.length }).end(LOGO_PNG);
      return;
    }
    const body = this.documents.get(pathname);
    if (body === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('no such document');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': this.cacheControl, 'content-length': Buffer.byteLength(body) }).end(body);
  }

  /** The environment `moat serve` needs to fetch from this server (loopback, the CA, the name). */
  get moatEnv() {
    return {
      MOAT_CIMD_ALLOW_LOOPBACK: 'true',
      MOAT_CIMD_EXTRA_ROOT_CA: this.files.ca,
      MOAT_CIMD_RESOLVE: `${this.host}=127.0.0.1`,
    };
  }

  /** The URL of the logo this server serves. */
  get logoUrl() {
    return `${this.origin}/logo.png`;
  }

  /**
   * Publishes `/<name>.json`: `fields` plus `client_id` = the document's own URL (exactly) and
   * the defaults of a public MCP client. Returns that URL.
   */
  publish(name, fields) {
    const url = `${this.origin}/${name}.json`;
    const doc = {
      client_id: url,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      ...fields,
    };
    this.documents.set(`/${name}.json`, JSON.stringify(doc));
    return url;
  }

  /** The requests received for `pathname`. */
  hits(pathname) {
    return this.requests.filter((r) => r.path === pathname);
  }

  /** One line per request, for failure messages. */
  formatRequests() {
    return this.requests.map((r) => `  ${r.method} ${r.path} (User-Agent: ${r.userAgent || '-'})`).join('\n') || '  (none)';
  }

  async stop() {
    if (!this.server) return;
    this.server.closeAllConnections?.();
    await new Promise((resolve) => this.server.close(() => resolve()));
    this.server = null;
  }
}
