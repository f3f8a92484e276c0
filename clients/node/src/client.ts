import * as net from 'node:net';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import { DialError, StepUpError } from './errors.js';

/** Where the requester sits, so that the agent's prompt reaches the user. */
export interface PromptEnv {
  tty?: string;
  term?: string;
  display?: string;
  waylandDisplay?: string;
  lang?: string;
}

/** One credential a method can verify with (isStepUpRequired's list). */
export interface CredentialRef {
  id: string;
  method: string;
  label?: string;
}

export interface StepUpRequired {
  required: boolean;
  scope: string;
  methods: string[];
  defaultMethod?: string;
  expiresAt?: string;
  /** The credentials of the listed methods, the default one first. */
  credentials?: CredentialRef[];
  defaultCredentialId?: string;
  /** The agent is locked: every step-up is refused until unlock. */
  locked?: boolean;
  /** The scope's binding: process, client, session or user. */
  bind?: string;
}

export interface TokenResult {
  token: string;
  scopes: string[];
  expiresAt: string;
  singleUse: boolean;
  method: string;
  /** What the agent ignored in the request, and why (a deprecated parameter). */
  warnings?: string[];
}

export interface Token {
  token: string;
  scopes: string[];
  expiresAt: string;
  singleUse: boolean;
}

export interface Claims {
  iss: string;
  sub: string;
  scope: string;
  jti: string;
  iat: number;
  exp: number;
  auth_time: number;
  amr: string[];
  single_use: boolean;
  acr?: string;
  authorization_details?: AuthorizationDetail[];
  cnf?: Cnf;
}

export interface Challenge {
  challengeId: string;
  method: string;
  expiresAt: string;
  challenge: Record<string, unknown>;
}

/** One entry of authorizationDetails (RFC 9396): a string `type` and flat fields. */
export type AuthorizationDetail = { type: string } & Record<string, string | number | boolean>;

/** The key a token is bound to (RFC 9449): the RFC 7638 thumbprint of its public JWK. */
export interface Cnf {
  jkt: string;
}

/**
 * What a token is for. authorizationDetails name the action: the prompt
 * shows them, the token carries them, and a held token counts (getToken,
 * checkStepUp) and verifies only with equal details. cnf binds it to a
 * key (see createDPoPKey).
 */
export interface Binding {
  authorizationDetails?: AuthorizationDetail[];
  cnf?: Cnf;
}

export interface PromptOptions extends Binding {
  /** requestedScopes of the token. */
  requestedScopes: string[];
  /** A verification method; empty lets the agent choose. */
  method?: string;
  /** Shown in the prompt. */
  reason?: string;
  timeoutSeconds?: number;
  /**
   * @deprecated The seed SDK's parameter: the agent ignores it beside
   * requestedScopes (and says so in the result's warnings) and refuses
   * it alone. Pass requestedScopes instead.
   */
  createMfaToken?: boolean;
  /** Aborting dismisses the prompt. */
  signal?: AbortSignal;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface ClientOptions {
  /** The agent's socket; default $STEPUP_AUTH_SOCK or the default path. */
  socket?: string;
  /** The prompt environment; default this process's own (tty, TERM, DISPLAY, ...). */
  env?: PromptEnv;
}

/** The socket clients use: $STEPUP_AUTH_SOCK, else the default path. */
export function socketPath(): string {
  if (process.env.STEPUP_AUTH_SOCK) return process.env.STEPUP_AUTH_SOCK;
  if (process.env.XDG_RUNTIME_DIR) return path.join(process.env.XDG_RUNTIME_DIR, 'stepup', 'agent.sock');
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  return path.join(process.env.TMPDIR || '/tmp', `stepup-${uid}`, 'agent.sock');
}

/** This process's prompt environment. */
export function callerEnv(): PromptEnv {
  const e = process.env;
  let tty = e.STEPUP_TTY || e.GPG_TTY || '';
  if (!tty) {
    for (const fd of [0, 1, 2]) {
      try {
        const stream = [process.stdin, process.stdout, process.stderr][fd] as { isTTY?: boolean };
        if (stream.isTTY && os.platform() === 'linux') {
          tty = fs.readlinkSync(`/proc/self/fd/${fd}`);
          break;
        }
      } catch {
        /* no tty */
      }
    }
  }
  const env: PromptEnv = {};
  if (tty) env.tty = tty;
  if (e.TERM) env.term = e.TERM;
  if (e.DISPLAY) env.display = e.DISPLAY;
  if (e.WAYLAND_DISPLAY) env.waylandDisplay = e.WAYLAND_DISPLAY;
  const lang = e.LC_ALL || e.LC_CTYPE || e.LANG;
  if (lang) env.lang = lang;
  return env;
}

const MAX_LINE = 64 * 1024;

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/** One JSON-RPC connection: newline-delimited, pipelined, matched by id. */
class Connection {
  private sock: net.Socket;
  private next = 0;
  private pending = new Map<number, Pending>();
  private buf = '';
  private failure: Error | undefined;
  readonly ready: Promise<void>;

