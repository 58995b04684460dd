// Command walfetch is PostgreSQL's restore_command for standbys and restores fed
// by a walhub: restore_command = 'walfetch %f %p'.
//
// It is not built yet: it always answers "not available" (exit 1), which
// PostgreSQL treats as a normal miss, so it can never abort a standby.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "walfetch: not built yet in this version of walhub")
	os.Exit(1)
}
