package otp

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/policy"
	"go.uber.org/zap"
)

// replayServer answers every connection on loopback with the bytes of the
// current fuzz input and then ends its side of the connection (a TCP
// half-close), reading whatever the client sends until the client hangs
// up: a hostile or broken webhook or SMTP server that says its piece and
// stops. Ending the reply with EOF is what lets the target fuzz: a server
// that went quiet instead would make every input wait for the client's
// deadline (under one input a second); that case is TestSMSDeadline's and
// TestSMTPDeadline's.
type replayServer struct {
	ln    net.Listener
	reply chan []byte
}

func newReplayServer(f *testing.F) *replayServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	s := &replayServer{ln: ln, reply: make(chan []byte, 1)}
	f.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			var b []byte
			select {
			case b = <-s.reply:
				s.reply <- b
			default:
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Second))
				// An SMTP client speaks after the greeting, an HTTP one
				// first: write it all, end the reply, then drain until
				// the client is done.
				c.Write(b)
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return s
}

func (s *replayServer) set(b []byte) {
	select {
	case <-s.reply:
	default:
	}
	s.reply <- b
}

func (s *replayServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

const fuzzSecret = "s3cret-hook-token-and-password"

// FuzzSMSWebhookReply: whatever the webhook answers, sending ends within
// its deadline with nil (a 2xx) or an error that never holds the token.
func FuzzSMSWebhookReply(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/" + fuzzSecret + "\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\n",
		"HTTP/1.0 204\r\n\r\n",
		"garbage\r\n\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	srv := newReplayServer(f)
	p := policy.Default()
	p.Delivery.SMS = &policy.SMS{Webhook: "http://127.0.0.1:" + strconv.Itoa(srv.port()) + "/send", Format: "json"}
	m := NewSMS(Config{Deps: method.Deps{Policy: func() *policy.Policy { return p }, Logger: zap.NewNop()}, Secret: password(fuzzSecret)})
	f.Fuzz(func(t *testing.T, reply []byte) {
		srv.set(reply)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		start := time.Now()
		err := m.sender.send(ctx, "+15551234567", "Your code is 123456")
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("send took %v", d)
		}
		if err != nil && strings.Contains(err.Error(), fuzzSecret) {
			t.Fatalf("the error holds the token: %v", err)
		}
		if err == nil && !strings.HasPrefix(string(reply), "HTTP/1.") {
			t.Fatalf("accepted a reply that is not HTTP: %q", reply)
		}
	})
}

// FuzzSMTPReply: whatever the SMTP server says, sending ends within its
// deadline, and an error never holds the password or the code.
func FuzzSMTPReply(f *testing.F) {
	for _, s := range []string{
		"220 localhost ESMTP\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
		"220 localhost\r\n250-localhost\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n",
		"554 no\r\n",
		"220-a\r\n220-b\r\n",
		"220 x\r\n999 " + fuzzSecret + "\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	srv := newReplayServer(f)
	p := policy.Default()
	p.Delivery.SMTP = &policy.SMTP{Host: "127.0.0.1", Port: srv.port(), TLS: "none", From: "stepup@example.com"}
	m := NewEmail(Config{Deps: method.Deps{Policy: func() *policy.Policy { return p }, Logger: zap.NewNop()}})
	f.Fuzz(func(t *testing.T, reply []byte) {
		srv.set(reply)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		start := time.Now()
		err := m.sender.send(ctx, "user@example.com", "Your code is 987654")
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("send took %v", d)
		}
		if err != nil && strings.Contains(err.Error(), "987654") {
			t.Fatalf("the error holds the code: %v", err)
		}
	})
}
