#!/usr/bin/env bash
# What encryption at rest costs: receive catch-up and base backup throughput
# of walhub into a plain repository and into an encrypted one ([encryption],
# age X25519), in the same run, on the same cluster.
#
# Receive: the primary gets one physical slot per run at the same LSN, then
# about WAL_MB megabytes of WAL while nothing receives; then walhub serve
# catches up from its own slot into a fresh repository, timed until the last
# segment before the target is stored and cataloged. Variants: zstd and none,
# each plain and encrypted.
# Backup: a pgbench database (SCALE); one walhub serve per repository streams
# beside, and `walhub backup` runs into each in turn: "durable" is until the
# archives and manifest are stored (its "backup streamed" line), "whole" adds
# the read-back verification against the manifest (which decrypts) and the wait
# for the backup's WAL.
# Every variant runs TRIALS times, interleaved (plain, encrypted, plain, ...),
# and the median counts: the machine is shared, single runs are noisy.
#
# Usage: bash bench/encryption.sh      (as root, or a user that can run initdb)
#   WAL_MB=1024 SCALE=60 TRIALS=3 PGBIN=/usr/lib/postgresql/15/bin bash bench/encryption.sh
set -euo pipefail

WAL_MB=${WAL_MB:-1024}
SCALE=${SCALE:-60}
TRIALS=${TRIALS:-3}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/walhub-bench-XXXXXX)
chmod 755 "$work"
port=$((20000 + RANDOM % 20000))

. "$(dirname "$0")/lib.sh"

