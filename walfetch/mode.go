package walfetch

import "os"

// Mode is how PostgreSQL is recovering, read from the signal files in the
// data directory (standby.signal wins when both exist, as in PostgreSQL).
type Mode int

const (
	// ModeStandby: standby.signal, or called by hand.
	ModeStandby Mode = iota
	// ModePITR: recovery.signal only: an early "not available" ends recovery.
	ModePITR
)

// RecoveryMode reads the mode from the signal files in the working
// directory, which is the data directory when PostgreSQL runs walfetch.
func RecoveryMode() Mode {
	if _, err := os.Stat("standby.signal"); err == nil {
		return ModeStandby
	}
	if _, err := os.Stat("recovery.signal"); err == nil {
		return ModePITR
	}
	return ModeStandby
}

// Result is how a request ended, and the exit status that tells PostgreSQL.
// PostgreSQL reads 0 as "restored", 1..125 as "not available" (normal: it
// tries elsewhere, or ends recovery), and above 125, or death by a signal,
// as a reason to stop with FATAL.
type Result int

const (
	// Served: the file is at its destination, complete and verified.
	Served Result = 0
	// NotAvailable: the hub lacks it, or (on a standby) could not deliver it.
	NotAvailable Result = 1
	// StopRecovery is used only during point-in-time recovery, on purpose:
	// it makes PostgreSQL stop rather than end recovery early at the wrong point.
	StopRecovery Result = 255
)

// Fail is the result for "could not serve, and not because the hub lacks
// the file": a plain miss on a standby, a stop during point-in-time recovery.
func Fail(m Mode) Result {
	if m == ModePITR {
		return StopRecovery
	}
	return NotAvailable
}
