package replication

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// keyValuePassword and urlPassword find a password in a libpq conninfo, in
// its key=value form (quoted or not) and its URL form, also inside a longer
// text (a primary_conninfo line).
var (
	keyValuePassword = regexp.MustCompile(`(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']+)`)
	urlPassword      = regexp.MustCompile(`(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@`)
)

// Redact replaces every password of the conninfos in s with *****: what
// walhub prints or logs never shows one.
func Redact(s string) string {
	s = keyValuePassword.ReplaceAllString(s, "${1}*****")
	return urlPassword.ReplaceAllString(s, "${1}*****@")
}

// runtimeParams are the startup parameters a conninfo may set besides the
// libpq keywords pgconn knows; any other key pgconn would send to the server
// as a parameter, which is how a mistyped keyword ("hots=db1") went unnoticed.
var runtimeParams = []string{"application_name", "options", "client_encoding", "replication"}

// ErrUnknownKeyword is returned (wrapped) for a conninfo with a keyword
// libpq does not know: like a conninfo that does not parse, no retry helps.
var ErrUnknownKeyword = errors.New("unknown conninfo keyword")

// checkKeywords refuses a conninfo with a keyword libpq does not know.
func checkKeywords(conninfo string, cfg *pgconn.Config) error {
	for k := range cfg.RuntimeParams {
		if !slices.Contains(runtimeParams, k) {
			return fmt.Errorf("conninfo %q: %w %q (a typo? libpq's are host, port, dbname, user, password, sslmode, connect_timeout, ...)",
				Redact(conninfo), ErrUnknownKeyword, k)
		}
	}
	return nil
}

// IsBadConninfo tells whether err says the conninfo itself is wrong (it does
// not parse, or has an unknown keyword): retrying cannot help.
func IsBadConninfo(err error) bool {
	var parseErr *pgconn.ParseConfigError
	return errors.As(err, &parseErr) || errors.Is(err, ErrUnknownKeyword)
}

// CheckConninfo tells whether conninfo parses and uses only keywords libpq
// knows (the configuration checks each server's at load).
func CheckConninfo(conninfo string) error {
	cfg, err := pgconn.ParseConfig(conninfo)
	if err != nil {
		return err
	}
	return checkKeywords(conninfo, cfg)
}

// connectError is a failed connection said in one line, with the fix.
type connectError struct {
	err error
	msg string
}

func (e *connectError) Error() string { return e.msg }
func (e *connectError) Unwrap() error { return e.err }

// Explain turns a failed connection into one line that gives the cause and
// the fix for the common ones (wrong password, no pg_hba.conf line, no
// REPLICATION, server down), with any password redacted. Other errors are
// returned as they are.
func Explain(err error) error {
	if err == nil || IsBadConninfo(err) {
		return err
	}
	line := Redact(strings.Join(strings.Fields(err.Error()), " "))
	var pgErr *pgconn.PgError
	fix := ""
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "28P01", strings.Contains(line, "password authentication failed"):
		fix = "give walhub the role's password: PGPASSWORD in its environment (/etc/walhub/walhub.env under systemd) or a line in the ~/.pgpass of the user walhub runs as (mode 0600)"
	case strings.Contains(line, "no password supplied"):
		fix = "the server asks for a password and none was given: PGPASSWORD in walhub's environment (/etc/walhub/walhub.env under systemd) or ~/.pgpass of the user walhub runs as"
	case strings.Contains(line, "no pg_hba.conf entry"):
		fix = "add a line for walhub's host and role to the server's pg_hba.conf (database 'replication' for replication connections) and reload PostgreSQL"
	case strings.Contains(line, "must be superuser or replication role"), strings.Contains(line, "permission denied to start WAL sender"):
		fix = "ALTER ROLE <role> REPLICATION on the server"
	case strings.Contains(line, "connection refused"), strings.Contains(line, "no such file or directory"):
		fix = "is PostgreSQL running, and are host and port in the conninfo right?"
	case strings.Contains(line, "does not exist"):
		fix = "check user and dbname in the conninfo"
	}
	if fix == "" {
		if line == err.Error() {
			return err
		}
		return &connectError{err: err, msg: line}
	}
	return &connectError{err: err, msg: line + " -- fix: " + fix}
}
