// Suite interop: access tokens from a real Moat (user tokens through the real pages) validate with `jose` (Node) and PyJWT (Python) configured only with the JWKS URL, the issuer and the audience — for ES256 (default), EdDSA and RS256 (MOAT_SIGNING_ALG) — and todo-mcp (moat-guard) accepts each.
//
// Run: tests/e2e/node_modules/node/bin/node --test --test-reporter=spec tests/e2e/interop.test.mjs
// The validation code mirrors docs/protecting-typescript-and-python-servers.md; interop.py is the
// Python half (run with tests/e2e/.venv/bin/python).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, test } from 'node:test';
import { createRemoteJWKSet, jwtVerify, errors } from 'jose';
import { E2E_DIR } from './lib/moat.mjs';
import { startStack } from './lib/stack.mjs';
import { mcpPost, openSession, peek, rpc, userToken } from './lib/clients.mjs';

const log = (m) => process.stderr.write(`[interop] ${m}\n`);
const PYTHON = path.join(E2E_DIR, '.venv', 'bin', 'python');
const ALGS = ['ES256', 'EdDSA', 'RS256'];

const cases = []; // { alg, token, jwks_uri, issuer, audience } for interop.py
const stacks = [];
let failed = false;

after(async () => {
  for (const s of stacks) {
    if (failed) log(await s.logTails(15));
    await s.stop({ keep: failed });
  }
});

/** What an MCP server written in TypeScript does with a bearer token (see the docs). */
async function validate(token, { jwksUrl, issuer, audience }) {
  const jwks = createRemoteJWKSet(new URL(jwksUrl));
  return jwtVerify(token, jwks, { issuer, audience, typ: 'at+jwt', clockTolerance: 30, requiredClaims: ['exp', 'iat', 'sub'] });
}

for (const alg of ALGS) {
  test(`${alg}: jose validates a Moat token with only the JWKS URL, issuer and audience; todo-mcp accepts it`, async (t) => {
    try {
      const stack = await startStack(`interop-${alg.toLowerCase()}`, { log, moatEnv: { MOAT_SIGNING_ALG: alg } });
      stacks.push(stack);
      const token = (await userToken(stack, stack.resource, { scope: 'todo:read', log })).access_token;
      const settings = { jwksUrl: `${stack.moat.baseUrl}/keys`, issuer: stack.resource.issuer, audience: stack.todo.url };
      assert.equal(peek(token).header.alg, alg);

      const { payload, protectedHeader } = await validate(token, settings);
      assert.equal(protectedHeader.alg, alg);
      assert.equal(protectedHeader.typ, 'at+jwt');
      assert.match(payload.sub, /^usr_/);
      assert.equal(payload.scope, 'todo:read');
      t.diagnostic(`jose: ${protectedHeader.alg} kid ${protectedHeader.kid}, sub ${payload.sub}, aud ${JSON.stringify(payload.aud)}`);

      // The same settings refuse what they must.
      await assert.rejects(validate(token, { ...settings, audience: 'http://127.0.0.1:1/other-mcp' }), errors.JWTClaimValidationFailed);
      await assert.rejects(validate(token, { ...settings, issuer: `${settings.issuer}x` }), errors.JWTClaimValidationFailed);
      const [h, p, s] = token.split('.');
      await assert.rejects(validate(`${h}.${p}.${s[0] === 'A' ? 'B' : 'A'}${s.slice(1)}`, settings), errors.JWSSignatureVerificationFailed);

      // moat-guard (todo-mcp) with this algorithm.
      const session = await openSession(stack.todo.url, token);
      const r = await mcpPost(stack.todo.url, rpc('tools/call', { name: 'list_todos', arguments: {} }, 2), { token, session });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json.result.structuredContent, { todos: [] });

      cases.push({ alg, token, jwks_uri: settings.jwksUrl, issuer: settings.issuer, audience: settings.audience });
    } catch (e) {
      failed = true;
      throw e;
    }
  });
}

test('PyJWT validates the same tokens with only the JWKS URL, issuer and audience', async (t) => {
  try {
    assert.equal(cases.length, ALGS.length, 'needs a token for every algorithm from the tests above');
    const child = spawn(PYTHON, [path.join(E2E_DIR, 'interop.py')], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.stdin.end(JSON.stringify(cases));
    const code = await new Promise((resolve) => child.on('exit', resolve));
    const results = out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    for (const r of results) t.diagnostic(`PyJWT ${r.alg}: ${r.problems.length ? r.problems.join('; ') : `valid (key ${r.key_alg}, sub ${r.sub}); refused ${r.refused.join(', ')}`}`);
    assert.equal(code, 0, `interop.py failed:\n${out}\n${err}`);
    assert.deepEqual(results.map((r) => r.alg), ALGS);
    for (const r of results) {
      assert.deepEqual(r.problems, []);
      assert.equal(r.refused.length, 3);
    }
  } catch (e) {
    failed = true;
    throw e;
  }
});
