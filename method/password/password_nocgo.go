//go:build !cgo

package password

import (
	"github.com/stepup-agent/stepup-agent/method"
)

// Available is false: this build has no cgo, so no PAM.
const Available = false

// Unavailable says why New returns nil.
const Unavailable = "the password method needs PAM, and this stepup-agent was built without cgo (CGO_ENABLED=0)"

// New returns nil: without cgo there is no PAM. The agent leaves the
// method out and logs Unavailable.
func New(d method.Deps, cfg Config) method.Method { return nil }
