// walfetch-net is started once per call that needs the hub, and once per
// prefetcher: what the Go runtime does at every start is on replay's
// critical path. It need not size itself to a container's CPU quota, nor
// name its memory mappings.

//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0
//go:debug decoratemappings=0

// Command walfetch-net is the part of walfetch that talks to the hub:
// downloading and verifying a WAL file PostgreSQL asked for (walfetch
// executes it, in its own process, when the spool does not have the file)
// and the prefetcher (started detached). It is installed beside walfetch and
// run by walfetch only; see walfetch --help for the contract.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/walhub/walhub/version"
	"github.com/walhub/walhub/walfetch"
	"github.com/walhub/walhub/walfetch/hubfetch"
)

func main() {
	switch {
	case len(os.Args) == 2 && os.Args[1] == walfetch.PrefetcherArg:
		os.Exit(hubfetch.RunPrefetcher())
	case len(os.Args) == 4 && os.Args[1] == walfetch.ServeArg:
		os.Exit(serve(os.Args[2], os.Args[3]))
	case len(os.Args) == 2 && os.Args[1] == "--version":
		fmt.Println(version.Get().String(walfetch.NetProgram))
		os.Exit(0)
	}
	fmt.Fprintf(os.Stderr, "%s is run by walfetch, not by hand: see walfetch --help\n", walfetch.NetProgram)
	os.Exit(int(walfetch.Fail(walfetch.RecoveryMode())))
}

// serve serves name at dst with the settings walfetch resolved, and returns
// the exit status, walfetch's contract with PostgreSQL.
func serve(name, dst string) int {
	m := walfetch.RecoveryMode()
	var s walfetch.Settings
	if err := json.Unmarshal([]byte(os.Getenv(walfetch.SettingsEnv)), &s); err != nil {
		fmt.Fprintf(os.Stderr, "walfetch: %s: no settings from walfetch: %v\n", walfetch.NetProgram, err)
		return int(walfetch.Fail(m))
	}
	os.Unsetenv(walfetch.SettingsEnv)

	temps := hubfetch.NewTempFiles()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	go func() {
		sig := <-sigs
		cancel()
		temps.RemoveAll()
		fmt.Fprintf(os.Stderr, "walfetch: %s: %v received, %s not restored\n", name, sig, name)
		os.Exit(int(walfetch.Fail(m)))
	}()
	return int(hubfetch.Serve(ctx, s, m, name, dst, temps, os.Stderr))
}
