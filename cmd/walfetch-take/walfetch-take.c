/*
 * walfetch-take: the restore_command's spool hit, when installed beside
 * walfetch (make build puts it in bin/). walfetch --print-restore-command
 * and walhub restore then write the line
 *
 *   read -r b </proc/sys/kernel/random/boot_id && { read -r p; read -r d; read -r t; } <postmaster.pid &&
 *     exec walfetch-take pg_wal/walfetch-spool/"$b.$t.$p".<hub tag>/%f %p walfetch <flags> %f %p ||
 *     exec walfetch <flags> %f %p
 *
 * (one line). The shell finds the prefetcher's spool by the link the
 * prefetcher made for this boot and this postmaster (see walfetch/hitlink.go).
 * walfetch-take renames the segment the prefetcher downloaded and verified
 * into %p (atomic: %p is complete or absent) and exits 0; when there is no
 * such segment, or the rename fails for any reason, it executes walfetch in
 * its place (same process, same exit status for PostgreSQL), which serves
 * the file as ever.
 *
 * Why C, in a Go project: this program is what PostgreSQL starts for almost
 * every WAL segment during replay, and for a 1 MiB segment the cost of the
 * call is almost wholly the cost of starting a process. A static C program
 * starts in a fraction of what a Go program's runtime costs (measured in
 * README, Benchmarks), or what mv costs (coreutils, linked with libselinux,
 * libacl and libpcre2): the spool hit costs less than a cp of the file. It
 * holds nothing but one rename and one exec. Without it, the line is the one
 * with mv, which does the same at the cost of a cp.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
"walfetch-take renames a segment walfetch's prefetcher verified into %p, or\n"
"executes walfetch in its place: the restore_command's spool hit.\n"
"\n"
"Usage (in the restore_command line walfetch --print-restore-command prints):\n"
"  walfetch-take SPOOL_FILE %p WALFETCH [WALFETCH_ARGS...]\n"
"\n"
"Exit status: 0 when SPOOL_FILE was renamed into %p; else that of WALFETCH\n"
"WALFETCH_ARGS..., executed in this process (PATH is searched when WALFETCH\n"
"has no slash); 127 when it cannot be executed and 255 for a wrong call:\n"
"above 125, PostgreSQL stops with FATAL instead of reading \"not available\",\n"
"which would end a point-in-time recovery early.\n";

/*
 * The signals PostgreSQL's shutdowns, systemd or a user may send. A process
 * PostgreSQL started that dies by one reads as FATAL; a rename is done
 * sooner than handled, so they are ignored around it (as walfetch ignores
 * them on its own spool hit), and restored before walfetch is executed.
 */
static const int stop_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};
#define NSTOP (sizeof(stop_signals) / sizeof(stop_signals[0]))

int
main(int argc, char **argv)
{
	struct sigaction ignore, saved[NSTOP];
	size_t i;

	if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))
	{
		fputs(usage, stdout);
		return 0;
	}
	if (argc < 4)
	{
		fputs(usage, stderr);
		return 255;
	}

	memset(&ignore, 0, sizeof(ignore));
	ignore.sa_handler = SIG_IGN;
	for (i = 0; i < NSTOP; i++)
		sigaction(stop_signals[i], &ignore, &saved[i]);

	if (rename(argv[1], argv[2]) == 0)
		return 0;

	for (i = 0; i < NSTOP; i++)
		sigaction(stop_signals[i], &saved[i], NULL);
	execvp(argv[3], argv + 3);
	fprintf(stderr, "walfetch-take: cannot execute %s: %s\n", argv[3], strerror(errno));
	return 127;
}
