#!/usr/bin/env bash
# Quick start on a fresh Debian 12 (as root): install dependencies, build,
# and run mailtlsd in the foreground with a demo configuration in front of
# throwaway Dovecot and Postfix backends (tools/demo.py prints the client
# commands to try).  Ctrl-C stops everything it started.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash tools/install-deps.sh
autoreconf -fi
mkdir -p _build
cd _build
[ -f Makefile ] || ../configure
make -j"$(nproc)"
exec /usr/bin/python3 "$top/tools/demo.py" --binary "$top/_build/mailtlsd" "$@"
