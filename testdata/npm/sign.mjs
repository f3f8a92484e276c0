// An independent wallet for method/wallet's tests: ethers v6 signs as a
// wallet's personal_sign does (EIP-191), and siwe parses the message as a
// relying party would (EIP-4361).
//
// Input on stdin, JSON: {"privateKey"?: "0x..", "message"?: "..", "parse"?: true}
//   privateKey absent: a random wallet is made.
// Output on stdout, JSON: {"address": "0x.." (EIP-55), "privateKey": "0x..",
//   "signature"?: "0x..", "siwe"?: {domain, address, statement, uri, version,
//   chainId, nonce, issuedAt, expirationTime}}
// A message that does not parse as EIP-4361 exits 1 with the reason on stderr.
import { Wallet } from "ethers";
import { SiweMessage } from "siwe";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const req = JSON.parse(input);
const wallet = req.privateKey ? new Wallet(req.privateKey) : Wallet.createRandom();
const out = { address: wallet.address, privateKey: wallet.privateKey };
if (typeof req.message === "string") {
  out.signature = await wallet.signMessage(req.message);
  if (req.parse) {
    try {
      const m = new SiweMessage(req.message);
      out.siwe = {
        domain: m.domain, address: m.address, statement: m.statement, uri: m.uri,
        version: m.version, chainId: m.chainId, nonce: m.nonce,
        issuedAt: m.issuedAt, expirationTime: m.expirationTime,
      };
    } catch (e) {
      process.stderr.write("not an EIP-4361 message: " + (e && e.message ? e.message : String(e)) + "\n");
      process.exit(1);
    }
  }
}
process.stdout.write(JSON.stringify(out) + "\n");
