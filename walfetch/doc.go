// Package walfetch is what the walfetch restore_command does without the
// hub: its settings, the recovery mode and exit statuses (the contract with
// PostgreSQL), and the spool of prefetched segments: finding it, taking a
// segment from it by a rename (a spool hit), waiting for a download under
// way, and telling the prefetcher (or starting it) which segment was served;
// and the spool hit the restore_command's shell takes itself, through a link
// the prefetcher makes (ShellRestoreCommand).
// It links no HTTP, TLS or zstd: the walfetch program PostgreSQL starts for
// every segment is made of it alone, so a hit costs little more than starting
// a Go program. Everything that talks to the hub (downloads, verification,
// the prefetcher) is package hubfetch, in the program NetProgram, which
// walfetch executes when it must go to the hub.
//
// The prefetcher verifies every segment (size, CRC-32C, the segment's page
// header against its name, the segment size and the cluster's system
// identifier) before giving it its name in the spool: what a hit hands over
// at %p is complete and verified.
package walfetch
