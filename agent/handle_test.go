package agent

import (
	"slices"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
)

// TestProtocolTable: the table has a row for every protocol method and
// for nothing else, and each row says what a remote caller may do: a
// refused method says what it does (for the refusal), a prompt method
// names its route, and no prompt runs inline on the connection's reader.
func TestProtocolTable(t *testing.T) {
	for _, m := range api.Methods {
		if _, ok := protocol[m]; !ok {
			t.Errorf("protocol method %s has no row in the table", m)
		}
	}
	for m, pm := range protocol {
		if !slices.Contains(api.Methods, m) {
			t.Errorf("the table serves %s, which api.Methods does not list", m)
		}
		switch pm.remote {
		case remoteRefuse:
			if pm.does == "" {
				t.Errorf("%s is refused to remote callers without saying what it does", m)
			}
		case remotePrompt:
			if pm.inline {
				t.Errorf("prompt method %s runs inline", m)
			}
			if pm.route != routeOf(m) {
				t.Errorf("prompt method %s has route %d, want %d", m, pm.route, routeOf(m))
			}
		}
	}
}

// A request's wait for its writes ends within the bound counted from
// its arrival, with room for the answer; after a handler that waited on
// a person or the network, the wait counts from the handler's end.
func TestSettleDeadline(t *testing.T) {
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	if got := settleDeadline(start, start.Add(20*time.Millisecond)); !got.Before(start.Add(persistWait)) || got.Before(start.Add(persistWait-time.Second)) {
		t.Fatalf("fast handler: deadline %v after the start, want just under %v", got.Sub(start), persistWait)
	}
	end := start.Add(30 * time.Second) // a person answered a prompt
	if got := settleDeadline(start, end); got.Sub(end) < persistWait-time.Second || got.Sub(end) >= persistWait {
		t.Fatalf("after a prompt: deadline %v after the handler, want just under %v", got.Sub(end), persistWait)
	}
}
