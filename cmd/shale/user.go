package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/shale-log/shale/broker/sasl"
)

// `shale user` manages the users clients authenticate as: SCRAM
// credentials kept by the cluster (AlterUserScramCredentials and
// DescribeUserScramCredentials, what kafka-configs.sh --entity-type users
// --alter --add-config 'SCRAM-SHA-256=[password=...]' sends). The password
// never reaches the cluster: kadm salts and hashes it here, and the
// broker keeps only what a SCRAM exchange needs.

func newUserCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Set, delete and describe users' SCRAM credentials (SASL client authentication)",
		Args:  noCommand,
		RunE:  helpOrUnknown,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newUserSetCmd(), newUserDeleteCmd(), newUserDescribeCmd())
	return cmd
}

// userPasswordEnv holds the password `shale user set` gives; without it
// the password is the first line of standard input.
const userPasswordEnv = "SHALE_USER_PASSWORD"

// scramMechanismFlag is what --mechanism names (repeatable or
// comma-separated), in order and once each; all when it names none.
func scramMechanismFlag(vals []string, all bool) ([]kadm.ScramMechanism, error) {
	var mechs []kadm.ScramMechanism
	for _, v := range vals {
		mech, err := saslMechanism("--mechanism", v)
		if err != nil {
			return nil, err
		}
		var m kadm.ScramMechanism
		switch mech {
		case sasl.ScramSHA256:
			m = kadm.ScramSha256
		case sasl.ScramSHA512:
			m = kadm.ScramSha512
		default:
			return nil, fmt.Errorf("--mechanism %s: users have SCRAM credentials only (PLAIN checks the password against them); want %s or %s", mech, sasl.ScramSHA256, sasl.ScramSHA512)
		}
		if !slices.Contains(mechs, m) {
			mechs = append(mechs, m)
		}
	}
	if len(mechs) == 0 && all {
		mechs = []kadm.ScramMechanism{kadm.ScramSha256, kadm.ScramSha512}
	}
	return mechs, nil
}

// userCredential is one SCRAM credential of a user: its mechanism and
// iterations (the cluster never gives out more).
type userCredential struct {
	Mechanism  string `json:"mechanism"`
	Iterations int32  `json:"iterations"`
}

type describedUser struct {
	User        string           `json:"user"`
	Credentials []userCredential `json:"credentials"`
	Error       string           `json:"error,omitempty"`
}

// alteredCredential is one credential `user set` or `user delete` asked
// the cluster to change.
type alteredCredential struct {
	User       string `json:"user"`
	Mechanism  string `json:"mechanism"`
	Iterations int32  `json:"iterations,omitempty"`
	// Result is set, deleted or failed.
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
}

// readPassword is the password of `user set`: SHALE_USER_PASSWORD when
// set, else the first line of standard input (its line end trimmed).
func readPassword(cmd *cobra.Command, user string) (string, error) {
	if pw, ok := os.LookupEnv(userPasswordEnv); ok {
		if pw == "" {
			return "", fmt.Errorf("user %q: %s is empty", user, userPasswordEnv)
		}
		return pw, nil
	}
	in := cmd.InOrStdin()
	if f, ok := in.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprintf(cmd.ErrOrStderr(), "Password for user %s (shown as typed; %s avoids that): ", user, userPasswordEnv)
		}
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("user %q: reading the password from standard input: %w", user, err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if pw == "" {
		return "", fmt.Errorf("user %q: no password: set %s or write it on standard input", user, userPasswordEnv)
	}
	return pw, nil
}

