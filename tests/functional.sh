#!/bin/sh
# The functional suite as one automake test.  It lives here, not in
# tests/func/, so that the build tree never gets a tests/func directory:
# automake's dist copies a listed directory from the build tree when one
# exists there, which would ship logs instead of the tests.
srcdir=${MAILTLSD_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
exec sh "$srcdir/tests/func/run.sh" "$@"
