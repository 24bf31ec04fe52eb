#!/usr/bin/env bash
# with-postgres.sh: run a command with a throwaway PostgreSQL, and PgBouncer
# in front of it, then clean up.
#
#   scripts/with-postgres.sh [--for tests|demo|bench] COMMAND [ARGS...]
#
# `make test`, `make demo` and `make bench` use it. The tests that need
# PostgreSQL read DATABASE_URL (and PGBOUNCER_URL, REQPOOL_PGCTL) and skip
# when it is unset, so a developer can always run them, and CI must not skip
# them silently.
#
# --for names what COMMAND is, for the messages and for what happens when no
# server can be had (see below): "tests" (the default), "demo" or "bench".
#
# - If DATABASE_URL is already set and non-empty, COMMAND is exec'd with the
#   environment unchanged: no server is started, and PGBOUNCER_URL and
#   REQPOOL_PGCTL are whatever the caller set (or unset).
# - Otherwise a throwaway PostgreSQL is started: initdb into a fresh temporary
#   folder, listening only on 127.0.0.1 on a free port (its unix socket stays
#   in that folder), with settings meant for tests (fsync off and so on), and
#   a database named "reqpool". Then a throwaway PgBouncer in front of it:
#   127.0.0.1 on another free port, its unix socket, pid file and log in the
#   same folder, pool_mode = transaction, auth_type = trust (auth_file lists
#   the user "postgres"), default_pool_size = 20, max_client_conn = 2000,
#   server_login_retry = 1, and ignore_startup_parameters =
#   extra_float_digits,datestyle, so that lib/pq (which sends datestyle and
#   client_encoding) and pgx can both connect; admin_users = postgres, so
#   `psql` on the database "pgbouncer" through it reaches its console. Its
#   soft limit of open files is raised to 4096 (within the hard limit), which
#   max_client_conn needs. The script waits until
#   `psql "$PGBOUNCER_URL" -c 'select 1'` works.
#   COMMAND runs as a child with
#     DATABASE_URL=postgres://postgres@127.0.0.1:PORT/reqpool?sslmode=disable
#     PGBOUNCER_URL=postgres://postgres@127.0.0.1:PORT2/reqpool?sslmode=disable
#     REQPOOL_PGCTL=FOLDER/pgctl, a generated script that runs pg_ctl for
#       this server (as the right user, with its -D, -l and -o "-p PORT"):
#       `"$REQPOOL_PGCTL" stop` stops it (pg_ctl's default fast mode; more
#       pg_ctl options may follow, e.g. `stop -m immediate`) and
#       `"$REQPOOL_PGCTL" start` starts it again on the same port and waits
#       until it accepts connections; tests use it to simulate an outage.
#   When COMMAND ends, however it ends, PgBouncer and then PostgreSQL are
#   stopped and the folder is removed, and the script exits with COMMAND's
#   status.
# - The server binaries (initdb, pg_ctl, postgres) are looked up in PATH, then
#   in the newest /usr/lib/postgresql/*/bin; pgbouncer in PATH, then in
#   /usr/sbin. This script installs nothing: scripts/ensure-packages.sh,
#   which the make targets run first, does. initdb and pgbouncer refuse to
#   run as root, so as root both servers run as the "postgres" OS user
#   (created if missing).
# - If no PostgreSQL can be had: with CI=true this is an error (exit 1); for
#   tests elsewhere a warning is printed and COMMAND runs without
#   DATABASE_URL, PGBOUNCER_URL and REQPOOL_PGCTL, so the tests that need
#   PostgreSQL are skipped; for the demo and the benchmarks, which cannot run
#   without it, it is an error (exit 1) that says how to get one.
# - If PostgreSQL runs but no PgBouncer can be had: with CI=true this is an
#   error (exit 1); elsewhere COMMAND runs without PGBOUNCER_URL, after a
#   warning for tests (the tests through PgBouncer are skipped) or a note for
#   the demo and the benchmarks, which do not use it.
#
# Signals: at a terminal, when the wrapper is in the terminal's foreground
# process group, COMMAND stays in that group and keeps its standard input,
# so Ctrl-C reaches it directly, just as it would without the wrapper (the
# wrapper then does not send a second SIGINT). Anywhere else (no terminal: a
# CI job, an IDE, a process manager, `timeout -s INT`), COMMAND runs in a
# process group of its own, and every SIGINT, SIGQUIT, SIGTERM and SIGHUP
# that reaches the wrapper, whether sent to it or to its group, is passed on
# to COMMAND's group once: a program that stops gracefully on the first
# signal and at once on the second sees one signal for each one sent. A
# signal sent to COMMAND's own group reaches COMMAND alone. The wrapper
# waits for COMMAND to end before it stops the servers. Both servers detach
# from the terminal, so a Ctrl-C does not stop them under a running COMMAND.
set -euo pipefail

