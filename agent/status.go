package agent

import (
	"os"
	"strings"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/keychain"
)

// Status answers status. It never carries token values or secrets.
func (a *Agent) Status() *api.Status {
	st := &api.Status{Version: Version, PID: os.Getpid(), Tokens: []api.TokenStatus{}, Socket: a.cfg.Socket}
	st.Keychain = keychainStatus(a.cfg.Store, a.persist.owes(func() bool { return storeAvailable(a.cfg.Store) }))
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
// there: available is true only when the backend answers and every
// change the agent answered as done is stored (owed: one may not be, its
// wait for the keychain having run out). A client that sees available
// may rely on a kill -9 losing nothing it was answered; changes of
// requests not answered yet are not counted.
func keychainStatus(s keychain.Store, owed bool) api.KeychainStatus {
	ks := api.KeychainStatus{Backend: s.Backend(), Available: !owed && storeAvailable(s)}
	var ws []string
	if w, ok := s.(keychain.Warner); ok && w.Warning() != "" {
		ws = append(ws, w.Warning())
	}
	if owed && storeAvailable(s) {
		ws = append(ws, "changes already answered are not all written to the keychain yet: a crash now would lose them")
	}
	ks.Warning = strings.Join(ws, "; ")
	return ks
}

// Backend names the keychain backend the agent keeps its state in.
func (a *Agent) Backend() string { return a.cfg.Store.Backend() }
