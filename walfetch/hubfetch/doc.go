// Package hubfetch is the part of walfetch that talks to the hub, in the
// program walfetch-net: serving one WAL file to PostgreSQL (Serve: from the
// spool when it has it meanwhile, else downloaded into a temporary file
// beside %p, verified, renamed) and the detached prefetcher process that
// fills the spool (RunPrefetcher).
//
// Verification (size, CRC-32C, the segment's page header against its name,
// the segment size and the cluster's system identifier) is done before any
// file gets a name PostgreSQL or the spool reader would take: what Serve
// hands over at %p is complete and verified, or absent.
package hubfetch
