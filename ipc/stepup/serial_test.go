package stepup_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
)

// A serial client (stepupctl's) against the real agent: the calls of a
// session, one after another and from several goroutines at once.
func TestSerialClientAgainstAgent(t *testing.T) {
	a := stepuptest.Start(t, stepuptest.Options{})
	c := &stepup.Client{Socket: a.Client.Socket, Serial: true}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !c.IsStepUpRequired(ctx, "wallet:export") {
		t.Fatal("IsStepUpRequired(wallet:export) = false with no token held")
	}
	if _, err := c.Status(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			r, err := c.CheckStepUp(ctx, "docs:read")
			if err == nil && r.Scope != "docs:read" {
				err = fmt.Errorf("answer for %q", r.Scope)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// A serial call whose context ends while the agent has not answered
// returns at once, and the next call is not handed the late answer: it
// dials again.
func TestSerialClientCancelledCall(t *testing.T) {
	sock, conns := muteOnHang(t)
	c := &stepup.Client{Socket: sock, Serial: true}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	t0 := time.Now()
	_, err := c.CheckStepUp(ctx, "hang")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unanswered call: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("unanswered call returned after %v", d)
	}
	r, err := c.CheckStepUp(context.Background(), "wallet:export")
	if err != nil || r.Scope != "wallet:export" {
		t.Fatalf("next call: %+v, %v", r, err)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the cancelled call's is dropped)", n)
	}
}

// scopeAgent is a fake agent on a socket of its own: answer gets each
// request's id and params' scope and writes what it likes to nc; it
// returns false to hang up. conns counts the connections.
func scopeAgent(t *testing.T, answer func(nc net.Conn, id json.RawMessage, scope string) bool) (string, *atomic.Int32) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns := new(atomic.Int32)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer nc.Close()
				r := bufio.NewScanner(nc)
				for r.Scan() {
					var req struct {
						ID     json.RawMessage `json:"id"`
						Params struct {
							Scope string `json:"scope"`
						} `json:"params"`
					}
					json.Unmarshal(r.Bytes(), &req)
					if !answer(nc, req.ID, req.Params.Scope) {
						return
					}
				}
			}()
		}
	}()
	return sock, conns
}

// muteOnHang is an agent that answers isStepUpRequired for any scope but
// "hang", which it never answers, and "null", which it answers with a
// null result; conns counts its connections.
func muteOnHang(t *testing.T) (string, *atomic.Int32) {
	return scopeAgent(t, func(nc net.Conn, id json.RawMessage, scope string) bool {
		switch scope {
		case "hang": // never answered
		case "null":
			fmt.Fprintf(nc, `{"jsonrpc":"2.0","id":%s,"result":null}`+"\n", id)
		default:
			fmt.Fprintf(nc, `{"jsonrpc":"2.0","id":%s,"result":{"required":true,"scope":%q,"methods":[]}}`+"\n", id, scope)
		}
		return true
	})
}

// A serial call queued behind one the agent never answers gives up at
// its own deadline; when the call ahead is cancelled, the next call
// dials again instead of inheriting its error.
func TestSerialClientQueuedCall(t *testing.T) {
	sock, _ := muteOnHang(t)
	c := &stepup.Client{Socket: sock, Serial: true}
	defer c.Close()
	actx, cancelA := context.WithCancel(context.Background())
	aDone := make(chan error, 1)
	go func() { _, err := c.CheckStepUp(actx, "hang"); aDone <- err }()
	time.Sleep(100 * time.Millisecond) // A holds the connection
	bctx, cancelB := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelB()
	t0 := time.Now()
	if _, err := c.CheckStepUp(bctx, "wallet:export"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued call: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("queued call returned after %v", d)
	}
	cancelA()
	if err := <-aDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	r, err := c.CheckStepUp(context.Background(), "docs:read")
	if err != nil || r.Scope != "docs:read" {
		t.Fatalf("call after the cancelled one: %+v, %v", r, err)
	}
}

// An answer without a result is an error, and IsStepUpRequired reads it
// as "step-up required": it fails closed, pipelined or serial.
func TestNullResultFailsClosed(t *testing.T) {
	sock, _ := muteOnHang(t)
	for _, serial := range []bool{false, true} {
		c := &stepup.Client{Socket: sock, Serial: serial}
		if _, err := c.CheckStepUp(context.Background(), "null"); err == nil {
			t.Errorf("serial %v: a null result decoded without an error", serial)
		}
		if !c.IsStepUpRequired(context.Background(), "null") {
			t.Errorf("serial %v: IsStepUpRequired = false on a null result", serial)
		}
		c.Close()
	}
}

// A program on the socket that sends an endless answer line gets a clear
// error, not the client's memory: the client reads at most
// stepup.MaxAnswer bytes of a line, in both modes, and an answer after a
// long but legal one still arrives whole.
func TestAnswerTooLong(t *testing.T) {
	sock, _ := scopeAgent(t, func(nc net.Conn, id json.RawMessage, scope string) bool {
		pad := ""
		switch scope {
		case "long":
			pad = strings.Repeat("x", 1<<20) // 1 MiB: long, but an answer
		case "endless":
			fmt.Fprintf(nc, `{"jsonrpc":"2.0","id":%s,"result":{"scope":"`, id)
			chunk := []byte(strings.Repeat("y", 64<<10))
			for i := 0; i < (stepup.MaxAnswer/len(chunk))+8; i++ {
				if _, err := nc.Write(chunk); err != nil {
					break
				}
			}
			return false
		}
		fmt.Fprintf(nc, `{"jsonrpc":"2.0","id":%s,"result":{"required":true,"scope":%q,"methods":[],"x":%q}}`+"\n", id, scope, pad)
		return true
	})
	for _, serial := range []bool{true, false} {
		c := &stepup.Client{Socket: sock, Serial: serial}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if r, err := c.CheckStepUp(ctx, "long"); err != nil || r.Scope != "long" {
			t.Fatalf("serial %v: a 1 MiB answer: %+v, %v", serial, r, err)
		}
		_, err := c.CheckStepUp(ctx, "endless")
		if !errors.Is(err, stepup.ErrAnswerTooLong) {
			t.Errorf("serial %v: an endless answer: %v; want ErrAnswerTooLong", serial, err)
		}
		if r, err := c.CheckStepUp(ctx, "wallet:export"); err != nil || r.Scope != "wallet:export" {
			t.Errorf("serial %v: the next call, on a new connection: %+v, %v", serial, r, err)
		}
		cancel()
		c.Close()
	}
}