func newUserSetCmd() *cobra.Command {
	var (
		out        outputFlag
		mechFlag   []string
		iterations int32
	)
	cmd := &cobra.Command{
		Use:   "set NAME [--mechanism SCRAM-SHA-256,SCRAM-SHA-512] [--iterations N]",
		Short: "Create a user or change its password (AlterUserScramCredentials)",
		Long: `Gives user NAME a SCRAM credential for each --mechanism (default: both), made
from the password in SHALE_USER_PASSWORD or, when that is unset, the first line
of standard input. The password is salted and hashed here; the cluster never
sees it. A credential the user has already is replaced. Clients then log in as
NAME with that SCRAM mechanism, or with PLAIN and the same password where the
brokers enable PLAIN.`,
		Example: `  printf '%s\n' "$PASSWORD" | shale user set alice
  SHALE_USER_PASSWORD=... shale user set alice --mechanism SCRAM-SHA-512 --iterations 8192`,
		Args: exactArgs(1, "user NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			name := args[0]
			mechs, err := scramMechanismFlag(mechFlag, true)
			if err != nil {
				return err
			}
			if iterations < sasl.MinIterations || iterations > sasl.MaxIterations {
				return fmt.Errorf("--iterations %d: between %d and %d", iterations, sasl.MinIterations, sasl.MaxIterations)
			}
			pw, err := readPassword(cmd, name)
			if err != nil {
				return err
			}
			upserts := make([]kadm.UpsertSCRAM, len(mechs))
			changes := make([]alteredCredential, len(mechs))
			for i, m := range mechs {
				upserts[i] = kadm.UpsertSCRAM{User: name, Mechanism: m, Iterations: iterations, Password: pw}
				changes[i] = alteredCredential{User: name, Mechanism: m.String(), Iterations: iterations, Result: "set"}
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				res, err := adm.AlterUserSCRAMs(ctx, nil, upserts)
				if err != nil {
					return fmt.Errorf("user %q: %w", name, err)
				}
				errs := alteredResults(res, changes)
				if err := printAltered(cmd, out, changes, true); err != nil {
					return err
				}
				return joinErrs(errs)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringSliceVar(&mechFlag, "mechanism", nil, "SCRAM mechanism to set a credential for, repeatable or comma-separated: "+sasl.ScramSHA256+" or "+sasl.ScramSHA512+" (default: both)")
	fs.Int32Var(&iterations, "iterations", sasl.MinIterations, "SCRAM iterations, "+strconv.Itoa(sasl.MinIterations)+" to "+strconv.Itoa(sasl.MaxIterations)+": the work each login (and each guess at the password) costs")
	out.register(fs)
	return cmd
}

func newUserDeleteCmd() *cobra.Command {
	var (
		out      outputFlag
		mechFlag []string
	)
	cmd := &cobra.Command{
		Use:   "delete NAME... [--mechanism SCRAM-SHA-256,SCRAM-SHA-512]",
		Short: "Delete users' SCRAM credentials (AlterUserScramCredentials)",
		Long: `Deletes the credentials of each user named for each --mechanism (default:
every credential the user has, as DescribeUserScramCredentials lists them). A
user without credentials can no longer log in; connections it has open stay
open, as in Kafka.`,
		Example: `  shale user delete alice
  shale user delete alice --mechanism SCRAM-SHA-256`,
		Args: rangeArgs(1, -1, "user NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			mechs, err := scramMechanismFlag(mechFlag, false)
			if err != nil {
				return err
			}
			names := uniqueNames(args)
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				var errs []error
				var changes []alteredCredential
				var dels []kadm.DeleteSCRAM
				if len(mechs) > 0 {
					for _, name := range names {
						for _, m := range mechs {
							dels = append(dels, kadm.DeleteSCRAM{User: name, Mechanism: m})
						}
					}
				} else {
					described, err := adm.DescribeUserSCRAMs(ctx, names...)
					if err != nil {
						return fmt.Errorf("describing users: %w", err)
					}
					for _, name := range names {
						d, ok := described[name]
						switch {
						case !ok:
							errs = append(errs, fmt.Errorf("user %q: not in the answer", name))
						case d.Err != nil:
							errs = append(errs, kafkaErr("user", name, d.Err, d.ErrMessage))
						}
						for _, c := range d.CredInfos {
							dels = append(dels, kadm.DeleteSCRAM{User: name, Mechanism: c.Mechanism})
						}
					}
				}
				for _, d := range dels {
					changes = append(changes, alteredCredential{User: d.User, Mechanism: d.Mechanism.String(), Result: "deleted"})
				}
				if len(dels) > 0 {
					res, err := adm.AlterUserSCRAMs(ctx, dels, nil)
					if err != nil {
						return fmt.Errorf("deleting credentials: %w", err)
					}
					errs = append(errs, alteredResults(res, changes)...)
				}
				if err := printAltered(cmd, out, changes, false); err != nil {
					return err
				}
				return joinErrs(errs)
			})
		},
	}
	cmd.Flags().StringSliceVar(&mechFlag, "mechanism", nil, "SCRAM mechanism whose credential to delete, repeatable or comma-separated: "+sasl.ScramSHA256+" or "+sasl.ScramSHA512+" (default: every one the user has)")
	out.register(cmd.Flags())
	return cmd
}

// alteredResults marks the changes of each user the cluster refused as
// failed, and returns one error per such user. A user's changes are
// applied all or none.
func alteredResults(res kadm.AlteredUserSCRAMs, changes []alteredCredential) []error {
	var errs []error
	failed := map[string]error{}
	for i, c := range changes {
		err, seen := failed[c.User]
		if !seen {
			r, ok := res[c.User]
			switch {
			case !ok:
				err = fmt.Errorf("user %q: not in the answer", c.User)
			case r.Err != nil:
				err = kafkaErr("user", c.User, r.Err, r.ErrMessage)
			}
			failed[c.User] = err
			if err != nil {
				errs = append(errs, err)
			}
		}
		if err != nil {
			changes[i].Result, changes[i].Error = "failed", err.Error()
		}
	}
	return errs
}

// printAltered prints the changes of `user set` (with the iterations) or
// `user delete`.
func printAltered(cmd *cobra.Command, out outputFlag, changes []alteredCredential, withIterations bool) error {
	if out.json() {
		return writeJSON(cmd, orEmpty(changes))
	}
	if withIterations {
		t := newTable(cmd, "USER", "MECHANISM", "ITERATIONS", "RESULT")
		for _, c := range changes {
			t.row(c.User, c.Mechanism, c.Iterations, c.Result)
		}
		return t.flush()
	}
	t := newTable(cmd, "USER", "MECHANISM", "RESULT")
	for _, c := range changes {
		t.row(c.User, c.Mechanism, c.Result)
	}
	return t.flush()
}

// uniqueNames is names without repeats, in order (the cluster refuses a
// user named twice in one request).
func uniqueNames(names []string) []string {
	var out []string
	for _, n := range names {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func newUserDescribeCmd() *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "describe [NAME...]",
		Short: "List users and their SCRAM mechanisms and iterations (DescribeUserScramCredentials)",
		Long: `Lists the users named, or every user, with the mechanism and iterations of each
of their SCRAM credentials. Neither passwords nor keys are ever shown: the
cluster gives out no more. A user named that has no credentials is an error.`,
		Example: `  shale user describe
  shale user describe alice -o json`,
		Args: rangeArgs(0, -1, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			names := uniqueNames(args)
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				res, err := adm.DescribeUserSCRAMs(ctx, names...)
				if err != nil {
					return fmt.Errorf("describing users: %w", err)
				}
				var errs []error
				for _, name := range names {
					if _, ok := res[name]; !ok {
						errs = append(errs, fmt.Errorf("user %q: not in the answer", name))
					}
				}
				described := []describedUser{}
				for _, d := range res.Sorted() {
					u := describedUser{User: d.User, Credentials: []userCredential{}}
					if d.Err != nil {
						err := kafkaErr("user", d.User, d.Err, d.ErrMessage)
						u.Error = err.Error()
						errs = append(errs, err)
					}
					creds := slices.Clone(d.CredInfos)
					slices.SortFunc(creds, func(a, b kadm.CredInfo) int { return int(a.Mechanism) - int(b.Mechanism) })
					for _, c := range creds {
						u.Credentials = append(u.Credentials, userCredential{Mechanism: c.Mechanism.String(), Iterations: c.Iterations})
					}
					described = append(described, u)
				}
				if out.json() {
					if err := writeJSON(cmd, described); err != nil {
						return err
					}
				} else {
					t := newTable(cmd, "USER", "MECHANISM", "ITERATIONS")
					for _, u := range described {
						for _, c := range u.Credentials {
							t.row(u.User, c.Mechanism, c.Iterations)
						}
					}
					if err := t.flush(); err != nil {
						return err
					}
				}
				return joinErrs(errs)
			})
		},
	}
	out.register(cmd.Flags())
	return cmd
}
