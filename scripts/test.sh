#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, starts
# a private D-Bus session with gnome-keyring (the GUI tests start their own
# Xvfb displays), then runs
# go vet, the tests under the race detector (with the fuzz targets' seed
# corpora) and the Node client's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec dbus-run-session -- scripts/test-in-session.sh "$@"
