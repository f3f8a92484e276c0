// Command walletctl is the example wallet service's client. Its HTTP
// client is a stephttp.Transport: it knows that /sign needs wallet:sign
// and attaches that token (stepping up first when the agent holds none);
// it learns that /export needs wallet:export from walletd's RFC 9470
// challenge, steps up and retries. The user never handles a token.
//
//	walletctl [-url unix:PATH|http://ADDR] balance
//	walletctl [-url URL] sign MESSAGE
//	walletctl [-url URL] export
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
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/stepup-agent/stepup-agent/api"
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
			return "" // /export: walletd's challenge says what it needs
		},
		StepUp: func(ctx context.Context, scopes []string) (*stepup.TokenResult, error) {
			res, err := client.PromptStepUpAuth(ctx, stepup.PromptOptions{Scopes: scopes, Reason: "walletctl " + strings.Join(fs.Args(), " ")})
			if !errors.Is(err, stepup.ErrNoPrompter) {
				return res, err
			}
			return askCode(ctx, client, scopes, in, stderr)
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
	switch a := fs.Args(); {
	case len(a) == 1 && a[0] == "balance":
		req, _ = http.NewRequestWithContext(ctx, "GET", *url+"/balance", nil)
	case len(a) == 2 && a[0] == "sign":
		body, _ := json.Marshal(map[string]string{"message": a[1]})
		req, _ = http.NewRequestWithContext(ctx, "POST", *url+"/sign", bytes.NewReader(body))
	case len(a) == 1 && a[0] == "export":
		req, _ = http.NewRequestWithContext(ctx, "POST", *url+"/export", nil)
	default:
		fmt.Fprintln(stderr, "usage: walletctl [-url URL] balance | sign MESSAGE | export")
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

// askCode steps up on the custom-UI path with a TOTP code read from in.
func askCode(ctx context.Context, c *stepup.Client, scopes []string, in io.Reader, stderr io.Writer) (*stepup.TokenResult, error) {
	ch, err := c.StartVerification(ctx, api.TOTP, scopes)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "Code from your authenticator app for %s: ", strings.Join(scopes, " "))
	code := strings.TrimSpace(readLine(in))
	fmt.Fprintln(stderr)
	if code == "" {
		return nil, api.Errorf(api.CodeCancelled, "no code entered")
	}
	return c.CompleteVerification(ctx, ch.ChallengeID, map[string]string{"code": code})
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
