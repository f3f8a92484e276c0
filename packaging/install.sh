#!/bin/sh
# Installs stepup-agent, stepupctl and stepupctl-inspect (which runs
# stepupctl's audit, doctor and completion; next to stepupctl, where it
# looks for it) (and stepup-pam-helper, for the
# password method, when it can be built or is in --from DIR) and sets the
# agent up as a user service: systemd user units on Linux
# (docs/systemd.md), a launchd agent on macOS (docs/launchd.md). Safe to
# run again.
#
#   packaging/install.sh [--bin-dir DIR] [--from DIR] [--system] [--no-enable]
#   packaging/install.sh --uninstall [--bin-dir DIR] [--system]
#
#   --from DIR     take the binaries from DIR (default: build them with go
#                  from this checkout; the helper only where libpam's
#                  headers are, Debian: libpam0g-dev)
#   --bin-dir DIR  install the binaries there (default: ~/.local/bin, or
#                  /usr/local/bin with --system)
#   --system       Linux, as root: binaries to /usr/local/bin, the units to
#                  /etc/systemd/user (for every user) and the environment
#                  generator to /usr/local/lib/systemd/user-environment-generators;
#                  each user then runs `systemctl --user enable --now
#                  stepup-agent.socket`
#   --no-enable    install the files only; print the commands that enable
#                  the service
set -eu

here=$(cd "$(dirname "$0")" && pwd)
from="" bindir="" system=0 enable=1 uninstall=0
while [ $# -gt 0 ]; do
	case $1 in
	--from) from=$2; shift 2 ;;
	--bin-dir) bindir=$2; shift 2 ;;
	--system) system=1; shift ;;
	--no-enable) enable=0; shift ;;
	--uninstall) uninstall=1; shift ;;
	-h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
done

: "${HOME:?install.sh: HOME is not set}"
os=$(uname -s)
if [ -z "$bindir" ]; then
	if [ $system = 1 ]; then bindir=/usr/local/bin; else bindir=$HOME/.local/bin; fi
fi
config=${XDG_CONFIG_HOME:-$HOME/.config}
say() { printf 'install.sh: %s\n' "$*" >&2; }

if [ $system = 1 ]; then
	unitdir=/etc/systemd/user
	gendir=/usr/local/lib/systemd/user-environment-generators
else
	unitdir=$config/systemd/user
	envdir=$config/environment.d
fi
plist=$HOME/Library/LaunchAgents/com.stepup-agent.plist

if [ $uninstall = 1 ]; then
	if [ "$os" = Darwin ]; then
		launchctl bootout "gui/$(id -u)" "$plist" 2>/dev/null || true
		launchctl unsetenv STEPUP_AUTH_SOCK 2>/dev/null || true
		rm -f "$plist"
	else
		if [ $system = 0 ]; then
			systemctl --user disable --now stepup-agent.socket stepup-agent.service 2>/dev/null || true
		fi
		rm -f "$unitdir/stepup-agent.socket" "$unitdir/stepup-agent.service"
		if [ $system = 1 ]; then rm -f "$gendir/60-stepup-agent"; else rm -f "$envdir/60-stepup-agent.conf"; fi
		[ $system = 1 ] || systemctl --user daemon-reload 2>/dev/null || true
	fi
	rm -f "$bindir/stepup-agent" "$bindir/stepupctl" "$bindir/stepupctl-inspect" "$bindir/stepup-pam-helper"
	say "removed stepup-agent (your policy, audit log and keychain items are kept)"
	exit 0
fi

# 1. The binaries.
if [ -z "$from" ]; then
	command -v go >/dev/null 2>&1 || { say "go is not installed: build the binaries elsewhere and pass --from DIR"; exit 1; }
	from=$(mktemp -d)
	trap 'rm -rf "$from"' EXIT
	say "building stepup-agent and stepupctl"
	# Static on Linux (no cgo: PAM runs in the helper); macOS keeps cgo
	# for its Keychain.
	agentcgo=0
	[ "$os" != Darwin ] || agentcgo=1
	(cd "$here/.." && CGO_ENABLED=$agentcgo go build -trimpath -o "$from/" ./cmd/stepup-agent &&
		CGO_ENABLED=0 go build -trimpath -o "$from/" ./cmd/stepupctl ./cmd/stepupctl-inspect)
	# The password method's helper is the one cgo program; it needs a C
	# compiler and libpam's headers.
	if (cd "$here/.." && CGO_ENABLED=1 go build -trimpath -o "$from/" ./cmd/stepup-pam-helper) 2>"$from/helper.log"; then
		say "built stepup-pam-helper (the password method)"
	else
		say "stepup-pam-helper not built (needs a C compiler and libpam's headers; Debian: sudo apt-get install gcc libpam0g-dev), so the password method is unavailable:"
		sed -n '1,3s/^/    /p' "$from/helper.log" >&2
	fi
