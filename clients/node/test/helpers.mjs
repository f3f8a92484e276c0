// Test helpers: a real stepup-agent (built from this repository with
// `go build`), TOTP codes from oathtool(1), and the example walletd.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createInterface } from 'node:readline';
import { StepUpClient } from '../dist/index.js';

export const repoRoot = resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..', '..');

/** Skips (or, in CI, fails) when a program is missing. */
export function requireProgram(t, name) {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    if (process.env.CI === 'true' || process.env.STEPUP_TEST_REQUIRE_ALL) throw new Error(`${name} is required (scripts/apt-packages.txt)`);
    t?.skip?.(`${name} not installed`);
    return false;
  }
}

/** Builds the Go main packages into a temporary directory. */
export function build(...pkgs) {
  const dir = mkdtempSync(join(tmpdir(), 'stepup-node-bin'));
  for (const p of pkgs) {
    execFileSync('go', ['build', '-o', join(dir, p.split('/').pop()), './' + p], { cwd: repoRoot, stdio: ['ignore', 'inherit', 'inherit'], timeout: 300_000 });
  }
  return dir;
}

/** Starts `stepup-agent -D` on a private socket; returns {socket, client, stop}. */
export async function startAgent(bin, policy) {
  const dir = mkdtempSync(join(tmpdir(), 'stepup'));
  const socket = join(dir, 'run', 'agent.sock');
  mkdirSync(join(dir, 'run'), { mode: 0o700 });
  const args = ['-D', '-a', socket, '--keychain', 'memory', '--prompter', 'none', '--audit', join(dir, 'audit.jsonl'), '--policy', join(dir, 'policy.yaml')];
  if (policy) writeFileSync(join(dir, 'policy.yaml'), policy);
  let log = '';
  const proc = spawn(join(bin, 'stepup-agent'), args, {
    env: { ...process.env, XDG_RUNTIME_DIR: join(dir, 'run'), XDG_CONFIG_HOME: join(dir, 'config'), XDG_STATE_HOME: join(dir, 'state') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout.on('data', (d) => (log += d));
  proc.stderr.on('data', (d) => (log += d));
  const client = new StepUpClient({ socket, env: {} });
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await client.status();
      break;
    } catch (err) {
      if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`stepup-agent did not start: ${err.message}\n${log}`);
      client.close();
      await sleep(50);
    }
  }
  const stop = async () => {
    client.close();
    if (proc.exitCode === null) {
      proc.kill('SIGTERM');
      await Promise.race([new Promise((r) => proc.once('exit', r)), sleep(5000).then(() => proc.kill('SIGKILL'))]);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  return { socket, client, stop, log: () => log };
}

/** TOTP codes of several credentials, each time step used once (the agent accepts ±1 step). */
export class Totp {
  constructor(client) {
    this.client = client;
    this.creds = [];
  }

  static nextStep(last, nowMs = Date.now()) {
    const s = Math.floor(nowMs / 1000);
    const cur = Math.floor(s / 30);
    const lo = s % 30 >= 27 ? cur : cur - 1;
    for (let ctr = lo; ctr <= cur + 1; ctr++) if (ctr > last) return ctr;
    return undefined;
  }

  /** oathtool computes the code of secret (base32, on stdin) for a time step. */
  static oathtool(secret, ctr) {
    return execFileSync('oathtool', ['--totp', '-b', '-N', `@${ctr * 30}`, '-'], { input: secret + '\n', timeout: 10_000 }).toString().trim();
  }

  async code() {
    for (;;) {
      for (const c of this.creds) {
        const ctr = Totp.nextStep(c.last);
        if (ctr !== undefined) {
          c.last = ctr;
          return Totp.oathtool(c.secret, ctr);
        }
      }
      const next = (Math.floor(Date.now() / 30000) + 1) * 30000 + 200;
      await sleep(next - Date.now());
    }
  }

  /** Enrolls n TOTP credentials (the second and later need a credential:link token). */
  async enroll(n) {
    for (let i = 0; i < n; i++) {
      if (this.creds.length > 0) {
        try {
          await this.client.getToken('credential:link');
        } catch {
          await this.stepUp(['credential:link']);
        }
      }
      const { enrollmentId, secret } = await this.client.enrollStart({ method: 'totp', label: `node test ${i + 1}` });
      const c = { secret, last: 0 };
      c.last = Totp.nextStep(0);
      const fin = await this.client.enrollFinish(enrollmentId, { code: Totp.oathtool(secret, c.last) });
      if (fin.recoveryCodes) this.recoveryCodes = fin.recoveryCodes;
      this.creds.push(c);
    }
  }

  /** Steps up on the custom-UI path: startVerification (with binding: authorizationDetails, cnf), completeVerification with a code. */
  async stepUp(scopes, binding = {}) {
    const ch = await this.client.startVerification('totp', scopes, binding);
    return this.client.completeVerification(ch.challengeId, { code: await this.code() });
  }
}

/** Starts walletd on a free loopback port; returns {url, stop}. */
export async function startWalletd(bin, socket) {
  const proc = spawn(join(bin, 'walletd'), ['-listen', '127.0.0.1:0'], { env: { ...process.env, STEPUP_AUTH_SOCK: socket }, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (d) => (err += d));
  const rl = createInterface({ input: proc.stdout });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`walletd did not start: ${err}`)), 15_000);
    rl.once('line', (line) => {
      clearTimeout(timer);
      resolve(line.replace(/^walletd listening on /, '').trim());
    });
    proc.once('exit', () => reject(new Error(`walletd exited: ${err}`)));
  });
  const stop = async () => {
    if (proc.exitCode === null) {
      proc.kill('SIGTERM');
      await Promise.race([new Promise((r) => proc.once('exit', r)), sleep(5000).then(() => proc.kill('SIGKILL'))]);
    }
  };
  return { url, stop };
}
