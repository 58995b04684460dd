// Package privileges says what walhub's PostgreSQL role needs on each server,
// how to test each right as that role, and the exact statement that grants
// it: the one list behind the README's role setup, walhub check's
// "privileges" check and the hints of the commands that hit a missing right.
package privileges

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Privilege is one right walhub's role needs.
type Privilege struct {
	// Name is the right as PostgreSQL names it.
	Name string
	// For says which part of walhub needs it.
	For string
	// test is an SQL expression, true when the current user holds the right.
	test string
	// grant is the statement that gives it, %s for the role.
	grant string
}

// Grant is the statement that gives the right to role.
func (p Privilege) Grant(role string) string {
	return fmt.Sprintf(p.grant, pgx.Identifier{role}.Sanitize())
}

// Rights walhub needs beyond LOGIN and CONNECT on the database of its conninfo.
var (
	Replication = Privilege{Name: "REPLICATION", For: "the receiver (START_REPLICATION), base backups (BASE_BACKUP) and the slot",
		test:  "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
		grant: "ALTER ROLE %s REPLICATION;"}
	Monitor = Privilege{Name: "pg_monitor", For: "walhub status and check: every standby's positions in pg_stat_replication",
		test:  "pg_has_role(current_user, 'pg_monitor', 'USAGE')",
		grant: "GRANT pg_monitor TO %s;"}
	SwitchWAL = Privilege{Name: "EXECUTE on pg_switch_wal()", For: "walhub backup and snapshot stop: completing the last segment of a backup's WAL",
		test:  "has_function_privilege(current_user, 'pg_catalog.pg_switch_wal()', 'EXECUTE')",
		grant: "GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO %s;"}
	BackupStart = Privilege{Name: "EXECUTE on pg_backup_start(text, boolean)", For: "walhub snapshot start",
		test:  "has_function_privilege(current_user, 'pg_catalog.pg_backup_start(text, boolean)', 'EXECUTE')",
		grant: "GRANT EXECUTE ON FUNCTION pg_catalog.pg_backup_start(text, boolean) TO %s;"}
	BackupStop = Privilege{Name: "EXECUTE on pg_backup_stop(boolean)", For: "walhub snapshot stop",
		test:  "has_function_privilege(current_user, 'pg_catalog.pg_backup_stop(boolean)', 'EXECUTE')",
		grant: "GRANT EXECUTE ON FUNCTION pg_catalog.pg_backup_stop(boolean) TO %s;"}
)

// All is every right walhub needs, in the order the README lists them.
var All = []Privilege{Replication, Monitor, SwitchWAL, BackupStart, BackupStop}

// Missing returns the role conn is logged in as and the rights of All it lacks.
func Missing(ctx context.Context, conn *pgx.Conn) (role string, missing []Privilege, err error) {
	exprs := make([]string, len(All))
	for i, p := range All {
		exprs[i] = "coalesce(" + p.test + ", false)"
	}
	held := make([]bool, len(All))
	dest := []any{&role}
	for i := range held {
		dest = append(dest, &held[i])
	}
	if err := conn.QueryRow(ctx, "SELECT current_user::text, "+strings.Join(exprs, ", ")).Scan(dest...); err != nil {
		return "", nil, fmt.Errorf("read the role's privileges: %w", err)
	}
	for i, ok := range held {
		if !ok {
			missing = append(missing, All[i])
		}
	}
	return role, missing, nil
}

// Explain adds to err, when PostgreSQL refused it for lack of the right p
// (SQLSTATE 42501), the statement that grants p to role.
func Explain(err error, p Privilege, role string) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return fmt.Errorf("%w; walhub's role lacks %s, run as a superuser: %s", err, p.Name, p.Grant(role))
	}
	return err
}
