// The Node client against a real stepup-agent and the example walletd.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import {
  StepUpClient, StepUpError, StepUpFetchError, ErrorCode, createStepUpFetch, createDPoPKey, parseChallenge,
  isCancelled, isNoPrompter, isTokenInvalid, socketPath, socketProblem,
} from '../dist/index.js';
import { build, startAgent, startWalletd, Totp, requireProgram, repoRoot } from './helpers.mjs';

// restoreEnv puts process.env back as saved, in place: assigning a plain
// object to process.env would cut it off from the process's real
// environment (TMPDIR left pointing at a removed directory for the tests
// that follow).
function restoreEnv(saved) {
  for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
  Object.assign(process.env, saved);
}

const run = promisify(execFile);

/** walletd's export states the wallet it exports: the token must carry these details. */
const exportDetails = (req) => {
  const m = /^\/export\/(.+)$/.exec(new URL(req.url).pathname);
  return m ? [{ type: 'wallet_export', address: decodeURIComponent(m[1]) }] : undefined;
};

/** walletd's wallet addresses, from GET /balance. */
const walletsOf = async (url) => {
  const b = await (await fetch(url + '/balance')).json();
  assert.equal(b.wallets.length, 2);
  return b.wallets.map((w) => w.address);
};
let bin, agent, client, totp, walletd;
const ready = requireProgram(undefined, 'oathtool') && requireProgram(undefined, 'go');

