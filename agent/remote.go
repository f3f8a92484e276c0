package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/peer"
	"github.com/stepup-agent/stepup-agent/remote"
)

// Requests through the remote socket (DESIGN.md, "Remote step-up over
// SSH"; docs/remote.md). Handle sends every one of them through
// handleRemote: the policy's remote key decides their scopes and methods,
// what only the workstation's user may do is refused, their prompt goes
// where the local ssh runs, and each is audited.

// remoteKey names the SSH connection of a remote request ("" for a local
// one): held tokens are handed only to callers with the same key.
func remoteKey(ctx context.Context) string {
	if p := peer.FromContext(ctx); p != nil {
		return p.Remote
	}
	return ""
}

// anyCaller is best's remote argument that matches every token (status).
const anyCaller = "\x00any"

// handleRemote serves one request that came through the remote socket.
func (a *Agent) handleRemote(ctx context.Context, rc *remote.Conn, m string, pm protoMethod, params json.RawMessage) (any, error) {
	var res any
	params, claim, err := a.remoteGate(ctx, rc, m, pm, params)
	from, start := a.persist.mark(), time.Now()
	var g *grants
	if pm.changes {
		g = &grants{}
		ctx = context.WithValue(ctx, grantsKey{}, g)
	}
	if err == nil {
		if pm.remote == remoteOwn {
			res, err = a.remoteReset(ctx, params)
		} else {
			res, err = pm.call(a, ctx, params)
		}
		if st, ok := res.(*api.Status); ok && st != nil {
			res = a.remoteStatus(ctx, st, rc)
		}
		if pm.changes {
			res, err = a.settle(m, from, start, g, res, err)
		}
	}
	err = wireError(err)
	a.audit(ctx, audit.Record{Event: audit.EventRemote, Detail: m, Remote: rc.String(), Caller: claim, Result: resultOf(err)})
	return res, err
}

// remoteStatus is what a remote caller sees of status: the tokens stepped
// up through its own connection, and nothing of the workstation's files,
// processes or other callers (no socket, policy, audit or keychain paths,
// no agent pid, no local tokens and whom they are bound to). Remote says
// it is a forwarded agent, for stepupctl status.
func (a *Agent) remoteStatus(ctx context.Context, st *api.Status, rc *remote.Conn) *api.Status {
	return &api.Status{
		Version:     st.Version,
		Keychain:    api.KeychainStatus{Backend: st.Keychain.Backend, Available: st.Keychain.Available},
		Policy:      api.PolicyStatus{LoadedAt: st.Policy.LoadedAt, Builtin: st.Policy.Builtin},
		Tokens:      a.tokens.status(a.now(), remoteKey(ctx)),
		Credentials: st.Credentials,
		Locked:      st.Locked,
		Prompter:    st.Prompter,
		Remote:      rc.String(),
	}
}

func remoteForbidden(format string, args ...any) *api.Error {
	return api.Errorf(api.CodeForbidden, format, args...)
}