fi
for b in stepup-agent stepupctl stepupctl-inspect; do
	[ -x "$from/$b" ] || { say "$from/$b is missing or not executable"; exit 1; }
done
mkdir -p "$bindir"
for b in stepup-agent stepupctl stepupctl-inspect; do
	install -m 0755 "$from/$b" "$bindir/$b.new"
	mv -f "$bindir/$b.new" "$bindir/$b"
done
say "installed $bindir/stepup-agent, $bindir/stepupctl and $bindir/stepupctl-inspect"
# Next to the agent, where it looks for it; never setuid (the helper
# refuses to run so). The agent hands it passwords, so nobody else may
# write it or its directory.
if [ -x "$from/stepup-pam-helper" ]; then
	install -m 0755 "$from/stepup-pam-helper" "$bindir/stepup-pam-helper.new"
	mv -f "$bindir/stepup-pam-helper.new" "$bindir/stepup-pam-helper"
	say "installed $bindir/stepup-pam-helper"
	for d in /etc/pam.d /usr/lib/pam.d; do [ ! -f "$d/stepup-agent" ] || pamok=1; done
	[ -n "${pamok:-}" ] || say "the password method also needs the PAM service file: sudo install -m 644 $here/pam/stepup-agent /etc/pam.d/stepup-agent"
	[ "$os" = Darwin ] || say "note: under the shipped systemd unit (NoNewPrivileges=) password checks are unavailable; docs/systemd.md, \"Hardening, and what it costs\", says why and how to relax it"
else
	rm -f "$bindir/stepup-pam-helper"
fi

# The agent's state directory (audit log, file keychain), the user's alone.
[ $system = 1 ] || mkdir -p -m 0700 "${XDG_STATE_HOME:-$HOME/.local/state}/stepup"

# sed replacement text: escape \ & and the | delimiter.
esc() { printf '%s' "$1" | sed 's/[\\&|]/\\&/g'; }
agent=$(esc "$bindir/stepup-agent")

if [ "$os" = Darwin ]; then
	# 2. The launchd agent.
	mkdir -p "$(dirname "$plist")"
	sed "s|/usr/local/bin/stepup-agent|$agent|" "$here/launchd/com.stepup-agent.plist" >"$plist.new"
	mv -f "$plist.new" "$plist"
	say "installed $plist"
	if [ $enable = 1 ]; then
		launchctl bootout "gui/$(id -u)" "$plist" 2>/dev/null || true
		launchctl bootstrap "gui/$(id -u)" "$plist"
		say "loaded: launchctl print gui/$(id -u)/com.stepup-agent shows it"
	else
		say "to start it: launchctl bootstrap gui/\$(id -u) $plist"
	fi
	exit 0
fi

# 2. The systemd user units, with ExecStart pointing at the binary.
mkdir -p "$unitdir"
install -m 0644 "$here/systemd/user/stepup-agent.socket" "$unitdir/stepup-agent.socket"
sed "s|^ExecStart=/usr/local/bin/stepup-agent|ExecStart=$agent|" "$here/systemd/user/stepup-agent.service" >"$unitdir/stepup-agent.service.new"
chmod 0644 "$unitdir/stepup-agent.service.new"
mv -f "$unitdir/stepup-agent.service.new" "$unitdir/stepup-agent.service"
say "installed $unitdir/stepup-agent.socket and stepup-agent.service"

# 3. STEPUP_AUTH_SOCK for the session: a generator system-wide, or
#    environment.d for this user.
if [ $system = 1 ]; then
	mkdir -p "$gendir"
	install -m 0755 "$here/systemd/user-environment-generators/60-stepup-agent" "$gendir/60-stepup-agent"
	say "installed $gendir/60-stepup-agent"
	say "each user enables it with: systemctl --user daemon-reload && systemctl --user enable --now stepup-agent.socket"
	exit 0
fi
mkdir -p "$envdir"
install -m 0644 "$here/systemd/environment.d/60-stepup-agent.conf" "$envdir/60-stepup-agent.conf"
say "installed $envdir/60-stepup-agent.conf (STEPUP_AUTH_SOCK for the next login)"

# 4. Enable and start the socket.
if [ $enable = 1 ] && systemctl --user show-environment >/dev/null 2>&1; then
	systemctl --user daemon-reload
	systemctl --user enable --now stepup-agent.socket
	# Also for the current session, until the next login reads environment.d.
	systemctl --user set-environment STEPUP_AUTH_SOCK="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/stepup/agent.sock"
	say "enabled: systemctl --user status stepup-agent.socket shows it"
else
	[ $enable = 0 ] || say "no systemd user manager reachable (systemctl --user failed)"
	say "to enable it: systemctl --user daemon-reload && systemctl --user enable --now stepup-agent.socket"
fi
say "in shells: export STEPUP_AUTH_SOCK=\"\${XDG_RUNTIME_DIR:-/run/user/\$(id -u)}/stepup/agent.sock\" (see docs/systemd.md)"
