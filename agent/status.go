package agent

import (
	"fmt"
	"os"
	"strings"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/keychain"
)

// Status answers status. It never carries token values or secrets.
func (a *Agent) Status() *api.Status {
	st := &api.Status{Version: Version, PID: os.Getpid(), Tokens: []api.TokenStatus{}, Socket: a.cfg.Socket}
	st.Keychain = keychainStatus(a.cfg.Store, a.persist.unwritten())
	if a.cfg.PolicyStatus != nil {
		st.Policy = a.cfg.PolicyStatus()
	}
	st.Prompter = a.cfg.Prompts().Name()
	st.Tokens = a.tokens.status(a.now(), anyCaller)
	st.Credentials = a.creds.count()
	st.Locked = a.Locked()
	st.Audit = a.auditStatus()
	return st
}

// TokenCount is the number of live tokens held (for sd_notify STATUS=).
func (a *Agent) TokenCount() int {
	return a.tokens.count()
}

// keychainStatus says where the state lives and whether all of it is
// there: available is true only when the backend answers and none of the
// agent's changes waits to be written (unwritten: queued, under way, or
// to be tried again). A client that sees available may rely on a kill -9
// losing nothing it was answered.
func keychainStatus(s keychain.Store, unwritten int) api.KeychainStatus {
	ks := api.KeychainStatus{Backend: s.Backend(), Available: unwritten == 0}
	if av, ok := s.(interface{ Available() bool }); ok && !av.Available() {
		ks.Available = false
	}
	var ws []string
	if w, ok := s.(keychain.Warner); ok && w.Warning() != "" {
		ws = append(ws, w.Warning())
	}
	if unwritten > 0 {
		ws = append(ws, fmt.Sprintf("%d change(s) not written to the keychain yet: a crash now would lose them", unwritten))
	}
	ks.Warning = strings.Join(ws, "; ")
	return ks
}

// Backend names the keychain backend the agent keeps its state in.
func (a *Agent) Backend() string { return a.cfg.Store.Backend() }
