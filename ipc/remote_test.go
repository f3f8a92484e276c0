package ipc

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/remote"
)

// whoHandler answers "who" with what the request's context says of its
// caller.
type whoHandler struct{}

func (whoHandler) Blocking(string) bool { return false }

func (whoHandler) Handle(ctx context.Context, m string, _ json.RawMessage) (any, error) {
	rc := remote.FromContext(ctx)
	p := PeerFrom(ctx)
	return map[string]any{"remote": rc != nil, "key": p.Remote}, nil
}

func serveOn(t *testing.T, srv *Server, isRemote bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if isRemote {
		go srv.ServeRemote(ln)
	} else {
		go srv.Serve(ln)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return path
}

// Connections on the remote socket carry their SSH connection and a peer
// whose Remote names it; those on the main socket carry neither, even
// from the same process.
func TestServeRemoteMarksConnections(t *testing.T) {
	srv := &Server{Handler: whoHandler{}, UID: -1}
	main := serveOn(t, srv, false)
	rem := serveOn(t, srv, true)
	got := roundTrip(t, rem, `{"jsonrpc":"2.0","id":1,"method":"who"}`+"\n", 1)[0]
	// The peer here is the test binary, not ssh: an unrecognised forwarder,
	// still remote, named by its pid and start time.
	if !strings.Contains(got, `"remote":true`) || !strings.Contains(got, "an unrecognised forwarder (pid ") || !strings.Contains(got, " started ") {
		t.Fatalf("remote socket: %s", got)
	}
	got = roundTrip(t, main, `{"jsonrpc":"2.0","id":1,"method":"who"}`+"\n", 1)[0]
	if !strings.Contains(got, `"remote":false`) || !strings.Contains(got, `"key":""`) {
		t.Fatalf("main socket: %s", got)
	}
}

// The remote socket refuses another user as the main socket does.
func TestServeRemoteRefusesAnotherUID(t *testing.T) {
	srv := &Server{Handler: whoHandler{}, UID: os.Getuid() + 1}
	rem := serveOn(t, srv, true)
	got := roundTrip(t, rem, `{"jsonrpc":"2.0","id":1,"method":"who"}`+"\n", 1)[0]
	if !strings.Contains(got, `"code":4005`) || strings.Contains(got, "remote") {
		t.Fatalf("another uid on the remote socket: %s", got)
	}
}
