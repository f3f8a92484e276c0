#!/bin/sh
# The long run of the audit log's crash loop (audit/auditlog/crash_linux_test.go):
# KILLS SIGKILLs (default 200) per keychain backend (file, Secret Service
# on a private gnome-keyring) and mode (crash only: 0 breaks and the whole
# chain verifies; tampering between kills: every tamper reported).
set -eu
cd "$(dirname "$0")/.."
STEPUP_AUDIT_KILLS="${1:-200}" exec go test -count=1 -timeout 60m -run 'TestCrashLoop' -v ./audit/auditlog
