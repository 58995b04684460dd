# Shared by the bench/ scripts: sourced, never run. The caller sets PGBIN
# and here (the source tree to build walhub from), and calls bench_setup,
# which sets work (its temporary directory) and the ports, or sets work and
# port itself; a script with a bucket then calls start_s3.

# as_pg runs a command as postgres when run as root (PostgreSQL refuses root).
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# psql_ runs one statement on the primary and prints the bare result.
psql_() { "$PGBIN/psql" -X -A -t -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "$1"; }
# lsn2num turns an LSN (1/2A000000) into a byte position.
lsn2num() { local hi=${1%/*} lo=${1#*/}; echo $(( (16#$hi << 32) + 16#$lo )); }
# median of the numbers on stdin.
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
now() { date +%s.%N; }
calc() { awk "BEGIN { print $* }"; }
# walsender_cpu PM KEEP: the CPU seconds (user + system) of the postmaster
# PM's children that have exited and been reaped so far: what its walsenders
# used, once they are gone. It first waits (up to 5 s) until at most KEEP
# walsenders are left (those of receivers still running), so that the one
# of the run just ended is counted.
walsender_cpu() {
	local i
	for i in $(seq 50); do
		[ "$(pgrep -P "$1" -f walsender | wc -l)" -le "$2" ] && break
		sleep 0.1
	done
	awk -v t="$(getconf CLK_TCK)" '{ print ($16 + $17) / t }' "/proc/$1/stat"
}
# kb FIELD PID: a /proc/PID/status figure in kB (VmHWM, VmRSS).
kb() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$2/status"; }

# retain_wal MB SLOT...: creates the physical slots SLOT... at the same LSN
# (their restart_lsn reserved at once), then about MB megabytes of WAL while
# nothing receives, and switches to a new segment. Sets start (the slots'
# restart_lsn), target (the LSN after the last WAL), last (the name of the
# last segment before target) and bytes (target - start).
#
# WORKLOAD says what the WAL is made of:
#   fill     (the default) one INSERT of rows of md5 text into the table
#            fill: WAL that zstd shrinks about 25 times, cheap to compress
#            (the WAL the issue's receive figures were measured on);
#   pgbench  pgbench -i -s 10, then its TPC-B-like transactions (4 clients),
#            with a CHECKPOINT every 256 MB (full-page images after each):
#            WAL like a real OLTP server's, which zstd shrinks about 3 times
#            at some 3 ms of CPU per MB.
retain_wal() {
	local mb=$1 s
	shift
	psql_ "CHECKPOINT" >/dev/null
	for s in "$@"; do
		psql_ "SELECT pg_create_physical_replication_slot('$s', true)" >/dev/null
	done
	start=$(psql_ "SELECT min(restart_lsn) FROM pg_replication_slots")
	[ "$(psql_ "SELECT count(DISTINCT restart_lsn) FROM pg_replication_slots")" = 1 ] || { echo "slots differ"; exit 1; }
	echo "generating ${mb} MB of WAL (${WORKLOAD:-fill}) while nothing receives"
	case ${WORKLOAD:-fill} in
	fill)
		psql_ "CREATE TABLE fill (x bigint, pad text); INSERT INTO fill SELECT g, repeat(md5(g::text), 28) FROM generate_series(1, $((mb * 1000))) g" >/dev/null
		;;
	pgbench)
		local pgb=("$PGBIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres) stop_at next_cp pos
		stop_at=$(($(lsn2num "$start") + mb * 1048576)) next_cp=$(($(lsn2num "$start") + (256 << 20)))
		# Committing without waiting for the flush only makes the
		# generation faster: the records written are the same.
		PGOPTIONS="-c synchronous_commit=off" "${pgb[@]}" -i -s 10 -q postgres >/dev/null 2>&1
		while pos=$(lsn2num "$(psql_ "SELECT pg_current_wal_lsn()")") && [ "$pos" -lt "$stop_at" ]; do
			if [ "$pos" -ge "$next_cp" ]; then
				psql_ "CHECKPOINT" >/dev/null
				next_cp=$((pos + (256 << 20)))
			fi
			PGOPTIONS="-c synchronous_commit=off" "${pgb[@]}" -n -c 4 -j 2 -t 1000 postgres >/dev/null
		done
		;;
	*) echo "WORKLOAD is fill or pgbench, not $WORKLOAD"; exit 1 ;;
	esac
	target=$(psql_ "SELECT pg_switch_wal(); SELECT pg_current_wal_lsn()" | tail -1)
	last=$(psql_ "SELECT pg_walfile_name('$target'::pg_lsn - 1)")
	bytes=$(($(lsn2num "$target") - $(lsn2num "$start")))
}

# bench_setup NAME: makes $work ($BENCH_TMP/walhub-bench-NAME-XXXXXX,
# BENCH_TMP being /tmp unless set), picks port (the primary's), s3port
# (versitygw's) and hubport (walhub's hub), and removes everything at exit
# (bench_cleanup). BENCH_TMP=/dev/shm (a tmpfs) takes the disk out of a run:
# what is left is CPU, which tells a run bound by the disk from one bound by
# the processors (it needs the memory for everything the run stores).
bench_setup() {
	work=$(mktemp -d "${BENCH_TMP:-/tmp}/walhub-bench-$1-XXXXXX")
	chmod 755 "$work"
	port=$((20000 + RANDOM % 20000))
	s3port=$((port + 1))
	hubport=$((port + 2))
	trap bench_cleanup EXIT
}

# bench_cleanup stops what the scripts start (the processes in rw_pid,
# hub_pid and vgw_pid, the primary in $work/data) and removes $work.
bench_cleanup() {
	[ -n "${rw_pid:-}" ] && kill "$rw_pid" 2>/dev/null || true
	[ -n "${hub_pid:-}" ] && kill "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null || true
	[ -n "${vgw_pid:-}" ] && kill "$vgw_pid" 2>/dev/null || true
	as_pg "$PGBIN/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$work"
}

# build_walhub builds walhub from $here into $work/walhub.
build_walhub() {
	echo "building walhub"
	(cd "$here" && go build -o "$work/walhub" ./cmd/walhub)
}

# start_serve DIR: starts `walhub serve --init` with $work/walhub.toml and
# waits until DIR/bench/receiver.json (DIR: the local repository, or a
# bucket's working area) says it streams; its pid in hub_pid, its log in
# $work/hub.log.
start_serve() {
	"$work/walhub" serve --init --config "$work/walhub.toml" 2>"$work/hub.log" &
	hub_pid=$!
	await_receiver "$1" '"state": "streaming"' 0.1
}

# await_receiver DIR TEXT [SECONDS]: waits, polling every SECONDS (0.02),
# until DIR/bench/receiver.json (DIR: the local repository or a bucket's
# working area) holds TEXT; when the walhub serve in hub_pid (log
# $work/hub.log) exits first, prints its log and exits.
await_receiver() {
	until grep -qsF -- "$2" "$1/bench/receiver.json"; do
		if ! kill -0 "$hub_pid" 2>/dev/null; then cat "$work/hub.log" >&2; exit 1; fi
		sleep "${3:-0.02}"
	done
}

# stop_serve stops the walhub serve in hub_pid.
stop_serve() { kill -TERM "$hub_pid"; wait "$hub_pid" || true; hub_pid=; }

# timed_backup runs `walhub backup --server bench` with $work/walhub.toml and
# prints its seconds and its peak RSS (kB, from /usr/bin/time).
timed_backup() {
	local t0 t1
	t0=$(now)
	/usr/bin/time -f "%M" -o "$work/rss" "$work/walhub" --config "$work/walhub.toml" backup --server bench \
		>"$work/backup.log" 2>&1 || { cat "$work/backup.log" >&2; exit 1; }
	t1=$(now)
	echo "$(calc "$t1 - $t0") $(tail -1 "$work/rss")"
}

# start_primary INITDB_OPTIONS...: initdb in $work/data and start it on
# $port, listening on loopback only, with the lines on stdin added to
# postgresql.conf.
start_primary() {
	echo "primary on port $port in $work"
	mkdir "$work/data"
	if [ "$(id -u)" = 0 ]; then chown postgres "$work" "$work/data"; fi
	as_pg "$PGBIN/initdb" -D "$work/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync "$@" >/dev/null
	{
		echo "port = $port"
		echo "listen_addresses = '127.0.0.1'"
		echo "unix_socket_directories = '$work'"
		echo "wal_level = replica"
		echo "max_wal_senders = 10"
		cat
	} >>"$work/data/postgresql.conf"
	as_pg "$PGBIN/pg_ctl" -D "$work/data" -l "$work/postgres.log" -w start >/dev/null
}

# start_s3: checks the tools (need_s3_tools), sets the credentials and starts
# versitygw with the bucket "bench" (start_versitygw). A command prefixed by
# the array on_hub_cpu (taskset, with PIN) starts versitygw there.
start_s3() {
	need_s3_tools
	export AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret-0b5c
	start_versitygw
}

# s3_repo PREFIX WORKDIR prints the top of a walhub.toml whose repository is
# the bucket's PREFIX on versitygw, with WORKDIR as its working area (the
# receiver's status files): the repository lines and the [s3] table.
s3_repo() {
	cat <<TOML
repository = "s3://bench/$1"
work_dir = "$2"
[s3]
endpoint = "http://127.0.0.1:$s3port"
force_path_style = true
TOML
}

# need_s3_tools sets VGW (versitygw, or $VERSITYGW) and checks that it and
# /usr/bin/time (for peak RSS) are installed.
need_s3_tools() {
	VGW=${VERSITYGW:-$(command -v versitygw || echo "$(go env GOPATH)/bin/versitygw")}
	[ -x "$VGW" ] || { echo "versitygw not found: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"; exit 1; }
	[ -x /usr/bin/time ] || { echo "/usr/bin/time not found: apt-get install -y time"; exit 1; }
}

# start_versitygw: versitygw (posix backend over $work/s3) on $s3port, with
# the bucket "bench"; its pid in vgw_pid.
start_versitygw() {
	echo "versitygw on port $s3port"
	mkdir -p "$work/s3"
	ROOT_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID ROOT_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
		${on_hub_cpu[@]+"${on_hub_cpu[@]}"} "$VGW" --port "127.0.0.1:$s3port" --health /health --quiet posix "$work/s3" >"$work/vgw.log" 2>&1 &
	vgw_pid=$!
	until curl -sf "http://127.0.0.1:$s3port/health" >/dev/null; do sleep 0.1; done
	# A bucket of the posix backend is a directory under its root.
	mkdir "$work/s3/bench"
}
