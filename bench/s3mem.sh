#!/usr/bin/env bash
# Memory while backups of growing size are uploaded into an S3-compatible
# bucket: is the peak RSS flat in the backup size (issue 12: multipart upload
# with bounded memory whatever the backup size)?
#
# versitygw v1.8.0 (posix backend, on loopback, same disk) and a PostgreSQL 15
# primary are started. For each size in SIZES_MB, the database grows to that
# size with random bytes (pgcrypto's gen_random_bytes: incompressible, so the
# bytes uploaded are the database's size, unlike pgbench's tables, which zstd
# shrinks about 20 times); then `walhub serve` is started afresh with its
# repository in the bucket (its slot made after the load: the load's WAL is
# not part of it), and `walhub backup` uploads a backup into the bucket.
# Reported per backup: its size, its time, the peak RSS (VmHWM) of the
# `walhub backup` process (the one that streams, compresses and uploads the
# backup) and the daemon's VmHWM (it streams the backup's WAL and serves
# beside it). The backup before is then removed from the bucket, and the
# daemon stopped, to keep the disk use down: at most about 3 x the largest
# size (database, bucket, pg_wal).
#
# Usage: bash bench/s3mem.sh   (as root or a user that can run initdb)
#   SIZES_MB="1024 3072" bash bench/s3mem.sh     # the default
#   SIZES_MB="200 600" bash bench/s3mem.sh       # quicker
#   WALHUB_SRC=DIR: build walhub from the source tree DIR (default: this script's)
set -euo pipefail

SIZES_MB=${SIZES_MB:-1024 3072}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
here=${WALHUB_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
. "$(dirname "$0")/lib.sh"
need_s3_tools
bench_setup s3mem
build_walhub
start_s3

start_primary --data-checksums <<CONF
max_replication_slots = 10
max_wal_size = 1GB
checkpoint_timeout = 1h
shared_buffers = 256MB
CONF

# config SIZE: a repository of its own (prefix, working area, slot) per size.
config() {
	cat > "$work/walhub.toml" <<TOML
repository = "s3://bench/mem$1"
work_dir = "$work/work-$1"
[s3]
endpoint = "http://127.0.0.1:$s3port"
force_path_style = true
[hub]
listen = "127.0.0.1:$hubport"
[[server]]
name = "bench"
conninfo = "host=127.0.0.1 port=$port user=postgres dbname=postgres sslmode=disable"
slot = "bench_$1"
create_slot = true
[server.backup]
wal_timeout = "5m"
TOML
}

psql_ "CREATE EXTENSION pgcrypto; CREATE TABLE blob (id bigint, b bytea)" >/dev/null
# Rows of 1.5 kB stay inline (no TOAST, which would try to compress them).
rows=0
for size in $SIZES_MB; do
	t0=$(now)
	want=$((size * 1024 * 1024 / 1600))
	while [ "$rows" -lt "$want" ]; do
		n=$((want - rows < 200000 ? want - rows : 200000))
		psql_ "INSERT INTO blob SELECT g, gen_random_bytes(1024) || gen_random_bytes(512) FROM generate_series($rows + 1, $rows + $n) g" >/dev/null
		rows=$((rows + n))
	done
	psql_ "CHECKPOINT" >/dev/null
	dbsize=$(du -sb "$work/data/base" | cut -f1)
	printf "database grown to %d MB in base/ (%.0f s)\n" $((dbsize >> 20)) "$(calc "$(now) - $t0")"

	config "$size"
	"$work/walhub" serve --init --config "$work/walhub.toml" 2>"$work/hub.log" &
	hub_pid=$!
	until grep -qs '"state": "streaming"' "$work/work-$size/bench/receiver.json"; do
		if ! kill -0 "$hub_pid" 2>/dev/null; then cat "$work/hub.log" >&2; exit 1; fi
		sleep 0.1
	done
	t0=$(now)
	/usr/bin/time -f "%M" -o "$work/rss" "$work/walhub" --config "$work/walhub.toml" backup --server bench \
		>"$work/backup.log" 2>&1 || { cat "$work/backup.log" >&2; exit 1; }
	t1=$(now)
	stored=$(du -sm "$work/s3/bench/mem$size/bench/backups" | cut -f1)
	printf "  backup of %5d MB: %6.1f s, %5d MB uploaded; peak RSS (VmHWM) of walhub backup %4d MB; daemon VmHWM %4d MB\n" \
		$((dbsize >> 20)) "$(calc "$t1 - $t0")" "$stored" $(( $(tail -1 "$work/rss") / 1024 )) $(( $(kb VmHWM "$hub_pid") / 1024 ))
	kill -TERM "$hub_pid"; wait "$hub_pid" || true; hub_pid=
	rm -rf "$work/s3/bench/mem$size" "$work/work-$size"
	psql_ "SELECT pg_drop_replication_slot('bench_$size')" >/dev/null
done
