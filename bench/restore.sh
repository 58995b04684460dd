#!/usr/bin/env bash
# Restore speed: `walhub restore` (zstd archives from the repository, every
# file checked against the manifest, fsynced) against unpacking the same
# database's `pg_basebackup -Ft -X none` with tar (with and without a final
# sync, since tar does not fsync). Same database, same run, interleaved rounds;
# the median round of each counts (the machine may be shared: the load average
# is printed with the figures). Data directories are written to the same file
# system. Besides the wall-clock time, the CPU time (user + system) of the
# restore and of tar is printed per MiB restored: it barely moves with the
# load of a shared machine, where the wall-clock times do. (Writeback work the
# kernel's flusher threads do is nobody's CPU time: tar's sync leaves it to
# them, the restore does part of it itself when it starts the writeback.)
#
# A second row restores the same database from a backup stored without
# compression (a second [[server]] with compression = "none" on the same
# PostgreSQL): like for like with tar, which reads an uncompressed archive too,
# it tells how much of the gap to tar is zstd decoding. The first row's
# backup is taken with the default configuration: PostgreSQL compresses it
# (compress_on = "auto"), and its archive, not in frames of known size, goes
# through one decoder. A third row restores a backup the hub compressed
# (compress_on = "hub"): frames of known size, decoded on several cores.
#
# Usage: SCALE=30 ROUNDS=5 bash bench/restore.sh
# KEEP=1 keeps the working directory (repository, configuration, tar) for
# profiling a restore by hand. BEFORE=/path/to/walhub adds that binary's
# restore of the same backup to every round (another version, for a
# before/after comparison under the same load).
set -euo pipefail
SCALE=${SCALE:-50}
ROUNDS=${ROUNDS:-5}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# timed CMD...: runs CMD (output discarded), prints "wall user sys" in seconds.
timed() { local TIMEFORMAT='%R %U %S'; { time "$@" >/dev/null 2>&1; } 2>&1; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

W=$(mktemp -d /tmp/walhub-bench-restore.XXXXXX); chmod 755 "$W"
SERVE=
cleanup() {
  set +e
  [ -n "$SERVE" ] && kill "$SERVE" && wait "$SERVE"
  as_pg "$PGBIN/pg_ctl" -D "$W/primary" -m immediate -w stop >/dev/null 2>&1
  if [ -n "${KEEP:-}" ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
go build -o "$W/bin/" ./cmd/walhub
CGO_ENABLED=0 go build -o "$W/bin/" ./cmd/walfetch
[ "$(id -u)" = 0 ] && chown postgres "$W"
PORT=$(free_port); HUB=$(free_port)
as_pg "$PGBIN/initdb" -D "$W/primary" -U postgres --auth=trust --data-checksums --no-sync >/dev/null
printf "port = $PORT\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '$W'\nmax_wal_size = 4GB\n" >> "$W/primary/postgresql.conf"
as_pg "$PGBIN/pg_ctl" -D "$W/primary" -l "$W/pg.log" -w start >/dev/null
"$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -i -q -s "$SCALE" postgres 2>/dev/null
cat > "$W/walhub.toml" <<TOML
repository = "$W/repo"
[hub]
listen = "127.0.0.1:$HUB"
[[server]]
name = "b"
conninfo = "host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
[[server]]
name = "n"
conninfo = "host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
compression = "none"
[[server]]
name = "s"
conninfo = "host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
[server.backup]
compress_on = "hub"
TOML
"$W/bin/walhub" serve --init --config "$W/walhub.toml" > "$W/serve.log" 2>&1 & SERVE=$!
sleep 2
"$W/bin/walhub" backup --server b --config "$W/walhub.toml" >/dev/null 2>&1
"$W/bin/walhub" backup --server n --config "$W/walhub.toml" >/dev/null 2>&1
"$W/bin/walhub" backup --server s --config "$W/walhub.toml" >/dev/null 2>&1
"$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PORT" -U postgres -D "$W/tar" -Ft -X none -c fast 2>/dev/null
SIZE=$(du -sb "$W/primary/base" | cut -f1)
echo "database: pgbench scale $SCALE, base/ is $((SIZE / 1048576)) MiB; backup $(ls -la "$W"/repo/b/backups/*/base.tar* | awk '{print $5}') bytes stored"

all_w=; all_t=; all_ts=; all_b=; all_n=; all_s=; cpu_w=; cpu_t=; cpu_b=; cpu_n=; cpu_s=
# As root, restore refuses files PostgreSQL would not own: give them to
# postgres, as tar -x run by root gives them the owner recorded in the archive.
OWNER=; [ "$(id -u)" = 0 ] && OWNER="--owner postgres"
for r in $(seq 1 "$ROUNDS"); do
  rm -rf "$W/r1" "$W/r2" "$W/r3"; sync
  read -r w u s < <(timed "$W/bin/walhub" restore --server b --target-dir "$W/r1" --config "$W/walhub.toml" $OWNER)
  [ -f "$W/r1/global/pg_control" ] || { echo "walhub restore failed" >&2; exit 1; }
  cpu_w="$cpu_w $(echo "$u + $s" | bc)"
  b=
  if [ -n "${BEFORE:-}" ]; then
    rm -rf "$W/r1"; sync
    read -r b u s < <(timed "$BEFORE" restore --server b --target-dir "$W/r1" --config "$W/walhub.toml" $OWNER)
    all_b="$all_b $b"; cpu_b="$cpu_b $(echo "$u + $s" | bc)"
  fi
  rm -rf "$W/r1"; sync
  read -r n u s < <(timed "$W/bin/walhub" restore --server n --target-dir "$W/r1" --config "$W/walhub.toml" $OWNER)
  [ -f "$W/r1/global/pg_control" ] || { echo "walhub restore of the uncompressed backup failed" >&2; exit 1; }
  all_n="$all_n $n"; cpu_n="$cpu_n $(echo "$u + $s" | bc)"
  rm -rf "$W/r1"; sync
  read -r sv u s < <(timed "$W/bin/walhub" restore --server s --target-dir "$W/r1" --config "$W/walhub.toml" $OWNER)
  [ -f "$W/r1/global/pg_control" ] || { echo "walhub restore of the backup the hub compressed failed" >&2; exit 1; }
  all_s="$all_s $sv"; cpu_s="$cpu_s $(echo "$u + $s" | bc)"
  mkdir "$W/r2"; sync
  read -r t u s < <(timed tar -xf "$W/tar/base.tar" -C "$W/r2")
  cpu_t="$cpu_t $(echo "$u + $s" | bc)"
  mkdir "$W/r3"; sync
  read -r ts u s < <(timed sh -c 'tar -xf "$1" -C "$2" && sync' sh "$W/tar/base.tar" "$W/r3")
  echo "round $r: walhub restore ${w}s,${b:+ before ${b}s,} uncompressed ${n}s, hub-compressed ${sv}s, tar ${t}s, tar+sync ${ts}s"
  all_w="$all_w $w"; all_t="$all_t $t"; all_ts="$all_ts $ts"
done
med() { tr ' ' '\n' <<<"$1" | grep . | median; }
med_w=$(med "$all_w"); med_t=$(med "$all_t"); med_ts=$(med "$all_ts")
MB=$(du -sb "$W/r1" | cut -f1)
mbps() { echo "scale=1; $MB / 1048576 / $1" | bc; }
# msmb CPU_SECONDS: milliseconds of CPU per MiB restored
msmb() { echo "scale=2; $1 * 1000 * 1048576 / $MB" | bc; }
echo "restored $((MB / 1048576)) MiB; median of $ROUNDS rounds, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg):"
echo "  walhub restore : $(mbps "$med_w") MB/s (verified against the manifest, fsynced), CPU $(msmb "$(med "$cpu_w")") ms/MiB"
echo "  tar            : $(mbps "$med_t") MB/s (no fsync), CPU $(msmb "$(med "$cpu_t")") ms/MiB   ratio walhub/tar      $(echo "scale=2; $med_t / $med_w" | bc)"
echo "  tar + sync     : $(mbps "$med_ts") MB/s             ratio walhub/tar+sync $(echo "scale=2; $med_ts / $med_w" | bc)"
med_n=$(med "$all_n")
echo "  walhub restore of the backup stored uncompressed (like for like with tar): $(mbps "$med_n") MB/s, CPU $(msmb "$(med "$cpu_n")") ms/MiB" \
  "  ratio /tar $(echo "scale=2; $med_t / $med_n" | bc), /tar+sync $(echo "scale=2; $med_ts / $med_n" | bc)"
med_s=$(med "$all_s")
echo "  walhub restore of the backup the hub compressed (frames on several decoders): $(mbps "$med_s") MB/s, CPU $(msmb "$(med "$cpu_s")") ms/MiB" \
  "  ratio /tar $(echo "scale=2; $med_t / $med_s" | bc), /tar+sync $(echo "scale=2; $med_ts / $med_s" | bc)"
if [ -n "${BEFORE:-}" ]; then
  med_b=$(med "$all_b")
  echo "  before ($BEFORE): $(mbps "$med_b") MB/s, CPU $(msmb "$(med "$cpu_b")") ms/MiB   ratio walhub/before $(echo "scale=2; $med_b / $med_w" | bc)," \
    "before/tar $(echo "scale=2; $med_t / $med_b" | bc), before/tar+sync $(echo "scale=2; $med_ts / $med_b" | bc)"
fi