describe('stepup-agent-client', { skip: !ready && 'oathtool or go missing' }, () => {
  before(async () => {
    bin = build('cmd/stepup-agent', 'examples/walletd');
    // The recipe test steps up in this process for examples/sign.mjs, a
    // script of its own: under the default client binding it would not
    // see the token, so this agent shares wallet:sign user-wide (policy
    // bind: user, docs/binding.md), the one case here where sharing is
    // the point.
    agent = await startAgent(bin, 'scopes:\n  "wallet:sign":\n    bind: user\n');
    client = agent.client;
    totp = new Totp(client);
    await totp.enroll(4);
    walletd = await startWalletd(bin, agent.socket);
  });
  after(async () => {
    await walletd?.stop();
    await agent?.stop();
  });

  test('socketPath follows STEPUP_AUTH_SOCK, then XDG_RUNTIME_DIR', () => {
    const saved = { ...process.env };
    try {
      process.env.STEPUP_AUTH_SOCK = '/x/agent.sock';
      assert.equal(socketPath(), '/x/agent.sock');
      delete process.env.STEPUP_AUTH_SOCK;
      process.env.XDG_RUNTIME_DIR = '/run/user/7';
      assert.equal(socketPath(), '/run/user/7/stepup/agent.sock');
      delete process.env.XDG_RUNTIME_DIR;
      process.env.TMPDIR = '/tmp';
      assert.equal(socketPath(), `/tmp/stepup-${process.getuid()}/agent.sock`);
    } finally {
      restoreEnv(saved);
    }
  });

  test('status and jwks', async () => {
    const st = await client.status();
    assert.equal(typeof st.version, 'string');
    const jwks = await client.jwks();
    assert.equal(jwks.keys.length, 1);
    assert.equal(jwks.keys[0].kty, 'OKP');
    assert.equal(jwks.keys[0].crv, 'Ed25519');
  });

  test('isStepUpRequired fails closed', async () => {
    assert.equal(await client.isStepUpRequired('wallet:export'), true);
    const nowhere = new StepUpClient({ socket: '/nonexistent/agent.sock' });
    assert.equal(await nowhere.isStepUpRequired('wallet:export'), true);
    await assert.rejects(nowhere.checkStepUp('wallet:export'), { name: 'DialError' });
  });

  test('custom-UI step-up, getToken, verifyToken with consume, resetState', async () => {
    const res = await totp.stepUp(['wallet:export']);
    assert.deepEqual(res.scopes, ['wallet:export']);
    assert.equal(res.singleUse, true);
    assert.equal(await client.isStepUpRequired('wallet:export'), false);
    assert.equal((await client.getToken('wallet:export')).token, res.token);
    const claims = await client.verifyToken(res.token, 'wallet:export', true);
    assert.equal(claims.scope, 'wallet:export');
    assert.deepEqual(claims.amr, ['otp']);
    await assert.rejects(client.verifyToken(res.token, 'wallet:export', true), (err) => {
      assert.ok(err instanceof StepUpError);
      assert.equal(err.code, ErrorCode.TokenInvalid);
      assert.equal(err.reason, 'token_invalid');
      return isTokenInvalid(err);
    });
    await assert.rejects(client.getToken('wallet:export'), isTokenInvalid);
    await totp.stepUp(['wallet:sign']);
    assert.equal(await client.resetState(['wallet:sign']), 1);
    assert.equal(await client.isStepUpRequired('wallet:sign'), true);
  });

  test('a wrong code is verification_failed', async () => {
    const ch = await client.startVerification('totp', ['wallet:sign']);
    await assert.rejects(client.completeVerification(ch.challengeId, { code: '000000x' }), (err) => err.code === ErrorCode.VerificationFailed || err.code === ErrorCode.InvalidParams);
  });

  test('promptStepUpAuth, promptMfa, promptReauthenticate: typed errors', async () => {
    for (const m of ['promptStepUpAuth', 'promptMfa']) {
      await assert.rejects(client[m]({ requestedScopes: ['wallet:sign'], reason: 'test' }), (err) => isNoPrompter(err) && err.data.reason === 'no_prompter');
    }
    // With an MFA credential enrolled, re-authentication may not mint tokens.
    await assert.rejects(client.promptReauthenticate({ requestedScopes: ['wallet:sign'] }), (err) => err instanceof StepUpError && err.code === ErrorCode.Forbidden);
  });

  test('createMfaToken (deprecated) is sent as the seed sends it: alone it is refused, naming requestedScopes', async () => {
    await assert.rejects(client.promptStepUpAuth({ requestedScopes: [], createMfaToken: true }),
      (err) => err instanceof StepUpError && err.code === ErrorCode.InvalidParams && /requestedScopes/.test(err.message));
    // Beside requestedScopes it is ignored: the request goes on to the prompt (none here).
    await assert.rejects(client.promptStepUpAuth({ requestedScopes: ['wallet:sign'], createMfaToken: true }), (err) => isNoPrompter(err));
  });

  test('isStepUpRequired answers with the binding, the lock and the credentials', async () => {
    const r = await client.checkStepUp('wallet:sign');
    assert.equal(r.required, true);
    assert.ok(['process', 'client', 'session', 'user'].includes(r.bind), JSON.stringify(r));
    assert.equal(r.locked ?? false, false);
    assert.ok(r.credentials && r.credentials.some((c) => c.method === 'totp' && c.id), JSON.stringify(r));
    assert.equal(r.defaultCredentialId, r.credentials[0].id);
  });

  test('pipelined calls on one connection', async () => {
    const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => client.checkStepUp(i % 2 ? 'wallet:sign' : 'wallet:export')));
    assert.equal(rs.length, 20);
    assert.ok(rs.every((r) => r.required === true));
  });

  describe('fetch wrapper against walletd', () => {
    let stepUps = 0;
    let sent = 0;
    let wallets;
    const countingFetch = (req) => {
      sent++;
      return fetch(req);
    };
    let sfetch;
    const makeFetch = () => createStepUpFetch({
      client,
      scopeFor: (req) => (new URL(req.url).pathname === '/sign' ? 'wallet:sign' : undefined),
      detailsFor: exportDetails,
      // The step-up with the request's details (and key): the custom-UI path.
      stepUpFor: (o) => {
        stepUps++;
        return totp.stepUp(o.requestedScopes, { authorizationDetails: o.authorizationDetails, cnf: o.cnf });
      },
      fetch: countingFetch,
    });
    const call = async (path, body, want) => {
      stepUps = 0;
      sent = 0;
      const resp = await sfetch(walletd.url + path, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
      const json = await resp.json();
      assert.equal(resp.status, 200, JSON.stringify(json));
      assert.deepEqual({ stepUps, sent }, want);
      return json;
    };

    before(async () => {
      await client.resetState();
      sfetch = makeFetch();
      wallets = await walletsOf(walletd.url);
    });

    test('first call steps up; the multi-use token is reused', async () => {
      assert.match((await call('/sign', '{"message":"hi"}', { stepUps: 1, sent: 1 })).signature, /^0x/);
      await call('/sign', '{"message":"again"}', { stepUps: 0, sent: 1 });
    });

    test('RFC 9470 challenge answered and retried once, with the body', async () => {
      const got = await call(`/export/${wallets[0]}`, '{"why":"backup"}', { stepUps: 1, sent: 2 });
      assert.match(got.privateKey, /^0x/);
      assert.equal(got.address, wallets[0]);
    });

    test('single-use: the next export steps up again', async () => {
      await call(`/export/${wallets[1]}`, '{}', { stepUps: 1, sent: 2 });
    });

    test('a token approved for one wallet is refused for the other, and still good for its own', async () => {
      const forA = await totp.stepUp(['wallet:export'], { authorizationDetails: exportDetails(new Request(`${walletd.url}/export/${wallets[0]}`)) });
      const post = (addr) => fetch(`${walletd.url}/export/${addr}`, { method: 'POST', headers: { 'X-Elevated-Token': forA.token } });
      const b = await post(wallets[1]);
      assert.equal(b.status, 401);
      const ch = parseChallenge(b.headers.get('www-authenticate'));
      assert.equal(ch.error, 'insufficient_user_authentication');
      assert.match(ch.errorDescription, /other authorization details/);
      const a = await post(wallets[0]);
      assert.equal(a.status, 200);
      assert.equal((await a.json()).address, wallets[0]);
    });

    test('a cancelled step-up rejects, typed, with no retry loop', async () => {
      let tries = 0;
      sent = 0;
      const cancelled = createStepUpFetch({
        client,
        fetch: countingFetch,
        stepUp: async () => {
          tries++;
          throw new StepUpError(ErrorCode.Cancelled, 'the user dismissed the prompt', { reason: 'cancelled' });
        },
      });
      await assert.rejects(cancelled(`${walletd.url}/export/${wallets[0]}`, { method: 'POST', body: '{}' }), (err) => {
        assert.ok(err instanceof StepUpFetchError);
        assert.equal(err.challenge.error, 'insufficient_user_authentication');
        assert.deepEqual(err.challenge.scopes, ['wallet:export']);
        return isCancelled(err);
      });
      assert.deepEqual({ tries, sent }, { tries: 1, sent: 1 });
    });

    test('the default step-up prompts through the agent (no prompter here: typed error)', async () => {
      await client.resetState();
      const def = createStepUpFetch({ client });
      await assert.rejects(def(`${walletd.url}/export/${wallets[0]}`, { method: 'POST' }), isNoPrompter);
    });

    test('without a step-up the server answers with the challenge', async () => {
      const resp = await fetch(`${walletd.url}/export/${wallets[0]}`, { method: 'POST' });
      assert.equal(resp.status, 401);
      const ch = parseChallenge(resp.headers.get('www-authenticate'));
      assert.equal(ch.error, 'insufficient_user_authentication');
      assert.deepEqual(ch.scopes, ['wallet:export']);
    });
  });

  describe('fetch wrapper with DPoP against walletd, proofOfPossession: required', () => {
    let pop, popTotp, popWalletd, wallets;
    let stepUps = 0;
    const sent = [];
    before(async () => {
      pop = await startAgent(bin, 'scopes:\n  "wallet:sign":\n    proofOfPossession: required\n  "wallet:export":\n    proofOfPossession: required\n');
      popTotp = new Totp(pop.client);
      await popTotp.enroll(3);
      popWalletd = await startWalletd(bin, pop.socket);
      wallets = await walletsOf(popWalletd.url);
    });
    after(async () => {
      await popWalletd?.stop();
      await pop?.stop();
    });
    const make = (dpop) => createStepUpFetch({
      client: pop.client,
      dpop,
      scopeFor: (req) => (new URL(req.url).pathname === '/sign' ? 'wallet:sign' : undefined),
      detailsFor: exportDetails,
      stepUpFor: (o) => {
        stepUps++;
        return popTotp.stepUp(o.requestedScopes, { authorizationDetails: o.authorizationDetails, cnf: o.cnf });
      },
      fetch: (req) => {
        sent.push({ token: req.headers.get('X-Elevated-Token'), proof: req.headers.get('DPoP') });
        return fetch(req);
      },
    });
    const post = (f, path, headers = {}) => f(popWalletd.url + path, { method: 'POST', body: '{"message":"hi"}', headers: { 'content-type': 'application/json', ...headers } });

    test('signs and exports with key-bound tokens and a proof on every request', async () => {
      const f = make(true);
      for (const [path, key, want] of [['/sign', 'signature', 1], ['/sign', 'signature', 0], [`/export/${wallets[0]}`, 'privateKey', 1]]) {
        stepUps = 0;
        sent.length = 0;
        const resp = await post(f, path);
        const body = await resp.json();
        assert.equal(resp.status, 200, `${path}: ${JSON.stringify(body)}`);
        assert.match(body[key], /^0x/);
        assert.equal(stepUps, want, `${path}: step-ups`);
        const last = sent[sent.length - 1];
        assert.ok(last.token && last.proof, `${path}: sent without a token or a DPoP proof`);
      }
    });

    test('a copied token is refused without its proof, with its replayed proof, and with another key\'s proof', async () => {
      const f = make(true);
      sent.length = 0;
      assert.equal((await post(f, '/sign')).status, 200);
      const { token, proof } = sent[sent.length - 1];
      const refused = async (headers, what) => {
        const resp = await post(fetch, '/sign', { 'X-Elevated-Token': token, ...headers });
        assert.equal(resp.status, 401, what);
        const ch = parseChallenge(resp.headers.get('www-authenticate'));
        assert.equal(ch.scheme, 'DPoP', what);
        assert.equal(ch.error, 'invalid_dpop_proof', what);
      };
      await refused({}, 'no proof');
      await refused({ DPoP: proof }, 'the replayed proof');
      await refused({ DPoP: createDPoPKey().proof('POST', popWalletd.url + '/sign', token) }, "another key's proof");
    });

    test('without dpop the agent will not mint the scope (4005)', async () => {
      await assert.rejects(post(make(false), '/sign'), (err) => {
        assert.ok(err instanceof StepUpFetchError);
        assert.equal(err.cause.code, ErrorCode.Forbidden);
        assert.match(err.message, /proofOfPossession: required/);
        return true;
      });
    });
  });

  // The attack of issue 11: another user owns the entry $TMPDIR/stepup-UID
  // (in a sticky, world-writable $TMPDIR, as /tmp is) and keeps swapping
  // it between a symlink to the user's real agent directory and one to
  // its own, where a fake agent listens. A client that checks the path
  // and then connects by it reached the fake in 361 of 2000 calls.
  test('another user swapping the socket directory never gets a call', async (t) => {
    if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
      if (process.env.CI === 'true' || process.env.STEPUP_TEST_REQUIRE_ALL) throw new Error('running the attacker as another user needs root (setpriv)');
      t.skip('running the attacker as another user needs root (setpriv)');
      return;
    }
    if (!requireProgram(t, 'setpriv')) return;
    const { mkdtempSync, chmodSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { spawn } = await import('node:child_process');
    const { createInterface } = await import('node:readline');
    const base = mkdtempSync(join(tmpdir(), 'stepup-swap-'));
    chmodSync(base, 0o1777);
    const entry = join(base, `stepup-${process.getuid()}`);
    const swapper = join(repoRoot, 'clients', 'node', 'test', 'swapper.mjs');
    const proc = spawn('setpriv', ['--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups', '--', process.execPath, swapper, entry, dirname(agent.socket), join(base, 'attacker')], { stdio: ['ignore', 'pipe', 'inherit'], cwd: '/' });
    const lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
    assert.equal((await lines.next()).value, 'ready');
    const saved = { ...process.env };
    let fake = 0, real = 0, refused = 0, symlinkRefusals = 0;
    const calls = 2000;
    try {
      delete process.env.STEPUP_AUTH_SOCK;
      delete process.env.XDG_RUNTIME_DIR;
      process.env.TMPDIR = base;
      assert.equal(socketPath(), join(entry, 'agent.sock'));
      for (let i = 0; i < calls; i++) {
        const c = new StepUpClient({ env: {} });
        try {
          const st = await c.status();
          if (st.version === 'fake agent') fake++;
          else real++;
        } catch (err) {
          refused++;
          if (/symbolic link/.test(err.message)) symlinkRefusals++;
        } finally {
          c.close();
        }
      }
    } finally {
      restoreEnv(saved);
      proc.kill('SIGTERM');
    }
    const last = await lines.next();
    await new Promise((r) => (proc.exitCode === null ? proc.once('exit', r) : r()));
    rmSync(base, { recursive: true, force: true });
    const accepted = Number(/accepted (\d+)/.exec(last.value ?? '')?.[1] ?? NaN);
    t.diagnostic(`${calls} calls: ${fake} answered by the fake agent, ${real} by the real one, ${refused} refused (${symlinkRefusals} for a symlinked directory); the fake accepted ${accepted} connections`);
    assert.equal(fake, 0, `the fake agent answered ${fake} of ${calls} calls`);
    assert.equal(accepted, 0, `the fake agent accepted ${accepted} connections`);
    assert.ok(symlinkRefusals > 0, 'the attacker never had its symlink in place: the test proves nothing');
  });

  test('a symlinked socket directory is refused, even one to the real agent', async () => {
    const { mkdtempSync, symlinkSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const base = mkdtempSync(join(tmpdir(), 'stepup-link-'));
    try {
      symlinkSync(dirname(agent.socket), join(base, 'stepup'));
      const c = new StepUpClient({ socket: join(base, 'stepup', 'agent.sock') });
      await assert.rejects(c.status(), (err) => err.name === 'DialError' && /is a symbolic link: the agent's socket directory must be a real directory of yours/.test(err.message));
      assert.equal(await c.isStepUpRequired('wallet:export'), true);
      assert.match(socketProblem(join(base, 'stepup', 'agent.sock')), /symbolic link/);
      assert.equal(socketProblem(agent.socket), undefined);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  test('docs/integrating.md: the Node recipe is examples/sign.mjs and runs', async () => {
    const recipe = readFileSync(join(import.meta.dirname, '..', 'examples', 'sign.mjs'), 'utf8');
    const doc = readFileSync(join(repoRoot, 'docs', 'integrating.md'), 'utf8');
    assert.ok(doc.includes('```js\n' + recipe + '```\n'), 'docs/integrating.md must quote clients/node/examples/sign.mjs verbatim');
    // The agent holds a wallet:sign token, so the recipe's step-up is not needed.
    await totp.stepUp(['wallet:sign']);
    const { stdout } = await run(process.execPath, [join(import.meta.dirname, '..', 'examples', 'sign.mjs')], {
      env: { ...process.env, STEPUP_AUTH_SOCK: agent.socket, WALLETD_URL: walletd.url },
      timeout: 30_000,
    });
    assert.match(stdout, /signature 0x[0-9a-f]+/);
  });
});

test('parseChallenge', () => {
  assert.deepEqual(parseChallenge('Basic realm="x", Bearer error="insufficient_user_authentication", error_description="say \\"hi\\"", scope="a:b c:d", max_age=30'), {
    error: 'insufficient_user_authentication', errorDescription: 'say "hi"', scopes: ['a:b', 'c:d'], acrValues: [], maxAge: 30,
  });
  assert.deepEqual(parseChallenge('Bearer error="insufficient_user_authentication", acr_values="myACR", max_age="5"'), {
    error: 'insufficient_user_authentication', errorDescription: undefined, scopes: [], acrValues: ['myACR'], maxAge: 5,
  });
  assert.equal(parseChallenge('Basic realm="x"'), undefined);
  assert.equal(parseChallenge(null), undefined);
});

test('a socket in a directory others can write to is not trusted', async () => {
  const { mkdtempSync, chmodSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const net = await import('node:net');
  const dir = mkdtempSync(join(tmpdir(), 'stepup-impostor-'));
  const sock = join(dir, 'agent.sock');
  let connected = false;
  const srv = net.createServer(() => { connected = true; });
  await new Promise((resolve) => srv.listen(sock, resolve));
  try {
    chmodSync(dir, 0o777);
    const c = new StepUpClient({ socket: sock });
    await assert.rejects(c.status(), (err) => err.name === 'DialError' && /others can write to .* \(mode 777\)/.test(err.message));
    assert.equal(await c.isStepUpRequired('wallet:export'), true);
    assert.equal(connected, false, 'the client connected to an untrusted socket');
    chmodSync(dir, 0o700);
    chmodSync(sock, 0o666);
    const open = new StepUpClient({ socket: sock });
    await assert.rejects(open.status(), (err) => err.name === 'DialError' && /others can write to .*agent\.sock \(mode 666\)/.test(err.message));
    assert.equal(connected, false, 'the client connected to a socket others can write to');
    chmodSync(sock, 0o600);
    const ok = new StepUpClient({ socket: sock });
    await assert.rejects(ok.status({ signal: AbortSignal.timeout(200) }));
    assert.equal(connected, true, 'a socket in a private directory was refused');
    ok.close();
  } finally {
    srv.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
