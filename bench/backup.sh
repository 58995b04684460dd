#!/usr/bin/env bash
# Benchmark: walhub backup against pg_basebackup -Ft -X none, uncompressed and
# with --compress=client-zstd, and to /dev/null (the protocol's floor: what
# the server sends, nothing written), on the same pgbench database in the same run.
#
#   bash bench/backup.sh              # SCALE=60 (about 900 MB); SCALE=100 for about 1.5 GB
#   RUNS=3 SCALE=100 bash bench/backup.sh
#
# RUNS rounds (default 3, after one warm-up read of the cluster) run each tool
# once in turn, so load from elsewhere on the machine hits them alike; each
# figure is the median over the rounds. Every tool fsyncs what it writes. The
# load average is printed before and after: the machine may be shared.
#
# `walhub serve` runs beside, so each walhub backup ends "done". Timed for
# walhub: from the start of the command until the archives and the manifest are
# durable in the repository (its "backup streamed" log line), comparable to
# what pg_basebackup does; and the whole command, which adds the checks against
# the manifest and the wait until the backup's WAL is in the catalog. The
# "backup done" log line splits the command into its phases (stream, verify,
# WAL wait), printed as medians too.
#
# BASE_REV=<git revision> adds a `walhub backup` built from that revision to
# every round, interleaved with the others (a before/after comparison in one
# run; the daemon is the current build).
#
# CPU: each tool's user+sys time (from /usr/bin/time), and the server's: the
# CPU of the postmaster's children that exited during the run (the walsender
# that sent the backup, and any short-lived backend), read from the
# postmaster's cutime/cstime. Both are per MB sent, medians.
#
# PIN=1 models the hub on another machine: PostgreSQL (every process) runs on
# CPU 0 and the client (pg_basebackup, walhub backup and walhub serve) on
# CPU 1, with taskset, so neither takes the other's core. Without it, all
# share both cores, as on one machine.
#
# REPO=s3 puts walhub's repository in a bucket: versitygw v1.8.0 (posix
# backend, on loopback, same disk; with PIN on the client's CPU, the hub's
# machine) is started, and `walhub serve` and every `walhub backup` use the
# bucket; pg_basebackup writes to local disk as always, in the same rounds.
# "Durable" is then the upload of the archives and the manifest done.
# Needs versitygw (bench/lib.sh: need_s3_tools). REPO=local (the default)
# keeps the repository in a local directory. With BASE_REV, that revision
# must know the S3 repository. The client's CPU counts walhub backup only,
# not versitygw.
#
#   REPO=s3 SCALE=60 RUNS=3 bash bench/backup.sh
#
# KEEP=1 keeps the working directory (cluster, repository, the walhub binary,
# for a profiler's symbols) instead of removing it at the end.
#
# walhub backup runs twice a round: with the default configuration
# (compress_on = "auto": PostgreSQL compresses, at zstd level 1, the
# walsender alone, or with SERVER_WORKERS=N threads besides it, zstd's
# workers=N, walhub's backup.workers), and with compress_on = "hub" (the
# server sends the archives uncompressed, the hub compresses on all its
# cores). Every round also runs pg_basebackup --compress=server-zstd at the
# same level and workers (into a directory: it cannot add the manifest to a
# compressed stream on stdout).
#
# RATE=1gbit models a hub across a network link of that rate: during the
# rounds, what PostgreSQL sends from its port on loopback (the backups, and
# walhub serve's WAL) is shaped to RATE with tc (an htb class and a u32
# filter on the source port; needs root and tc, and leaves loopback as it
# found it). Everything else on loopback is not shaped.
#
#   RATE=1gbit SCALE=60 RUNS=3 bash bench/backup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

