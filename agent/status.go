package agent

import (
	"os"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/keychain"
)

// Status answers status. It never carries token values or secrets.
func (a *Agent) Status() *api.Status {
	st := &api.Status{Version: Version, PID: os.Getpid(), Tokens: []api.TokenStatus{}, Socket: a.cfg.Socket}
	st.Keychain = keychainStatus(a.cfg.Store)
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

func keychainStatus(s keychain.Store) api.KeychainStatus {
	ks := api.KeychainStatus{Backend: s.Backend(), Available: true}
	if av, ok := s.(interface{ Available() bool }); ok {
		ks.Available = av.Available()
	}
	if w, ok := s.(keychain.Warner); ok {
		ks.Warning = w.Warning()
	}
	return ks
}

// Backend names the keychain backend the agent keeps its state in.
func (a *Agent) Backend() string { return a.cfg.Store.Backend() }
