/** Error codes of the protocol (docs/protocol.md, "Errors"). */
export const ErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  Internal: -32603,
  Cancelled: 4001,
  VerificationFailed: 4002,
  RateLimited: 4003,
  Timeout: 4004,
  Forbidden: 4005,
  NotEnrolled: 4006,
  TokenInvalid: 4007,
  UnknownScope: 4008,
  NoPrompter: 4009,
  Locked: 4010,
  KeychainFailed: 4011,
} as const;

/** The data member of an error object; reason is always set. */
export interface ErrorData {
  reason: string;
  hint?: string;
  retryAfterSeconds?: number;
  scope?: string;
  method?: string;
  requiredScope?: string;
  [key: string]: unknown;
}

/**
 * An error object of the agent, {code, message, data}. Test it by code:
 * `err instanceof StepUpError && err.code === ErrorCode.Cancelled`, or
 * with isCancelled(err).
 */
export class StepUpError extends Error {
  readonly code: number;
  readonly reason: string;
  readonly data: ErrorData;
  constructor(code: number, message: string, data?: Partial<ErrorData>) {
    const hint = data?.hint;
    super(hint ? `${message} (hint: ${hint})` : message);
    this.name = 'StepUpError';
    this.code = code;
    this.data = { reason: data?.reason ?? '', ...data } as ErrorData;
    this.reason = this.data.reason;
  }
}

/** The agent could not be reached. */
export class DialError extends Error {
  readonly socket: string;
  readonly hint =
    'start an agent with: eval "$(stepup-agent)"  (or: systemctl --user start stepup-agent.socket), and check that STEPUP_AUTH_SOCK names its socket';
  constructor(socket: string, cause: unknown) {
    super(`cannot reach stepup-agent at ${socket}: ${(cause as Error)?.message ?? cause}`, { cause });
    this.name = 'DialError';
    this.socket = socket;
  }
}

/** Reports whether err (or its cause) is the agent's error with code. */
export function hasCode(err: unknown, code: number): boolean {
  for (let e = err, i = 0; e && i < 8; e = (e as { cause?: unknown }).cause, i++) {
    if (e instanceof StepUpError && e.code === code) return true;
  }
  return false;
}

/** The user dismissed the prompt (4001). */
export const isCancelled = (err: unknown) => hasCode(err, ErrorCode.Cancelled);
/** No live token is held, or a token is bad, expired, consumed or for another scope (4007). */
export const isTokenInvalid = (err: unknown) => hasCode(err, ErrorCode.TokenInvalid);
/** The agent has no way to show a prompt here (4009). */
export const isNoPrompter = (err: unknown) => hasCode(err, ErrorCode.NoPrompter);
