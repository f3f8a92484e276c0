package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/stepup-agent/stepup-agent/audit"
)

// Every record of every script's audit log (rotated files and files set
// aside by a chain break included) is checked when the script ends:
// only the fields docs/audit.md lists, and nothing that looks like a
// token, a TOTP secret or a one-time code.
var (
	auditFields = map[string]bool{"seq": true, "prev": true, "time": true, "event": true, "pid": true, "uid": true,
		"exe": true, "method": true, "scopes": true, "jti": true, "result": true, "detail": true, "revoked": true,
		"caller": true, "remote": true, "retryAfterSeconds": true, "jws": true, "file": true, "head": true}
	jwtLike    = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}`)
	base32Like = regexp.MustCompile(`[A-Z2-7]{16,}`)
	codeLike   = regexp.MustCompile(`(^|[^0-9])[0-9]{6,8}([^0-9]|$)`)
	// pathLike is a file path in a field (the caller's executable, a
	// script): a test's temporary directory has 6-9 digit names, and a
	// code is never part of a path.
	pathLike = regexp.MustCompile(`[^\s"()]*/[^\s"()]*`)
)

func checkAuditLogs(t testscript.T, work string) {
	files, _ := filepath.Glob(filepath.Join(work, "audit*.jsonl*"))
	for _, f := range files {
		if err := audit.ReadRecords(f, func(raw []byte, r *audit.Record) error {
			return checkAuditRecord(raw)
		}); err != nil {
			t.Fatal(fmt.Sprintf("%s: %v", f, err))
		}
	}
}

func checkAuditRecord(raw []byte) error {
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil // a torn last line of a killed agent
	}
	for k, v := range m {
		if !auditFields[k] {
			return fmt.Errorf("record with a field docs/audit.md does not list, %q: %s", k, raw)
		}
		if k == "prev" || k == "time" || k == "head" || k == "exe" || k == "file" {
			continue
		}
		s := fmt.Sprint(v)
		if k == "jws" {
			// A checkpoint's payload is {seq, prev} and nothing else.
			parts := strings.Split(s, ".")
			p, err := base64.RawURLEncoding.DecodeString(parts[min(1, len(parts)-1)])
			var pl map[string]any
			if m["event"] != audit.EventCheckpoint || err != nil || json.Unmarshal(p, &pl) != nil || len(pl) != 2 || pl["seq"] == nil || pl["prev"] == nil {
				return fmt.Errorf("a jws that is not a checkpoint's: %s", raw)
			}
			continue
		}
		if jwtLike.MatchString(s) || base32Like.MatchString(s) || strings.Contains(s, "otpauth") ||
			(k != "pid" && k != "uid" && k != "seq" && codeLike.MatchString(pathLike.ReplaceAllString(s, " "))) {
			return fmt.Errorf("field %q looks like a token, a secret or a code: %s", k, raw)
		}
	}
	return nil
}

func TestAuditRecordCheck(t *testing.T) {
	bad := []string{
		`{"seq":1,"event":"verify","detail":"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0"}`,
		`{"seq":1,"event":"enroll","detail":"JBSWY3DPEHPK3PXPJBSWY3DP"}`,
		`{"seq":1,"event":"verification","detail":"code 123456"}`,
		`{"seq":1,"event":"enroll","secret":"x"}`,
		`{"seq":1,"event":"stepup","jws":"eyJhbGciOiJFZERTQSJ9.eyJ0b2tlbiI6IngifQ.c2ln"}`,
	}
	for _, b := range bad {
		if checkAuditRecord([]byte(b)) == nil {
			t.Errorf("not caught: %s", b)
		}
	}
	ok := `{"seq":12,"prev":"` + audit.Zero + `","time":"2026-12-02T05:10:31.123456789Z","event":"checkpoint","pid":123456,"uid":1000,` +
		`"jws":"eyJhbGciOiJFZERTQSJ9.` + base64.RawURLEncoding.EncodeToString([]byte(`{"seq":12,"prev":"00"}`)) + `.c2ln"}`
	if err := checkAuditRecord([]byte(ok)); err != nil {
		t.Error(err)
	}
	inTemp := `{"seq":3,"event":"stepup","caller":"node /tmp/go-test-script47940615/app/sign.mjs (pid 4242)"}`
	if err := checkAuditRecord([]byte(inTemp)); err != nil {
		t.Errorf("a caller in a test's temporary directory: %v", err)
	}
	if checkAuditRecord([]byte(`{"seq":3,"event":"stepup","caller":"/tmp/x/app (pid 42) code 123456"}`)) == nil {
		t.Error("a code beside a path not caught")
	}
}
