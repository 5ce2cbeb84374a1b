// Command shale is Shale's single binary: the broker (`shale broker`), the
// embedded single-node system (`shale dev`) and, later, the CLI.
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
	}
	root.AddCommand(newDevCmd())
	root.AddCommand(newBrokerCmd())
	return root
}

// bindEnv lets every flag be set from SHALE_<FLAG_NAME> (dashes become
// underscores) when it was not given on the command line. Flags win.
func bindEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, e)
			}
		}
	})
	return err
}

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
