package replication

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walhub/walhub/test/pgtest"
)

// TestCommandsAgainstPostgreSQL runs every command on one real server with
// 1 MiB segments.
func TestCommandsAgainstPostgreSQL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{SegmentSizeMB: 1})
	// The conninfo names the connection like the receiver: a backup or a
	// check must not carry that name (status would take it for the receiver).
	conn, err := Connect(ctx, p.ConnString("")+" application_name=walhub_main", Options{ApplicationName: AppBackup})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	if got := p.Query("SELECT string_agg(application_name, ',') FROM pg_stat_activity WHERE backend_type = 'walsender'"); got != AppBackup {
		t.Errorf("walsenders are named %q, want %q only", got, AppBackup)
	}

	id, err := IdentifySystem(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if want := p.Query("SELECT system_identifier FROM pg_control_system()"); id.SystemID != want {
		t.Errorf("system id %s, want %s", id.SystemID, want)
	}
	if now := p.CurrentLSN(); id.TimeLine != 1 || id.XLogPos == 0 || id.XLogPos > now {
		t.Errorf("identity %+v (server now at %s)", id, now)
	}

	size, err := SegmentSize(ctx, conn)
	if err != nil || size != 1<<20 {
		t.Errorf("segment size %d, %v; want 1 MiB", size, err)
	}

	if s, err := ReadSlot(ctx, conn, "walhub_test"); err != nil || s.Exists {
		t.Fatalf("missing slot: %+v, %v", s, err)
	}
	if err := CreateSlot(ctx, conn, "walhub_test"); err != nil {
		t.Fatal(err)
	}
	s, err := ReadSlot(ctx, conn, "walhub_test")
	if err != nil || !s.Exists || s.Lost || s.RestartLSN == 0 || s.RestartTimeLine != 1 {
		t.Fatalf("created slot: %+v, %v", s, err)
	}
	if want := p.SlotRestartLSN("walhub_test"); s.RestartLSN != want {
		t.Errorf("restart_lsn %s, pg_replication_slots says %s", s.RestartLSN, want)
	}
	if err := CreateSlot(ctx, conn, "walhub_test"); err == nil || !strings.Contains(err.Error(), "walhub_test") {
		t.Errorf("creating an existing slot: %v", err)
	}
	if err := DropSlot(ctx, conn, "walhub_test"); err != nil {
		t.Fatal(err)
	}
	if s, err := ReadSlot(ctx, conn, "walhub_test"); err != nil || s.Exists {
		t.Errorf("dropped slot: %+v, %v", s, err)
	}
	if err := DropSlot(ctx, conn, "walhub_test"); err == nil {
		t.Error("dropping a missing slot succeeded")
	}

	// A normal connection follows the same naming policy.
	cfg, err := ParseSQLConfig(p.ConnString("")+" application_name=walhub_main", Options{ApplicationName: AppStatus})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RuntimeParams["application_name"] != AppStatus || cfg.RuntimeParams["replication"] != "" {
		t.Errorf("SQL connection parameters %v", cfg.RuntimeParams)
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name     string
		conninfo string
		o        Options
		timeout  time.Duration
	}{
		{"no timeout anywhere", "host=/tmp", Options{ApplicationName: AppCheck}, 0},
		{"options cap a longer conninfo timeout", "host=/tmp connect_timeout=60", Options{ApplicationName: AppCheck, ConnectTimeout: 5 * time.Second}, 5 * time.Second},
		{"a shorter conninfo timeout stays", "host=/tmp connect_timeout=2", Options{ApplicationName: AppCheck, ConnectTimeout: 5 * time.Second}, 2 * time.Second},
		{"options give one when the conninfo has none", "host=/tmp", Options{ApplicationName: AppCheck, ConnectTimeout: 5 * time.Second}, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig(tt.conninfo+" application_name=other", tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ConnectTimeout != tt.timeout {
				t.Errorf("connect timeout %s, want %s", cfg.ConnectTimeout, tt.timeout)
			}
			if cfg.RuntimeParams["replication"] != "true" || cfg.RuntimeParams["application_name"] != AppCheck {
				t.Errorf("parameters %v", cfg.RuntimeParams)
			}
		})
	}
}

func TestConnectTellsABadConninfoApart(t *testing.T) {
	_, err := Connect(context.Background(), "host=/tmp port=notaport", Options{ApplicationName: AppCheck})
	var parseErr *pgconn.ParseConfigError
	if !errors.As(err, &parseErr) {
		t.Errorf("bad conninfo: %v (%T), want a *pgconn.ParseConfigError", err, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = Connect(ctx, "host=127.0.0.1 port=1 user=x", Options{ApplicationName: AppCheck})
	if err == nil || errors.As(err, &parseErr) {
		t.Errorf("refused connection: %v, want a connection error", err)
	}
}