SCALE=${SCALE:-60}
RUNS=${RUNS:-3}
BASE_REV=${BASE_REV:-}
PIN=${PIN:-}
RATE=${RATE:-}
SERVER_WORKERS=${SERVER_WORKERS:-0}
REPO=${REPO:-local}
case $REPO in
local) ;;
s3) need_s3_tools ;;
*) echo "REPO is local or s3, not $REPO"; exit 1 ;;
esac
BIN=${PGTEST_BINDIR:-/usr/lib/postgresql/15/bin}

ROOT=$(mktemp -d /tmp/walhub-bench-XXXXXX)
chmod 755 "$ROOT"
# AS_PG runs a command as postgres when run as root (PostgreSQL refuses root);
# an array, so that taskset and time can run it.
# (as_pg, from lib.sh, is the same as a function.)
AS_PG=()
[ "$(id -u)" = 0 ] && AS_PG=(runuser -u postgres --)
[ "$(id -u)" = 0 ] && chown postgres "$ROOT"
PORT=$(( 20000 + RANDOM % 20000 ))
SERVE_PID=
SHAPED=
cleanup() {
  [ -n "$SHAPED" ] && tc qdisc del dev lo root 2>/dev/null
  [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
  [ -n "${vgw_pid:-}" ] && kill "$vgw_pid" 2>/dev/null
  as_pg "$BIN/pg_ctl" -D "$ROOT/data" -m immediate stop >/dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then echo "kept $ROOT"; else rm -rf "$ROOT"; fi
}
trap cleanup EXIT
[ -x /usr/bin/time ] || { echo "/usr/bin/time not found: apt-get install -y time"; exit 1; }
if [ -n "$RATE" ]; then
  command -v tc >/dev/null || { echo "RATE needs tc: apt-get install -y iproute2"; exit 1; }
  tc qdisc show dev lo | grep -q '^qdisc noqueue' || { echo "RATE: loopback is already shaped: $(tc qdisc show dev lo | head -1)"; exit 1; }
fi
# shape_link shapes what PostgreSQL sends from its port on loopback to RATE.
shape_link() {
  SHAPED=1
  tc qdisc add dev lo root handle 1: htb default 1 r2q 100000
  tc class add dev lo parent 1: classid 1:1 htb rate 100gbit
  tc class add dev lo parent 1: classid 1:2 htb rate "$RATE" ceil "$RATE"
  tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport "$PORT" 0xffff flowid 1:2
}
# ON_SERVER and ON_CLIENT prefix a command to run it where PIN puts the server
# and the client (arrays, so that a command started in the background with
# them is that command's own process).
ON_SERVER=()
ON_CLIENT=()
if [ -n "$PIN" ]; then
  [ "$(nproc)" -ge 2 ] || { echo "PIN=1 needs 2 CPUs"; exit 1; }
  ON_SERVER=(taskset -c 0)
  ON_CLIENT=(taskset -c 1)
fi
# versitygw (REPO=s3) runs where the client does: the hub's machine.
on_hub_cpu=(${ON_CLIENT[@]+"${ON_CLIENT[@]}"})

echo "== load before: $(uptime)"
echo "== cluster: pgbench scale $SCALE, port $PORT, in $ROOT"
[ -n "$PIN" ] && echo "== PIN=1: PostgreSQL on CPU 0, the clients (pg_basebackup, walhub) on CPU 1"
[ "$REPO" = s3 ] && echo "== REPO=s3: walhub's repository in a bucket on versitygw (loopback, same disk${PIN:+, CPU 1}); pg_basebackup to local disk"
as_pg "$BIN/initdb" -D "$ROOT/data" -U postgres --auth=trust --data-checksums --no-sync >/dev/null
cat >>"$ROOT/data/postgresql.conf" <<EOF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$ROOT'
wal_level = replica
max_wal_senders = 10
shared_buffers = 128MB
max_wal_size = 4GB
checkpoint_timeout = 30min
EOF
"${ON_SERVER[@]}" "${AS_PG[@]}" "$BIN/pg_ctl" -D "$ROOT/data" -l "$ROOT/postgres.log" -w start >/dev/null
PM_PID=$(head -1 "$ROOT/data/postmaster.pid")
"$BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PORT" -U postgres postgres 2>&1 | tail -1
"$BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -c CHECKPOINT postgres
DBSIZE=$(du -sb "$ROOT/data/base" | cut -f1)
echo "database: $((DBSIZE / 1048576)) MB in base/"

go build -o "$ROOT/walhub" ./cmd/walhub
if [ -n "$BASE_REV" ]; then
  echo "== building walhub at $BASE_REV"
  mkdir "$ROOT/base-src"
  git archive "$BASE_REV" | tar -x -C "$ROOT/base-src"
  (cd "$ROOT/base-src" && go build -o "$ROOT/walhub-base" ./cmd/walhub)
  rm -rf "$ROOT/base-src"
fi
# STATUS is where walhub serve writes receiver.json: the repository, or
# the working area of the bucket's.
if [ "$REPO" = s3 ]; then
  work=$ROOT s3port=$((PORT + 2))
  start_s3
  REPO_TOML=$(s3_repo backup "$ROOT/work-s3") STATUS=$ROOT/work-s3
else
  REPO_TOML="repository = \"$ROOT/repo\"" STATUS=$ROOT/repo
fi
cat >"$ROOT/walhub.toml" <<EOF
$REPO_TOML
[hub]
listen = "127.0.0.1:$((PORT + 1))"
[[server]]
name = "bench"
conninfo = "host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
[server.backup]
checkpoint = "fast"
wal_timeout = "2m"
EOF
sed 's/^\[server.backup\]$/&\ncompress_on = "hub"/' "$ROOT/walhub.toml" >"$ROOT/walhub-hub.toml"
[ "$SERVER_WORKERS" -gt 0 ] && sed -i 's/^\[server.backup\]$/&\nworkers = '"$SERVER_WORKERS"'/' "$ROOT/walhub.toml"
"${ON_CLIENT[@]}" "$ROOT/walhub" --config "$ROOT/walhub.toml" serve --init 2>"$ROOT/serve.log" &
SERVE_PID=$!
for _ in $(seq 100); do
  grep -qs '"state": "streaming"' "$STATUS/bench/receiver.json" && break
  sleep 0.2
done
grep -qs '"state": "streaming"' "$STATUS/bench/receiver.json" || { echo "walhub serve did not start:"; cat "$ROOT/serve.log"; exit 1; }

# server_cpu: CPU seconds of the postmaster's exited children so far, once
# the backup's walsender is gone (walhub serve's stays).
server_cpu() { walsender_cpu "$PM_PID" 1; }
# timed OUTFILE CMD...: runs CMD on the client's CPUs; OUTFILE gets its user+sys seconds.
timed() { local out=$1; shift; "${ON_CLIENT[@]}" /usr/bin/time -f "%U %S" -o "$out" "$@"; }
cpu_of() { awk '{ print $1 + $2 }' "$1"; }
best() { sort -g | head -1; }
# seconds converts a Go duration as slog prints it ("1m2.5s", "3.2s", "850ms") to seconds.
seconds() {
  awk -v d="$1" 'BEGIN {
    t = 0
    if (match(d, /[0-9.]+m[^s]/)) { t += substr(d, RSTART, RLENGTH - 2) * 60; d = substr(d, RSTART + RLENGTH - 1) }
    if (d ~ /ms$/) { sub(/ms$/, "", d); t += d / 1000 }
    else if (d ~ /µs$/) { sub(/µs$/, "", d); t += d / 1000000 }
    else if (d ~ /s$/) { sub(/s$/, "", d); t += d }
    print t }'
}

