// The package as a user gets it: `npm pack` installed into a fresh project
// and a plain `npm install PATH` of the repository's folder, each without a
// manual build, and the README's example run against a real agent.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build, startAgent, requireProgram, repoRoot, Totp } from './helpers.mjs';

const pkgDir = join(repoRoot, 'clients', 'node');
const ready = requireProgram(undefined, 'go') && requireProgram(undefined, 'oathtool');
// npm from the cache only: tests talk to nothing but loopback.
const npmEnv = { ...process.env, npm_config_prefer_offline: 'true', npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' };

function npm(cwd, ...args) {
  return execFileSync('npm', args, { cwd, env: npmEnv, encoding: 'utf8', timeout: 300_000, stdio: ['ignore', 'pipe', 'pipe'] });
}

function freshProject() {
  const dir = mkdtempSync(join(tmpdir(), 'stepup-node-project'));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'fresh', version: '1.0.0', type: 'module', private: true }));
  return dir;
}

/** The first ```js block of the README, as a user would paste it. */
function readmeExample() {
  const m = readFileSync(join(pkgDir, 'README.md'), 'utf8').match(/```js\n([\s\S]*?)```/);
  assert.ok(m, 'README.md has a ```js example');
  return m[1] + "\nconsole.log('README example ran');\n";
}

describe('stepup-agent-client as installed', { skip: !ready && 'go or oathtool missing' }, () => {
  let bin, tmp;
  const cleanups = [];
  before(() => {
    bin = build('cmd/stepup-agent');
    tmp = mkdtempSync(join(tmpdir(), 'stepup-node-pack'));
  });
  after(async () => {
    for (const c of cleanups.reverse()) await c();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('npm pack installs into a fresh project and the README example runs against a real agent', async () => {
    const tarball = join(tmp, npm(pkgDir, 'pack', '--pack-destination', tmp, '--silent').trim().split('\n').pop());
    const listing = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' });
    for (const f of ['package/dist/index.js', 'package/dist/index.d.ts', 'package/README.md', 'package/package.json']) {
      assert.ok(listing.split('\n').includes(f), `${f} in the tarball:\n${listing}`);
    }
    assert.ok(!listing.includes('package/src/'), 'no sources in the tarball');
    assert.ok(!listing.includes('package/test/'), 'no tests in the tarball');

    const project = freshProject();
    cleanups.push(() => rmSync(project, { recursive: true, force: true }));
    npm(project, 'install', '--offline', tarball);
    writeFileSync(join(project, 'example.mjs'), readmeExample());

    // A scope that needs no step-up: the example goes straight through.
    const open = await startAgent(bin, 'scopes:\n  wallet:export:\n    required: false\n');
    cleanups.push(open.stop);
    let r = spawnSync(process.execPath, ['example.mjs'], { cwd: project, env: { ...process.env, STEPUP_AUTH_SOCK: open.socket }, encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /README example ran/);

    // The built-in policy: step-up is required, and this agent has no
    // prompter: with a TOTP credential enrolled the example reaches
    // promptStepUpAuth, which refuses (4009 no_prompter); it never goes on.
    const closed = await startAgent(bin);
    cleanups.push(closed.stop);
    await new Totp(closed.client).enroll(1);
    r = spawnSync(process.execPath, ['example.mjs'], { cwd: project, env: { ...process.env, STEPUP_AUTH_SOCK: closed.socket }, encoding: 'utf8', timeout: 60_000 });
    assert.notEqual(r.status, 0);
    assert.doesNotMatch(r.stdout, /README example ran/);
    assert.match(r.stderr, /reason: 'no_prompter'/);
  });

  test('npm install of the repository folder builds dist/ itself (prepare)', () => {
    // A checkout as a user has it: no node_modules, no dist.
    const checkout = join(tmp, 'checkout');
    cpSync(pkgDir, checkout, { recursive: true, filter: (src) => !/[/\\](node_modules|dist)$/.test(src) });
    assert.ok(!existsSync(join(checkout, 'dist')));
    const project = freshProject();
    cleanups.push(() => rmSync(project, { recursive: true, force: true }));
    npm(project, 'install', checkout);
    const r = spawnSync(process.execPath, ['--input-type=module', '-e',
      "import { StepUpClient } from 'stepup-agent-client'; console.log(typeof new StepUpClient().isStepUpRequired)"],
      { cwd: project, encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'function');
    assert.ok(existsSync(join(checkout, 'dist', 'index.d.ts')), 'type declarations built');
  });
});
