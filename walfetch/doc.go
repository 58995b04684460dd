// Package walfetch is the mechanism behind the walfetch restore_command:
// serving one WAL file to PostgreSQL (Serve: from the spool by a rename, or
// downloaded from the hub into a temporary file beside %p, verified, renamed),
// the spool of prefetched segments and the detached prefetcher process that
// fills it (RunPrefetcher). cmd/walfetch only resolves the settings from
// flags, environment and config file, and turns a Result into an exit status.
//
// Verification (size, CRC-32C, the segment's page header against its name,
// the segment size and the cluster's system identifier) is done before any
// file gets a name PostgreSQL or the spool reader would take: what Serve
// hands over at %p is complete and verified, or absent.
package walfetch