  constructor(socket: string) {
    // Throws DialError when the socket is not to be trusted.
    const pin = pinSocket(socket);
    this.sock = net.createConnection({ path: pin.path });
    this.sock.setEncoding('utf8');
    this.ready = new Promise((resolve, reject) => {
      this.sock.once('connect', () => {
        // Connected: check again that what we reached is the socket we
        // checked, in the directory we hold open.
        const problem = pin.recheck();
        pin.release();
        if (problem) {
          const err = new DialError(socket, new Error(problem));
          this.fail(err);
          reject(err);
          return;
        }
        resolve();
      });
      this.sock.once('error', (err) => {
        pin.release();
        reject(new DialError(socket, err));
      });
    });
    this.ready.catch(() => {});
    this.sock.on('data', (chunk: string) => this.onData(chunk));
    this.sock.on('error', (err) => this.fail(err));
    this.sock.on('close', () => this.fail(new Error('stepup-agent closed the connection')));
  }

  get broken(): boolean {
    return this.failure !== undefined;
  }

  private onData(chunk: string) {
    this.buf += chunk;
    let i: number;
    while ((i = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, i);
      this.buf = this.buf.slice(i + 1);
      this.onLine(line);
    }
    if (this.buf.length > MAX_LINE) this.fail(new Error('stepup-agent sent a line over 64 KiB'));
  }

  private onLine(line: string) {
    let msg: { id?: unknown; result?: unknown; error?: { code: number; message: string; data?: Record<string, unknown> } };
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    const p = typeof msg.id === 'number' ? this.pending.get(msg.id) : undefined;
    if (!p) {
      // A null id: the agent refused the connection or a line.
      if (msg.error) this.fail(toError(msg.error));
      return;
    }
    this.pending.delete(msg.id as number);
    if (this.pending.size === 0) this.sock.unref();
    if (msg.error) p.reject(toError(msg.error));
    else p.resolve(msg.result);
  }

  fail(err: Error) {
    if (!this.failure) this.failure = err;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(this.failure);
    }
    this.sock.destroy();
  }

  async call(method: string, params: unknown, signal?: AbortSignal): Promise<unknown> {
    await this.ready;
    if (this.failure) throw this.failure;
    signal?.throwIfAborted();
    const id = ++this.next;
    const line = JSON.stringify({ jsonrpc: '2.0', id, method, params: params ?? {} }) + '\n';
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.pending.delete(id);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(id, {
        resolve: (v) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(v);
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      });
      this.sock.ref();
      this.sock.write(line);
    });
  }

  close() {
    this.fail(new Error('client closed'));
  }
}

function toError(e: { code: number; message: string; data?: Record<string, unknown> }): StepUpError {
  return new StepUpError(e.code, e.message, e.data as Partial<import('./errors.js').ErrorData>);
}

/**
 * Says why the socket at p is not to be trusted, or undefined: the
 * checks connect() makes, without connecting. A missing socket is left to
 * connect() to report.
 */
