#!/usr/bin/env bash
# ensure-chromium.sh: make sure headless Chromium is there for the browser
# test of Pool.DebugHandler (TestDebugHandlerChromium in debug_test.go).
#
#   scripts/ensure-chromium.sh
#
# `make test` (its race target) runs it before the tests. The test looks for
# Chromium in $CHROMIUM, then at /usr/bin/chromium; so does this script.
#
# - If Chromium is there, it prints nothing and exits 0.
# - Otherwise, as root with apt-get, it installs Debian's chromium package
#   (apt-get update, then apt-get install --no-install-recommends chromium),
#   saying so first, as scripts/with-postgres.sh does for PostgreSQL.
# - If Chromium still cannot be had (not root, no apt-get, apt-get failed):
#   with CI=true this is an error (exit 1), since the test must not skip in
#   CI; elsewhere a warning says that the test will be skipped, and the
#   script exits 0.
set -euo pipefail

readonly prog=ensure-chromium

log() { printf '%s: %s\n' "$prog" "$*" >&2; }

is_ci() {
	case ${CI:-} in
	true | TRUE | True | 1 | yes) return 0 ;;
	esac
	return 1
}

# Whether Chromium is there, where the test looks for it.
found() {
	if [[ -n ${CHROMIUM:-} ]]; then
		[[ -x $CHROMIUM ]] || command -v "$CHROMIUM" >/dev/null 2>&1
	else
		[[ -x /usr/bin/chromium ]]
	fi
}

# No Chromium: an error under CI=true, a warning elsewhere.
missing() {
	if is_ci; then
		log "error: $1; with CI=true the browser test must run: install it (Debian: apt-get install chromium) or set CHROMIUM"
		exit 1
	fi
	log "warning: $1"
	log "the browser test of the debug page will be skipped; to run it, install Chromium (Debian: sudo apt-get install chromium) or set CHROMIUM"
	exit 0
}

if found; then
	exit 0
fi
if [[ -n ${CHROMIUM:-} ]]; then
	missing "CHROMIUM is set to $CHROMIUM, which is not an executable"
fi
if [[ $(id -u) != 0 ]]; then
	missing "Chromium not found at /usr/bin/chromium (this script installs it only when run as root)"
fi
if ! command -v apt-get >/dev/null 2>&1; then
	missing "Chromium not found at /usr/bin/chromium, and apt-get not found to install it"
fi

out=$(mktemp "${TMPDIR:-/tmp}/$prog.XXXXXX")
trap 'rm -f -- "$out"' EXIT
# Measured on this project's machine (Debian 12), apt-get update and the
# download of its dependencies included: 10 s.
log "installing Debian's chromium package with apt-get, for the browser test of the debug page (about 15 s)..."
if ! {
	apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
} >"$out" 2>&1; then
	log "apt-get failed:"
	tail -n 20 "$out" >&2
	missing "installing Debian's chromium package failed"
fi
if ! found; then
	missing "installing Debian's chromium package did not bring /usr/bin/chromium"
fi
