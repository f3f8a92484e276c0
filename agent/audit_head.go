package agent

import "github.com/stepup-agent/stepup-agent/api"

// AuditHead answers auditHead: the last record of the audit log.
func (a *Agent) AuditHead() *api.AuditHead {
	h := a.cfg.Audit.Head()
	return &api.AuditHead{Seq: h.Seq, Hash: h.Hash, File: a.cfg.Audit.Path()}
}

// auditStatus is status's audit field (nil without a log).
func (a *Agent) auditStatus() *api.AuditStatus {
	if a.cfg.Audit == nil {
		return nil
	}
	return &api.AuditStatus{File: a.cfg.Audit.Path(), Seq: a.cfg.Audit.Head().Seq, Break: a.cfg.Audit.Break(), Warning: a.cfg.Audit.Warning()}
}
