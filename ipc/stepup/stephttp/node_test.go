package stephttp_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/internal/testenv"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stephttp"
)

// mintingAgent holds no token (getToken: 4007) and answers every prompt
// with a token minted for the params' scopes, details and cnf, as the
// agent does; it records the methods called.
func mintingAgent(t *testing.T, li *localIssuer) (string, <-chan string) {
	path := filepath.Join(t.TempDir(), "a.sock")
	calls := make(chan string, 32)
	testenv.Serve(t, "unix", path, func(c net.Conn) {
		s := bufio.NewScanner(c)
		for s.Scan() {
			var req struct {
				ID     json.RawMessage  `json:"id"`
				Method string           `json:"method"`
				Params api.PromptParams `json:"params"`
			}
			json.Unmarshal(s.Bytes(), &req)
			calls <- req.Method + " " + string(req.Params.AuthorizationDetails)
			if req.Method == api.MethodGetToken {
				fmt.Fprintf(c, `{"jsonrpc":"2.0","id":%s,"error":{"code":4007,"message":"no token","data":{"reason":"token_invalid"}}}`+"\n", req.ID)
				continue
			}
			tok := li.mint(t, strings.Join(req.Params.RequestedScopes, " "), api.TOTP, string(req.Params.AuthorizationDetails), req.Params.Cnf, 0)
			res, _ := json.Marshal(api.TokenResult{Token: tok, Scopes: req.Params.RequestedScopes, ExpiresAt: time.Now().Add(time.Minute), Method: api.TOTP})
			fmt.Fprintf(c, `{"jsonrpc":"2.0","id":%s,"result":%s}`+"\n", req.ID, res)
		}
	})
	return path, calls
}

// The Node fetch wrapper's DPoP proofs and details, checked by this
// package's middleware: a server with RequireProof answers with a DPoP
// challenge, the wrapper steps up with its process key and the request's
// details, and its proof verifies (the fake agent holds no token, so the
// second request steps up and proves again).
func TestNodeFetchDPoPAgainstMiddleware(t *testing.T) {
	node := testenv.Program(t, "node")
	root := testenv.RepoRoot(t)
	dist := filepath.Join(root, "clients/node/dist/index.js")
	if _, err := os.Stat(dist); err != nil {
		tsc := filepath.Join(root, "clients/node/node_modules/typescript/bin/tsc")
		if _, err := os.Stat(tsc); err != nil {
			testenv.Missing(t, "clients/node is not built and has no node_modules (npm ci in clients/node)")
		}
		if out, err := exec.Command(node, tsc, "-p", filepath.Join(root, "clients/node/tsconfig.json")).CombinedOutput(); err != nil {
			t.Fatalf("building clients/node: %v\n%s", err, out)
		}
	}
	li := newIssuer(t)
	v, err := stephttp.NewVerifier(stephttp.Options{JWKSURL: li.jwks.URL, RequireProof: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(v.RequireDetails("wallet:export", exportDetails)(echo))
	defer srv.Close()
	sock, calls := mintingAgent(t, li)

	script := `
import { createStepUpFetch, StepUpClient } from ` + fmt.Sprintf("%q", dist) + `;
const f = createStepUpFetch({
  client: new StepUpClient({ socket: process.env.SOCK, env: {} }),
  detailsFor: (req) => [{ type: 'wallet_export', address: new URL(req.url).searchParams.get('address') }],
});
for (const i of [1, 2]) {
  const r = await f(process.env.URL + '/export?address=0x12ab', { method: 'POST', body: 'x' + i });
  console.log(r.status, await r.text());
}
`
	cmd := exec.Command(node, "--input-type=module", "-e", script)
	cmd.Env = append(os.Environ(), "SOCK="+sock, "URL="+srv.URL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	if strings.Count(string(out), "200 {") != 2 {
		t.Fatalf("node fetch wrapper output:\n%s\nwant two 200s, each after a DPoP step-up with a proof", out)
	}
	var got []string
	for len(calls) > 0 {
		got = append(got, <-calls)
	}
	joined := strings.Join(got, "\n")
	if !strings.Contains(joined, api.MethodPromptStepUpAuth+` [{"type":"wallet_export","address":"0x12ab"}]`) {
		t.Errorf("agent calls:\n%s\nwant a promptStepUpAuth with the request's details", joined)
	}
}
