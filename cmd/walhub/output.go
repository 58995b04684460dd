package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// addOutputFlag gives a command the shared --output=text|json flag.
func (a *app) addOutputFlag(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&a.output, "output", "o", "text", "output format: text or json")
}

// addServerFlag gives status and check the --server flag every other command
// has. They also take the server as their one argument, as they always did.
func addServerFlag(cmd *cobra.Command) {
	cmd.Flags().StringP("server", "s", "all", "server name, or all (also accepted as the one argument)")
}

// serverArg is the server a status or check command names: --server, or its
// one argument ("" for all).
func serverArg(cmd *cobra.Command, args []string) (string, error) {
	flag, _ := cmd.Flags().GetString("server")
	switch {
	case len(args) == 1 && cmd.Flags().Changed("server") && args[0] != flag:
		return "", fmt.Errorf("--server %s and argument %s: name the server once", flag, args[0])
	case len(args) == 1:
		flag = args[0]
	}
	if flag == "all" {
		return "", nil
	}
	return flag, nil
}

// render writes v as indented JSON when --output=json, else calls text.
func (a *app) render(w io.Writer, v any, text func(w io.Writer) error) error {
	switch a.output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "text", "":
		return text(w)
	}
	return fmt.Errorf("--output: %q is not one of text, json", a.output)
}
