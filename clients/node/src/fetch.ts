import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { StepUpClient, callerEnv, type AuthorizationDetail, type Cnf, type TokenResult } from './client.js';
import { isTokenInvalid } from './errors.js';

/** The request header that carries the token unless told otherwise (as in Go's stephttp). */
export const DEFAULT_HEADER = 'X-Elevated-Token';

/** A Bearer or DPoP challenge with RFC 9470's step-up parameters. */
export interface BearerChallenge {
  /** "DPoP" when the server wants key-bound tokens and proofs (RFC 9449); absent for Bearer. */
  scheme?: 'DPoP';
  error?: string;
  errorDescription?: string;
  scopes: string[];
  acrValues: string[];
  /** max_age in seconds, when present. */
  maxAge?: number;
  /** A DPoP challenge's accepted proof algorithms, when it names them. */
  algs?: string[];
}

/** Parses the first Bearer or DPoP challenge of a WWW-Authenticate value (RFC 7235, RFC 6750, RFC 9470, RFC 9449). */
export function parseChallenge(header: string | null | undefined): BearerChallenge | undefined {
  if (!header) return undefined;
  // scheme, then auth-params: name = token / quoted-string, comma separated.
  const re = /\s*,?\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*)))?/gy;
  let m: RegExpExecArray | null;
  let current: Record<string, string> | undefined;
  let bearer: Record<string, string> | undefined;
  let scheme = 'Bearer';
  while ((m = re.exec(header)) !== null && m[0] !== '') {
    const [, name, quoted, bare] = m;
    if (quoted === undefined && bare === undefined) {
      // A scheme (or a token68 we skip).
      current = {};
      const lower = name.toLowerCase();
      if ((lower === 'bearer' || lower === 'dpop') && !bearer) {
        bearer = current;
        scheme = lower === 'dpop' ? 'DPoP' : 'Bearer';
      }
      continue;
    }
    if (current) current[name.toLowerCase()] = quoted !== undefined ? quoted.replace(/\\(.)/g, '$1') : bare!;
  }
  if (!bearer) return undefined;
  const c: BearerChallenge = {
    error: bearer.error,
    errorDescription: bearer.error_description,
    scopes: (bearer.scope ?? '').split(/\s+/).filter(Boolean),
    acrValues: (bearer.acr_values ?? '').split(/\s+/).filter(Boolean),
  };
  if (scheme === 'DPoP') c.scheme = 'DPoP';
  if (bearer.algs !== undefined) c.algs = bearer.algs.split(/\s+/).filter(Boolean);
  if (bearer.max_age !== undefined && /^\d+$/.test(bearer.max_age.trim())) c.maxAge = Number(bearer.max_age.trim());
  return c;
}

export interface StepUpFetchOptions {
  /** The agent; default a new StepUpClient. */
  client?: StepUpClient;
  /** The scope a request needs, or undefined for none (the server may still ask with a challenge). */
  scopeFor?: (req: Request) => string | undefined;
  /** Carries the token; default X-Elevated-Token. "Authorization" sends "Bearer TOKEN". */
  header?: string;
  /**
   * Verifies the user and returns the new token; default client.promptStepUpAuth.
   * Used only for requests with neither details nor a key (it is not told
   * them): stepUpFor takes the whole step-up.
   */
  stepUp?: (scopes: string[], req: Request) => Promise<TokenResult>;
  /**
   * Replaces the whole step-up: the route the challenge's acr_values ask
   * for (promptStepUpAuth, promptMfa or promptReauthenticate), the scopes,
   * the reason, the request's authorizationDetails and the key (cnf). An
   * application with its own UI calls startVerification with them.
   */
  stepUpFor?: (o: StepUpRequest, req: Request) => Promise<TokenResult>;
  /** Reason shown in the prompt; default "METHOD HOST PATH". */
  reason?: (req: Request) => string;
  /** The fetch underneath; default globalThis.fetch. */
  fetch?: typeof fetch;
  /**
   * The authorization details (RFC 9396) of the action a request performs:
   * an array of objects with a string `type` and flat fields, or undefined.
   * The token is asked for and stepped up with them (the prompt shows
   * them), and the server refuses a token approved for anything else.
   */
  detailsFor?: (req: Request) => AuthorizationDetail[] | undefined;
  /**
   * Bind tokens to this process's key (made once per process, in memory,
   * never written anywhere) and send a DPoP proof (RFC 9449) with each
   * request. A server's DPoP challenge turns it on for the retry.
   */
  dpop?: boolean;
}

