package replication

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestRedactHidesEveryPassword(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"host=db1 user=walhub password=s3cret dbname=postgres", "host=db1 user=walhub password=***** dbname=postgres"},
		{`host=db1 password = 'it\'s s3cret' user=x`, "host=db1 password = ***** user=x"},
		{`primary_conninfo = 'host=db1 password=s3cret'`, `primary_conninfo = 'host=db1 password=*****'`},
		{"postgresql://walhub:s3cret@db1:5432/postgres", "postgresql://walhub:*****@db1:5432/postgres"},
		{"host=db1 user=walhub", "host=db1 user=walhub"},
	} {
		if got := Redact(tt.in); got != tt.want || strings.Contains(got, "s3cret") {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUnknownConninfoKeywordIsAnError(t *testing.T) {
	for _, parse := range []func(string) error{
		func(c string) error { _, err := ParseConfig(c, Options{}); return err },
		func(c string) error { _, err := ParseSQLConfig(c, Options{}); return err },
		CheckConninfo,
	} {
		err := parse("hots=db1 user=walhub password=s3cret")
		if !IsBadConninfo(err) || !strings.Contains(err.Error(), `"hots"`) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("a mistyped keyword: %v", err)
		}
		if err := parse("host=db1 user=walhub application_name=x options='-c work_mem=1MB' sslmode=disable"); err != nil {
			t.Errorf("a good conninfo: %v", err)
		}
	}
}

func TestExplainGivesCauseAndFixInOneLine(t *testing.T) {
	wrong := fmt.Errorf("failed to connect to `user=walhub database=postgres`:\n\t127.0.0.1:5432 (127.0.0.1): server error: %w",
		&pgconn.PgError{Severity: "FATAL", Code: "28P01", Message: `password authentication failed for user "walhub"`})
	err := Explain(wrong)
	var pgErr *pgconn.PgError
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "password authentication failed") ||
		!strings.Contains(msg, "PGPASSWORD") || !strings.Contains(msg, ".pgpass") || !errors.As(err, &pgErr) {
		t.Errorf("wrong password: %q", msg)
	}
	hba := errors.New(`failed to connect: server error: FATAL: no pg_hba.conf entry for replication connection from host "10.0.0.5", user "walhub" (SQLSTATE 28000)`)
	if msg := Explain(hba).Error(); !strings.Contains(msg, "pg_hba.conf") || !strings.Contains(msg, "fix:") {
		t.Errorf("no pg_hba line: %q", msg)
	}
	if Explain(nil) != nil {
		t.Error("Explain(nil) is not nil")
	}
}
