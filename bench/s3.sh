#!/usr/bin/env bash
# The repository in an S3-compatible bucket against the same on local disk, in
# one run: receive catch-up and base backup, and the peak RSS (VmHWM) of the
# process that uploads a backup.
#
# A PostgreSQL 15 primary and versitygw v1.8.0 (posix backend, on loopback,
# same disk) are started. Receive: two physical slots at the same LSN, then
# WAL_MB megabytes of WAL while nothing receives; `walhub serve` with a local
# repository, then with the bucket, each catches up from its own slot to the
# same target (timed until receiver.json names the last segment before it:
# stored and cataloged). Backup: pgbench at SCALE, then `walhub backup` into
# each repository (a `walhub serve` streaming beside it), timed as a whole
# command (stream, verify against the manifest, wait for the backup's WAL),
# with its peak RSS from /usr/bin/time. Each runs TRIALS times, interleaved;
# the median counts.
#
# Usage: bash bench/s3.sh      (as root or a user that can run initdb)
#   WAL_MB=1024 SCALE=100 TRIALS=3 bash bench/s3.sh
#   PARTS=backup bash bench/s3.sh     # only the backup rows (PARTS="receive backup" by default)
set -euo pipefail

WAL_MB=${WAL_MB:-512}
SCALE=${SCALE:-60}
TRIALS=${TRIALS:-3}
PARTS=${PARTS:-receive backup}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
here=$(cd "$(dirname "$0")/.." && pwd)
. "$(dirname "$0")/lib.sh"
need_s3_tools
bench_setup s3
build_walhub
start_s3

start_primary --data-checksums <<CONF
max_replication_slots = 20
max_wal_size = 8GB
checkpoint_timeout = 1h
shared_buffers = 256MB
CONF

# config KIND SLOT: writes walhub.toml for the local repository or the bucket.
config() {
	local repo
	if [ "$1" = local ]; then
		repo="repository = \"$work/repo-local\""
	else
		repo=$(s3_repo "$2" "$work/work-s3")
	fi
	cat > "$work/walhub.toml" <<TOML
$repo
[hub]
listen = "127.0.0.1:$hubport"
[[server]]
name = "bench"
conninfo = "host=127.0.0.1 port=$port user=postgres dbname=postgres sslmode=disable"
slot = "$2"
create_slot = true
[server.backup]
wal_timeout = "2m"
TOML
}
workdir() { if [ "$1" = local ]; then echo "$work/repo-local"; else echo "$work/work-s3"; fi; }
reset_repo() { rm -rf "$work/repo-local" "$work/work-s3" "$work/s3/bench/"*; }

declare -A secs
part() { [[ " $PARTS " == *" $1 "* ]]; }

# ---- receive catch-up
if part receive; then
slots=()
for i in $(seq 1 "$TRIALS"); do
	for kind in local s3; do slots+=("bench_${kind}_$i"); done
done
retain_wal "$WAL_MB" "${slots[@]}"
echo "WAL to receive: $start .. $target ($((bytes >> 20)) MB), last segment $last"

run_receive() { # KIND TRIAL: prints seconds
	reset_repo
	config "$1" "bench_$1_$2"
	local wd t0 t1
	wd=$(workdir "$1")
	t0=$(now)
	"$work/walhub" serve --init --config "$work/walhub.toml" 2>"$work/hub.log" &
	hub_pid=$!
	await_receiver "$wd" "\"last_segment\": \"$last\""
	t1=$(now)
	kill -TERM "$hub_pid"; wait "$hub_pid" || true; hub_pid=
	calc "$t1 - $t0"
}

for i in $(seq 1 "$TRIALS"); do
	for kind in local s3; do
		t=$(run_receive "$kind" "$i"); secs[recv_$kind]+="$t "
		printf "  trial %d  receive into %-5s %6.2f s\n" "$i" "$kind" "$t"
	done
done
for i in $(seq 1 "$TRIALS"); do
	for kind in local s3; do psql_ "SELECT pg_drop_replication_slot('bench_${kind}_$i')" >/dev/null; done
done
psql_ "DROP TABLE IF EXISTS fill" >/dev/null
fi

# ---- backup
if part backup; then
echo "pgbench scale $SCALE"
"$PGBIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
psql_ "CHECKPOINT" >/dev/null
dbsize=$(du -sb "$work/data/base" | cut -f1)
echo "database: $((dbsize >> 20)) MB in base/"

run_backup() { # KIND: prints "seconds peak-RSS-kB stored-MB"
	reset_repo
	config "$1" "bench_backup_$1"
	start_serve "$(workdir "$1")"
	local t_rss stored
	t_rss=$(timed_backup)
	stop_serve
	if [ "$1" = local ]; then stored=$(du -sm "$work/repo-local/bench/backups" | cut -f1)
	else stored=$(du -sm "$work/s3/bench/bench_backup_s3/bench/backups" | cut -f1); fi
	psql_ "SELECT pg_drop_replication_slot('bench_backup_$1')" >/dev/null
	echo "$t_rss $stored"
}

for i in $(seq 1 "$TRIALS"); do
	for kind in local s3; do
		read -r t rss stored <<<"$(run_backup "$kind")"
		secs[backup_$kind]+="$t "
		secs[rss_$kind]+="$rss "
		printf "  trial %d  backup into %-5s %6.2f s  peak RSS %d MB  stored %d MB\n" "$i" "$kind" "$t" $((rss / 1024)) "$stored"
	done
done

fi

med() { tr ' ' '\n' <<<"${secs[$1]}" | grep . | median; }
echo "median of $TRIALS trials:"
if part receive; then
rl=$(med recv_local); rs=$(med recv_s3)
printf "  receive catch-up, %d MB of WAL: local %.2f s (%.0f MB/s), S3 %.2f s (%.0f MB/s), S3/local throughput %.2f\n" \
	$((bytes >> 20)) "$rl" "$(calc "$bytes / 1048576 / $rl")" "$rs" "$(calc "$bytes / 1048576 / $rs")" "$(calc "$rl / $rs")"
fi
if part backup; then
bl=$(med backup_local); bs=$(med backup_s3)
printf "  backup, %d MB database: local %.2f s, S3 %.2f s, S3/local throughput %.2f\n" $((dbsize >> 20)) "$bl" "$bs" "$(calc "$bl / $bs")"
printf "  peak RSS of walhub backup: local %d MB, S3 %d MB\n" $(( $(med rss_local | cut -d. -f1) / 1024 )) $(( $(med rss_s3 | cut -d. -f1) / 1024 ))
fi