readonly prog=with-postgres
readonly dbname=reqpool

log() { printf '%s: %s\n' "$prog" "$*" >&2; }

usage() {
	printf 'usage: %s [--for tests|demo|bench] COMMAND [ARGS...]\n' "$0" >&2
	exit 2
}

purpose=tests
while (($# > 0)); do
	case $1 in
	--for=*)
		purpose=${1#--for=}
		shift
		;;
	--for)
		if (($# < 2)); then
			usage
		fi
		purpose=$2
		shift 2
		;;
	--)
		shift
		break
		;;
	-*) usage ;;
	*) break ;;
	esac
done
case $purpose in
tests | demo | bench) ;;
*) usage ;;
esac
if (($# == 0)); then
	usage
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

tmp=''       # temporary folder: data directory, sockets, logs, configuration
data=''      # data directory, set once initdb has been asked to make it
logfile=''   # server log
port=''      # PostgreSQL's port
free_port='' # set by pick_port
initdb_bin='' pg_ctl_bin='' postgres_bin='' bindir=''
bouncer_bin=''
bouncer_port=''
bouncer_pidfile=''
bouncer_problem='' # why there is no PgBouncer, when there is none

is_ci() {
	case ${CI:-} in
	true | TRUE | True | 1 | yes) return 0 ;;
	esac
	return 1
}

# What COMMAND is, for messages: "the demo needs", or with "not", "the demo
# does not need".
needs() {
	case $purpose:${1:-} in
	tests:) printf 'the tests need' ;;
	tests:not) printf 'the tests do not need' ;;
	demo:) printf 'the demo needs' ;;
	demo:not) printf 'the demo does not need' ;;
	bench:) printf 'the benchmarks need' ;;
	bench:not) printf 'the benchmarks do not need' ;;
	esac
}

# Runs a server program as the user the servers run as: "postgres" when we
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

