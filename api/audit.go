package api

// MethodAuditHead answers the last record of the audit log.
const MethodAuditHead = "auditHead"

// AuditHead is the result of auditHead: the last record of the audit log,
// its seq and the lowercase hex SHA-256 of its line (without the
// newline). A relying party keeps it as a receipt (docs/audit.md).
type AuditHead struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
	// File is the log file the agent appends to (an addition: absent
	// from agents without it).
	File string `json:"file,omitempty"`
}

// AuditStatus is status's `audit` field.
type AuditStatus struct {
	File string `json:"file"`
	Seq  int64  `json:"seq"`
	// Break says what the agent found at start when the log did not
	// reach or chain from its head (a chain_break record starts the new
	// file).
	Break string `json:"break,omitempty"`
	// Warning says the log could not be checked against its head at
	// start (the keychain did not answer).
	Warning string `json:"warning,omitempty"`
}
