package remote

import (
	"context"
	"strconv"
)

type ctxKey struct{}

// NewContext returns ctx carrying c, the SSH connection of a request that
// came in on the remote socket.
func NewContext(ctx context.Context, c *Conn) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// FromContext returns the SSH connection of a remote request, or nil for
// a local one.
func FromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(ctxKey{}).(*Conn)
	return c
}

// Key names the SSH connection for binding (peer.Identity.Remote): the
// destination, the local ssh pid and its start time, so that a token
// stepped up through one connection is not handed to another, nor to a
// later ssh that reuses the pid.
func (c Conn) Key(start uint64) string {
	return c.String() + " started " + strconv.FormatUint(start, 10)
}
