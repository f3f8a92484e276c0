package ipc

import (
	"bufio"
	"testing"
	"time"
)

// Idle is called when the last open connection closes, not while one
// is still open.
func TestIdleAfterLastConnection(t *testing.T) {
	idle := make(chan struct{}, 8)
	path, _ := startServerWith(t, &testHandler{}, func(s *Server) { s.Idle = func() { idle <- struct{}{} } })
	a, b := dial(t, path), dial(t, path)
	echoOK(t, a, bufio.NewReader(a), "a") // both are served
	echoOK(t, b, bufio.NewReader(b), "b")
	roundTrip(t, path, `{"jsonrpc":"2.0","id":1,"method":"echo","params":1}`+"\n", 1) // a third, closed
	a.Close()
	select {
	case <-idle:
		t.Fatal("Idle with a connection still open")
	case <-time.After(200 * time.Millisecond):
	}
	b.Close()
	select {
	case <-idle:
	case <-time.After(5 * time.Second):
		t.Fatal("no Idle after the last connection closed")
	}
}
