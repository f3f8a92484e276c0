#!/usr/bin/env bash
# Saves what each prompt looks like into docs/img, for README.md and
# docs/prompts.md: screenshots of the GUI prompts (zenity, pinentry-gtk-2)
# taken on an Xvfb display, and the text screens of the terminal prompts
# (pinentry-tty, pinentry-curses) in a tmux pane. The prompt tests do the
# work (-update); they start an Xvfb of their own.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/img
go test -count=1 -run 'TestGUIGetPIN|TestGUIConfirm|TestGUICombined|TestTerminalInTmux' ./prompt -update -v 2>&1 | grep -E 'saved|^(ok|FAIL|---)' || true
ls -l docs/img/prompt-*
