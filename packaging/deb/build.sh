#!/bin/sh
# Builds the Debian package of stepup-agent from this checkout with nfpm
# (packaging/deb/nfpm.yaml):
#
#   packaging/deb/build.sh [OUTDIR]      # default OUTDIR: dist/
#
# The binaries are static (CGO_ENABLED=0); the password method then runs
# through stepup-pam-helper, built (with cgo and the libpam headers) and
# packaged when ./cmd/stepup-pam-helper exists. The man pages are the
# committed ones in packaging/man (their tests keep them in step with the
# code); the completions are written by the stepupctl just built.
# STEPUP_VERSION overrides the version (default: the agent's, as
# stepup-agent --version prints it).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/dist}
nfpm_version=v2.48.0
say() { printf 'build.sh: %s\n' "$*" >&2; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/man" "$stage/completions" "$stage/units" "$stage/doc"
ln -s "$repo" "$stage/repo"

cd "$repo"
say "building stepup-agent, stepupctl and stepupctl-inspect (static)"
CGO_ENABLED=0 go build -trimpath -ldflags=-buildid= -o "$stage/bin/" ./cmd/stepup-agent ./cmd/stepupctl ./cmd/stepupctl-inspect
helper=0
if [ -d cmd/stepup-pam-helper ]; then
	if [ -e /usr/include/security/pam_appl.h ]; then
		say "building stepup-pam-helper (cgo, libpam)"
		CGO_ENABLED=1 go build -trimpath -ldflags=-buildid= -o "$stage/bin/" ./cmd/stepup-pam-helper
		helper=1
	else
		say "cmd/stepup-pam-helper exists but the libpam headers do not (apt-get install libpam0g-dev): packaging without it"
	fi
fi

version=${STEPUP_VERSION:-$("$stage/bin/stepup-agent" --version | awk '{print $2}')}
# Debian versions: a pre-release sorts before the release with "~".
version=$(printf %s "$version" | sed 's/^v//; s/-/~/')
arch=$(go env GOARCH)

for p in packaging/man/*.1 packaging/man/*.5; do
	gzip -9n <"$p" >"$stage/man/$(basename "$p").gz"
done
"$stage/bin/stepupctl" completion bash >"$stage/completions/stepupctl.bash"
"$stage/bin/stepupctl" completion zsh >"$stage/completions/_stepupctl"
"$stage/bin/stepupctl" completion fish >"$stage/completions/stepupctl.fish"
sed 's|^ExecStart=/usr/local/bin/stepup-agent|ExecStart=/usr/bin/stepup-agent|' \
	packaging/systemd/user/stepup-agent.service >"$stage/units/stepup-agent.service"
grep -q '^ExecStart=/usr/bin/stepup-agent ' "$stage/units/stepup-agent.service" ||
	{ say "stepup-agent.service has no ExecStart=/usr/local/bin/stepup-agent line to point at /usr/bin"; exit 1; }
cp README.md "$stage/doc/"
cp docs/*.md "$stage/doc/"

config=$stage/nfpm.yaml
cp "$here/nfpm.yaml" "$config"
if [ $helper = 1 ]; then
	cat >>"$config" <<'YAML'
  - src: ./bin/stepup-pam-helper
    dst: /usr/bin/stepup-pam-helper
    file_info: {mode: 0755}
YAML
fi

mkdir -p "$out"
say "packaging stepup-agent $version ($arch)"
(cd "$stage" && STEPUP_VERSION=$version STEPUP_ARCH=$arch \
	go run "github.com/goreleaser/nfpm/v2/cmd/nfpm@$nfpm_version" package \
	--config "$config" --packager deb --target "$out/")
ls "$out"/stepup-agent_"$version"_"$arch".deb
