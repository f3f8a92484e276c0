package peer

import "fmt"

// Mode is a scope's binding: whom a token minted for one caller is handed
// to (DESIGN.md, "Caller and action binding"; docs/binding.md).
type Mode string

// Binding modes, from the narrowest.
const (
	// Process admits the minting process and its descendants (so that
	// `stepupctl exec -- CMD` hands its token on), not a sibling.
	Process Mode = "process"
	// Client admits the same executable, or the same script of one
	// interpreter, in the same login session. Where the executable is
	// not known (macOS) it acts as Process.
	Client Mode = "client"
	// Session admits any process of the same login session.
	Session Mode = "session"
	// User admits any local process of the user.
	User Mode = "user"
)

// DefaultMode is the binding of a scope whose policy names none.
const DefaultMode = Client

// Modes lists the modes, from the narrowest.
var Modes = []Mode{Process, Client, Session, User}

// ParseMode returns the Mode named s; "" is DefaultMode.
func ParseMode(s string) (Mode, error) {
	if s == "" {
		return DefaultMode, nil
	}
	for _, m := range Modes {
		if string(m) == s {
			return m, nil
		}
	}
	return "", fmt.Errorf("%q is not a binding (process, client, session or user)", s)
}

// Admits reports whether a token minted for minter may be handed to
// caller under m. Whatever the mode, the two must be of one uid, one
// boot, and one Remote (a remote caller never sees a local token, nor a
// token of another SSH connection). A nil or unknown minter (a token
// persisted before binding existed) admits no one; an unknown mode
// admits no one. It does not allocate: it runs on every
// isStepUpRequired for every held token.
func (m Mode) Admits(minter, caller *Identity) bool {
	if !minter.Known() || !caller.Known() ||
		minter.UID != caller.UID || minter.Boot != caller.Boot || minter.Remote != caller.Remote {
		return false
	}
	switch m {
	case User:
		return true
	case Session:
		if minter.Session.Known() {
			return minter.Session == caller.Session
		}
	case Client:
		if minter.Executable != "" && minter.Session.Known() {
			return minter.Session == caller.Session &&
				minter.Executable == caller.Executable && minter.Script == caller.Script
		}
	case Process:
	default:
		return false
	}
	// Process, and what falls back to it.
	return caller.DescendsFrom(minter.Proc)
}

// AdmitsAll reports whether every mode admits caller: a token for several
// scopes is visible only where each scope's binding admits the caller.
// No modes admits no one.
func AdmitsAll(modes []Mode, minter, caller *Identity) bool {
	if len(modes) == 0 {
		return false
	}
	for _, m := range modes {
		if !m.Admits(minter, caller) {
			return false
		}
	}
	return true
}

// Describe says whom a token minted for minter under modes is handed to,
// for status ("bound to") and for the hint of a binding refusal: "node
// ~/app/sign.mjs in terminal pts/3", "pid 4242 and its descendants",
// "any process of terminal pts/3", "any local process of the user".
// With several modes it describes the narrowest.
func Describe(modes []Mode, minter *Identity) string {
	if !minter.Known() {
		return "no caller (minted before binding existed)"
	}
	narrow := User
	rank := func(m Mode) int {
		for i, x := range Modes {
			if x == m {
				return i
			}
		}
		return -1
	}
	for _, m := range modes {
		if rank(m) < rank(narrow) {
			narrow = m
		}
	}
	// The fallbacks of Admits.
	if narrow == Client && (minter.Executable == "" || !minter.Session.Known()) ||
		narrow == Session && !minter.Session.Known() {
		narrow = Process
	}
	var s string
	switch narrow {
	case Process:
		s = minter.Display() + " and its descendants"
	case Client:
		name := minter.Display()
		if i := lastIndex(name, " (pid "); i >= 0 {
			name = name[:i]
		}
		s = name + " in " + minter.Session.String()
	case Session:
		s = "any process of " + minter.Session.String()
	default:
		s = "any local process of the user"
	}
	if minter.Remote != "" && narrow != Process {
		s += " through " + displayPath(minter.Remote)
	}
	return s
}

func lastIndex(s, sub string) int {
	for i := len(s) - len(sub); i >= 0; i-- {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}