# Warm-up: one read of the whole cluster so every tool starts with the same page cache.
"${ON_CLIENT[@]}" "${AS_PG[@]}" "$BIN/pg_basebackup" -h 127.0.0.1 -p "$PORT" -U postgres -D "$ROOT/warm" -Ft -X none -c fast >/dev/null
rm -rf "$ROOT/warm"

# floor: pg_basebackup -Ft -X none to stdout into /dev/null: what the server
# sends and a client reads, with nothing written, compressed or checked. No
# client that receives the archives uncompressed can finish sooner than that,
# so client-zstd's time over it is the best ratio such a client could reach
# against client-zstd (compression on the server sends fewer bytes: the rows
# below). Prints "seconds 0 client-cpu server-cpu".
floor() {
  local s0; s0=$(server_cpu)
  local t0; t0=$(now)
  timed "$ROOT/cpu" "${AS_PG[@]}" sh -c '"$0" "$@" >/dev/null' "$BIN/pg_basebackup" -h 127.0.0.1 -p "$PORT" -U postgres -D - -Ft -X none -c fast 2>/dev/null
  local t; t=$(calc "$(now) - $t0")
  echo "$t 0 $(cpu_of "$ROOT/cpu") $(calc "$(server_cpu) - $s0")"
}

pgbb() { # extra pg_basebackup options; prints "seconds stored-bytes client-cpu server-cpu"
  rm -rf "$ROOT/pgbb"
  local s0; s0=$(server_cpu)
  local t0; t0=$(now)
  timed "$ROOT/cpu" "${AS_PG[@]}" "$BIN/pg_basebackup" -h 127.0.0.1 -p "$PORT" -U postgres -D "$ROOT/pgbb" -Ft -X none -c fast "$@" 2>/dev/null
  local t; t=$(calc "$(now) - $t0")
  echo "$t $(du -sb "$ROOT/pgbb" | cut -f1) $(cpu_of "$ROOT/cpu") $(calc "$(server_cpu) - $s0")"
  rm -rf "$ROOT/pgbb"
}

