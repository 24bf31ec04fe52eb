#!/usr/bin/env bash
# with-postgres.sh: run a command with DATABASE_URL pointing at a working
# PostgreSQL, then clean up.
#
#   scripts/with-postgres.sh COMMAND [ARGS...]
#
# `make test` and `make demo` use it. The tests that need PostgreSQL read
# DATABASE_URL and skip when it is unset, so a developer can always run them,
# and CI must not skip them silently.
#
# - If DATABASE_URL is already set and non-empty, COMMAND is exec'd with it
#   unchanged: no server is started.
# - Otherwise a throwaway server is started: initdb into a fresh temporary
#   folder, listening only on 127.0.0.1 on a free port (its unix socket stays
#   in that folder), with settings meant for tests (fsync off and so on), and
#   a database named "reqpool". COMMAND runs as a child with
#   DATABASE_URL=postgres://postgres@127.0.0.1:PORT/reqpool?sslmode=disable.
#   When it ends, however it ends, the server is stopped and the folder is
#   removed, and the script exits with COMMAND's status.
# - The server binaries (initdb, pg_ctl, postgres) are looked up in PATH, then
#   in the newest /usr/lib/postgresql/*/bin. As root, when they are missing,
#   Debian's postgresql package is installed with apt-get. initdb refuses to
#   run as root, so as root the server runs as the "postgres" OS user (created
#   if missing).
# - If no server can be had: with CI=true this is an error (exit 1);
#   elsewhere a warning is printed and COMMAND runs without DATABASE_URL, so
#   the tests that need PostgreSQL are skipped.
#
# Signals: COMMAND stays in the caller's process group and keeps its standard
# input, so Ctrl-C at a terminal reaches it directly, just as it would without
# the wrapper (the wrapper then does not send a second SIGINT). SIGINT and
# SIGQUIT that come from anywhere else, and SIGTERM and SIGHUP, are forwarded
# to COMMAND. The wrapper waits for COMMAND to end before it stops the server.
set -euo pipefail

readonly prog=with-postgres
readonly dbname=reqpool

log() { printf '%s: %s\n' "$prog" "$*" >&2; }

