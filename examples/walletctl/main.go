// Command walletctl is the example wallet service's client. Its HTTP
// client is a stephttp.Transport: it knows that /sign needs wallet:sign
// and attaches that token (stepping up first when the agent holds none);
// it learns that /export needs wallet:export from walletd's RFC 9470
// challenge, steps up and retries. The user never handles a token.
//
//	walletctl [-url unix:PATH|http://ADDR] [-dpop] balance
//	walletctl [-url URL] sign MESSAGE
//	walletctl [-url URL] export [ADDRESS]
//
// An export names the wallet it exports (ADDRESS; without it, walletd's
// first wallet, from GET /balance). The step-up carries that as its
// authorization details, [{"type":"wallet_export","address":ADDRESS}]:
// the prompt shows them under "Approve:", the token carries them, and
// walletd refuses the token for any other wallet.
//
// -dpop binds the tokens to a key this walletctl makes (in memory, for
// this run only) and proves possession with each request (DPoP, RFC
// 9449): needed for scopes whose policy says proofOfPossession: required;
// a token copied out of walletctl is then useless without the key. Such a
// token is of this run only, so every run steps up again.
//
// Step-ups prompt through the agent (promptStepUpAuth). When the agent has
// no way to show a prompt, walletctl asks for a TOTP code itself, on
// standard input (the custom-UI path: startVerification,
// completeVerification); an empty answer cancels.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/examples/wallet"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stephttp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("walletctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", defaultURL(), "walletd's `URL`: unix:PATH (walletd's default) or http://ADDR")
	dpop := fs.Bool("dpop", false, "bind tokens to a key of this run and send DPoP proofs (for scopes with proofOfPossession: required)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	in := stdin
	// docs:begin transport
	client := &stepup.Client{} // $STEPUP_AUTH_SOCK
	hc := &http.Client{Transport: &stephttp.Transport{
		Client: client,
		Scope: func(r *http.Request) string {
			if r.URL.Path == "/sign" {
				return "wallet:sign"
			}
			return "" // /export/ADDRESS: walletd's challenge says what it needs
		},
		// An export is approved for its wallet only: these details go
		// into the prompt ("Approve:") and the token, and walletd
		// states the same ones for the address it exports.
		Details: func(r *http.Request) any {
			if addr, ok := strings.CutPrefix(r.URL.Path, "/export/"); ok {
				return wallet.ExportDetails(addr)
			}
			return nil
		},
		DPoP: *dpop,
		StepUpFor: func(ctx context.Context, method string, o stepup.PromptOptions) (*stepup.TokenResult, error) {
			o.Reason = "walletctl " + strings.Join(fs.Args(), " ")
			res, err := prompt(ctx, client, method, o)
			if !errors.Is(err, stepup.ErrNoPrompter) {
				return res, err
			}
			return askCode(ctx, client, o, in, stderr)
		},
	}}
	// docs:end transport
	if path, ok := strings.CutPrefix(*url, "unix:"); ok {
		// walletd on its Unix socket: every request goes there.
		hc.Transport.(*stephttp.Transport).Base = &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		}
		*url = "http://walletd"
	}

	var req *http.Request
	var err error
	switch a := fs.Args(); {
	case len(a) == 1 && a[0] == "balance":
		req, _ = http.NewRequestWithContext(ctx, "GET", *url+"/balance", nil)
	case len(a) == 2 && a[0] == "sign":
		body, _ := json.Marshal(map[string]string{"message": a[1]})
		req, _ = http.NewRequestWithContext(ctx, "POST", *url+"/sign", bytes.NewReader(body))
	case (len(a) == 1 || len(a) == 2) && a[0] == "export":
		addr := ""
		if len(a) == 2 {
			addr = a[1]
		} else if addr, err = firstWallet(ctx, hc, *url); err != nil {
			fmt.Fprintf(stderr, "walletctl: %v\n", err)
			return 1
		}
		req, _ = http.NewRequestWithContext(ctx, "POST", *url+"/export/"+neturl.PathEscape(addr), nil)
	default:
		fmt.Fprintln(stderr, "usage: walletctl [-url URL] [-dpop] balance | sign MESSAGE | export [ADDRESS]")
		return 2
	}
	// docs:begin do
	resp, err := hc.Do(req)
	if errors.Is(err, stepup.ErrCancelled) {
		fmt.Fprintln(stderr, "walletctl: step-up cancelled; nothing was done")
		return 1
	}
	// docs:end do
	if err != nil {
		fmt.Fprintf(stderr, "walletctl: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "walletctl: %s: %s\n", resp.Status, strings.TrimSpace(string(body)))
		return 1
	}
	stdout.Write(body)
	return 0
}