walhub_run() { # [binary [config]]; prints "durable-seconds total-seconds stored-bytes sent-bytes stream verify walwait client-cpu server-cpu"
  local bin=${1:-$ROOT/walhub} conf=${2:-$ROOT/walhub.toml}
  local s0; s0=$(server_cpu)
  local t0; t0=$(now)
  timed "$ROOT/cpu" "$bin" --config "$conf" backup --server bench --output=json \
    >"$ROOT/walhub.json" 2>"$ROOT/walhub.log" || { cat "$ROOT/walhub.log" >&2; exit 1; }
  local total; total=$(calc "$(now) - $t0")
  local scpu; scpu=$(calc "$(server_cpu) - $s0")
  local streamed done
  streamed=$(grep "backup streamed" "$ROOT/walhub.log") || { cat "$ROOT/walhub.log" >&2; exit 1; }
  done=$(grep "backup done" "$ROOT/walhub.log") || { cat "$ROOT/walhub.log" >&2; exit 1; }
  # Durable: the "backup streamed" line is logged once the archives and the
  # manifest are fsynced and renamed in the repository.
  local ts; ts=$(sed -E 's/^time=([^ ]+) .*/\1/' <<<"$streamed")
  local durable; durable=$(calc "$(date -d "$ts" +%s.%N) - $t0")
  local phase p out=""
  for phase in stream verify wal_wait; do
    p=$(sed -E "s/.* $phase=([^ ]+).*/\1/" <<<"$done")
    out="$out $(seconds "$p")"
  done
  echo "$durable $total $(sed -E 's/.* stored=([0-9]+).*/\1/' <<<"$streamed") $(sed -E 's/.* size=([0-9]+).*/\1/' <<<"$streamed")$out $(cpu_of "$ROOT/cpu") $scpu"
}

