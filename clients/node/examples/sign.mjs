// Sign a message with walletd; the fetch wrapper steps up for wallet:sign
// and attaches the token (X-Elevated-Token), and answers walletd's RFC 9470
// challenges, so this code never touches a token.
import { createStepUpFetch, isCancelled } from 'stepup-agent-client';

const url = process.env.WALLETD_URL ?? 'http://127.0.0.1:8420';
const stepUpFetch = createStepUpFetch({
  scopeFor: (req) => (new URL(req.url).pathname === '/sign' ? 'wallet:sign' : undefined),
});

try {
  const resp = await stepUpFetch(`${url}/sign`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ message: 'hello' }),
  });
  const { signature } = await resp.json();
  console.log('signature', signature);
} catch (err) {
  if (isCancelled(err)) console.error('cancelled: nothing was signed');
  else throw err;
  process.exitCode = 1;
}
