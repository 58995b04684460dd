#!/usr/bin/env bash
# Catch-up throughput of walhub's receiver against pg_receivewal, on the same
# retained WAL in the same run.
#
# A PostgreSQL 15 primary gets physical slots at the same LSN, then about
# WAL_MB megabytes of WAL while nothing receives (WORKLOAD=fill, the default:
# rows of md5 text; WORKLOAD=pgbench: pgbench transactions, WAL that costs
# zstd four times the CPU; see retain_wal in lib.sh). Then, one after the other:
# pg_receivewal (fsync per segment, as by default) and walhub serve with zstd
# and with no compression each catch up from their own slot to the same target
# LSN; each is timed until the last segment before the target is complete
# (pg_receivewal: renamed from .partial; walhub: stored and cataloged).
# Each runs TRIALS times from its own slot, interleaved, and the median counts:
# on a shared machine single runs are noisy. Times include process start.
# Each run also reports the CPU time (user + system, then system alone: sys)
# the receiving process spent per MB of WAL, a figure less disturbed by the
# machine's load (but here, on a virtual machine, walhub with no compression,
# which writes a new file per segment as pg_receivewal does, paid up to 1.1
# ms/MB more system time whenever the last such run was pg_receivewal's), and
# the CPU its walsender spent (srv): on 2 cores the two share the machine, and
# a walsender near a core's worth of the run's time says the server, not the
# receiver, set the pace.
#
# Usage: bench/receive.sh            (as root or as a user that can run initdb)
#   WAL_MB=1024 TRIALS=3 PGBIN=/usr/lib/postgresql/15/bin bench/receive.sh
#   REPO=s3 WAL_MB=1024 TRIALS=3 bench/receive.sh   # walhub into a bucket (below)
# COMPRESSIONS="zstd none" picks walhub's runs; BASE_REV=<git revision> adds
# a walhub run built from that revision, interleaved with the others (a
# before/after comparison in one run), with BASE_COMPRESSION (zstd unless set).
#
# PIN=1 models the receiver on another machine than PostgreSQL: the primary
# (postmaster, its processes and every walsender it starts) is pinned to CPU
# 0 with taskset, and the receiver (pg_receivewal, walhub serve) to CPU 1,
# so that neither takes the other's core. walhub then sees one core
# (GOMAXPROCS 1: one archive worker). Without PIN all share every core, as
# on one machine. Needs at least 2 CPUs and taskset (util-linux).
#
# REPO=s3 puts walhub's repository in a bucket: versitygw v1.8.0 (posix
# backend, on loopback, same disk; with PIN on the receivers' CPU, the hub's
# machine) is started, and each walhub run catches up into a prefix of its
# own; pg_receivewal writes to local disk as always, in the same rounds.
# Timed the same way (until receiver.json names the last segment: uploaded
# and cataloged). Needs versitygw (bench/lib.sh: need_s3_tools). REPO=local
# (the default) keeps the repository in a local directory. With BASE_REV, that
# revision must know the S3 repository. The CPU column counts walhub serve
# only, not versitygw.
set -euo pipefail

WAL_MB=${WAL_MB:-1024}
TRIALS=${TRIALS:-3}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
COMPRESSIONS=${COMPRESSIONS:-zstd none}
BASE_REV=${BASE_REV:-}
BASE_COMPRESSION=${BASE_COMPRESSION:-zstd}
PIN=${PIN:-}
REPO=${REPO:-local}
here=$(cd "$(dirname "$0")/.." && pwd)
. "$(dirname "$0")/lib.sh"
case $REPO in
local) ;;
s3) need_s3_tools ;;
*) echo "REPO is local or s3, not $REPO"; exit 1 ;;
esac

# on_receiver_cpu prefixes the receivers' commands: taskset (which execs
# them, so $! stays theirs) when PIN is set.
on_receiver_cpu=()
if [ -n "$PIN" ]; then
	command -v taskset >/dev/null || { echo "PIN=1 needs taskset (util-linux)"; exit 1; }
	[ "$(nproc)" -ge 2 ] || { echo "PIN=1 needs at least 2 CPUs"; exit 1; }
	on_receiver_cpu=(taskset -c 1)
fi
on_hub_cpu=(${on_receiver_cpu[@]+"${on_receiver_cpu[@]}"})

bench_setup receive
build_walhub
variants=$COMPRESSIONS
if [ -n "$BASE_REV" ]; then
	echo "building walhub at $BASE_REV"
	mkdir "$work/base-src"
	git -C "$here" archive "$BASE_REV" | tar -x -C "$work/base-src"
	(cd "$work/base-src" && go build -o "$work/walhub-base" ./cmd/walhub)
	rm -rf "$work/base-src"
	variants="$variants base"
