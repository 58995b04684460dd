#!/usr/bin/env bash
# Memory while backups of growing size are uploaded into an S3-compatible
# bucket, and written into a local repository: is the peak RSS flat in the
# backup size (issue 12: multipart upload with bounded memory whatever the
# backup size; issue 17: the daemon's RSS flat in backup size)?
#
# versitygw v1.8.0 (posix backend, on loopback, same disk; when REPOS names
# s3) and a PostgreSQL 15 primary are started. For each size in SIZES_MB, the
# database grows to that size with random bytes (pgcrypto's gen_random_bytes:
# incompressible, so the bytes uploaded are the database's size, unlike
# pgbench's tables, which zstd shrinks about 20 times); then `walhub serve` is
# started afresh with its repository in the bucket (its slot made after the
# load: the load's WAL is not part of it), and `walhub backup` uploads a
# backup into the bucket; then the same with a local repository (REPOS="s3
# local", the order of the runs at each size). Reported per backup: its size,
# its time, the peak RSS (VmHWM) of the `walhub backup` process (the one that
# streams, compresses and uploads or writes the backup) and the daemon's VmHWM
# (it streams the backup's WAL and serves beside it), and at the end a table
# of both per repository and size. Each backup is then removed, and the daemon
# stopped, to keep the disk use down: at most about 3 x the largest size
# (database, repository, pg_wal). Autovacuum is off: its first vacuum of the
# loaded table, run during a backup, would write about as much WAL as the
# table (every page's hint bits, logged with data checksums), and the
# daemon's VmHWM would then measure that WAL, not the backup. The WAL written
# during each backup is printed beside it.
#
# Usage: bash bench/s3mem.sh   (as root or a user that can run initdb)
#   SIZES_MB="1024 3072" bash bench/s3mem.sh     # the default
#   SIZES_MB="200 600" bash bench/s3mem.sh       # quicker
#   REPOS=local bash bench/s3mem.sh              # only the local repository (REPOS="s3 local" by default)
#   COMPRESS_ON=hub bash bench/s3mem.sh          # backups the hub compresses (server.backup.compress_on; default auto: PostgreSQL)
#   WALHUB_SRC=DIR: build walhub from the source tree DIR (default: this script's)
set -euo pipefail

SIZES_MB=${SIZES_MB:-1024 3072}
REPOS=${REPOS:-s3 local}
COMPRESS_ON=${COMPRESS_ON:-auto}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
here=${WALHUB_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
. "$(dirname "$0")/lib.sh"
for kind in $REPOS; do
	case $kind in local | s3) ;; *) echo "REPOS holds local and s3, not $kind"; exit 1 ;; esac
done
[[ " $REPOS " == *" s3 "* ]] && need_s3_tools
[ -x /usr/bin/time ] || { echo "/usr/bin/time not found: apt-get install -y time"; exit 1; }
bench_setup s3mem
build_walhub
if [[ " $REPOS " == *" s3 "* ]]; then start_s3; fi

start_primary --data-checksums <<CONF
max_replication_slots = 10
max_wal_size = 1GB
checkpoint_timeout = 1h
autovacuum = off
shared_buffers = 256MB
CONF

# config KIND SIZE: a repository of its own (bucket prefix and working area,
# or local directory; slot) per kind and size.
config() {
	local repo
	if [ "$1" = s3 ]; then repo=$(s3_repo "mem$2" "$work/work-$2"); else repo="repository = \"$work/repo-$2\""; fi
	cat > "$work/walhub.toml" <<TOML
$repo
[hub]
listen = "127.0.0.1:$hubport"
[[server]]
name = "bench"
conninfo = "host=127.0.0.1 port=$port user=postgres dbname=postgres sslmode=disable"
slot = "bench_$1_$2"
create_slot = true
[server.backup]
wal_timeout = "5m"
compress_on = "$COMPRESS_ON"
TOML
}

psql_ "CREATE EXTENSION pgcrypto; CREATE TABLE blob (id bigint, b bytea)" >/dev/null
# Rows of 1.5 kB stay inline (no TOAST, which would try to compress them).
rows=0
rows_out=()
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

	for kind in $REPOS; do
		config "$kind" "$size"
		if [ "$kind" = s3 ]; then dir=$work/work-$size stored_dir=$work/s3/bench/mem$size/bench/backups
		else dir=$work/repo-$size stored_dir=$work/repo-$size/bench/backups; fi
		start_serve "$dir"
		lsn0=$(psql_ "SELECT pg_current_wal_lsn()")
		read -r t rss <<<"$(timed_backup)"
		hwm=$(kb VmHWM "$hub_pid")
		walmb=$(( ($(lsn2num "$(psql_ "SELECT pg_current_wal_lsn()")") - $(lsn2num "$lsn0")) >> 20 ))
		stored=$(du -sm "$stored_dir" | cut -f1)
		printf "  backup of %5d MB into %-5s %6.1f s, %5d MB stored, %d MB of WAL meanwhile; peak RSS (VmHWM) of walhub backup %4d MB; daemon VmHWM %4d MB\n" \
			$((dbsize >> 20)) "$kind:" "$t" "$stored" "$walmb" $((rss / 1024)) $((hwm / 1024))
		rows_out+=("$(printf "%-5s %6d MB  walhub backup %4d MB  walhub serve %4d MB" "$kind" $((dbsize >> 20)) $((rss / 1024)) $((hwm / 1024)))")
		stop_serve
		rm -rf "$work/s3/bench/mem$size" "$work/work-$size" "$work/repo-$size"
		psql_ "SELECT pg_drop_replication_slot('bench_${kind}_$size')" >/dev/null
	done
done
echo "peak RSS (VmHWM) by repository and backup size:"
for kind in $REPOS; do printf "  %s\n" "${rows_out[@]}" | grep "^  $kind "; done