[ -n "$RATE" ] && shape_link && echo "== RATE=$RATE: what PostgreSQL sends from port $PORT is shaped to $RATE"
echo "== running $RUNS rounds (each round runs every tool once, in turn; medians count)"
: >"$ROOT/times"
for r in $(seq "$RUNS"); do
  echo "plain $(pgbb)" >>"$ROOT/times"
  echo "floor $(floor)" >>"$ROOT/times"
  echo "zstd $(pgbb --compress=client-zstd)" >>"$ROOT/times"
  echo "szstd $(pgbb --compress=server-zstd:level=1$([ "$SERVER_WORKERS" -gt 0 ] && echo ",workers=$SERVER_WORKERS"))" >>"$ROOT/times"
  echo "whub $(walhub_run "$ROOT/walhub" "$ROOT/walhub-hub.toml")" >>"$ROOT/times"
  # With BASE_REV the two walhub builds swap places every round, so neither
  # always runs right after pg_basebackup.
  if [ -n "$BASE_REV" ] && [ $((r % 2)) = 0 ]; then
    echo "base $(walhub_run "$ROOT/walhub-base")" >>"$ROOT/times"
    echo "walhub $(walhub_run)" >>"$ROOT/times"
  else
    echo "walhub $(walhub_run)" >>"$ROOT/times"
    [ -n "$BASE_REV" ] && echo "base $(walhub_run "$ROOT/walhub-base")" >>"$ROOT/times"
  fi
  echo "round $r: $(tail -$([ -n "$BASE_REV" ] && echo 7 || echo 6) "$ROOT/times" | awk '{ if ($1 ~ /walhub|base|whub/) printf "%s %.2f/%.2fs  ", $1, $2, $3; else printf "%s %.2fs  ", $1, $2 }')"
