#!/usr/bin/env bash
# Runs inside dbus-run-session (scripts/test.sh): starts the services the
# tests talk to and runs the suites; gnome-keyring ends with the session.
set -euo pipefail
cd "$(dirname "$0")/.."

# A real Secret Service: unlocking first creates the default collection.
eval "$(printf %s PASS | gnome-keyring-daemon --unlock --components=secrets)"
export GNOME_KEYRING_CONTROL
STEPUP_TEST_SECRET_SERVICE=1; export STEPUP_TEST_SECRET_SERVICE

# zenity and pinentry-gtk-2 get an X display per test binary: each package
# that needs one starts its own Xvfb (internal/testenv.XDisplay), since go
# test runs packages side by side and one package's keys must not reach
# another's window.

export STEPUP_TEST_REQUIRE_ALL=${CI:-}   # in CI a missing prerequisite fails

echo "== go vet"
go vet ./...
echo "== go mod tidy -diff"
go mod tidy -diff
if [ -f clients/node/package.json ]; then
  echo "== node --test (clients/node)"
  (cd clients/node && npm test)
fi
echo "== python3 -m unittest (clients/python)"
python3 -m unittest discover -s clients/python/tests -v
# The Debian package alone, before the Go suite: while it is installed its
# PAM file changes what every agent on the machine offers. Built, installed
# with dpkg -i, checked and purged (needs root).
echo "== the Debian package (packaging/deb)"
STEPUP_TEST_DEB=1 go test -count=1 -run '^TestDebianPackage$' ./packaging
# The allocation tests once without the race detector, which allocates
# on its own (under -race they check only the answers): the request
# path's zero allocations per request are held in CI too.
echo "== go test -run Allocates (without -race)"
go test -count=1 -run 'Allocates' ./agent ./ipc
# The Go suite last, under the race detector (fuzz targets run their seed
# corpora as tests). gotestsum (the Go module proxy serves it) prints each
# package and closes with the count of tests run, skipped and failed.
echo "== go test -race"
json=()
[ -n "${STEPUP_TEST_JSON:-}" ] && json=(--jsonfile "$STEPUP_TEST_JSON")
go run gotest.tools/gotestsum@v1.13.0 --format pkgname-and-test-fails \
  "${json[@]}" -- -race -count=1 -timeout 30m ./... "$@"
