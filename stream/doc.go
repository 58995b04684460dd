// Package stream receives WAL from PostgreSQL through a physical replication
// slot and stores it in the repository, durably and without gaps.
//
// One Receiver per server runs sessions: connect (replication=true),
// IDENTIFY_SYSTEM (the system id must match the catalog's), SHOW
// wal_segment_size, READ_REPLICATION_SLOT (create or recreate the slot), work
// out the resume point, START_REPLICATION, then the copy loop. Any failure
// ends the session; Run reconnects with a capped backoff.
//
// Files, for segment S of timeline T:
//
//	<server>/wal/<T><LOG>/S.partial  being received, or complete and waiting to be stored
//	<server>/wal/<T><LOG>/S[.zst]    stored: compressed (or linked), fsynced, then cataloged
//	<server>/wal/.spare.tmp-N        a stored segment's file, to be reused as a .partial
//
// The .partial of S+1 is created (or a spare renamed to its name), and its
// directory entry fsynced, only after S.partial holds the whole segment and
// is fsynced. So after a crash every .partial but the newest is either
// complete (and is stored at the next start) or the end of a timeline that
// was left (kept as it is: a reused file was cut to its WAL first); the
// newest is kept up to the end of the WAL it proves whole and streaming
// resumes inside it (see recoverPartial), where pg_receivewal would start its
// segment over. A reused file holds an older segment's WAL past what was
// received, which that proof never takes for this segment's (its pages carry
// another address) and which no reader is given (see partialFiles).
//
// Durability: the flush position sent in standby status updates is only ever
// walWriter.synced, which only walWriter.sync advances, after the fsyncs that
// make it true. The slot's restart_lsn follows that position, so the server
// never recycles WAL the hub does not hold; a position below the restart_lsn
// a session found is not reported, so the slot never moves backwards. Completed segments are compressed
// by a background archiver with a bounded queue, so receiving continues while
// the previous segment is compressed, and memory does not grow with WAL volume.
//
// WAL the server removed before the hub got it ("requested WAL segment ... has
// already been removed", or an invalidated slot) is recorded as a gap in the
// catalog, logged loudly, and streaming resumes from the oldest WAL the slot
// holds.
package stream
