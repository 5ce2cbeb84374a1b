// Command shale is Shale's single binary: the broker (`shale broker`), the
// embedded single-node system (`shale dev`) and the command-line client
// (`shale topic`, `shale group`, ...).
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "shale:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "shale",
		Short:         "Shale: a Kafka-compatible event log built for long retention",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       versionString(),
		Args:          noCommand,
		RunE:          helpOrUnknown,
	}
	root.SetVersionTemplate("shale {{.Version}}\n")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w; see '%s --help'", err, c.CommandPath())
	})
	root.AddCommand(newDevCmd())
	root.AddCommand(newBrokerCmd())
	root.AddCommand(newVersionCmd())
	root.AddCommand(newProduceCmd(), newConsumeCmd(), newBenchCmd())
	root.AddCommand(newHealthCmd())
	root.AddCommand(newTopicCmd(), newGroupCmd(), newClusterCmd(), newTierCmd(), newQuotaCmd(), newUserCmd(), newACLCmd())
	root.AddCommand(newTxnCmd())
	return root
}

// A command group (shale, shale topic, ...) run without a subcommand prints
// its help; with an unknown one it fails.
func helpOrUnknown(cmd *cobra.Command, args []string) error { return cmd.Help() }

func noCommand(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unknown command %q for %q; see '%s --help'", args[0], cmd.CommandPath(), cmd.CommandPath())
	}
	return nil
}

// exactArgs and rangeArgs check positional arguments, with a pointer to
// --help in the error.
func exactArgs(n int, what string) cobra.PositionalArgs { return rangeArgs(n, n, what) }

func rangeArgs(lo, hi int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < lo:
			return fmt.Errorf("%s: missing %s; see '%s --help'", cmd.CommandPath(), what, cmd.CommandPath())
		case hi >= 0 && len(args) > hi:
			return fmt.Errorf("%s: unexpected argument %q; see '%s --help'", cmd.CommandPath(), args[hi], cmd.CommandPath())
		}
		return nil
	}
}

// bindEnv lets every flag be set from SHALE_<FLAG_NAME> (dashes become
// underscores) when it was not given on the command line. Flags win.
func bindEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := envName(f.Name)
		if e := f.Annotations[envAnnotation]; len(e) == 1 {
			name = e[0]
		}
		if v, ok := os.LookupEnv(name); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
			}
		}
	})
	return err
}

// envAnnotation on a flag names its environment variable when it is not
// SHALE_<FLAG> (for example because a client flag owns that name).
const envAnnotation = "shale_env"

func envName(flag string) string {
	b := []byte("SHALE_" + flag)
	for i, c := range b {
		switch {
		case c == '-' || c == '.':
			b[i] = '_'
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