# Sets bouncer_bin, or returns 1.
find_bouncer() {
	local p
	for p in "$(command -v pgbouncer)" /usr/sbin/pgbouncer; do
		if [[ -n $p && -f $p && -x $p ]]; then
			bouncer_bin=$p
			return 0
		fi
	done
	bouncer_bin=''
	return 1
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

# Sets free_port to a free one, chosen at random below the usual ephemeral
# range (32768 and up) so that concurrent runs rarely try the same one. Not
# run in a subshell, so that each call draws new numbers.
pick_port() {
	local i p
	for ((i = 0; i < 100; i++)); do
		p=$((20000 + RANDOM % 12000))
		if [[ $p != "$port" ]] && ! port_in_use "$p"; then
			free_port=$p
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
		port=$free_port
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

psql_bin() {
	command -v "$bindir/psql" || command -v psql
}

create_database() {
	local tool
	if tool=$(command -v "$bindir/createdb") || tool=$(command -v createdb); then
		"$tool" -h 127.0.0.1 -p "$port" -U postgres "$dbname"
	elif tool=$(psql_bin); then
		"$tool" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
			-c "CREATE DATABASE $dbname"
	else
		return 1
	fi
}

# Writes REQPOOL_PGCTL's script, $tmp/pgctl. Its paths are quoted with %q,
# so it is a bash script.
write_pgctl() {
	local f=$tmp/pgctl run=''
	if ((is_root)); then
		if command -v runuser >/dev/null 2>&1; then
			run='runuser -u postgres --'
		else
			# shellcheck disable=SC2016 # expanded by su's shell
			run='su -s /bin/sh -c '\''exec "$0" "$@"'\'' -- postgres'
		fi
	fi
	cat >"$f" <<EOF
#!/usr/bin/env bash
# Written by scripts/with-postgres.sh, and removed with its throwaway
# PostgreSQL on 127.0.0.1:$port: pg_ctl for that server.
#   \$REQPOOL_PGCTL stop|start|restart|status [PG_CTL_OPTIONS]
# stop uses pg_ctl's default fast mode unless -m follows; start comes back on
# the same port and returns once the server accepts connections.
set -eu
case \${1:-} in
start | stop | restart | status) ;;
*)
	echo "usage: \$0 stop|start|restart|status [PG_CTL_OPTIONS]" >&2
	exit 2
	;;
esac
cd $(printf %q "$tmp")
exec $run $(printf %q "$pg_ctl_bin") -D $(printf %q "$data") -l $(printf %q "$logfile") -o $(printf %q "-p $port") -w -t 30 -s "\$@"
EOF
	chmod 755 "$f"
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

# Writes PgBouncer's configuration for port bouncer_port.
write_bouncer_conf() {
	printf '"postgres" ""\n' >"$tmp/userlist.txt"
	cat >"$tmp/pgbouncer.ini" <<EOF
; Written by scripts/with-postgres.sh: a throwaway PgBouncer for tests.
[databases]
$dbname = host=127.0.0.1 port=$port dbname=$dbname
* = host=127.0.0.1 port=$port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir = $tmp
pidfile = $bouncer_pidfile
logfile = $tmp/pgbouncer.log
pool_mode = transaction
auth_type = trust
auth_file = $tmp/userlist.txt
admin_users = postgres
default_pool_size = 20
max_client_conn = 2000
server_login_retry = 1
ignore_startup_parameters = extra_float_digits,datestyle
EOF
	chmod 644 "$tmp/userlist.txt" "$tmp/pgbouncer.ini"
}

# Whether process $1 runs: not gone, and not a zombie that init has yet to
# reap (PgBouncer detaches, so init is its parent).
alive() {
	local stat
	kill -0 "$1" 2>/dev/null || return 1
	{ stat=$(<"/proc/$1/stat"); } 2>/dev/null || return 0
	stat=${stat##*) }
	[[ ${stat:0:1} != Z ]]
}

bouncer_pid() {
	local pid
	pid=$(head -n 1 "$bouncer_pidfile" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && printf '%s' "$pid"
}

# Whether PgBouncer answers `select 1` on bouncer_port; without psql, whether
# it listens there.
bouncer_answers() {
	local tool
	if tool=$(psql_bin); then
		PGCONNECT_TIMEOUT=2 "$tool" -X -q -At -c 'select 1' \
			"postgres://postgres@127.0.0.1:$bouncer_port/$dbname?sslmode=disable" >/dev/null 2>&1
	else
		port_in_use "$bouncer_port"
	fi
}

# Starts PgBouncer in the background (-d: it detaches from the terminal) on
# a free port and waits until it answers; tries another port if two runs
# raced for the same one. Sets bouncer_port, or bouncer_problem and returns 1.
start_bouncer() {
	local attempt start pid
	bouncer_pidfile=$tmp/pgbouncer.pid
	for ((attempt = 1; attempt <= 5; attempt++)); do
		if ! pick_port; then
			bouncer_problem='no free port for PgBouncer'
			return 1
		fi
		bouncer_port=$free_port
		write_bouncer_conf
		rm -f -- "$tmp/pgbouncer.log"
		# max_client_conn = 2000 needs about 2,050 file descriptors, more than
		# the usual soft limit of 1024 (which runuser sets): raise it up to
		# the hard limit.
		# shellcheck disable=SC2016 # expanded by that sh
		if ! as_pg sh -c 'n=$(ulimit -Hn); if [ "$n" = unlimited ] || [ "$n" -gt 4096 ]; then n=4096; fi
			ulimit -S -n "$n" 2>/dev/null; exec "$0" "$@"' \
			"$bouncer_bin" -d -q "$tmp/pgbouncer.ini" >>"$tmp/pgbouncer.out" 2>&1; then
			if grep -qi 'address already in use' "$tmp/pgbouncer.log" "$tmp/pgbouncer.out" 2>/dev/null; then
				continue
			fi
			bouncer_problem='PgBouncer did not start'
			return 1
		fi
		# Up to 10 s for it to answer through to PostgreSQL. It writes its pid
		# file once it runs; its log says "cannot listen" when its port was
		# taken since pick_port (it may go on, on its unix socket alone), and
		# "FATAL" when it gives up.
		start=$SECONDS
		while ((SECONDS - start < 10)); do
			if grep -Eq 'FATAL|cannot listen' "$tmp/pgbouncer.log" 2>/dev/null; then
				break
			fi
			if pid=$(bouncer_pid); then
				if ! alive "$pid"; then
					break
				fi
				if bouncer_answers; then
					return 0
				fi
			elif ((SECONDS - start >= 3)); then
				break # no pid file after 3 s
			fi
			sleep 0.1
		done
		stop_bouncer
		if grep -qi 'address already in use' "$tmp/pgbouncer.log" 2>/dev/null; then
			continue
		fi
		bouncer_problem='PgBouncer did not start, or did not answer "select 1" within 10 s'
		return 1
	done
	bouncer_problem='PgBouncer found no free port in 5 tries'
	return 1
}

stop_bouncer() {
	local pid i
	if [[ -z $bouncer_pidfile ]] || ! pid=$(bouncer_pid); then
		return 0
	fi
	# SIGTERM: immediate shutdown (PgBouncer before 1.23; SIGINT waits for
	# the clients). Then up to 5 s for it to go, and SIGKILL.
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 50; i++)); do
		alive "$pid" || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
	set +e
	stop_bouncer
	stop_server
	if [[ -n $tmp ]]; then
		rm -rf -- "$tmp"
	fi
	tmp='' data='' bouncer_pidfile=''
}

# No PostgreSQL: an error in CI, for the demo and for the benchmarks; a
# warning for tests elsewhere, which then run without it.
no_server() {
	local reason=$1
	if is_ci; then
		log "error: $reason; with CI=true PostgreSQL is required: install it or set DATABASE_URL"
	elif [[ $purpose == tests ]]; then
		log "warning: $reason"
		log "running without DATABASE_URL: the tests that need PostgreSQL will be skipped; to run them, install it (Debian: sudo apt-get install postgresql) or set DATABASE_URL"
	else
		log "error: $reason"
		log "$(needs) PostgreSQL: install it (Debian: sudo apt-get install postgresql) or set DATABASE_URL to a database of yours"
	fi
	if [[ -n $logfile && -s $logfile ]]; then
		log "last lines of the server log:"
		tail -n 25 "$logfile" >&2
	fi
	if is_ci || [[ $purpose != tests ]]; then
		exit 1
	fi
	cleanup
	trap - EXIT INT TERM HUP QUIT
	unset DATABASE_URL PGBOUNCER_URL REQPOOL_PGCTL
	exec "${cmd[@]}"
}

# No PgBouncer: an error in CI, a warning for tests elsewhere, a note for
# the demo and the benchmarks, which do not use it.
no_bouncer() {
	local reason=$1 advice=''
	if [[ -z $bouncer_bin ]]; then
		advice='; to run them, install it (Debian: sudo apt-get install pgbouncer)'
	fi
	if is_ci; then
		log "error: $reason; with CI=true PgBouncer is required${advice:+: install it (Debian: apt-get install pgbouncer)}"
	elif [[ $purpose == tests ]]; then
		log "warning: $reason"
	else
		log "note: $reason; $(needs not) it"
	fi
	if [[ -s $tmp/pgbouncer.out ]]; then
		tail -n 10 "$tmp/pgbouncer.out" >&2
	fi
	if [[ -s $tmp/pgbouncer.log ]]; then
		log "last lines of PgBouncer's log:"
		tail -n 10 "$tmp/pgbouncer.log" >&2
	fi
	if is_ci; then
		exit 1
	fi
	if [[ $purpose == tests ]]; then
		log "running without PGBOUNCER_URL: the tests through PgBouncer will be skipped$advice"
	fi
}

trap cleanup EXIT
# Until COMMAND runs, a signal just ends the script (and cleanup runs).
trap 'exit 130' INT
trap 'exit 131' QUIT
trap 'exit 143' TERM
trap 'exit 129' HUP

# 2. Find the programs.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/$prog.XXXXXX") || no_server "cannot make a temporary folder"
# Keep the socket path short enough for a unix socket (107 bytes).
if ((${#tmp} > 80)); then
	rmdir -- "$tmp"
	tmp=$(mktemp -d "/tmp/$prog.XXXXXX")
fi

if ! find_server; then
	no_server "PostgreSQL not found: no initdb, pg_ctl and postgres in PATH or /usr/lib/postgresql/*/bin"
fi
if ! find_bouncer; then
	bouncer_problem="PgBouncer not found: no pgbouncer in PATH or /usr/sbin"
	# In CI, fail before starting anything.
	if is_ci; then
		no_bouncer "$bouncer_problem"
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
if [[ -n $bouncer_bin ]]; then
	log "starting a throwaway PostgreSQL and PgBouncer (about 2 s)..."
else
	log "starting a throwaway PostgreSQL (about 2 s)..."
fi
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
write_pgctl

# 4. PgBouncer in front of it.
if [[ -z $bouncer_bin ]] || ! start_bouncer; then
	no_bouncer "$bouncer_problem"
fi

version=$("$postgres_bin" -V 2>/dev/null | sed -n 's/.*(PostgreSQL) \([^ ]*\).*/\1/p')
export DATABASE_URL="postgres://postgres@127.0.0.1:$port/$dbname?sslmode=disable"
export REQPOOL_PGCTL=$tmp/pgctl
if [[ -n $bouncer_port && -z $bouncer_problem ]]; then
	bversion=$("$bouncer_bin" --version 2>/dev/null | sed -n '1s/^PgBouncer \([^ ]*\).*/\1/p')
	log "PostgreSQL ${version:-?} on 127.0.0.1:$port, PgBouncer ${bversion:-?} on 127.0.0.1:$bouncer_port (data and logs in $tmp)"
	export PGBOUNCER_URL="postgres://postgres@127.0.0.1:$bouncer_port/$dbname?sslmode=disable"
else
	log "PostgreSQL ${version:-?} on 127.0.0.1:$port (data and logs in $tmp)"
	unset PGBOUNCER_URL
fi

# 5. Run COMMAND as a child and pass signals on.

# Whether this script is in the foreground process group of its terminal:
# then a Ctrl-C or Ctrl-\ at that terminal reaches COMMAND directly.
in_tty_foreground() {
	local stat rest pgrp tpgid
	{ stat=$(<"/proc/$$/stat"); } 2>/dev/null || return 1
	rest=${stat##*) }
	# state ppid pgrp session tty_nr tpgid ...
	read -r _ _ pgrp _ _ tpgid _ <<<"$rest"
	[[ $tpgid != -1 && $tpgid == "$pgrp" ]]
}

got_signal=0
own_group=0 # whether COMMAND runs in a process group of its own
# shellcheck disable=SC2317 # called by the traps below
forward() {
	got_signal=1
	if ((own_group)); then
		kill -s "$1" -- "-$child" 2>/dev/null || true
	elif [[ $1 != INT && $1 != QUIT ]]; then
		# A Ctrl-C or Ctrl-\ at the terminal has reached COMMAND already.
		kill -s "$1" "$child" 2>/dev/null || true
	fi
}

if ! in_tty_foreground; then
	own_group=1
	set -m # the job below gets a process group of its own
fi
# A background job without job control starts with SIGINT and SIGQUIT
# ignored and its standard input from /dev/null; undo both so COMMAND runs as
# it would without us.
(
	trap - INT QUIT
	exec "${cmd[@]}"
) <&0 &
child=$!
set +m
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