if (($# == 0)); then
	printf 'usage: %s COMMAND [ARGS...]\n' "$0" >&2
	exit 2
fi

# 1. A database given by the caller: use it as it is.
if [[ -n ${DATABASE_URL:-} ]]; then
	exec "$@"
fi

cmd=("$@")
is_root=0
if [[ $(id -u) == 0 ]]; then
	is_root=1
fi

tmp=''      # temporary folder: data directory, socket, logs
data=''     # data directory, set once initdb has been asked to make it
logfile=''  # server log
port=''
initdb_bin='' pg_ctl_bin='' postgres_bin='' bindir=''

is_ci() {
	case ${CI:-} in
	true | TRUE | True | 1 | yes) return 0 ;;
	esac
	return 1
}

# Runs a server program as the user the server runs as: "postgres" when we
# are root, ourselves otherwise. The working directory is the temporary
# folder, which that user can enter.
as_pg() {
	if ((is_root)); then
		if command -v runuser >/dev/null 2>&1; then
			(cd "$tmp" && runuser -u postgres -- "$@")
		else
			# shellcheck disable=SC2016 # expanded by the inner shell
			(cd "$tmp" && su -s /bin/sh -c 'exec "$0" "$@"' -- postgres "$@")
		fi
	else
		(cd "$tmp" && "$@")
	fi
}

# Sets initdb_bin, pg_ctl_bin, postgres_bin and bindir (the folder of the
# client programs that go with them), or returns 1.
find_server() {
	local p dir
	if p=$(command -v initdb) && command -v pg_ctl >/dev/null && command -v postgres >/dev/null; then
		initdb_bin=$p
		pg_ctl_bin=$(command -v pg_ctl)
		postgres_bin=$(command -v postgres)
		# PATH may hold symlinks (e.g. /usr/local/bin/initdb); createdb and
		# psql sit beside the real files.
		bindir=$(dirname -- "$(readlink -f -- "$initdb_bin" 2>/dev/null || printf '%s' "$initdb_bin")")
		return 0
	fi
	# The newest version that has all three (sort -V puts 9.6 before 15).
	dir=$(for p in /usr/lib/postgresql/*/bin; do
		if [[ -x $p/initdb && -x $p/pg_ctl && -x $p/postgres ]]; then
			printf '%s\n' "$p"
		fi
	done | sort -V | tail -n 1)
	if [[ -n $dir ]]; then
		initdb_bin=$dir/initdb
		pg_ctl_bin=$dir/pg_ctl
		postgres_bin=$dir/postgres
		bindir=$dir
		return 0
	fi
	return 1
}

# Installs Debian's postgresql package; output only when it fails.
install_server() {
	local out=$tmp/apt.log
	if ! command -v apt-get >/dev/null 2>&1; then
		return 1
	fi
	log "PostgreSQL not found; installing Debian's postgresql package with apt-get"
	if ! {
		apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
	} >"$out" 2>&1; then
		log "apt-get failed:"
		tail -n 20 "$out" >&2
		return 1
	fi
}

ensure_pg_user() {
	if id -u postgres >/dev/null 2>&1; then
		return 0
	fi
	if ! command -v useradd >/dev/null 2>&1; then
		return 1
	fi
	useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql \
		--shell /bin/sh --comment 'PostgreSQL administrator' postgres
}

# Whether something uses this TCP port on this machine.
port_in_use() {
	local port=$1 hex f
	printf -v hex '%04X' "$port"
	for f in /proc/net/tcp /proc/net/tcp6; do
		if [[ -r $f ]] && grep -Eq "^ *[0-9]+: [0-9A-F]+:$hex " "$f"; then
			return 0
		fi
	done
	# Where /proc is missing or another network namespace hides a listener.
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		return 0
	fi
	return 1
}

# Sets port to a free one, chosen at random below the usual ephemeral range
# (32768 and up) so that concurrent runs rarely try the same one. Not run in
# a subshell, so that each call draws new numbers.
pick_port() {
	local i p
	for ((i = 0; i < 100; i++)); do
		p=$((20000 + RANDOM % 12000))
		if ! port_in_use "$p"; then
			port=$p
			return 0
		fi
	done
	return 1
}

# Quotes a string for postgresql.conf.
conf_quote() {
	printf "'%s'" "${1//\'/\'\'}"
}

# Starts the server on a free port, trying another port if two runs raced
# for the same one. Sets port.
start_server() {
	local attempt
	for ((attempt = 1; attempt <= 5; attempt++)); do
		pick_port || return 1
		if as_pg "$pg_ctl_bin" -D "$data" -l "$logfile" -o "-p $port" -w -t 30 -s start \
			>>"$tmp/pg_ctl.log" 2>&1; then
			return 0
		fi
		# Someone else took the port between the check and the start.
		if [[ -f $logfile ]] && grep -Eqi 'could not bind|address already in use|could not create any TCP/IP sockets' "$logfile"; then
			continue
		fi
		return 1
	done
	return 1
}

create_database() {
	local tool
	if tool=$(command -v "$bindir/createdb") || tool=$(command -v createdb); then
		"$tool" -h 127.0.0.1 -p "$port" -U postgres "$dbname"
	elif tool=$(command -v "$bindir/psql") || tool=$(command -v psql); then
		"$tool" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
			-c "CREATE DATABASE $dbname"
	else
		return 1
	fi
}

stop_server() {
	local pid
	if [[ -z $data || ! -f $data/postmaster.pid ]]; then
		return 0
	fi
	if ! as_pg "$pg_ctl_bin" -D "$data" -m immediate -w -t 20 -s stop >/dev/null 2>&1; then
		pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
		if [[ $pid =~ ^[0-9]+$ ]]; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
}

cleanup() {
	set +e
	stop_server
	if [[ -n $tmp ]]; then
		rm -rf -- "$tmp"
	fi
	tmp='' data=''
}

# No server: an error in CI, a warning elsewhere.
no_server() {
	local reason=$1
	if is_ci; then
		log "error: $reason (with CI=true PostgreSQL is required: install it or set DATABASE_URL)"
	else
		log "warning: $reason"
		log "running without DATABASE_URL: the tests that need PostgreSQL will be skipped (install PostgreSQL or set DATABASE_URL)"
	fi
	if [[ -n $logfile && -s $logfile ]]; then
		log "last lines of the server log:"
		tail -n 25 "$logfile" >&2
	fi
	if is_ci; then
		exit 1
	fi
	cleanup
	trap - EXIT INT TERM HUP QUIT
	unset DATABASE_URL
	exec "${cmd[@]}"
}

trap cleanup EXIT
# Until COMMAND runs, a signal just ends the script (and cleanup runs).
trap 'exit 130' INT
trap 'exit 131' QUIT
trap 'exit 143' TERM
trap 'exit 129' HUP

# 2. Find or install the server binaries.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/$prog.XXXXXX") || no_server "cannot make a temporary folder"
# Keep the socket path short enough for a unix socket (107 bytes).
if ((${#tmp} > 80)); then
	rmdir -- "$tmp"
	tmp=$(mktemp -d "/tmp/$prog.XXXXXX")
fi

if ! find_server; then
	if ((is_root)); then
		if ! install_server; then
			no_server "PostgreSQL server programs (initdb, pg_ctl, postgres) not found, and installing Debian's postgresql package failed"
		fi
		if ! find_server; then
			no_server "PostgreSQL server programs (initdb, pg_ctl, postgres) still not found after installing Debian's postgresql package"
		fi
	else
		no_server "PostgreSQL server programs (initdb, pg_ctl, postgres) not found in PATH or /usr/lib/postgresql/*/bin, and not root, so not installing them (Debian: apt-get install postgresql)"
	fi
fi

if ((is_root)); then
	ensure_pg_user || no_server "cannot create the postgres OS user to run the server as (running as root)"
	chown postgres: "$tmp"
	if ! as_pg test -w "$tmp"; then
		# TMPDIR is not reachable for the postgres user.
		rm -rf -- "$tmp"
		tmp=$(mktemp -d "/tmp/$prog.XXXXXX")
		chown postgres: "$tmp"
	fi
fi

logfile=$tmp/postgres.log
data=$tmp/data

# 3. Make the cluster and start it.
if ! as_pg "$initdb_bin" -D "$data" -A trust -U postgres -E UTF8 --no-locale --no-sync \
	>"$tmp/initdb.log" 2>&1; then
	cat "$tmp/initdb.log" >&2
	no_server "initdb failed"
fi
{
	printf '\n# Added by scripts/with-postgres.sh: a throwaway server for tests.\n'
	printf 'listen_addresses = %s\n' "'127.0.0.1'"
	printf 'unix_socket_directories = %s\n' "$(conf_quote "$tmp")"
	printf 'fsync = off\n'
	printf 'synchronous_commit = off\n'
	printf 'full_page_writes = off\n'
	printf 'max_connections = 200\n'
	printf 'logging_collector = off\n'
} >>"$data/postgresql.conf"

if ! start_server; then
	no_server "the PostgreSQL server did not start ($(grep -m 1 '^pg_ctl:' "$tmp/pg_ctl.log" 2>/dev/null || echo 'no free port'))"
fi
if ! create_database >>"$tmp/pg_ctl.log" 2>&1; then
	cat "$tmp/pg_ctl.log" >&2
	no_server "could not create the database $dbname"
fi

version=$("$postgres_bin" -V 2>/dev/null | sed -n 's/.*(PostgreSQL) \([^ ]*\).*/\1/p')
log "PostgreSQL ${version:-?} on 127.0.0.1:$port (data in $tmp)"
export DATABASE_URL="postgres://postgres@127.0.0.1:$port/$dbname?sslmode=disable"

# 4. Run COMMAND as a child and pass signals on.

# Whether this script is in the foreground process group of its terminal:
# then a Ctrl-C or Ctrl-\ at that terminal has reached COMMAND already.
# shellcheck disable=SC2317 # called from forward, which traps call
in_tty_foreground() {
	local stat rest pgrp tpgid
	{ stat=$(<"/proc/$$/stat"); } 2>/dev/null || return 1
	rest=${stat##*) }
	# state ppid pgrp session tty_nr tpgid ...
	read -r _ _ pgrp _ _ tpgid _ <<<"$rest"
	[[ $tpgid != -1 && $tpgid == "$pgrp" ]]
}

got_signal=0
# shellcheck disable=SC2317 # called by the traps below
forward() {
	got_signal=1
	if [[ $1 == INT || $1 == QUIT ]] && in_tty_foreground; then
		return 0
	fi
	kill -s "$1" "$child" 2>/dev/null || true
}

# A background job starts with SIGINT and SIGQUIT ignored and its standard
# input from /dev/null; undo both so COMMAND runs as it would without us.
(
	trap - INT QUIT
	exec "${cmd[@]}"
) <&0 &
child=$!
trap 'forward INT' INT
trap 'forward QUIT' QUIT
trap 'forward TERM' TERM
trap 'forward HUP' HUP

status=0
while :; do
	got_signal=0
	if wait "$child"; then status=0; else status=$?; fi
	# A trapped signal makes wait return early (status > 128).
	if ((got_signal == 0 || status <= 128)); then
		break
	fi
	if ! kill -0 "$child" 2>/dev/null; then
		# Gone: collect its status unless that wait already did.
		if wait "$child" 2>/dev/null; then status=0; else
			s=$?
			if ((s != 127)); then status=$s; fi
		fi
		break
	fi
done
trap '' INT QUIT TERM HUP
exit "$status"