fi
if [ "$REPO" = s3 ]; then start_s3; fi

start_primary <<CONF
max_replication_slots = 40
max_wal_size = 8GB
checkpoint_timeout = 1h
shared_buffers = 256MB
fsync = on
CONF
pm=$(head -1 "$work/data/postmaster.pid")
if [ -n "$PIN" ]; then
	# The walsenders are forked later, by the postmaster: they inherit its CPU.
	for p in "$pm" $(pgrep -P "$pm"); do taskset -a -p -c 0 "$p" >/dev/null; done
	echo "pinned: PostgreSQL to CPU 0, the receivers to CPU 1"
fi

slots=()
for i in $(seq 1 "$TRIALS"); do
	for s in rw $variants; do slots+=("bench_${s}_$i"); done
done
retain_wal "$WAL_MB" "${slots[@]}"
echo "WAL to receive: $start .. $target ($((bytes >> 20)) MB), last segment $last; $TRIALS trials each, interleaved"

# cpu_secs PID: the CPU time (user + system) the process has used, then the
# system part alone, in seconds.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz, $15 / hz}' "/proc/$1/stat"; }

# srv_cpu: the CPU seconds of the walsenders that have exited so far, once
# the last receiver's is gone (no other runs).
srv_cpu() { walsender_cpu "$pm" 0; }

# settle_rm PATH...: removes what a run stored and syncs, so that writeback
# a run leaves is done before the next one's clock starts. It does not take
# away what the run after pg_receivewal's pays (the same binary, 2.8 against
# 2.2 ms CPU/MB one place later, with the sync): the rotated order below is
# what makes that fair.
settle_rm() { rm -rf "$@"; sync; }

# run_rw TRIAL: pg_receivewal catches up from its slot; prints seconds, CPU
# seconds (all, then system), and its walsender's CPU seconds.
run_rw() {
	rm -rf "$work/rw" && mkdir "$work/rw"
	local t0 t1 s0 srv cpu sys
	s0=$(srv_cpu)
	t0=$(date +%s.%N)
	"${on_receiver_cpu[@]}" "$PGBIN/pg_receivewal" -D "$work/rw" -h 127.0.0.1 -p "$port" -U postgres -S "bench_rw_$1" --no-loop 2>"$work/rw.log" &
	rw_pid=$!
	until [ -f "$work/rw/$last" ]; do sleep 0.02; done
	t1=$(date +%s.%N)
	read -r cpu sys <<<"$(cpu_secs "$rw_pid")"
	kill -INT "$rw_pid"; wait "$rw_pid" 2>/dev/null || true; rw_pid=
	srv=$(calc "$(srv_cpu) - $s0")
	settle_rm "$work/rw"
	echo "$(echo "$t1 - $t0" | bc -l) $cpu $sys $srv"
}

# run_hub VARIANT TRIAL: walhub serve catches up; prints seconds, peak RSS in
# kB, stored MB, CPU seconds (all, then system) and its walsender's CPU
# seconds. VARIANT is a compression, or base (the binary built from BASE_REV,
# with BASE_COMPRESSION).
run_hub() {
	local comp=$1 repo="$work/repo-$1" bin="$work/walhub" repo_toml stored_dir
	if [ "$comp" = base ]; then comp=$BASE_COMPRESSION bin="$work/walhub-base"; fi
	rm -rf "$repo"
	# With REPO=s3, $repo is the working area (receiver.json) and the
	# segments go to the bucket's prefix recv-VARIANT.
	if [ "$REPO" = s3 ]; then
		repo_toml=$(s3_repo "recv-$1" "$repo") stored_dir="$work/s3/bench/recv-$1/bench/wal"
	else
		repo_toml="repository = \"$repo\"" stored_dir="$repo/bench/wal"
	fi
	cat > "$work/walhub.toml" <<TOML
$repo_toml
[[server]]
name = "bench"
conninfo = "host=127.0.0.1 port=$port user=postgres dbname=postgres sslmode=disable"
slot = "bench_${1}_$2"
create_slot = false
compression = "$comp"
TOML
	local t0 t1 hwm cpu sys s0 srv
	s0=$(srv_cpu)
	t0=$(date +%s.%N)
	"${on_receiver_cpu[@]}" "$bin" serve --init --config "$work/walhub.toml" 2>"$work/hub.log" &
	hub_pid=$!
	await_receiver "$repo" "\"last_segment\": \"$last\""
	t1=$(date +%s.%N)
	hwm=$(awk '/VmHWM/ {print $2}' "/proc/$hub_pid/status")
	read -r cpu sys <<<"$(cpu_secs "$hub_pid")"
	kill -TERM "$hub_pid"; wait "$hub_pid" || true; hub_pid=
	srv=$(calc "$(srv_cpu) - $s0")
	stored_mb=$(du -sm "$stored_dir" | cut -f1)
	settle_rm "$repo" "$work/s3/bench/recv-$1"
	echo "$(echo "$t1 - $t0" | bc -l) $hwm $stored_mb $cpu $sys $srv"
}