pids=()
cleanup() {
	for p in "${pids[@]}" ${hub_pid:-}; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	as_pg "$PGBIN/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

build_walhub
"$work/walhub" keygen --output "$work/repo.key" | head -1

start_primary --data-checksums <<CONF
max_wal_senders = 20
max_replication_slots = 40
max_wal_size = 8GB
checkpoint_timeout = 1h
shared_buffers = 256MB
CONF

# config NAME COMPRESSION ENCRYPTED SLOT [CREATE_SLOT]: writes $work/NAME.toml for repository $work/repo-NAME.
config() {
	cat >"$work/$1.toml" <<TOML
repository = "$work/repo-$1"
[hub]
listen = "127.0.0.1:$((port + 1 + RANDOM % 1000))"
[[server]]
name = "bench"
conninfo = "host=127.0.0.1 port=$port user=postgres dbname=postgres sslmode=disable"
slot = "$4"
create_slot = ${5:-false}
compression = "$2"
[server.backup]
wal_timeout = "5m"
TOML
	if [ "$3" = yes ]; then printf '[encryption]\nkey = "file:%s"\n' "$work/repo.key" >>"$work/$1.toml"; fi
}

variants="zstd zstd+age none none+age"
comp_of() { echo "${1%+age}"; }
enc_of() { [ "${1#*+}" = age ] && echo yes || echo no; }

# ---------------------------------------------------------------- receive
slots=()
for i in $(seq 1 "$TRIALS"); do
	for v in $variants; do slots+=("r_${v/+/_}_$i"); done
done
retain_wal "$WAL_MB" "${slots[@]}"
echo "receive: $((bytes >> 20)) MB of WAL ($start .. $target), $TRIALS trials per variant, interleaved"

# receive VARIANT TRIAL: prints seconds and stored MB.
receive() {
	local name="r-${1/+/-}"
	config "$name" "$(comp_of "$1")" "$(enc_of "$1")" "r_${1/+/_}_$2"
	rm -rf "$work/repo-$name"
	local t0 t1
	t0=$(now)
	"$work/walhub" serve --init --config "$work/$name.toml" 2>"$work/hub.log" &
	hub_pid=$!
	await_receiver "$work/repo-$name" "\"last_segment\": \"$last\""
	t1=$(now)
	kill -TERM "$hub_pid"; wait "$hub_pid" || true; hub_pid=
	local stored; stored=$(du -sm "$work/repo-$name/bench/wal" | cut -f1)
	rm -rf "$work/repo-$name"
	echo "$(calc "$t1 - $t0") $stored"
}

declare -A rsecs rstored
for i in $(seq 1 "$TRIALS"); do
	line="  trial $i"
	for v in $variants; do
		read -r t st <<<"$(receive "$v" "$i")"
		rsecs[$v]+="$t "; rstored[$v]=$st
		line+=$(printf "  %-9s %6.2f s" "$v" "$t")
	done
	echo "$line"
done

# ---------------------------------------------------------------- backup
echo "backup: pgbench scale $SCALE"
psql_ "DROP TABLE IF EXISTS fill; CHECKPOINT" >/dev/null
"$PGBIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$port" -U postgres postgres 2>&1 | tail -1
psql_ "CHECKPOINT" >/dev/null
for v in plain age; do
	config "b-$v" zstd "$([ $v = age ] && echo yes || echo no)" "b_$v" true
	"$work/walhub" serve --init --config "$work/b-$v.toml" 2>"$work/serve-$v.log" &
	pids+=($!)
done
for v in plain age; do
	for _ in $(seq 150); do grep -qs '"state": "streaming"' "$work/repo-b-$v/bench/receiver.json" && break; sleep 0.2; done
	grep -qs '"state": "streaming"' "$work/repo-b-$v/bench/receiver.json" || { echo "walhub serve ($v) did not start:"; cat "$work/serve-$v.log"; exit 1; }
done
# Warm-up: one read of the whole cluster so every run starts with the same page cache.
as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$port" -U postgres -D "$work/warm" -Ft -X none -c fast >/dev/null
rm -rf "$work/warm"

# backup VARIANT: prints durable-seconds whole-seconds sent-bytes.
backup() {
	local t0; t0=$(now)
	"$work/walhub" --config "$work/b-$1.toml" backup --server bench >"$work/backup.out" 2>"$work/backup.log" || { cat "$work/backup.log" >&2; exit 1; }
	local whole; whole=$(calc "$(now) - $t0")
	local streamed; streamed=$(grep "backup streamed" "$work/backup.log") || { cat "$work/backup.log" >&2; exit 1; }
	local ts; ts=$(sed -E 's/^time=([^ ]+) .*/\1/' <<<"$streamed")
	echo "$(calc "$(date -d "$ts" +%s.%N) - $t0") $whole $(sed -E 's/.* size=([0-9]+).*/\1/' <<<"$streamed")"
}

declare -A bdur bwhole
for i in $(seq 1 "$TRIALS"); do
	line="  trial $i"
	for v in plain age; do
		read -r d w size <<<"$(backup "$v")"
		bdur[$v]+="$d "; bwhole[$v]+="$w "
		line+=$(printf "  %-5s %6.2f s durable, %6.2f s whole" "$v" "$d" "$w")
	done
	echo "$line"
done

# ---------------------------------------------------------------- results
med() { tr ' ' '\n' <<<"$1" | grep . | median; }
echo
echo "== medians of $TRIALS trials, $(nproc) cores"
echo "receive catch-up, $((bytes >> 20)) MB of WAL:"
for v in $variants; do
	m=$(med "${rsecs[$v]}")
	printf "  %-9s %6.2f s  %7.1f MB/s  stored %5d MB\n" "$v" "$m" "$(calc "$bytes / 1048576 / $m")" "${rstored[$v]}"
done
for c in zstd none; do
	printf "  %s: encrypted/plain throughput %.2f\n" "$c" "$(calc "$(med "${rsecs[$c]}") / $(med "${rsecs[$c+age]}")")"
done
echo "backup, $((size >> 20)) MB sent by the server:"
for v in plain age; do
	d=$(med "${bdur[$v]}"); w=$(med "${bwhole[$v]}")
	printf "  %-5s durable %6.2f s %7.1f MB/s   whole %6.2f s %7.1f MB/s\n" "$v" "$d" "$(calc "$size / 1048576 / $d")" "$w" "$(calc "$size / 1048576 / $w")"
done
printf "  encrypted/plain throughput: durable %.2f, whole %.2f\n" \
	"$(calc "$(med "${bdur[plain]}") / $(med "${bdur[age]}")")" "$(calc "$(med "${bwhole[plain]}") / $(med "${bwhole[age]}")")"
