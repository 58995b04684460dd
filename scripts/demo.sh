#!/usr/bin/env bash
# walhub demo: a throwaway primary, the hub streaming from it under load, a base
# backup, a standby restored from it that follows through walfetch, and
# `walhub status` at the end. Everything lives in one temporary directory that
# is removed on exit (DEMO_KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
if [ ! -x "$PGBIN/postgres" ]; then
  echo "PostgreSQL 15 is needed: apt-get install -y postgresql-15 (or set PGBIN)" >&2
  exit 1
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# as_pg runs a server-side binary as postgres when we are root (PostgreSQL refuses root).
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

WORK=$(mktemp -d /tmp/walhub-demo.XXXXXX)
chmod 755 "$WORK"
SERVE_PID=
cleanup() {
  set +e
  [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
  for d in "$WORK/standby" "$WORK/primary"; do
    [ -f "$d/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
  done
  if [ -n "${DEMO_KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

step "building walhub and walfetch"
go build -o "$WORK/bin/" ./cmd/walhub
CGO_ENABLED=0 go build -o "$WORK/bin/" ./cmd/walfetch ./cmd/walfetch-net   # static: start fast on every call
make --no-print-directory -s walfetch-take BIN="$WORK/bin"                   # the spool hit beside walfetch (C)
chmod 755 "$WORK/bin"
WALHUB="$WORK/bin/walhub --config $WORK/walhub.toml"

PGPORT=$(free_port); HUBPORT=$(free_port); STANDBYPORT=$(free_port)
[ "$(id -u)" = 0 ] && chown postgres "$WORK"

step "a throwaway primary on port $PGPORT (initdb, data checksums, replication on)"
as_pg "$PGBIN/initdb" -D "$WORK/primary" -U postgres --auth=trust --data-checksums --no-sync >/dev/null
cat >> "$WORK/primary/postgresql.conf" <<CONF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
CONF
as_pg "$PGBIN/pg_ctl" -D "$WORK/primary" -l "$WORK/primary.log" -w start >/dev/null
PG="-h 127.0.0.1 -p $PGPORT -U postgres"
"$PGBIN/pgbench" $PG -i -q -s 5 postgres 2>/dev/null

cat > "$WORK/walhub.toml" <<TOML
repository = "$WORK/repo"

[hub]
listen = "127.0.0.1:$HUBPORT"

[[server]]
name = "demo"
conninfo = "host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres"
[server.retention]
redundancy = 2
TOML
echo "configuration ($WORK/walhub.toml):"; sed 's/^/  /' "$WORK/walhub.toml"

step "walhub init: the repository (no other command creates one)"
$WALHUB init | sed 's/^/  /'

step "walhub serve: streaming through slot walhub_demo, hub on http://127.0.0.1:$HUBPORT"
$WALHUB serve >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$HUBPORT/healthz" >/dev/null && break; sleep 0.2; done
sleep 1
grep -m3 'msg=' "$WORK/serve.log" | sed 's/^/  /'

step "a little load: pgbench, 2 clients, 20 seconds, in the background"
"$PGBIN/pgbench" $PG -n -c 2 -T 20 postgres >"$WORK/pgbench.log" 2>&1 &
LOAD_PID=$!

step "walhub backup --server demo (BASE_BACKUP over the replication protocol, zstd, manifest-verified)"
$WALHUB backup --server demo
$WALHUB list-backups --server demo

step "walhub restore --standby: a standby that follows the primary through walfetch only"
# As root, the restored files are given to the PostgreSQL user (--owner).
OWNER=(); [ "$(id -u)" = 0 ] && OWNER=(--owner postgres)
$WALHUB restore --server demo --target-dir "$WORK/standby" --standby "${OWNER[@]}"
cat >> "$WORK/standby/postgresql.conf" <<CONF
port = $STANDBYPORT
unix_socket_directories = '$WORK'
CONF
as_pg "$PGBIN/pg_ctl" -D "$WORK/standby" -l "$WORK/standby.log" -w start >/dev/null
echo "standby started on port $STANDBYPORT"

step "waiting for the load to end and the standby to catch up"
wait "$LOAD_PID"; grep -E '^tps' "$WORK/pgbench.log" | sed 's/^/  pgbench: /'
psql() { command psql -X -A -t -h 127.0.0.1 -U postgres -d postgres -p "$@"; }
TARGET=$(psql "$PGPORT" -c "SELECT pg_current_wal_lsn()")
psql "$PGPORT" -c "SELECT pg_switch_wal()" >/dev/null
for i in $(seq 1 120); do
  caught=$(psql "$STANDBYPORT" -c "SELECT pg_last_wal_replay_lsn() >= '$TARGET'" 2>/dev/null || echo f)
  [ "$caught" = t ] && break; sleep 1
done
Q="SELECT count(*) || ' accounts, balance sum ' || sum(abalance) FROM pgbench_accounts"
echo "  primary: $(psql "$PGPORT" -c "$Q")"
echo "  standby: $(psql "$STANDBYPORT" -c "$Q")  (replayed through walfetch up to $TARGET: $caught)"

step "walhub status"
$WALHUB status demo

step "walhub check"
$WALHUB check demo || true

step "done: cleaning up $WORK"