// remoteGate refuses what a remote caller may not do and rewrites a
// prompt's params so that the prompt goes to the local ssh's terminal or
// desktop. It returns the params to serve and the caller's claim.
func (a *Agent) remoteGate(ctx context.Context, rc *remote.Conn, m string, pm protoMethod, params json.RawMessage) (json.RawMessage, string, error) {
	if pm.remote == remoteRefuse {
		what := pm.does
		if what == "" {
			what = "call " + m
		}
		return nil, "", remoteForbidden("a remote caller (through %s) may not %s", rc, what).
			WithHint("run it on this machine, not through the forwarded socket (docs/remote.md)")
	}
	var f map[string]json.RawMessage
	if len(params) > 0 && string(params) != "null" {
		if err := json.Unmarshal(params, &f); err != nil {
			return nil, "", invalidParams("invalid params: %v", shortJSONError(err))
		}
	}
	if f == nil {
		f = map[string]json.RawMessage{}
	}
	str := func(k string) string {
		var s string
		json.Unmarshal(f[k], &s)
		return s
	}
	var scopes []string
	json.Unmarshal(f["requestedScopes"], &scopes)
	if s := str("scope"); s != "" {
		scopes = append(scopes, s)
	}
	pol := a.policy()
	for _, s := range scopes {
		if !pol.RemoteAllowsScope(s) {
			return nil, "", remoteForbidden("the policy does not let remote callers use scope %s", s).
				WithHint("the policy's remote.scopes lists what callers through the remote socket may use (docs/remote.md); ask on this machine instead")
		}
	}
	rt := pm.route
	switch pm.remote {
	case remoteStart:
		if str("purpose") == "unlock" {
			return nil, "", remoteForbidden("a remote caller (through %s) may not unlock the agent", rc).
				WithHint("unlock on this machine: stepupctl unlock")
		}
		if mm := str("method"); mm != "" && !pol.RemoteAllowsMethod(mm) {
			return nil, "", remoteMethodRefused(mm)
		}
		return params, "", nil
	case remoteServe, remoteOwn:
		return params, "", nil
	}
	var claim *api.ClientClaim
	json.Unmarshal(f["client"], &claim)
	mm := str("method")
	if mm != "" && !pol.RemoteAllowsMethod(mm) {
		return nil, "", remoteMethodRefused(mm)
	}
	if mm == "" && len(scopes) > 0 {
		// The route's default might be a method remote callers may not
		// use: pick the first one they may.
		avail, _ := a.available(rt, scopes)
		for _, x := range avail {
			if pol.RemoteAllowsMethod(x) {
				mm = x
				break
			}
		}
		if mm == "" && len(avail) > 0 {
			return nil, "", remoteMethodRefused(strings.Join(avail, ", "))
		}
		if mm != "" {
			f["method"], _ = json.Marshal(mm)
		}
	}
	// The remote side's terminal and display are not here: the prompt
	// goes to the terminal the local ssh runs in, else its desktop.
	for _, k := range []string{"tty", "display", "waylandDisplay", "term"} {
		delete(f, k)
	}
	set := func(k, v string) {
		if v != "" {
			f[k], _ = json.Marshal(v)
		}
	}
	set("tty", rc.TTY)
	set("display", rc.Display)
	set("waylandDisplay", rc.WaylandDisplay)
	out, err := json.Marshal(f)
	if err != nil {
		return nil, "", err
	}
	return out, claimText(claim), nil
}

func remoteMethodRefused(m string) *api.Error {
	return remoteForbidden("the policy does not let remote callers verify with %s", m).
		WithHint("the policy's remote.methods lists the methods callers through the remote socket may use (docs/remote.md)")
}

// claimText is what a remote caller says of itself, for the audit log.
func claimText(c *api.ClientClaim) string {
	if c == nil {
		return ""
	}
	var parts []string
	if c.Name != "" {
		parts = append(parts, "name "+sanitize(c.Name))
	}
	if c.PID > 0 {
		parts = append(parts, "pid "+itoa(c.PID))
	}
	if c.Host != "" {
		parts = append(parts, "host "+sanitize(c.Host))
	}
	if len(parts) == 0 {
		return ""
	}
	return "claims " + strings.Join(parts, ", ")
}

// requester names who asks in a prompt. A remote request says so: what
// the agent knows here (the ssh destination and pid) as fact, what the
// remote side says of itself as its claim:
// "a program on build-01 (via ssh, pid 31337 there, says it is deployctl)".
func (a *Agent) requester(ctx context.Context, p *api.PromptParams) string {
	rc := remote.FromContext(ctx)
	if rc == nil {
		return clientDesc(ctx)
	}
	host := rc.Destination
	if host == "" {
		host = "an unknown host"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Remote request through %s", rc)
	if rc.TTY != "" {
		fmt.Fprintf(&b, " on %s", rc.TTY)
	}
	fmt.Fprintf(&b, ":\na program on %s (via ssh", sanitize(host))
	var c *api.ClientClaim
	if p != nil {
		c = p.Client
	}
	if c != nil {
		if c.PID > 0 {
			fmt.Fprintf(&b, ", pid %d there", c.PID)
		}
		if c.Name != "" {
			fmt.Fprintf(&b, ", says it is %s", sanitize(c.Name))
		}
		if c.Host != "" && c.Host != rc.Destination {
			fmt.Fprintf(&b, ", says its host is %s", sanitize(c.Host))
		}
	}
	b.WriteByte(')')
	return b.String()
}

// remoteReset revokes the remote caller's own tokens only.
func (a *Agent) remoteReset(ctx context.Context, params json.RawMessage) (*api.ResetResult, error) {
	var p api.ResetParams
	if err := decode(params, &p); err != nil {
		return nil, err
	}
	n := a.tokens.revoke(remoteKey(ctx), p.Scopes)
	a.audit(ctx, audit.Record{Event: audit.EventReset, Scopes: p.Scopes, Revoked: n, Result: "ok", Remote: remoteKey(ctx)})
	return &api.ResetResult{Revoked: n}, nil
}