/** What stepUpFor is asked to verify the user for. */
export interface StepUpRequest {
  method: 'promptStepUpAuth' | 'promptMfa' | 'promptReauthenticate';
  requestedScopes: string[];
  reason: string;
  authorizationDetails?: AuthorizationDetail[];
  cnf?: Cnf;
}

/** A proof-of-possession key: Ed25519, in memory only. */
export interface DPoPKey {
  /** The RFC 7638 thumbprint of the public key: the cnf.jkt of tokens bound to it. */
  readonly jkt: string;
  /** A DPoP proof for one request with token. */
  proof(method: string, url: string, token: string): string;
}

const b64u = (b: Buffer | string) => Buffer.from(b).toString('base64url');

/** Makes a fresh DPoP key. */
export function createDPoPKey(): DPoPKey {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const jwk = publicKey.export({ format: 'jwk' }) as { kty: string; crv: string; x: string };
  const pub = { crv: jwk.crv, kty: jwk.kty, x: jwk.x }; // RFC 7638: required members, sorted
  const jkt = b64u(createHash('sha256').update(JSON.stringify(pub)).digest());
  const header = b64u(JSON.stringify({ typ: 'dpop+jwt', alg: 'EdDSA', jwk: pub }));
  const key: KeyObject = privateKey;
  return {
    jkt,
    proof(method, url, token) {
      const u = new URL(url);
      u.search = '';
      u.hash = '';
      const payload = b64u(JSON.stringify({
        jti: b64u(randomBytes(16)),
        htm: method,
        htu: u.toString(),
        iat: Math.floor(Date.now() / 1000),
        ath: b64u(createHash('sha256').update(token).digest()),
      }));
      const input = `${header}.${payload}`;
      return `${input}.${b64u(sign(null, Buffer.from(input), key))}`;
    },
  };
}

let processKey: DPoPKey | undefined;

/** This process's DPoP key, made on first use: the one every wrapper with dpop binds to. */
export function processDPoPKey(): DPoPKey {
  processKey ??= createDPoPKey();
  return processKey;
}

/** The step-up of a request failed; cause is the agent's StepUpError (isCancelled(err) sees it). */
export class StepUpFetchError extends Error {
  readonly scopes: string[];
  readonly challenge: BearerChallenge | undefined;
  constructor(scopes: string[], challenge: BearerChallenge | undefined, cause: unknown) {
    super(`step-up for ${scopes.join(' ')}: ${(cause as Error)?.message ?? cause}`, { cause });
    this.name = 'StepUpFetchError';
    this.scopes = scopes;
    this.challenge = challenge;
  }
}

interface PeekedClaims {
  scope?: string;
  acr?: string;
  cnf?: { jkt?: string };
  jti?: string;
  exp?: number;
  auth_time?: number;
  single_use?: boolean;
}

/** Reads a token's claims unverified: only to decide whether to attach it; the server verifies. */
function peekClaims(token: string): PeekedClaims | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const c = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    return c && typeof c.jti === 'string' ? c : undefined;
  } catch {
    return undefined;
  }
}

const covers = (c: PeekedClaims, scopes: string[]) => {
  const have = (c.scope ?? '').split(' ');
  return scopes.every((s) => have.includes(s));
};

/** Single-use tokens any wrapper of this process attached: jti -> forget after (ms). */
const attachedOnce = new Map<string, number>();

function markUsed(c: PeekedClaims) {
  if (!c.single_use || !c.jti) return;
  const now = Date.now();
  for (const [id, until] of attachedOnce) if (until < now) attachedOnce.delete(id);
  attachedOnce.set(c.jti, ((c.exp ?? 0) + 60) * 1000);
}

/**
 * Returns a fetch that does what Go's stephttp.Transport does: it attaches
 * the agent's elevated token to each request scopeFor maps to a scope,
 * stepping up when the agent holds none; when the server answers 401 with
 * an RFC 9470 challenge (error="insufficient_user_authentication") it steps
 * up for the challenge's scopes and max_age and retries once. A
 * single-use token is attached to at most one request. A failed step-up
 * rejects with StepUpFetchError (isCancelled(err) when the user said no),
 * and nothing is retried.
 */
