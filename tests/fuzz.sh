#!/bin/sh
# The libFuzzer harnesses as one automake test (see tests/fuzz/README.md).
# Kept outside tests/fuzz/ for the same reason as tests/functional.sh.
srcdir=${MAILTLSD_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
exec sh "$srcdir/tests/fuzz/run.sh" "$@"