declare -A secs cpus srvs
peak=0
mb=$(echo "$bytes / 1048576" | bc -l)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)${PIN:+ (PIN: PostgreSQL on CPU 0, receivers on CPU 1)}"
if [ "$REPO" = s3 ]; then
	echo "walhub's repository: a bucket on versitygw (loopback, same disk${PIN:+, on CPU 1}); pg_receivewal: local disk"
fi
# Each trial runs every receiver once, in an order rotated by one each trial:
# the run after another pays for some of what that one left (its removed
# files, the page cache it filled), and no receiver should always be the one
# that follows pg_receivewal. With as many trials as receivers, each takes
# each place once.
read -r -a order <<<"rw $variants"
n=${#order[@]}
for i in $(seq 1 "$TRIALS"); do
	for ((k = 0; k < n; k++)); do
		s=${order[$(( (k + i - 1) % n ))]}
		if [ "$s" = rw ]; then
			read -r t cpu sys srv <<<"$(run_rw "$i")"
			secs[rw]+="$t " cpus[rw]+="$cpu " srvs[rw]+="$srv "
			printf "  trial %d  pg_receivewal %6.2f s  (CPU %.2f ms/MB, sys %.2f, srv %.2f)\n" "$i" "$t" \
				"$(echo "$cpu * 1000 / $mb" | bc -l)" "$(echo "$sys * 1000 / $mb" | bc -l)" "$(echo "$srv * 1000 / $mb" | bc -l)"
			continue
		fi
		read -r t hwm stored cpu sys srv <<<"$(run_hub "$s" "$i")"
		secs[$s]+="$t " cpus[$s]+="$cpu " srvs[$s]+="$srv "
		[ "$hwm" -gt "$peak" ] && peak=$hwm
		printf "  trial %d  walhub %-4s   %6.2f s  (peak RSS %d MB, stored %d MB, CPU %.2f ms/MB, sys %.2f, srv %.2f)\n" "$i" "$s" "$t" \
			$((hwm / 1024)) "$stored" "$(echo "$cpu * 1000 / $mb" | bc -l)" "$(echo "$sys * 1000 / $mb" | bc -l)" "$(echo "$srv * 1000 / $mb" | bc -l)"
	done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
med_of() { tr ' ' '\n' <<<"$1" | grep . | median; }
rw_med=$(med_of "${secs[rw]}")
rw_mbs=$(echo "$mb / $rw_med" | bc -l)
echo "median of $TRIALS trials, $((bytes >> 20)) MB of WAL, walhub into the $([ "$REPO" = s3 ] && echo "S3 bucket" || echo "local repository")${PIN:+, pinned}:"
printf "  pg_receivewal      %6.2f s  %7.1f MB/s  CPU %.2f ms/MB  srv %.2f ms/MB\n" "$rw_med" "$rw_mbs" \
	"$(echo "$(med_of "${cpus[rw]}") * 1000 / $mb" | bc -l)" "$(echo "$(med_of "${srvs[rw]}") * 1000 / $mb" | bc -l)"
for comp in $variants; do
	med=$(med_of "${secs[$comp]}")
	mbs=$(echo "$mb / $med" | bc -l)
	printf "  walhub %-4s        %6.2f s  %7.1f MB/s  ratio to pg_receivewal %.2f  CPU %.2f ms/MB  srv %.2f ms/MB\n" "$comp" "$med" "$mbs" \
		"$(echo "$mbs / $rw_mbs" | bc -l)" "$(echo "$(med_of "${cpus[$comp]}") * 1000 / $mb" | bc -l)" \
		"$(echo "$(med_of "${srvs[$comp]}") * 1000 / $mb" | bc -l)"
done
echo "walhub peak RSS (VmHWM, any trial): $((peak / 1024)) MB"
