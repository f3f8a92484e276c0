// The attacker of the socket-swap test, run as another user (setpriv
// --reuid nobody): a fake agent on a socket in a directory of its own,
// and a loop that keeps replacing the victim's socket directory entry
// ($TMPDIR/stepup-UID, in a sticky world-writable $TMPDIR as /tmp is)
// with a symlink to the victim's real agent directory, then one to its
// own, as fast as it can. A client that checks the path and then
// connects by it reaches the fake between the two. It prints the number
// of connections its fake agent accepted when told to stop (SIGTERM).
//
//   node swapper.mjs ENTRY REAL_DIR OWN_DIR
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';

const [entry, realDir, ownDir] = process.argv.slice(2);
fs.mkdirSync(ownDir, { mode: 0o700 });
const sock = path.join(ownDir, 'agent.sock');
let accepted = 0;
const srv = net.createServer((c) => {
  accepted++;
  c.setEncoding('utf8');
  let buf = '';
  c.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        const { id } = JSON.parse(line);
        c.write(JSON.stringify({ jsonrpc: '2.0', id, result: { version: 'fake agent', locked: false } }) + '\n');
      } catch {
        /* not JSON */
      }
    }
  });
  c.on('error', () => {});
});
srv.listen(sock, () => {
  fs.chmodSync(sock, 0o777);
  process.stdout.write('ready\n');
  const tmp = [entry + '.a', entry + '.b'];
  let stop = false;
  process.on('SIGTERM', () => { stop = true; });
  const loop = () => {
    for (let i = 0; i < 200 && !stop; i++) {
      for (const [t, target] of [[tmp[0], realDir], [tmp[1], ownDir]]) {
        try { fs.unlinkSync(t); } catch { /* not there */ }
        try { fs.symlinkSync(target, t); fs.renameSync(t, entry); } catch { /* raced */ }
      }
    }
    if (stop) {
      process.stdout.write(`accepted ${accepted}\n`);
      srv.close();
      process.exit(0);
    }
    setImmediate(loop);
  };
  loop();
});