export function createStepUpFetch(opts: StepUpFetchOptions = {}): (input: RequestInfo | URL, init?: RequestInit) => Promise<Response> {
  const client = opts.client ?? new StepUpClient();
  const header = opts.header ?? DEFAULT_HEADER;
  const base = opts.fetch ?? globalThis.fetch;
  let queue: Promise<unknown> = Promise.resolve(); // step-ups one at a time

  const withToken = (req: Request, token: string, key: DPoPKey | undefined) => {
    const headers = new Headers(req.headers);
    if (key) headers.set('DPoP', key.proof(req.method, req.url, token));
    if (header.toLowerCase() === 'authorization') headers.set('Authorization', `${key ? 'DPoP' : 'Bearer'} ${token}`);
    else headers.set(header, token);
    return new Request(req, { headers });
  };

  // acr_values route the prompt: only mfa asks for promptMfa, only reauth for promptReauthenticate.
  const route = (ch: BearerChallenge | undefined): StepUpRequest['method'] => {
    const a = ch?.acrValues ?? [];
    if (a.length && a.every((v) => v === 'mfa')) return 'promptMfa';
    if (a.length && a.every((v) => v === 'reauth')) return 'promptReauthenticate';
    return 'promptStepUpAuth';
  };

  const acquire = (req: Request, scopes: string[], ch: BearerChallenge | undefined, refused: string | undefined,
    details: AuthorizationDetail[] | undefined, key: DPoPKey | undefined): Promise<string> => {
    const run = async () => {
      const cnf = key ? { jkt: key.jkt } : undefined;
      let held: string | undefined;
      try {
        held = (await client.call<{ token: string }>('getToken', { scope: scopes[0], authorizationDetails: details, cnf }, { signal: req.signal })).token;
      } catch (err) {
        if (!isTokenInvalid(err)) throw new StepUpFetchError(scopes, ch, err);
      }
      const c = held ? peekClaims(held) : undefined;
      if (held && c && held !== refused && covers(c, scopes) && (c.cnf?.jkt ?? undefined) === cnf?.jkt) {
        const fresh = ch?.maxAge === undefined || Date.now() / 1000 - (c.auth_time ?? 0) <= ch.maxAge;
        const unused = !c.single_use || !attachedOnce.has(c.jti!);
        const acr = !ch?.acrValues.length || ch.acrValues.includes(c.acr ?? '');
        if (fresh && unused && acr) {
          markUsed(c);
          return held;
        }
      }
      let res: TokenResult;
      try {
        const reason = opts.reason ? opts.reason(req) : `${req.method} ${new URL(req.url).host}${new URL(req.url).pathname}`;
        if (opts.stepUpFor) res = await opts.stepUpFor({ method: route(ch), requestedScopes: scopes, reason, authorizationDetails: details, cnf }, req);
        else if (opts.stepUp && !details && !key) res = await opts.stepUp(scopes, req);
        else {
          res = await client.call<TokenResult>(route(ch), {
            requestedScopes: scopes, reason, ...callerEnv(), authorizationDetails: details, cnf,
          }, { signal: req.signal });
        }
      } catch (err) {
        throw new StepUpFetchError(scopes, ch, err);
      }
      const rc = peekClaims(res.token);
      if (!rc || !covers(rc, scopes)) throw new StepUpFetchError(scopes, ch, new Error('the agent returned a token that does not carry the scopes'));
      markUsed(rc);
      return res.token;
    };
    const p = queue.then(run, run);
    queue = p.catch(() => {});
    return p;
  };

  return async (input, init) => {
    const req = new Request(input, init);
    const scope = opts.scopeFor?.(req);
    const scopes = scope ? [scope] : [];
    const details = opts.detailsFor?.(req);
    // A spare copy for the one retry (the body is teed, so streams replay too).
    const spare = req.clone();
    let first = req;
    let sent: string | undefined;
    const key = opts.dpop ? processDPoPKey() : undefined;
    if (scopes.length) {
      sent = await acquire(req, scopes, undefined, undefined, details, key);
      first = withToken(req, sent, key);
    }
    const resp = await base(first);
    if (resp.status !== 401) return resp;
    const ch = parseChallenge(resp.headers.get('www-authenticate'));
    if (ch?.error !== 'insufficient_user_authentication') return resp;
    const want = ch.scopes.length ? ch.scopes : scopes;
    if (!want.length) return resp;
    const retryKey = key ?? (ch.scheme === 'DPoP' ? processDPoPKey() : undefined);
    let token: string;
    try {
      token = await acquire(spare, want, ch, sent, details, retryKey);
    } finally {
      await resp.body?.cancel().catch(() => {});
    }
    return base(withToken(spare, token, retryKey));
  };
}
