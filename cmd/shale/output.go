package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// outputFlag is -o/--output: aligned tables for people (text, the
// default) or JSON for scripts.
type outputFlag struct{ format string }

func (o *outputFlag) register(fs *pflag.FlagSet) {
	fs.StringVarP(&o.format, "output", "o", "text", "output format: text or json")
}

func (o *outputFlag) json() bool { return o.format == "json" }

func (o *outputFlag) check() error {
	switch o.format {
	case "text", "json":
		return nil
	}
	return fmt.Errorf("--output %q: want text or json", o.format)
}

// writeJSON prints v as indented JSON on the command's standard output.
func writeJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints aligned columns on the command's standard output.
type table struct{ w *tabwriter.Writer }

func newTable(cmd *cobra.Command, header ...string) *table {
	t := &table{w: tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(anys(header)...)
	}
	return t
}

func anys(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func (t *table) row(cells ...any) {
	parts := make([]string, len(cells))
	for i, c := range cells {
		parts[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(t.w, strings.Join(parts, "\t"))
}

func (t *table) flush() error { return t.w.Flush() }

// humanBytes prints a byte count with a binary unit.
func humanBytes(n int64) string {
	if n < 0 {
		return "-"
	}
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
