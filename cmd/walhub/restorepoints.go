package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/hub/client"
	"github.com/walhub/walhub/walname"
)

// restorePointView is one restore point as restore-points prints it.
type restorePointView struct {
	Server   string           `json:"server"`
	Name     string           `json:"name"`
	TimeLine walname.TimeLine `json:"timeline"`
	LSN      walname.LSN      `json:"lsn"`
	EndLSN   walname.LSN      `json:"end_lsn"`
	Time     time.Time        `json:"time"`
}

func (a *app) restorePointsCommand() *cobra.Command {
	var server, hubURL, token string
	cmd := &cobra.Command{
		Use:   "restore-points",
		Short: "List the restore points in the WAL the hub holds",
		Long: `Lists the named restore points (pg_create_restore_point) found in the WAL the hub
holds, in WAL order: name, timeline, LSN and time. walhub restore --target-name NAME
recovers to the first of that name after the backup it starts from. With --hub-url the
list comes from a hub over HTTP.`,
		Example: `  walhub restore-points
  walhub restore-points --server main --output=json
  walhub restore-points --hub-url https://hub:7480 --server main`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			views := []restorePointView{}
			if hubURL != "" {
				if server == "" || server == "all" {
					return errors.New("--hub-url needs --server NAME")
				}
				if token == "" {
					token = os.Getenv("WALHUB_TOKEN")
				}
				c, err := client.New(client.Options{URL: hubURL, Server: server, Token: token, UserAgent: "walhub-restore-points"})
				if err != nil {
					return err
				}
				defer c.Close()
				rps, err := c.RestorePoints(cmd.Context())
				if err != nil {
					return err
				}
				for _, rp := range rps {
					views = append(views, restorePointView{Server: server, Name: rp.Name, TimeLine: rp.TimeLine, LSN: rp.LSN,
						EndLSN: rp.EndLSN, Time: rp.Time})
				}
			} else {
				servers, repo, err := a.readServers(cmd.Context(), server)
				if err != nil {
					return err
				}
				defer repo.Close()
				cat := repo.Catalog
				for _, s := range servers {
					srv, err := cat.ServerByName(cmd.Context(), s.Name)
					if errors.Is(err, catalog.ErrNotFound) {
						continue
					}
					if err != nil {
						return err
					}
					rps, err := cat.RestorePoints(cmd.Context(), srv.ID, "")
					if err != nil {
						return err
					}
					for _, rp := range rps {
						views = append(views, restorePointView{Server: s.Name, Name: rp.Name, TimeLine: rp.TimeLine, LSN: rp.LSN,
							EndLSN: rp.EndLSN, Time: rp.Time})
					}
				}
			}
			return a.render(cmd.OutOrStdout(), views, func(w io.Writer) error {
				if len(views) == 0 {
					fmt.Fprintln(w, "no restore points in the WAL held")
					return nil
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SERVER\tNAME\tTIMELINE\tLSN\tTIME")
				for _, v := range views {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", v.Server, v.Name, v.TimeLine, v.LSN, v.Time.UTC().Format("2006-01-02 15:04:05.000000Z07:00"))
				}
				return tw.Flush()
			})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&server, "server", "s", "all", "server name, or all")
	f.StringVar(&hubURL, "hub-url", "", "list from this hub over HTTP instead of the local repository")
	f.StringVar(&token, "token", "", "read token for --hub-url (default: env WALHUB_TOKEN)")
	a.addOutputFlag(cmd)
	return cmd
}