done
if [ -n "$SHAPED" ]; then tc qdisc del dev lo root; SHAPED=; fi
# median_of KEY FIELD: the median of column FIELD over the rows of KEY.
median_of() {
  awk -v k="$1" -v f="$2" '$1 == k {print $f}' "$ROOT/times" | sort -g |
    awk '{v[NR] = $1} END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
T_PLAIN=$(median_of plain 2); S_PLAIN=$(median_of plain 3)
T_ZSTD=$(median_of zstd 2); S_ZSTD=$(median_of zstd 3)
T_SZSTD=$(median_of szstd 2); S_SZSTD=$(median_of szstd 3)
T_WHUB=$(median_of whub 2); T_WHUB_TOTAL=$(median_of whub 3); S_WHUB=$(median_of whub 4)
T_FLOOR=$(median_of floor 2)
T_STREAM=$(median_of walhub 2); T_TOTAL=$(median_of walhub 3); S_WALHUB=$(median_of walhub 4); SIZE=$(median_of walhub 5)
P_STREAM=$(median_of walhub 6); P_VERIFY=$(median_of walhub 7); P_WAL=$(median_of walhub 8)

mbps() { calc "$SIZE / 1048576 / $1"; }
row() { # label seconds stored
  printf '%-34s %8.2f s %9.1f MB/s   stored %8.1f MB (%.1fx smaller)\n' "$1" "$2" "$(mbps "$2")" \
    "$(calc "$3 / 1048576")" "$(calc "$SIZE / $3")"
}
echo
echo "== results (medians of $RUNS rounds): $((SIZE / 1048576)) MB sent by the server, $(nproc) cores, walhub's repository: $([ "$REPO" = s3 ] && echo "S3 bucket" || echo local)${PIN:+, pinned}"
row "pg_basebackup -Ft -X none" "$T_PLAIN" "$S_PLAIN"
row "pg_basebackup --compress=client-zstd" "$T_ZSTD" "$S_ZSTD"
printf '%-34s %8.2f s %9.1f MB/s   (nothing written: the protocol floor)\n' "pg_basebackup -Ft -D - >/dev/null" "$T_FLOOR" "$(mbps "$T_FLOOR")"
row "walhub backup (durable in repo)" "$T_STREAM" "$S_WALHUB"
row "walhub backup (whole: +verify, WAL)" "$T_TOTAL" "$S_WALHUB"
row "pg_basebackup --compress=server-zstd" "$T_SZSTD" "$S_SZSTD"
row "walhub, compress_on=hub (durable)" "$T_WHUB" "$S_WHUB"
row "walhub, compress_on=hub (whole)" "$T_WHUB_TOTAL" "$S_WHUB"
printf 'walhub phases (from its "backup done" line): stream %.2f s, verify %.2f s, WAL wait %.2f s (verify and WAL wait overlap)\n' \
  "$P_STREAM" "$P_VERIFY" "$P_WAL"
echo
echo "CPU (user+sys, medians; ms per MB sent):"
cpurow() { # label key client-field server-field
  local c s; c=$(median_of "$2" "$3"); s=$(median_of "$2" "$4")
  printf '  %-34s client %5.2f s (%.2f ms/MB)   server %5.2f s (%.2f ms/MB)\n' "$1" "$c" \
    "$(calc "$c * 1000 / ($SIZE / 1048576)")" "$s" "$(calc "$s * 1000 / ($SIZE / 1048576)")"
}
cpurow "pg_basebackup -Ft -X none" plain 4 5
cpurow "pg_basebackup --compress=client-zstd" zstd 4 5
cpurow "pg_basebackup to /dev/null" floor 4 5
cpurow "walhub backup (whole command)" walhub 9 10
cpurow "pg_basebackup server-zstd" szstd 4 5
cpurow "walhub compress_on=hub (whole)" whub 9 10
echo
printf 'walhub (durable) vs pg_basebackup uncompressed: %.2fx  (target >= 1.0x)\n' "$(calc "$T_PLAIN / $T_STREAM")"
printf 'walhub (durable) vs pg_basebackup client-zstd:  %.2fx  (target >= 1.8x)\n' "$(calc "$T_ZSTD / $T_STREAM")"
printf '  (the floor vs client-zstd: %.2fx, the most a client that receives the archives uncompressed could reach; walhub durable is %.2fx the floor'"'"'s time)\n' \
  "$(calc "$T_ZSTD / $T_FLOOR")" "$(calc "$T_STREAM / $T_FLOOR")"
printf 'walhub (whole)   vs pg_basebackup uncompressed: %.2fx  (target >= 1.0x)\n' "$(calc "$T_PLAIN / $T_TOTAL")"
printf 'walhub (whole)   vs pg_basebackup client-zstd:  %.2fx\n' "$(calc "$T_ZSTD / $T_TOTAL")"
printf 'walhub (durable) vs pg_basebackup server-zstd:  %.2fx\n' "$(calc "$T_SZSTD / $T_STREAM")"
printf 'walhub compress_on=hub (durable) vs pg_basebackup client-zstd: %.2fx; (whole) vs -Ft: %.2fx\n' \
  "$(calc "$T_ZSTD / $T_WHUB")" "$(calc "$T_PLAIN / $T_WHUB_TOTAL")"
if [ -n "$BASE_REV" ]; then
  B_STREAM=$(median_of base 2); B_TOTAL=$(median_of base 3)
  echo
  echo "== walhub built from $BASE_REV (same rounds, medians)"
  row "base walhub (durable in repo)" "$B_STREAM" "$(median_of base 4)"
  row "base walhub (whole: +verify, WAL)" "$B_TOTAL" "$(median_of base 4)"
  printf 'base phases: stream %.2f s, verify %.2f s, WAL wait %.2f s\n' "$(median_of base 6)" "$(median_of base 7)" "$(median_of base 8)"
  cpurow "base walhub (whole command)" base 9 10
  printf 'base (durable) vs pg_basebackup uncompressed: %.2fx, client-zstd: %.2fx\n' "$(calc "$T_PLAIN / $B_STREAM")" "$(calc "$T_ZSTD / $B_STREAM")"
  printf 'base (whole)   vs pg_basebackup uncompressed: %.2fx, client-zstd: %.2fx\n' "$(calc "$T_PLAIN / $B_TOTAL")" "$(calc "$T_ZSTD / $B_TOTAL")"
fi
echo "== load after: $(uptime)"
