#!/usr/bin/env bash
# ensure-packages.sh: make sure this machine has what a make target needs
# beyond Go, make and git, installing it as root in one apt-get run.
#
#   scripts/ensure-packages.sh tests|demo|bench
#
# `make test`, `make demo` and `make bench` run it first. What each needs,
# as Debian packages:
#
#   tests  gcc and libc6-dev: a C compiler, which `go test -race` needs (the
#          race detector is cgo);
#          postgresql and pgbouncer: the database tests, which
#          scripts/with-postgres.sh starts a throwaway server for;
#          chromium: the browser test of Pool.DebugHandler's page
#          (TestDebugHandlerChromium), which looks in $CHROMIUM, then at
#          /usr/bin/chromium.
#   demo   postgresql: the demo's throwaway database;
#          curl: the lines the demo prints to try.
#   bench  postgresql: the benchmarks' database.
#
# - If nothing is missing, it prints nothing and exits 0.
# - As root with apt-get, it says what it installs and why, then installs
#   all of it in one run (apt-get update, then apt-get install
#   --no-install-recommends), and checks that it is there now.
# - Otherwise it names the packages to install, as one apt-get line. What
#   cannot be done without is then an error (exit 1): the C compiler for the
#   tests, PostgreSQL for the demo and the benchmarks, and anything at all
#   with CI=true, where no test may skip. The rest is a warning (the tests
#   that need it skip) and the script exits 0.
set -euo pipefail

readonly prog=ensure-packages

log() { printf '%s: %s\n' "$prog" "$*" >&2; }

usage() {
	printf 'usage: %s tests|demo|bench\n' "$0" >&2
	exit 2
}

is_ci() {
	case ${CI:-} in
	true | TRUE | True | 1 | yes) return 0 ;;
	esac
	return 1
}

(($# == 1)) || usage
purpose=$1
case $purpose in
tests) wanted=(gcc libc6-dev postgresql pgbouncer chromium) ;;
demo) wanted=(postgresql curl) ;;
bench) wanted=(postgresql) ;;
*) usage ;;
esac

# Whether what package $1 brings is on the machine, where the scripts and
# tests look for it (scripts/with-postgres.sh looks in the same places).
present() {
	local p
	case $1 in
	gcc) command -v "$(go env CC 2>/dev/null || echo gcc)" >/dev/null 2>&1 ;;
	libc6-dev) [[ -f /usr/include/stdio.h ]] ;;
	postgresql)
		if command -v initdb >/dev/null && command -v pg_ctl >/dev/null && command -v postgres >/dev/null; then
			return 0
		fi
		for p in /usr/lib/postgresql/*/bin; do
			[[ -x $p/initdb && -x $p/pg_ctl && -x $p/postgres ]] && return 0
		done
		return 1
		;;
	pgbouncer) command -v pgbouncer >/dev/null || [[ -x /usr/sbin/pgbouncer ]] ;;
	chromium)
		if [[ -n ${CHROMIUM:-} ]]; then
			[[ -x $CHROMIUM ]] || command -v "$CHROMIUM" >/dev/null 2>&1
		else
			[[ -x /usr/bin/chromium ]]
		fi
		;;
	curl) command -v curl >/dev/null ;;
	esac
}

# What package $1 is for, in the messages.
what() {
	case $1 in
	gcc | libc6-dev) printf 'a C compiler, which go test -race needs' ;;
	postgresql) printf 'PostgreSQL, for the %s' "$purpose" ;;
	pgbouncer) printf 'PgBouncer, for the tests through it' ;;
	chromium) printf 'Chromium, for the browser test of the debug page' ;;
	curl) printf "curl, for the demo's lines to try" ;;
	esac
}

# Whether the make target cannot run without package $1 at all.
vital() {
	case $purpose:$1 in
	tests:gcc | tests:libc6-dev | demo:postgresql | bench:postgresql) return 0 ;;
	esac
	return 1
}

# The packages missing, and what they are for (the C compiler's two
# packages named once).
missing=()
reasons=()
for p in "${wanted[@]}"; do
	if ! present "$p"; then
		missing+=("$p")
		r=$(what "$p")
		if [[ ! " ${reasons[*]-} " == *" $r "* ]]; then
			reasons+=("$r")
		fi
	fi
done
((${#missing[@]} > 0)) || exit 0

joined() {
	local IFS=';'
	local s="$*"
	printf '%s' "${s//;/; }"
}

if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
	# Measured on a fresh Debian 12 (debootstrap minbase with Go, make,
	# git and ca-certificates), apt-get update and the downloads included:
	# all five of the tests' packages in 110 and 180 s (Chromium is most of
	# it), PostgreSQL and curl in about 20 s.
	took='about 20 s'
	if ((${#missing[@]} > 2)); then
		took='2 to 3 minutes'
	fi
	log "installing Debian's packages ${missing[*]} ($(joined "${reasons[@]}")), in one apt-get run: $took..."
	out=$(mktemp "${TMPDIR:-/tmp}/$prog.XXXXXX")
	trap 'rm -f -- "$out"' EXIT
	if {
		apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
	} >"$out" 2>&1; then
		still=()
		for p in "${missing[@]}"; do
			present "$p" || still+=("$p")
		done
		if ((${#still[@]} == 0)); then
			exit 0
		fi
		log "installing did not bring what these packages should: ${still[*]}"
		missing=("${still[@]}")
	else
		log "apt-get failed:"
		tail -n 20 "$out" >&2
	fi
	how="apt-get install ${missing[*]}"
else
	if [[ $(id -u) == 0 ]]; then
		log "apt-get not found: cannot install ${missing[*]}"
	fi
	how="sudo apt-get install ${missing[*]}"
fi

fatal=0
for p in "${missing[@]}"; do
	if vital "$p" || is_ci; then
		fatal=1
	fi
done
if ((fatal)); then
	log "error: make $purpose needs Debian's packages ${missing[*]}; install them with: $how"
	if is_ci; then
		log "(with CI=true every test must run: nothing may be skipped)"
	fi
	exit 1
fi
skip=''
if [[ $purpose == tests ]]; then
	skip='; the tests that need them will be skipped'
fi
log "warning: missing Debian's packages ${missing[*]} ($(joined "${reasons[@]}"))$skip; install them with: $how"
