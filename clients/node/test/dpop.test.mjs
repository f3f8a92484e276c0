// DPoP proofs and DPoP challenges of the fetch wrapper, on their own
// (ipc/stepup/stephttp's TestNodeFetchDPoPAgainstMiddleware checks the
// proofs against the Go middleware's verifier).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPublicKey, verify } from 'node:crypto';
import { createDPoPKey, processDPoPKey, parseChallenge } from '../dist/index.js';

const dec = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));

test('a DPoP proof names its key, request and token, and verifies', () => {
  const k = createDPoPKey();
  const p = k.proof('POST', 'https://Wallet.example/export?address=0x12ab#x', 'tok');
  const [h, b, s] = p.split('.');
  const header = dec(h);
  const claims = dec(b);
  assert.equal(header.typ, 'dpop+jwt');
  assert.equal(header.alg, 'EdDSA');
  assert.deepEqual(Object.keys(header.jwk), ['crv', 'kty', 'x']);
  assert.equal(createHash('sha256').update(JSON.stringify(header.jwk)).digest('base64url'), k.jkt);
  assert.equal(claims.htm, 'POST');
  assert.equal(claims.htu, 'https://wallet.example/export');
  assert.equal(claims.ath, createHash('sha256').update('tok').digest('base64url'));
  assert.ok(Math.abs(claims.iat - Date.now() / 1000) < 5);
  assert.ok(verify(null, Buffer.from(`${h}.${b}`), createPublicKey({ key: header.jwk, format: 'jwk' }), Buffer.from(s, 'base64url')));
  assert.notEqual(dec(k.proof('POST', 'https://wallet.example/export', 'tok').split('.')[1]).jti, claims.jti, 'a jti is reused');
  assert.equal(processDPoPKey(), processDPoPKey(), 'the process key changes');
  assert.notEqual(createDPoPKey().jkt, k.jkt);
});

test('parseChallenge reads DPoP challenges', () => {
  assert.deepEqual(parseChallenge('DPoP error="invalid_dpop_proof", algs="EdDSA ES256"'), {
    scheme: 'DPoP', error: 'invalid_dpop_proof', errorDescription: undefined, scopes: [], acrValues: [], algs: ['EdDSA', 'ES256'],
  });
  assert.equal(parseChallenge('Bearer error="x"').scheme, undefined);
});
