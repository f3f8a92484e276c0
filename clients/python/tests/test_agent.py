"""The Python client against a real stepup-agent (and the example walletd).

The binaries are built from this checkout with go (or taken from
$STEPUP_BIN_DIR). In CI (CI=true or STEPUP_TEST_REQUIRE_ALL) a missing
prerequisite (go, oathtool, root and setpriv for the other-uid tests)
fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from stepup_agent import (Client, DialError, NoPrompterError, TokenInvalidError,  # noqa: E402
                          VerificationFailedError, WrongOwnerError)
from stepup_agent.http import StepUpHandler, TokenSource, parse_challenge  # noqa: E402

STRICT = bool(os.environ.get("STEPUP_TEST_REQUIRE_ALL") or os.environ.get("CI"))


def missing(what: str) -> None:
    if STRICT:
        raise AssertionError(f"missing prerequisite: {what}")
    raise unittest.SkipTest(f"missing prerequisite: {what}")


def program(name: str) -> str:
    p = shutil.which(name)
    if p is None:
        missing(f"{name} (see scripts/apt-packages.txt)")
    return p  # type: ignore[return-value]


_built: Optional[str] = None


def binaries() -> str:
    """The directory of stepup-agent and walletd, built once per run."""
    global _built
    if os.environ.get("STEPUP_BIN_DIR"):
        return os.environ["STEPUP_BIN_DIR"]
    if _built is None:
        go = program("go")
        _built = tempfile.mkdtemp(prefix="stepup-py-bin-")
        os.chmod(_built, 0o755)
        subprocess.run([go, "build", "-o", _built + "/", "./cmd/stepup-agent", "./examples/walletd"],
                       cwd=ROOT, check=True, env=dict(os.environ, CGO_ENABLED="0"))
    return _built


def tearDownModule() -> None:
    if _built is not None:
        shutil.rmtree(_built, ignore_errors=True)


class World:
    """A private agent: memory keychain, no prompter, one TOTP credential."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="stepup-py-")
        self.bin = binaries()
        self.oathtool = program("oathtool")
        run = os.path.join(self.dir, "run")
        os.mkdir(run, 0o700)
        with open(os.path.join(self.dir, "policy.yaml"), "w") as f:
            f.write("lockOnSleep: false\nscopes:\n  docs:read:\n    required: false\n")
        self.sock = os.path.join(run, "stepup", "agent.sock")
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": self.dir, "XDG_RUNTIME_DIR": run,
                    "XDG_STATE_HOME": os.path.join(self.dir, "state"), "XDG_CONFIG_HOME": os.path.join(self.dir, "config"),
                    "STEPUP_AUTH_SOCK": self.sock}
        self.log = open(os.path.join(self.dir, "agent.log"), "w")
        self.agent = subprocess.Popen([os.path.join(self.bin, "stepup-agent"), "-D", "-a", self.sock, "--keychain", "memory",
                                       "--prompter", "none", "--policy", os.path.join(self.dir, "policy.yaml"),
                                       "--audit", os.path.join(self.dir, "audit.jsonl")],
                                      env=self.env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 15
        while not os.path.exists(self.sock):
            if time.time() > deadline or self.agent.poll() is not None:
                raise AssertionError("the agent did not start: " + open(self.log.name).read())
            time.sleep(0.05)
        self.client = Client(self.sock)
        self.last_counter = -1
        self.walletd: Optional[subprocess.Popen] = None
        start = self.client.call("enrollStart", {"method": "totp"})
        self.secret = str(start["secret"])
        self.client.call("enrollFinish", {"enrollmentId": start["enrollmentId"], "response": {"code": self.code()}})

    def code(self) -> str:
        """A TOTP code of a step not used yet: the agent accepts each step
        once and ±1 step of skew, so codes come from the previous, current
        and next step, then from waiting for the next one."""
        now = int(time.time()) // 30
        counter = max(self.last_counter + 1, now - 1)
        while counter > int(time.time()) // 30 + 1:
            time.sleep(0.5)
        self.last_counter = counter
        out = subprocess.run([self.oathtool, "--totp", "-b", "-N", f"@{counter * 30 + 15}", self.secret],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def step_up(self, scopes: List[str]):
        """The custom-UI path: what an application with its own UI does."""
        ch = self.client.start_verification("totp", scopes)
        return self.client.complete_verification(ch.challenge_id, {"code": self.code()})

    def step_up_for_export(self, scopes: List[str], address: str):
        """The custom-UI path for walletd's export of address, whose
        authorization details the token must carry (the client has no
        parameter for them yet: the raw call)."""
        r = self.client.call("startVerification", {"method": "totp", "requestedScopes": scopes,
                                                   "authorizationDetails": [{"type": "wallet_export", "address": address}]})
        return self.client.complete_verification(str(r["challengeId"]), {"code": self.code()})

    def start_walletd(self) -> str:
        self.walletd = subprocess.Popen([os.path.join(self.bin, "walletd"), "-listen", "127.0.0.1:0"], env=self.env,
                                        stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.walletd.stdout.readline()  # type: ignore[union-attr]
        if "listening on " not in line:
            raise AssertionError(f"walletd: {line!r}")
        return line.split("listening on ", 1)[1].strip()

    def close(self) -> None:
        for p in (self.walletd, self.agent):
            if p is not None:
                p.kill()
                p.wait()
                if p.stdout is not None:
                    p.stdout.close()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class AgentTest(unittest.TestCase):
    world: World

    @classmethod
    def setUpClass(cls) -> None:
        cls.world = World()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.world.close()

    def setUp(self) -> None:
        self.world.client.reset_state()

    def test_custom_ui_step_up_with_totp(self) -> None:
        c = self.world.client
        self.assertTrue(c.is_step_up_required("wallet:export"))
        self.assertFalse(c.is_step_up_required("docs:read"), "the policy says docs:read needs no step-up")
        ch = c.start_verification("totp", ["wallet:export"])
        self.assertEqual(ch.method, "totp")
        self.assertEqual(ch.challenge, {})
        with self.assertRaises(VerificationFailedError) as e:
            c.complete_verification(ch.challenge_id, {"code": "000000"})
        self.assertEqual(e.exception.code, 4002)
        ch = c.start_verification("totp", ["wallet:export"])
        tok = c.complete_verification(ch.challenge_id, {"code": self.world.code()})
        self.assertEqual(tok.scopes, ["wallet:export"])
        self.assertTrue(tok.single_use)
        self.assertEqual(tok.method, "totp")
        self.assertNotIn(tok.token, repr(tok), "repr never shows the token")
        self.assertFalse(c.is_step_up_required("wallet:export"), "a held token: no step-up")
        held = c.get_token("wallet:export")
        self.assertIsNotNone(held)
        claims = c.verify_token(tok.token, "wallet:export", consume=True)
        self.assertEqual(claims["scope"], "wallet:export")
        self.assertIn("otp", claims["amr"])
        self.assertTrue(c.is_step_up_required("wallet:export"), "consumed: step-up again")
        self.assertIsNone(c.get_token("wallet:export"))
        with self.assertRaises(TokenInvalidError):
            c.verify_token(tok.token, "wallet:export", consume=True)

    def test_prompt_calls_reach_the_agent(self) -> None:
        # The agent runs with --prompter none and this process has no
        # terminal to offer: the prompt calls get 4009 with what to do.
        c = Client(self.world.sock)
        for call in (c.prompt_step_up_auth, c.prompt_mfa):
            with self.assertRaises(NoPrompterError) as e:
                call(["wallet:export"], reason="python test")
            self.assertEqual(e.exception.code, 4009)
            self.assertEqual(e.exception.reason, "no_prompter")
        with self.assertRaises(TypeError):
            c.prompt_step_up_auth("wallet:export")  # type: ignore[arg-type]

    def test_reset_state(self) -> None:
        c = self.world.client
        self.world.step_up(["wallet:sign"])
        self.assertFalse(c.is_step_up_required("wallet:sign"))
        self.assertEqual(c.reset_state(["wallet:sign"]), 1)
        self.assertTrue(c.is_step_up_required("wallet:sign"))

    def test_rfc9470_helper_against_walletd(self) -> None:
        base = self.world.start_walletd()
        step_ups: List[List[str]] = []

        addr = ""

        def step_up(scopes: List[str]):
            step_ups.append(scopes)
            if scopes == ["wallet:export"]:
                # walletd's export is approved for one wallet: its details.
                return self.world.step_up_for_export(scopes, addr)
            return self.world.step_up(scopes)

        opener = urllib.request.build_opener(StepUpHandler(TokenSource(self.world.client, step_up=step_up)))
        # No step-up for the balance.
        with opener.open(base + "/balance", timeout=10) as r:
            balance = json.load(r)
            self.assertIn("balance", balance)
            addr = balance["address"]
        export = base + "/export/" + addr
        # The export answers 401 with a challenge; the helper steps up and retries.
        with opener.open(urllib.request.Request(export, data=b"{}", method="POST"), timeout=30) as r:
            self.assertEqual(r.status, 200)
            self.assertTrue(json.load(r)["privateKey"].startswith("0x"))
        self.assertEqual(step_ups, [["wallet:export"]])
        # Single-use and consumed: the next export needs a new step-up, and
        # the helper never re-sends the spent token.
        with opener.open(urllib.request.Request(export, data=b"{}", method="POST"), timeout=30) as r:
            self.assertEqual(r.status, 200)
        self.assertEqual(len(step_ups), 2)
        # Multi-use wallet:sign, with a body that is sent again on the retry.
        body = json.dumps({"message": "hello"}).encode()
        req = urllib.request.Request(base + "/sign", data=body, method="POST", headers={"Content-Type": "application/json"})
        with opener.open(req, timeout=30) as r:
            self.assertTrue(json.load(r)["signature"].startswith("0x"))
        with opener.open(urllib.request.Request(base + "/sign", data=body, method="POST"), timeout=30) as r:
            self.assertEqual(r.status, 200)
        self.assertEqual(len(step_ups), 3, "the held multi-use token is reused")
        # Without the helper the challenge is what the server sent.
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(export, data=b"{}", method="POST"), timeout=10)
        ch = parse_challenge(e.exception.headers.get_all("WWW-Authenticate"))
        self.assertIsNotNone(ch)
        assert ch is not None
        self.assertTrue(ch.step_up_requested)
        self.assertEqual(ch.scopes, ["wallet:export"])
        # A step-up that fails: the 401 is not retried and the error says why.
        def refuse(scopes: List[str]):
            raise NoPrompterError(4009, "no prompter here", {"reason": "no_prompter"})
        opener = urllib.request.build_opener(StepUpHandler(TokenSource(self.world.client, step_up=refuse)))
        with self.assertRaises(NoPrompterError):
            opener.open(urllib.request.Request(export, data=b"{}", method="POST"), timeout=10)

    def test_fails_closed(self) -> None:
        # No agent at all.
        self.assertTrue(Client(os.path.join(self.world.dir, "run", "nothing.sock")).is_step_up_required("docs:read"))
        with self.assertRaises(DialError) as e:
            Client(os.path.join(self.world.dir, "run", "nothing.sock")).check_step_up("docs:read")
        self.assertIn("stepup-agent", e.exception.hint)
        # Impostors of our own uid that hang up, send garbage, stay silent,
        # or answer with an error: every one of them means step-up required.
        d = tempfile.mkdtemp(prefix="stepup-py-fake-")
        os.chmod(d, 0o700)
        try:
            for name, reply in (("hangup", b""), ("garbage", b"not json\n"), ("error", b'{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"x"}}\n'),
                                ("noresult", b'{"jsonrpc":"2.0","id":1}\n'), ("silent", None)):
                path = os.path.join(d, name + ".sock")
                srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                srv.bind(path)
                srv.listen(1)

                def serve(srv: socket.socket = srv, reply: Optional[bytes] = reply) -> None:
                    conn, _ = srv.accept()
                    conn.recv(65536)
                    if reply is None:
                        time.sleep(3)
                    elif reply:
                        conn.sendall(reply)
                    conn.close()

                t = threading.Thread(target=serve, daemon=True)
                t.start()
                self.assertTrue(Client(path, timeout=1).is_step_up_required("docs:read"), name)
                t.join(5)
                srv.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)


class PeerCheckTest(unittest.TestCase):
    """The client talks only to a socket of this user, in a directory only
    this user can write, served by a process of this user."""

    world: World

    @classmethod
    def setUpClass(cls) -> None:
        cls.world = World()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.world.close()

    def test_directory_others_can_write(self) -> None:
        run = os.path.dirname(self.world.sock)
        os.chmod(run, 0o777)
        try:
            with self.assertRaises(WrongOwnerError) as e:
                Client(self.world.sock).check_step_up("docs:read")
            self.assertIn("others can write", str(e.exception))
            self.assertTrue(Client(self.world.sock).is_step_up_required("docs:read"))
        finally:
            os.chmod(run, 0o700)
        self.assertFalse(Client(self.world.sock).is_step_up_required("docs:read"))

    def test_symlink_to_the_socket(self) -> None:
        link = os.path.join(os.path.dirname(self.world.sock), "link.sock")
        os.symlink(self.world.sock, link)
        try:
            with self.assertRaises(WrongOwnerError) as e:
                Client(link).check_step_up("docs:read")
            self.assertIn("not a socket", str(e.exception))
        finally:
            os.remove(link)

    def _as_nobody(self) -> List[str]:
        if os.getuid() != 0:
            missing("root (to run a server as another uid with setpriv)")
        return [program("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups"]

    def _serve_as_nobody(self, path: str) -> subprocess.Popen:
        code = ("import socket,sys,time\n"
                "s=socket.socket(socket.AF_UNIX,socket.SOCK_STREAM);s.bind(sys.argv[1]);s.listen(4)\n"
                "print('ready',flush=True)\n"
                "while True:\n"
                " c,_=s.accept();c.recv(65536)\n"
                " c.sendall(b'{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"required\":false,\"scope\":\"wallet:export\"}}\\n');c.close()\n")
        p = subprocess.Popen(self._as_nobody() + [sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (p.kill(), p.wait(), p.stdout.close()))  # type: ignore[union-attr]
        self.assertEqual(p.stdout.readline().strip(), "ready")  # type: ignore[union-attr]
        return p

    def test_directory_of_another_user(self) -> None:
        # Another user made /tmp/stepup-UID first and listens there.
        base = tempfile.mkdtemp(prefix="stepup-py-other-")
        self.addCleanup(shutil.rmtree, base, True)
        os.chmod(base, 0o777)  # as /tmp is
        d = os.path.join(base, "stepup-%d" % os.getuid())
        subprocess.run(self._as_nobody() + ["mkdir", "-m", "0700", d], check=True)
        path = os.path.join(d, "agent.sock")
        self._serve_as_nobody(path)
        with self.assertRaises(WrongOwnerError) as e:
            Client(path).check_step_up("wallet:export")
        self.assertIn("belongs to uid 65534", str(e.exception))
        self.assertTrue(Client(path).is_step_up_required("wallet:export"))

    def test_socket_served_by_another_uid(self) -> None:
        # Directory and socket file are ours (the other user's socket was
        # chowned to us): only SO_PEERCRED, read after connect, tells.
        d = tempfile.mkdtemp(prefix="stepup-py-peer-")
        self.addCleanup(shutil.rmtree, d, True)
        os.chmod(d, 0o777)
        path = os.path.join(d, "agent.sock")
        self._serve_as_nobody(path)
        os.chmod(d, 0o700)
        os.chown(path, os.getuid(), os.getgid())
        os.chmod(path, 0o600)
        with self.assertRaises(WrongOwnerError) as e:
            Client(path).check_step_up("wallet:export")
        self.assertIn("served by uid 65534", str(e.exception))
        self.assertTrue(Client(path).is_step_up_required("wallet:export"), "the impostor's required: false is never believed")


class ChallengeParseTest(unittest.TestCase):
    def test_parse(self) -> None:
        ch = parse_challenge(['Basic realm="x", Bearer error="insufficient_user_authentication", '
                              'error_description="A \\"fresh\\" one", scope="wallet:export wallet:sign", max_age=0'])
        assert ch is not None
        self.assertTrue(ch.step_up_requested)
        self.assertEqual(ch.scopes, ["wallet:export", "wallet:sign"])
        self.assertEqual(ch.max_age, 0)
        self.assertEqual(ch.description, 'A "fresh" one')
        self.assertIsNone(parse_challenge(['Basic realm="x"']))
        self.assertFalse(parse_challenge(['Bearer error="invalid_token"']).step_up_requested)  # type: ignore[union-attr]


if __name__ == "__main__":
    unittest.main()
