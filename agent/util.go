package agent

import (
	"context"
	"strconv"

	"github.com/stepup-agent/stepup-agent/peer"
)

func itoa(n int) string { return strconv.Itoa(n) }

// peerUID is the uid of the request's client, or -1 outside a connection.
func peerUID(ctx context.Context) int {
	if p := peer.FromContext(ctx); p != nil {
		return p.UID
	}
	return -1
}
