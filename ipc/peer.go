package ipc

import (
	"context"
	"net"

	"github.com/stepup-agent/stepup-agent/peer"
)

// Peer is the identity of the process at the other end of a connection,
// read once from the kernel when the connection is accepted (package
// peer: uid, pid and start time, executable, script, login session,
// parent chain).
type Peer = peer.Identity

// WithPeer returns ctx carrying p.
func WithPeer(ctx context.Context, p *Peer) context.Context { return peer.NewContext(ctx, p) }

// PeerFrom returns the peer of the connection a request came in on, or nil.
func PeerFrom(ctx context.Context) *Peer { return peer.FromContext(ctx) }

// ReadPeer reads the identity of a Unix socket connection's client.
func ReadPeer(c net.Conn) (*Peer, error) { return peer.Identify(c) }