// defaultURL is walletd's default socket.
func defaultURL() string {
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("walletd-%d", os.Getuid()))
	}
	return "unix:" + filepath.Join(dir, "walletd.sock")
}

// prompt steps up through the agent's prompt, on the route the
// server's challenge asked for (acr_values).
func prompt(ctx context.Context, c *stepup.Client, method string, o stepup.PromptOptions) (*stepup.TokenResult, error) {
	switch method {
	case api.MethodPromptMfa:
		return c.PromptMfa(ctx, o)
	case api.MethodPromptReauthenticate:
		return c.PromptReauthenticate(ctx, o)
	}
	return c.PromptStepUpAuth(ctx, o)
}

// firstWallet is the address of walletd's first wallet.
func firstWallet(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/balance", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b struct {
		Address string `json:"address"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&b) != nil || b.Address == "" {
		return "", fmt.Errorf("GET /balance: %s: no wallet address; name one: walletctl export ADDRESS", resp.Status)
	}
	return b.Address, nil
}

// askCode steps up on the custom-UI path with a TOTP code read from in,
// for the same scopes, details and key as the prompt would have been.
func askCode(ctx context.Context, c *stepup.Client, o stepup.PromptOptions, in io.Reader, stderr io.Writer) (*stepup.TokenResult, error) {
	ch, err := c.StartVerificationWith(ctx, stepup.StartOptions{Method: api.TOTP, Scopes: o.Scopes, AuthorizationDetails: o.AuthorizationDetails, Cnf: o.Cnf})
	if err != nil {
		return nil, err
	}
	// The agent says what to ask and where the answer goes (ask): the
	// same label its own prompt shows, so walletctl has no text of its
	// own per method. What is approved is said too.
	what := strings.Join(o.Scopes, " ")
	if d, _ := stepup.Details(o.AuthorizationDetails); d != nil {
		what += " " + string(d)
	}
	fmt.Fprintf(stderr, "Step up for %s\n", what)
	if ch.Ask.Hint != "" {
		fmt.Fprintln(stderr, ch.Ask.Hint)
	}
	if ch.Ask.Text != "" {
		fmt.Fprintln(stderr, ch.Ask.Text)
	}
	field := ch.Ask.Field
	if field == "" {
		field = "code"
	}
	label := ch.Ask.Label
	if label == "" {
		label = "Code:"
	}
	fmt.Fprintf(stderr, "%s ", label)
	answer := strings.TrimSpace(readLine(in))
	fmt.Fprintln(stderr)
	if answer == "" {
		return nil, api.Errorf(api.CodeCancelled, "nothing entered")
	}
	return c.CompleteVerification(ctx, ch.ChallengeID, map[string]string{field: answer})
}

// readLine reads one line a byte at a time, leaving the rest of the input
// to whoever reads it next (a script feeding several commands).
func readLine(r io.Reader) string {
	var b strings.Builder
	var c [1]byte
	for b.Len() < 256 {
		if n, err := r.Read(c[:]); n == 0 || err != nil || c[0] == '\n' {
			break
		}
		b.WriteByte(c[0])
	}
	return b.String()
}
