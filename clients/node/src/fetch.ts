import { StepUpClient, type TokenResult } from './client.js';
import { isTokenInvalid } from './errors.js';

/** The request header that carries the token unless told otherwise (as in Go's stephttp). */
export const DEFAULT_HEADER = 'X-Elevated-Token';

/** A Bearer challenge with RFC 9470's step-up parameters. */
export interface BearerChallenge {
  error?: string;
  errorDescription?: string;
  scopes: string[];
  acrValues: string[];
  /** max_age in seconds, when present. */
  maxAge?: number;
}

/** Parses the Bearer challenge of a WWW-Authenticate value (RFC 7235, RFC 6750, RFC 9470). */
export function parseChallenge(header: string | null | undefined): BearerChallenge | undefined {
  if (!header) return undefined;
  // scheme, then auth-params: name = token / quoted-string, comma separated.
  const re = /\s*,?\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*)))?/gy;
  let m: RegExpExecArray | null;
  let current: Record<string, string> | undefined;
  let bearer: Record<string, string> | undefined;
  while ((m = re.exec(header)) !== null && m[0] !== '') {
    const [, name, quoted, bare] = m;
    if (quoted === undefined && bare === undefined) {
      // A scheme (or a token68 we skip).
      current = {};
      if (name.toLowerCase() === 'bearer' && !bearer) bearer = current;
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
  /** Verifies the user and returns the new token; default client.promptStepUpAuth. */
  stepUp?: (scopes: string[], req: Request) => Promise<TokenResult>;
  /** Reason shown in the prompt; default "METHOD HOST PATH". */
  reason?: (req: Request) => string;
  /** The fetch underneath; default globalThis.fetch. */
  fetch?: typeof fetch;
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

  const withToken = (req: Request, token: string) => {
    const headers = new Headers(req.headers);
    if (header.toLowerCase() === 'authorization') headers.set('Authorization', `Bearer ${token}`);
    else headers.set(header, token);
    return new Request(req, { headers });
  };

  const acquire = (req: Request, scopes: string[], ch: BearerChallenge | undefined, refused: string | undefined): Promise<string> => {
    const run = async () => {
      let held: string | undefined;
      try {
        held = (await client.getToken(scopes[0], { signal: req.signal })).token;
      } catch (err) {
        if (!isTokenInvalid(err)) throw new StepUpFetchError(scopes, ch, err);
      }
      const c = held ? peekClaims(held) : undefined;
      if (held && c && held !== refused && covers(c, scopes)) {
        const fresh = ch?.maxAge === undefined || Date.now() / 1000 - (c.auth_time ?? 0) <= ch.maxAge;
        const unused = !c.single_use || !attachedOnce.has(c.jti!);
        if (fresh && unused) {
          markUsed(c);
          return held;
        }
      }
      let res: TokenResult;
      try {
        res = opts.stepUp
          ? await opts.stepUp(scopes, req)
          : await client.promptStepUpAuth({
              requestedScopes: scopes,
              reason: opts.reason ? opts.reason(req) : `${req.method} ${new URL(req.url).host}${new URL(req.url).pathname}`,
              signal: req.signal,
            });
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
    // A spare copy for the one retry (the body is teed, so streams replay too).
    const spare = req.clone();
    let first = req;
    let sent: string | undefined;
    if (scopes.length) {
      sent = await acquire(req, scopes, undefined, undefined);
      first = withToken(req, sent);
    }
    const resp = await base(first);
    if (resp.status !== 401) return resp;
    const ch = parseChallenge(resp.headers.get('www-authenticate'));
    if (ch?.error !== 'insufficient_user_authentication') return resp;
    const want = ch.scopes.length ? ch.scopes : scopes;
    if (!want.length) return resp;
    let token: string;
    try {
      token = await acquire(spare, want, ch, sent);
    } finally {
      await resp.body?.cancel().catch(() => {});
    }
    return base(withToken(spare, token));
  };
}
