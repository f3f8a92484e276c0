#!/usr/bin/env bash
# Installs everything the agent and its tests need on a fresh Debian 12
# machine: Debian packages (scripts/apt-packages.txt), Go modules, npm
# packages. Safe to run again; does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=$(grep -vE '^\s*(#|$)' scripts/apt-packages.txt | tr '\n' ' ')
missing=()
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

go mod download
# The test runner, fetched now so that the run itself needs no network.
go run gotest.tools/gotestsum@v1.13.0 --version >/dev/null

# npm packages for the tests that use an independent implementation
# (ethers for wallet signatures) and the Node client.
for d in $(ls -d testdata/npm clients/node 2>/dev/null); do
  if [ -f "$d/package.json" ]; then
    (cd "$d" && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi)
  fi
done
