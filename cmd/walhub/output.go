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