export function socketProblem(p: string): string | undefined {
  let pin: PinnedSocket;
  try {
    pin = pinSocket(p);
  } catch (err) {
    if ((err as DialError).cause && ((err as DialError).cause as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return ((err as DialError).cause as Error)?.message ?? String(err);
  }
  pin.release();
  return undefined;
}

/** A socket path checked and held for one connect(). */
interface PinnedSocket {
  /** The path to connect to. */
  path: string;
  /** Checks again, after connecting; says what is wrong, or undefined. */
  recheck(): string | undefined;
  /** Closes the directory held open. */
  release(): void;
}

/**
 * Checks the agent's socket and holds its directory for the connect().
 *
 * Node cannot read a Unix socket's peer credentials (SO_PEERCRED; the Go
 * client checks them after connecting), so the client makes sure of the
 * place instead: the directory is opened without following a symlink
 * (O_NOFOLLOW | O_DIRECTORY, so a symlinked directory is refused), and
 * the open directory is checked with fstat: it is this user's, and nobody
 * else can write to it, so nobody else can have made or replaced the
 * socket in it. The socket in it must be a socket of this user's that
 * nobody else can write to (the agent makes it 0600). On
 * Linux the connection is then made through /proc/self/fd/N/NAME, the
 * directory held open, so that swapping the path between the check and
 * the connect() changes nothing. Elsewhere (macOS) it connects by the
 * path and, once connected, checks that the path still names the same
 * directory and socket (device and inode). Otherwise another local user
 * who can rename the path's entry (its own symlink in /tmp) could put a
 * fake agent there and collect the codes and passwords typed for it.
 */
function pinSocket(p: string): PinnedSocket {
  if (typeof process.getuid !== 'function') return { path: p, recheck: () => undefined, release: () => {} };
  const uid = process.getuid();
  const dirName = path.dirname(p);
  const base = path.basename(p);
  const fail = (msg: string, code?: string): never => {
    const cause: NodeJS.ErrnoException = new Error(msg);
    if (code) cause.code = code;
    throw new DialError(p, cause);
  };
  let fd: number;
  try {
    fd = fs.openSync(dirName, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ELOOP' || e.code === 'ENOTDIR' || e.code === 'EMLINK') {
      let what = 'not a directory';
      try {
        if (fs.lstatSync(dirName).isSymbolicLink()) what = 'a symbolic link';
      } catch {
        /* gone */
      }
      return fail(`${dirName} is ${what}: the agent's socket directory must be a real directory of yours`);
    }
    throw new DialError(p, e);
  }
  let ok = false;
  try {
    const dirProblem = (): string | undefined => {
      const d = fs.fstatSync(fd);
      if (!d.isDirectory()) return `${dirName} is not a directory`;
      if (d.uid !== uid) return `${dirName} belongs to uid ${d.uid}, not to you (uid ${uid}): it is not your agent, do not use it`;
      if ((d.mode & 0o022) !== 0) return `others can write to ${dirName} (mode ${(d.mode & 0o777).toString(8)}): its socket cannot be trusted`;
      return undefined;
    };
    const viaFd = `/proc/self/fd/${fd}`;
    const pinned = process.platform === 'linux' && fs.existsSync(viaFd);
    const connectPath = pinned ? path.join(viaFd, base) : p;
    const problem = dirProblem();
    if (problem) fail(problem);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(connectPath);
    } catch (err) {
      throw new DialError(p, err);
    }
    if (!st.isSocket()) fail(`${p} is not a socket`);
    if (st.uid !== uid) fail(`${p} belongs to uid ${st.uid}, not to you (uid ${uid}): it is not your agent, do not use it`);
    // The agent makes its socket 0600 (the systemd unit's SocketMode too).
    if ((st.mode & 0o022) !== 0) fail(`others can write to ${p} (mode ${(st.mode & 0o777).toString(8)}): it is not how the agent makes its socket; do not use it`);
    const dirSt = fs.fstatSync(fd);
    ok = true;
    let released = false;
    return {
      path: connectPath,
      recheck: () => {
        const dp = dirProblem();
        if (dp) return dp;
        try {
          const now = fs.lstatSync(connectPath);
          if (now.dev !== st.dev || now.ino !== st.ino) return `${p} was replaced while connecting`;
          if (!pinned) {
            const d = fs.lstatSync(dirName);
            if (d.dev !== dirSt.dev || d.ino !== dirSt.ino) return `${dirName} was replaced while connecting`;
          }
        } catch (err) {
          return `${p} changed while connecting: ${(err as Error).message}`;
        }
        return undefined;
      },
      release: () => {
        if (!released) {
          released = true;
          fs.closeSync(fd);
        }
      },
    };
  } finally {
    if (!ok) fs.closeSync(fd);
  }
}

/**
 * The client of stepup-agent. Its vocabulary is the step-up API of
 * Dynamic's JavaScript SDK: isStepUpRequired, promptStepUpAuth, promptMfa,
 * promptReauthenticate, resetState; plus the custom-UI and token calls.
 * Calls share one connection (pipelined, and unref'd while idle so it
 * does not keep the process alive); prompts use a connection of their
 * own, closed when their signal aborts, which dismisses the prompt.
 */
export class StepUpClient {
  readonly socket: string;
  private readonly env: PromptEnv | undefined;
  private conn: Connection | undefined;

  constructor(opts: ClientOptions = {}) {
    this.socket = opts.socket ?? socketPath();
    this.env = opts.env;
  }

  /** Sends one request; the escape hatch for methods without a helper. */
  call<T = unknown>(method: string, params: unknown = {}, opts: CallOptions = {}): Promise<T> {
    if (!this.conn || this.conn.broken) {
      try {
        this.conn = new Connection(this.socket);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return this.conn.call(method, params, opts.signal) as Promise<T>;
  }

  /** Runs one call on a connection of its own, closed afterwards. */
  private async callOwn<T>(method: string, params: unknown, signal?: AbortSignal): Promise<T> {
    signal?.throwIfAborted();
    const c = new Connection(this.socket);
    const onAbort = () => c.fail(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return (await c.call(method, params, signal)) as T;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      c.close();
    }
  }

  /** Closes the shared connection; the client may be used again. */
  close(): void {
    this.conn?.close();
    this.conn = undefined;
  }

  /**
   * Whether scope needs step-up now. Fails closed: any error (no agent, a
   * denied scope) means true. checkStepUp gives the whole answer.
   */
  async isStepUpRequired(scope: string, opts: CallOptions & Binding = {}): Promise<boolean> {
    try {
      return (await this.checkStepUp(scope, opts)).required !== false;
    } catch {
      return true;
    }
  }

  /** isStepUpRequired with the whole answer; errors are thrown. */
  checkStepUp(scope: string, opts: CallOptions & Binding = {}): Promise<StepUpRequired> {
    return this.call('isStepUpRequired', { scope, authorizationDetails: opts.authorizationDetails, cnf: opts.cnf }, opts);
  }

  private promptParams(o: PromptOptions) {
    const env = this.env ?? callerEnv();
    return {
      requestedScopes: o.requestedScopes,
      method: o.method || undefined,
      reason: o.reason || undefined,
      timeoutSeconds: o.timeoutSeconds || undefined,
      authorizationDetails: o.authorizationDetails,
      cnf: o.cnf,
      createMfaToken: o.createMfaToken,
      ...env,
    };
  }

  /** Verifies the user (MFA when they have an MFA credential, re-authentication otherwise). */
  promptStepUpAuth(o: PromptOptions): Promise<TokenResult> {
    return this.callOwn('promptStepUpAuth', this.promptParams(o), o.signal);
  }

  /** Verifies the user with an MFA method (TOTP, passkey, recovery code). */
  promptMfa(o: PromptOptions): Promise<TokenResult> {
    return this.callOwn('promptMfa', this.promptParams(o), o.signal);
  }

  /** Verifies the user with a re-authentication method (password, email or SMS code, wallet). */
  promptReauthenticate(o: PromptOptions): Promise<TokenResult> {
    return this.callOwn('promptReauthenticate', this.promptParams(o), o.signal);
  }

  /** Revokes the tokens of scopes, or all; returns how many. */
  async resetState(scopes?: string[], opts: CallOptions = {}): Promise<number> {
    const r = await this.call<{ revoked: number }>('resetState', scopes?.length ? { scopes } : {}, opts);
    return r.revoked;
  }

  /** Starts a custom-UI verification. */
  startVerification(method: string, requestedScopes: string[], opts: CallOptions & Binding = {}): Promise<Challenge> {
    return this.call('startVerification', { method, requestedScopes, authorizationDetails: opts.authorizationDetails, cnf: opts.cnf }, opts);
  }

  /** Answers a challenge ({code} for TOTP and recovery codes) and returns the token. */
  completeVerification(challengeId: string, response: Record<string, unknown>, opts: CallOptions = {}): Promise<TokenResult> {
    return this.call('completeVerification', { challengeId, response }, opts);
  }

  /** The token the agent holds for scope; throws 4007 token_invalid when none. */
  getToken(scope: string, opts: CallOptions & Binding = {}): Promise<Token> {
    return this.call('getToken', { scope, authorizationDetails: opts.authorizationDetails, cnf: opts.cnf }, opts);
  }

  /** Checks a token for scope, consuming a single-use one when consume is set. */
  async verifyToken(token: string, scope: string, consume = false, opts: CallOptions = {}): Promise<Claims> {
    const r = await this.call<{ valid: boolean; claims: Claims }>('verifyToken', { token, scope, consume: consume || undefined }, opts);
    return r.claims;
  }

  /** Begins enrolling a credential: {method, label?, address?, phone?}. */
  enrollStart(params: { method: string; [k: string]: unknown }, opts: CallOptions = {}): Promise<Record<string, unknown> & { enrollmentId: string }> {
    return this.call('enrollStart', params, opts);
  }

  /** Completes an enrollment. */
  enrollFinish(
    enrollmentId: string,
    response: Record<string, unknown>,
    opts: CallOptions = {},
  ): Promise<{ method: string; credentialId: string; recoveryCodes?: string[] }> {
    return this.callOwn('enrollFinish', { enrollmentId, response }, opts.signal);
  }

  async listCredentials(opts: CallOptions = {}): Promise<{ id: string; method: string; label: string; createdAt: string }[]> {
    return (await this.call<{ credentials: [] }>('listCredentials', {}, opts)).credentials;
  }

  /** Removes a credential (needs a credential:unlink token). */
  async removeCredential(credentialId: string, opts: CallOptions = {}): Promise<void> {
    await this.call('removeCredential', { credentialId }, opts);
  }

  status(opts: CallOptions = {}): Promise<Record<string, unknown> & { version: string; pid: number }> {
    return this.call('status', {}, opts);
  }

  /** The agent's token-signing public keys, a JWK Set (RFC 7517). */
  jwks(opts: CallOptions = {}): Promise<{ keys: Record<string, unknown>[] }> {
    return this.call('jwks', {}, opts);
  }

  /** Exchanges a backend's signed assertion for a token, with no user interaction. */
  requestExternalAuthElevatedToken(assertion: string, requestedScopes: string[], opts: CallOptions = {}): Promise<TokenResult> {
    return this.call('requestExternalAuthElevatedToken', { assertion, requestedScopes }, opts);
  }

  /** Revokes every token and refuses prompts until unlock. */
  async lock(opts: CallOptions = {}): Promise<void> {
    await this.call('lock', {}, opts);
  }

  /** Verifies the user and unlocks the agent. */
  async unlock(o: PromptOptions): Promise<void> {
    await this.callOwn('unlock', this.promptParams(o), o.signal);
  }
}
