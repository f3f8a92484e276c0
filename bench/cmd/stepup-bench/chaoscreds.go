//go:build linux

package main

import (
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The credential side of the chaos loop: TOTP codes, recovery codes,
// enrollments and removals, killed at random moments like the mints. As
// for tokens, only what an answer said is a promise; a request whose
// answer the kill cut has an outcome the check after the restart finds
// out (a listed credential) or leaves alone (a code that may have been
// used). TOTP codes come from oathtool, an implementation independent of
// the agent's.

// States of an enrollment the loop started.
const (
	enStarted   = iota // enrollStart answered; enrollFinish never sent
	enFinishing        // enrollFinish sent, no answer: it may have landed
	enEnrolled         // enrollFinish answered with a credential
	enRemoving         // removeCredential sent, no answer
	enRemoved          // removeCredential answered
)

// maxEnrolled bounds the loop's TOTP credentials besides the first: past
// it the loop removes the oldest.
const maxEnrolled = 6

type chaosTOTP struct {
	label, secret, id string
	state             int
	last              int64 // the highest counter a code was sent for
	base              bool  // the first credential, never removed
	order             int
}

type usedCode struct {
	label, code string
	counter     int64
}

type credLedger struct {
	mu    sync.Mutex
	totp  map[string]*chaosTOTP // by label
	used  []usedCode            // TOTP codes an answer accepted
	seq   int
	rcID  string          // the live recovery set's credential id
	rc    []string        // its codes
	rcUse map[string]bool // true: used (answered); false: sent, no answer
	// A regeneration whose enrollFinish was sent and not answered: which
	// set is live shows after the restart (the credential id).
	rcNext     []string
	rcNextFrom string
	rcOld      []string        // a set an answered regeneration replaced
	rcChecked  map[string]bool // used codes of the live set already replayed

	st  credStats
	dur map[string]time.Duration // a moving mean of each operation's answered duration
}

// opStart is the credential worker's first operation of a burst.
type opStart struct {
	op string
	at time.Time
}

// expected is how long op usually takes when it is answered.
func (cl *credLedger) expected(op string) time.Duration {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.expectedLocked(op)
}

func (cl *credLedger) expectedLocked(op string) time.Duration {
	if d, ok := cl.dur[op]; ok {
		return d
	}
	if op == "recovery" || op == "regenerate" {
		return 4 * time.Second // ten argon2id hashes
	}
	return time.Second
}

type credStats struct {
	totpAccepted, totpReplayRefused, totpExpiredUnchecked int
	rcAccepted, rcReplayRefused, rcOldRefused, rcRegens   int
	enrolled, enrolledFound, abandoned, abandonedAbsent   int
	inflightLanded, inflightNot, removed, removedAbsent   int
	auditVerified                                         int
	ops                                                   map[string][2]int // tried, cut by the kill
}

func newCredLedger() *credLedger {
	return &credLedger{totp: map[string]*chaosTOTP{}, rcUse: map[string]bool{}, rcChecked: map[string]bool{}, st: credStats{ops: map[string][2]int{}}, dur: map[string]time.Duration{}}
}

// totpCode is the code of secret for counter, from oathtool.
func totpCode(secret string, counter int64) (string, error) {
	out, err := exec.Command("oathtool", "--totp", "-b", "-N", "@"+strconv.FormatInt(counter*30+1, 10), secret).Output()
	if err != nil {
		return "", fmt.Errorf("oathtool: %v (install it: scripts/install-deps.sh)", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func nowStep() int64 { return time.Now().Unix() / 30 }

type enrollStartResult struct {
	EnrollmentID  string   `json:"enrollmentId"`
	Secret        string   `json:"secret"`
	RecoveryCodes []string `json:"recoveryCodes"`
}

type enrollFinishResult struct {
	CredentialID  string   `json:"credentialId"`
	RecoveryCodes []string `json:"recoveryCodes"`
}

type listedCred struct {
	ID        string `json:"id"`
	Method    string `json:"method"`
	Label     string `json:"label"`
	Remaining *int   `json:"remaining"`
}

func listCreds(r *rpc) ([]listedCred, error) {
	var lr struct {
		Credentials []listedCred `json:"credentials"`
	}
	err := r.call("listCredentials", map[string]any{}, &lr)
	return lr.Credentials, err
}

// setupCreds enrolls the first TOTP credential (no token needed), which
// brings the recovery codes.
func (cl *credLedger) setup(sock string) error {
	r, err := dialRPC(sock)
	if err != nil {
		return err
	}
	defer r.c.Close()
	var es enrollStartResult
	if err := r.call("enrollStart", map[string]any{"method": "totp", "label": "chaos-base"}, &es); err != nil {
		return err
	}
	ctr := nowStep()
	code, err := totpCode(es.Secret, ctr)
	if err != nil {
		return err
	}
	var ef enrollFinishResult
	if err := r.call("enrollFinish", map[string]any{"enrollmentId": es.EnrollmentID, "response": map[string]string{"code": code}}, &ef); err != nil {
		return err
	}
	if len(ef.RecoveryCodes) != 10 {
		return fmt.Errorf("the first enrollment brought %d recovery codes, not 10", len(ef.RecoveryCodes))
	}
	cl.totp["chaos-base"] = &chaosTOTP{label: "chaos-base", secret: es.Secret, id: ef.CredentialID, state: enEnrolled, last: ctr, base: true}
	cl.used = append(cl.used, usedCode{label: "chaos-base", code: code, counter: ctr})
	cl.rc = ef.RecoveryCodes
	creds, err := listCreds(r)
	if err != nil {
		return err
	}
	for _, c := range creds {
		if c.Method == "recovery_code" {
			cl.rcID = c.ID
		}
	}
	if cl.rcID == "" {
		return errors.New("no recovery_code credential after the first enrollment")
	}
	return nil
}

// check runs after a restart: what the answers before the kill promised
// about credentials and codes.
func (cl *credLedger) check(r *rpc, kill int, violate func(string, ...any)) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	creds, err := listCreds(r)
	if err != nil {
		violate("listCredentials after kill %d: %v", kill, err)
		return
	}
	byLabel := map[string]listedCred{}
	var rcs []listedCred
	for _, c := range creds {
		switch c.Method {
		case "recovery_code":
			rcs = append(rcs, c)
		case "totp":
			byLabel[c.Label] = c
			if _, ok := cl.totp[c.Label]; !ok {
				violate("after kill %d a TOTP credential %q is listed that no enrollment of the loop made", kill, c.Label)
			}
		}
	}
	for label, t := range cl.totp {
		lc, listed := byLabel[label]
		switch t.state {
		case enEnrolled:
			if !listed || lc.ID != t.id {
				violate("an enrollment answered before kill %d (%s, %s) is not listed after the restart", kill, label, t.id)
				delete(cl.totp, label) // follow what the agent holds, so one loss is reported once
			} else {
				cl.st.enrolledFound++
			}
		case enStarted:
			if listed {
				violate("an enrollment never finished before kill %d (%s) is listed after the restart", kill, label)
			} else {
				cl.st.abandonedAbsent++
			}
			delete(cl.totp, label)
		case enFinishing:
			if listed {
				t.state, t.id = enEnrolled, lc.ID
				cl.st.inflightLanded++
			} else {
				delete(cl.totp, label)
				cl.st.inflightNot++
			}
		case enRemoving:
			if listed {
				t.state, t.id = enEnrolled, lc.ID
			} else {
				delete(cl.totp, label)
			}
		case enRemoved:
			if listed {
				violate("a credential removed before kill %d (%s) is listed after the restart", kill, label)
				t.state, t.id = enEnrolled, lc.ID
				break
			}
			cl.st.removedAbsent++
			delete(cl.totp, label)
		}
	}
	// The recovery codes: one set, never half of a regeneration.
	if len(rcs) != 1 {
		violate("after kill %d %d recovery_code credentials are listed, not 1", kill, len(rcs))
	} else {
		rc := rcs[0]
		if cl.rcNext != nil {
			if rc.ID != cl.rcNextFrom {
				cl.rcOld, cl.rc, cl.rcID, cl.rcUse, cl.rcChecked = cl.rc, cl.rcNext, rc.ID, map[string]bool{}, map[string]bool{}
				cl.st.inflightLanded++
			} else {
				cl.st.inflightNot++
			}
			cl.rcNext, cl.rcNextFrom = nil, ""
		}
		if rc.ID != cl.rcID {
			violate("after kill %d the recovery set is %s, not %s (the last one an answer named)", kill, rc.ID, cl.rcID)
			cl.rcID = rc.ID
		}
		used, unknown := 0, 0
		for _, u := range cl.rcUse {
			if u {
				used++
			} else {
				unknown++
			}
		}
		if rc.Remaining == nil || *rc.Remaining > len(cl.rc)-used || *rc.Remaining < len(cl.rc)-used-unknown {
			n := -1
			if rc.Remaining != nil {
				n = *rc.Remaining
			}
			violate("after kill %d the recovery set has %d codes left; answers said %d of %d were used (%d more unknown)", kill, n, used, len(cl.rc), unknown)
		}
	}
	// TOTP codes accepted before the kill, replayed while still inside
	// their ±1 step window: each must be refused as already used.
	var chID string
	challenge := func(m string) string {
		var ch struct {
			ChallengeID string `json:"challengeId"`
		}
		if err := r.call("startVerification", map[string]any{"method": m, "requestedScopes": []string{"chaos:single"}}, &ch); err != nil {
			violate("startVerification %s after kill %d: %v", m, kill, err)
			return ""
		}
		return ch.ChallengeID
	}
	keep := cl.used[:0]
	checked := 0
	for i := len(cl.used) - 1; i >= 0; i-- {
		u := cl.used[i]
		t := cl.totp[u.label]
		if t == nil || t.state != enEnrolled || u.counter+1 < (time.Now().Unix()+2)/30 {
			if t != nil && t.state == enEnrolled {
				cl.st.totpExpiredUnchecked++
			}
			continue // gone, or out of its window before it could be replayed
		}
		keep = append(keep, u)
		if checked >= 6 {
			continue
		}
		if chID == "" {
			if chID = challenge("totp"); chID == "" {
				break
			}
		}
		checked++
		err := r.call("completeVerification", map[string]any{"challengeId": chID, "response": map[string]string{"code": u.code}}, nil)
		switch {
		case err == nil:
			violate("a TOTP code accepted before kill %d (%s, counter %d) was accepted again after the restart", kill, u.label, u.counter)
			chID = ""
		case !strings.Contains(err.Error(), "already used"):
			violate("a TOTP code accepted before kill %d (%s) was refused after the restart, but not as used: %v", kill, u.label, err)
		default:
			cl.st.totpReplayRefused++
		}
	}
	sort.Slice(keep, func(i, j int) bool { return keep[i].counter < keep[j].counter })
	cl.used = keep
	// Recovery codes: the last one used is refused again, and so is one
	// of a set a regeneration replaced.
	var lastUsed string
	for _, c := range cl.rc {
		if cl.rcUse[c] && !cl.rcChecked[c] {
			lastUsed = c
		}
	}
	try := func(code, what string, n *int) {
		id := challenge("recovery_code")
		if id == "" {
			return
		}
		if err := r.call("completeVerification", map[string]any{"challengeId": id, "response": map[string]string{"code": code}}, nil); err == nil {
			violate("%s was accepted after kill %d", what, kill)
		} else if strings.Contains(err.Error(), ": 4002") {
			*n++
		} else {
			violate("%s after kill %d: %v", what, kill, err)
		}
	}
	if lastUsed != "" {
		try(lastUsed, "a recovery code used before the kill", &cl.st.rcReplayRefused)
		cl.rcChecked[lastUsed] = true
	}
	if len(cl.rcOld) > 0 {
		try(cl.rcOld[0], "a recovery code of a set replaced before the kill", &cl.st.rcOldRefused)
		cl.rcOld = nil
	}
}

// credWorker enrolls, removes, steps up with TOTP and recovery codes and
// regenerates the recovery set until stop, recording only what answers
// say. Tokens it mints go to led like the other workers' mints.
func credWorker(sock string, cl *credLedger, led *ledger, assertion func(string) (string, string), stop <-chan struct{}, violate func(string, ...any), first chan<- opStart) {
	r, err := dialRPC(sock)
	if err != nil {
		return
	}
	defer func() {
		select {
		case first <- opStart{op: "idle", at: time.Now()}:
		default:
		}
	}()
	defer r.c.Close()
	go func() { <-stop; r.c.Close() }()
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 7))
	// ensure holds a token for scope (minted from an assertion) when the
	// agent says one is needed.
	ensure := func(scope string) error {
		var req struct {
			Required bool `json:"required"`
		}
		if err := r.call("isStepUpRequired", map[string]any{"scope": scope}, &req); err != nil {
			return err
		}
		if !req.Required {
			return nil
		}
		a, _ := assertion(scope)
		return timed(func() error {
			return r.call("requestExternalAuthElevatedToken", map[string]any{"assertion": a, "requestedScopes": []string{scope}}, nil)
		})
	}
	challenges := map[string]string{} // method -> an open challenge
	var prevOp string
	var prevAt time.Time
	firstOp := true
	stepUp := func(m, code string) (string, error) {
		if challenges[m] == "" {
			var ch struct {
				ChallengeID string `json:"challengeId"`
			}
			if err := timed(func() error {
				return r.call("startVerification", map[string]any{"method": m, "requestedScopes": []string{"chaos:single"}}, &ch)
			}); err != nil {
				return "", err
			}
			challenges[m] = ch.ChallengeID
		}
		var tr struct {
			Token string `json:"token"`
		}
		err := timed(func() error {
			return r.call("completeVerification", map[string]any{"challengeId": challenges[m], "response": map[string]string{"code": code}}, &tr)
		})
		if err == nil {
			delete(challenges, m)
		}
		return tr.Token, err
	}
	for {
		select {
		case <-stop:
			return
		default:
		}
		cl.mu.Lock()
		var enrolled []*chaosTOTP
		var fresh *chaosTOTP
		var freshCtr int64
		now := nowStep()
		for _, t := range cl.totp {
			if t.state != enEnrolled {
				continue
			}
			if !t.base {
				enrolled = append(enrolled, t)
			}
			for c := now; c <= now+1; c++ {
				if c > t.last && (fresh == nil || c < freshCtr) {
					fresh, freshCtr = t, c
				}
			}
		}
		sort.Slice(enrolled, func(i, j int) bool { return enrolled[i].order < enrolled[j].order })
		var rcFree []string
		for _, c := range cl.rc {
			if _, seen := cl.rcUse[c]; !seen {
				rcFree = append(rcFree, c)
			}
		}
		regenPending := cl.rcNext != nil
		cl.mu.Unlock()

		// Recovery codes cost ten argon2id hashes a try (seconds on a
		// loaded machine): they come only first in a burst, whose kill
		// is aimed at the first operation, one burst in seven.
		x := rng.IntN(21)
		op := "idle"
		switch {
		case len(enrolled) > maxEnrolled:
			op = "remove"
		case firstOp && !regenPending && len(rcFree) < 4 && x < 3:
			op = "regenerate"
		case firstOp && x >= 18 && len(rcFree) > 0 && !regenPending:
			op = "recovery"
		case x < 7:
			op = "enroll"
		case fresh != nil:
			op = "totp"
		}
		if op != "idle" {
			firstOp = false
		}
		cl.mu.Lock()
		o := cl.st.ops[op]
		o[0]++
		cl.st.ops[op] = o
		cl.mu.Unlock()
		if prevOp != "" && prevOp != "idle" {
			cl.mu.Lock()
			d := time.Since(prevAt)
			if m, ok := cl.dur[prevOp]; ok {
				d = (3*m + d) / 4
			}
			cl.dur[prevOp] = d
			cl.mu.Unlock()
		}
		opAt := time.Now()
		prevOp, prevAt = op, opAt
		if op != "idle" {
			select {
			case first <- opStart{op: op, at: opAt}:
			default:
			}
		}
		cut := func() {
			cl.mu.Lock()
			o := cl.st.ops[op]
			o[1]++
			cl.st.ops[op] = o
			// Cut before its answer: it takes at least this long, so
			// the next kill aims later.
			if d := cl.expectedLocked(op); time.Since(prevAt) > d/2 {
				cl.dur[op] = d * 5 / 4
			}
			cl.mu.Unlock()
		}
		// lost handles the error of a step before the operation's own
		// change (the token it needs, its enrollment's start): a cut
		// connection ends the worker (it reports true), any other
		// error is counted and the loop goes on.
		lost := func(err error) bool {
			if isConnErr(err) {
				cut()
				return true
			}
			chaosErrs.add(err)
			return false
		}
		switch {
		case op == "remove": // remove the oldest
			t := enrolled[0]
			if err := ensureUnlink(r, assertion); err != nil {
				if lost(err) {
					return
				}
				continue
			}
			cl.mu.Lock()
			t.state = enRemoving
			cl.mu.Unlock()
			err := timed(func() error { return r.call("removeCredential", map[string]any{"credentialId": t.id}, nil) })
			if err != nil && isConnErr(err) {
				cut()
				return
			}
			cl.mu.Lock()
			if err == nil {
				t.state = enRemoved
				cl.st.removed++
			} else {
				t.state = enEnrolled
				chaosErrs.add(err)
			}
			cl.mu.Unlock()
		case op == "regenerate": // regenerate the recovery set
			if err := ensure("credential:update"); err != nil {
				if lost(err) {
					return
				}
				continue
			}
			var es enrollStartResult
			if err := timed(func() error { return r.call("enrollStart", map[string]any{"method": "recovery_code"}, &es) }); err != nil {
				if lost(err) {
					return
				}
				continue
			}
			cl.mu.Lock()
			cl.rcNext, cl.rcNextFrom = es.RecoveryCodes, cl.rcID
			cl.mu.Unlock()
			var ef enrollFinishResult
			err := timed(func() error {
				return r.call("enrollFinish", map[string]any{"enrollmentId": es.EnrollmentID, "response": map[string]any{}}, &ef)
			})
			if err != nil && isConnErr(err) {
				cut()
				return
			}
			cl.mu.Lock()
			if err == nil {
				cl.rcOld, cl.rc, cl.rcID, cl.rcUse, cl.rcChecked = cl.rc, cl.rcNext, ef.CredentialID, map[string]bool{}, map[string]bool{}
				cl.st.rcRegens++
			} else {
				chaosErrs.add(err)
			}
			cl.rcNext, cl.rcNextFrom = nil, ""
			cl.mu.Unlock()
		case op == "enroll": // enroll a TOTP credential; one in five is left unfinished
			if err := ensure("credential:link"); err != nil {
				if lost(err) {
					return
				}
				continue
			}
			cl.mu.Lock()
			cl.seq++
			label := fmt.Sprintf("chaos-%d-%d", time.Now().UnixNano(), cl.seq)
			order := cl.seq
			cl.mu.Unlock()
			var es enrollStartResult
			if err := timed(func() error { return r.call("enrollStart", map[string]any{"method": "totp", "label": label}, &es) }); err != nil {
				if lost(err) {
					return
				}
				continue
			}
			t := &chaosTOTP{label: label, secret: es.Secret, state: enStarted, order: order}
			cl.mu.Lock()
			cl.totp[label] = t
			if rng.IntN(5) == 0 {
				cl.st.abandoned++
				cl.mu.Unlock()
				continue
			}
			ctr := nowStep()
			t.state, t.last = enFinishing, ctr
			cl.mu.Unlock()
			code, err := totpCode(es.Secret, ctr)
			if err != nil {
				violate("%v", err)
				return
			}
			var ef enrollFinishResult
			err = timed(func() error {
				return r.call("enrollFinish", map[string]any{"enrollmentId": es.EnrollmentID, "response": map[string]string{"code": code}}, &ef)
			})
			if err != nil && isConnErr(err) {
				cut()
				return
			}
			cl.mu.Lock()
			if err == nil {
				t.state, t.id = enEnrolled, ef.CredentialID
				cl.used = append(cl.used, usedCode{label: label, code: code, counter: ctr})
				cl.st.enrolled++
				cl.st.totpAccepted++
			} else {
				t.state = enStarted // not finished: must not be listed
				chaosErrs.add(err)
			}
			cl.mu.Unlock()
		case op == "totp": // a TOTP step-up with a code never used
			code, err := totpCode(fresh.secret, freshCtr)
			if err != nil {
				violate("%v", err)
				return
			}
			cl.mu.Lock()
			fresh.last = freshCtr
			cl.mu.Unlock()
			gen0, busy0 := led.resetMark()
			tok, err := stepUp("totp", code)
			if err != nil && isConnErr(err) {
				cut()
				return
			}
			if err != nil {
				violate("a TOTP code never used (%s, counter %d) was refused: %v", fresh.label, freshCtr, err)
				continue
			}
			led.minted(tok, gen0, busy0)
			cl.mu.Lock()
			cl.used = append(cl.used, usedCode{label: fresh.label, code: code, counter: freshCtr})
			cl.st.totpAccepted++
			cl.mu.Unlock()
		case op == "recovery": // a recovery-code step-up
			code := rcFree[rng.IntN(len(rcFree))]
			cl.mu.Lock()
			cl.rcUse[code] = false
			cl.mu.Unlock()
			gen0, busy0 := led.resetMark()
			tok, err := stepUp("recovery_code", code)
			if err != nil && isConnErr(err) {
				cut()
				return
			}
			if err != nil {
				violate("an unused recovery code was refused: %v", err)
				continue
			}
			led.minted(tok, gen0, busy0)
			cl.mu.Lock()
			cl.rcUse[code] = true
			cl.st.rcAccepted++
			cl.mu.Unlock()
		default:
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// ensureUnlink mints a single-use credential:unlink token, which
// removeCredential consumes.
func ensureUnlink(r *rpc, assertion func(string) (string, string)) error {
	a, _ := assertion("credential:unlink")
	return timed(func() error {
		return r.call("requestExternalAuthElevatedToken", map[string]any{"assertion": a, "requestedScopes": []string{"credential:unlink"}}, nil)
	})
}

func (s credStats) String() string {
	return fmt.Sprintf("TOTP codes accepted %d (enrollments and step-ups), replayed after a restart and refused as used %d (%d left their window unchecked); "+
		"recovery codes accepted %d, replayed and refused %d, codes of a replaced set refused %d, regenerations %d; "+
		"enrollments answered %d, found after restarts %d times; left unfinished %d, absent after the restart %d; "+
		"cut mid-write and resolved by listing: %d landed, %d did not; removals answered %d, absent after restarts %d; audit chain verified %d times; operations (tried, cut by the kill): %v",
		s.totpAccepted, s.totpReplayRefused, s.totpExpiredUnchecked, s.rcAccepted, s.rcReplayRefused, s.rcOldRefused, s.rcRegens,
		s.enrolled, s.enrolledFound, s.abandoned, s.abandonedAbsent, s.inflightLanded, s.inflightNot, s.removed, s.removedAbsent, s.auditVerified, s.ops)
}
