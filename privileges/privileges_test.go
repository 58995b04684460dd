package privileges

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walhub/walhub/test/pgtest"
)

func names(ps []Privilege) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// TestMissingNamesEachPrivilegeAndItsGrantIsEnough starts from a role with
// LOGIN only and grants, one at a time, the statement Missing gives: each
// removes exactly its privilege from the list, and in the end none is missing.
func TestMissingNamesEachPrivilegeAndItsGrantIsEnough(t *testing.T) {
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{})
	p.Query(`CREATE ROLE "walhub-t" LOGIN`)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, strings.Replace(p.ConnString(""), "user=postgres", "user=walhub-t", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	want := All
	for {
		role, missing, err := Missing(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		if role != "walhub-t" || fmt.Sprint(names(missing)) != fmt.Sprint(names(want)) {
			t.Fatalf("Missing = %s %v, want %v", role, names(missing), names(want))
		}
		if len(missing) == 0 {
			break
		}
		grant := missing[0].Grant(role)
		if !strings.Contains(grant, `"walhub-t"`) {
			t.Errorf("%s: the role is not quoted", grant)
		}
		p.Query(grant)
		want = want[1:]
	}
	// What PostgreSQL refuses for lack of a right is explained with its grant.
	p.Query(`REVOKE EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() FROM "walhub-t"`)
	_, err = conn.Exec(ctx, "SELECT pg_switch_wal()")
	err = Explain(err, SwitchWAL, "walhub-t")
	if err == nil || !strings.Contains(err.Error(), `GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO "walhub-t";`) {
		t.Errorf("Explain = %v", err)
	}
	other := errors.New("connection refused")
	if Explain(other, SwitchWAL, "x") != other {
		t.Error("Explain changed an error that is not a missing privilege")
	}
	cancelled := &pgconn.PgError{Code: "57014", Message: "canceling statement"}
	if Explain(cancelled, SwitchWAL, "x") != error(cancelled) {
		t.Error("Explain changed a PostgreSQL error other than 42501")
	}
}
