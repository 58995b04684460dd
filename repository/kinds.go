package repository

import "github.com/walhub/walhub/catalog"

// What each kind of backup means to the commands that handle backups lives
// here, so that every command asks the same place: which backups walhub
// restore can restore from the repository, which it can verify. (The
// answers belong to the restore and retention work; keep them here.)

// Restorable tells whether walhub restore can restore b from the stored
// files: a finished base backup. A snapshot's data is in the user's copy.
// The rule itself is catalog.Restorable, which the catalog's
// RecoverableWindow applies too.
func Restorable(b catalog.Backup) bool { return catalog.Restorable(b) }

// Verifiable tells whether b has stored files to verify against its manifest.
func Verifiable(b catalog.Backup) bool { return Restorable(b) }
