package main

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// saslBrokerOpts make a broker require SASL by every mechanism, its
// bootstrap user admin.
func saslBrokerOpts(c *broker.Config) {
	c.SASLMechanisms = []string{"SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"}
	c.SASLBootstrapUser, c.SASLBootstrapPassword = "admin", "admin-secret"
}

// saslCLI runs shale commands against addr as user, authenticating by
// mech with pass (in SHALE_SASL_PASSWORD, as the flags want it).
func saslCLI(t *testing.T, addr, mech, user, pass string) func(args ...string) (string, error) {
	return func(args ...string) (string, error) {
		t.Helper()
		t.Setenv(saslPasswordEnv, pass)
		return runCLI(t, append(args, "--brokers", addr, "--timeout", "20s", "--sasl-mechanism", mech, "--sasl-user", user)...)
	}
}

// envWithout is this process's environment without the variables named,
// for a child that must not inherit them.
func envWithout(names ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(names, name) {
			env = append(env, kv)
		}
	}
	return env
}

// TestUserCommands: against a broker requiring SASL, shale user set
// creates users (password from SHALE_USER_PASSWORD or standard input, by
// default for both SCRAM mechanisms), describe lists their mechanisms
// and iterations, the new users log in with SCRAM and with PLAIN, a new
// password replaces the old, delete removes every credential (or those
// named) and the deleted user can no longer log in. Per-user errors are
// one line and a non-zero exit.
func TestUserCommands(t *testing.T) {
	b := brokertest.Start(t, saslBrokerOpts)
	admin := saslCLI(t, b.Addr, "SCRAM-SHA-256", "admin", "admin-secret")
	as := func(mech, user, pass string) error {
		t.Helper()
		_, err := saslCLI(t, b.Addr, mech, user, pass)("topic", "list")
		return err
	}
	canLogIn := func(mech, user, pass string) {
		t.Helper()
		if err := as(mech, user, pass); err != nil {
			t.Fatalf("%s by %s: %v", user, mech, err)
		}
	}
	cannotLogIn := func(mech, user, pass string) {
		t.Helper()
		wantErr(t, as(mech, user, pass), "cluster at "+b.Addr, "authenticating as \""+user+"\" with "+mech, "SASL_AUTHENTICATION_FAILED")
	}
	describe := func(args ...string) map[string][]userCredential {
		t.Helper()
		var ds []describedUser
		adminJSON(t, admin, &ds, append([]string{"user", "describe"}, args...)...)
		got := map[string][]userCredential{}
		for _, d := range ds {
			if d.Error != "" {
				t.Fatalf("user describe: %+v", d)
			}
			got[d.User] = d.Credentials
		}
		return got
	}
	both := func(iterations int32) []userCredential {
		return []userCredential{{"SCRAM-SHA-256", iterations}, {"SCRAM-SHA-512", iterations}}
	}

	// alice: the password from SHALE_USER_PASSWORD, both mechanisms.
	t.Setenv(userPasswordEnv, "alice-pw")
	out := mustAdmin(t, admin, "user", "set", "alice")
	for _, want := range []string{"alice  SCRAM-SHA-256  4096        set", "alice  SCRAM-SHA-512  4096        set"} {
		if !strings.Contains(out, want) {
			t.Fatalf("user set printed:\n%s", out)
		}
	}
	// bob: from standard input, one mechanism, more iterations (the
	// binary, with no SHALE_USER_PASSWORD to inherit).
	set := exec.Command(shaleBin, "user", "set", "bob", "--mechanism", "SCRAM-SHA-512", "--iterations", "8192", "-o", "json",
		"--brokers", b.Addr, "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-user", "admin")
	set.Env = append(envWithout(userPasswordEnv), saslPasswordEnv+"=admin-secret")
	set.Stdin = strings.NewReader("bob-pw\nnot the password\n")
	setOut, err := set.Output()
	if err != nil {
		t.Fatalf("shale user set bob: %v\n%s", err, setOut)
	}
	var altered []alteredCredential
	if err := jsonUnmarshal(string(setOut), &altered); err != nil || len(altered) != 1 ||
		altered[0] != (alteredCredential{User: "bob", Mechanism: "SCRAM-SHA-512", Iterations: 8192, Result: "set"}) {
		t.Fatalf("user set bob -o json: %v %+v\n%s", err, altered, setOut)
	}

	got := describe()
	want := map[string][]userCredential{"admin": both(4096), "alice": both(4096), "bob": {{"SCRAM-SHA-512", 8192}}}
	if len(got) != len(want) {
		t.Fatalf("user describe: %+v, want %+v", got, want)
	}
	for u, w := range want {
		if !slices.Equal(got[u], w) {
			t.Fatalf("user describe: %s has %+v, want %+v", u, got[u], w)
		}
	}
	if out := mustAdmin(t, admin, "user", "describe", "bob"); out != "USER  MECHANISM      ITERATIONS\nbob   SCRAM-SHA-512  8192\n" {
		t.Fatalf("user describe bob printed:\n%s", out)
	}

	// The new users log in with their SCRAM mechanisms and with PLAIN,
	// which checks the same credentials; not with a wrong password or a
	// mechanism they have no credential for.
	for _, mech := range []string{"SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"} {
		canLogIn(mech, "alice", "alice-pw")
		cannotLogIn(mech, "alice", "bob-pw")
	}
	canLogIn("SCRAM-SHA-512", "bob", "bob-pw")
	canLogIn("PLAIN", "bob", "bob-pw")
	cannotLogIn("SCRAM-SHA-256", "bob", "bob-pw")
	cannotLogIn("SCRAM-SHA-512", "bob", "not the password")

	// A new password replaces the old one.
	t.Setenv(userPasswordEnv, "alice-pw2")
	mustAdmin(t, admin, "user", "set", "alice", "--mechanism", "scram-sha-512,SCRAM-SHA-256")
	canLogIn("SCRAM-SHA-512", "alice", "alice-pw2")
	cannotLogIn("SCRAM-SHA-512", "alice", "alice-pw")
	cannotLogIn("PLAIN", "alice", "alice-pw")

	// Describing a user that does not exist: the others are listed, the
	// error is one line.
	out, err = admin("user", "describe", "alice", "nobody")
	wantErr(t, err, `user "nobody": RESOURCE_NOT_FOUND`)
	if !strings.Contains(out, "alice  SCRAM-SHA-512  4096") || strings.Contains(out, "nobody") {
		t.Fatalf("user describe alice nobody printed:\n%s", out)
	}

	// Deleting a credential bob does not have changes nothing of his.
	_, err = admin("user", "delete", "bob", "--mechanism", "SCRAM-SHA-256")
	wantErr(t, err, `user "bob": RESOURCE_NOT_FOUND`)
	canLogIn("SCRAM-SHA-512", "bob", "bob-pw")

	// delete: every credential of alice, who can no longer log in.
	out = mustAdmin(t, admin, "user", "delete", "alice")
	if out != "USER   MECHANISM      RESULT\nalice  SCRAM-SHA-256  deleted\nalice  SCRAM-SHA-512  deleted\n" {
		t.Fatalf("user delete alice printed:\n%s", out)
	}
	for _, mech := range []string{"SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"} {
		cannotLogIn(mech, "alice", "alice-pw2")
	}
	mustAdmin(t, admin, "user", "delete", "bob", "--mechanism", "SCRAM-SHA-512")
	cannotLogIn("PLAIN", "bob", "bob-pw")
	if got := describe(); len(got) != 1 || got["admin"] == nil {
		t.Fatalf("user describe after the deletions: %+v", got)
	}

	// The binary exits non-zero with the error on stderr.
	var stderr strings.Builder
	del := exec.Command(shaleBin, "user", "delete", "nobody", "--brokers", b.Addr, "--sasl-mechanism", "PLAIN", "--sasl-user", "admin")
	del.Env = append(os.Environ(), saslPasswordEnv+"=admin-secret")
	del.Stderr = &stderr
	if err := del.Run(); err == nil || !strings.Contains(stderr.String(), `shale: user "nobody": RESOURCE_NOT_FOUND`) {
		t.Fatalf("shale user delete nobody: %v, stderr %q", err, stderr.String())
	}

	// Argument errors, caught before the cluster is asked.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"set"}, "missing user NAME"},
		{[]string{"set", "carol", "--mechanism", "PLAIN"}, "users have SCRAM credentials only"},
		{[]string{"set", "carol", "--mechanism", "SCRAM-SHA-1"}, `--mechanism "SCRAM-SHA-1": want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512`},
		{[]string{"set", "carol", "--iterations", "1000"}, "--iterations 1000: between 4096 and 16384"},
		{[]string{"set", "carol", "dave"}, `unexpected argument "dave"`},
		{[]string{"delete"}, "missing user NAME"},
		{[]string{"delete", "carol", "--mechanism", "PLAIN"}, "users have SCRAM credentials only"},
	} {
		_, err := admin(append([]string{"user"}, tc.args...)...)
		wantErr(t, err, tc.want)
	}
	t.Setenv(userPasswordEnv, "")
	_, err = admin("user", "set", "carol")
	wantErr(t, err, `user "carol": SHALE_USER_PASSWORD is empty`)
	os.Unsetenv(userPasswordEnv) // restored by t.Setenv's cleanup
	t.Setenv(saslPasswordEnv, "admin-secret")
	_, _, err = runCLIIO(t, "", "user", "set", "carol", "--brokers", b.Addr, "--sasl-mechanism", "PLAIN", "--sasl-user", "admin")
	wantErr(t, err, `user "carol": no password: set SHALE_USER_PASSWORD or write it on standard input`)
	mustCLIIO(t, "carol-pw\r\n", "user", "set", "carol", "--brokers", b.Addr, "--sasl-mechanism", "PLAIN", "--sasl-user", "admin")
	canLogIn("PLAIN", "carol", "carol-pw")
}

// TestClientSASLFlags: every client command authenticates with
// --sasl-mechanism and --sasl-user or SHALE_SASL_MECHANISM and
// SHALE_SASL_USER, the password in SHALE_SASL_PASSWORD; without them a
// broker requiring SASL refuses it, in one line that says what to give.
func TestClientSASLFlags(t *testing.T) {
	b := brokertest.Start(t, saslBrokerOpts)
	plainCLI := func(args ...string) (string, error) {
		t.Helper()
		return runCLI(t, append(args, "--brokers", b.Addr, "--timeout", "20s")...)
	}

	_, err := plainCLI("topic", "create", "sasl-flags")
	wantErr(t, err, "cluster at "+b.Addr, "SASL", "--sasl-mechanism, --sasl-user and SHALE_SASL_PASSWORD")
	// A producer retries until its records time out; it says why too.
	_, _, err = runCLIIO(t, "x\n", "produce", "sasl-flags", "--brokers", b.Addr, "--timeout", "3s")
	wantErr(t, err, `topic "sasl-flags": no answer from the cluster`, "SASL is required", "--sasl-mechanism, --sasl-user and SHALE_SASL_PASSWORD")

	for _, mech := range []string{"SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"} {
		mustAdmin(t, saslCLI(t, b.Addr, mech, "admin", "admin-secret"), "cluster", "info")
	}
	admin := saslCLI(t, b.Addr, "SCRAM-SHA-512", "admin", "admin-secret")
	mustAdmin(t, admin, "topic", "create", "sasl-flags", "-p", "1")
	_, err = saslCLI(t, b.Addr, "SCRAM-SHA-512", "admin", "wrong")("topic", "list")
	wantErr(t, err, `cluster at `+b.Addr+`: authenticating as "admin" with SCRAM-SHA-512: SASL_AUTHENTICATION_FAILED`)

	// The environment, as --brokers reads SHALE_BROKERS; flags win.
	t.Setenv("SHALE_SASL_MECHANISM", "SCRAM-SHA-256")
	t.Setenv("SHALE_SASL_USER", "admin")
	t.Setenv(saslPasswordEnv, "admin-secret")
	if out := mustAdmin(t, plainCLI, "topic", "list"); !strings.Contains(out, "sasl-flags") {
		t.Fatalf("topic list printed:\n%s", out)
	}
	t.Setenv("SHALE_SASL_MECHANISM", "GSSAPI")
	mustAdmin(t, plainCLI, "topic", "list", "--sasl-mechanism", "PLAIN")
	_, err = plainCLI("topic", "list")
	wantErr(t, err, `--sasl-mechanism "GSSAPI": want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512`)

	// Produce and consume, in the binary, from the environment.
	env := append(os.Environ(), "SHALE_BROKERS="+b.Addr, "SHALE_SASL_MECHANISM=SCRAM-SHA-512")
	produce := exec.Command(shaleBin, "produce", "sasl-flags")
	produce.Env, produce.Stdin = env, strings.NewReader("one\ntwo\n")
	if out, err := produce.CombinedOutput(); err != nil {
		t.Fatalf("shale produce: %v\n%s", err, out)
	}
	consume := exec.Command(shaleBin, "consume", "sasl-flags", "-e")
	consume.Env = env
	if out, err := consume.Output(); err != nil || string(out) != "one\ntwo\n" {
		t.Fatalf("shale consume: %v %q", err, out)
	}

	// What is missing, said before the cluster is asked.
	t.Setenv("SHALE_SASL_MECHANISM", "")
	t.Setenv("SHALE_SASL_USER", "")
	for _, tc := range []struct {
		args []string
		env  string // SHALE_SASL_PASSWORD
		want string
	}{
		{[]string{"--sasl-mechanism", "SCRAM-SHA-1", "--sasl-user", "admin"}, "admin-secret", `--sasl-mechanism "SCRAM-SHA-1": want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512`},
		{[]string{"--sasl-mechanism", "PLAIN"}, "admin-secret", "--sasl-mechanism PLAIN: give --sasl-user (or SHALE_SASL_USER)"},
		{[]string{"--sasl-mechanism", "PLAIN", "--sasl-user", "admin"}, "", `--sasl-user "admin": set the password in SHALE_SASL_PASSWORD`},
		{[]string{"--sasl-user", "admin"}, "admin-secret", `--sasl-user "admin": give --sasl-mechanism`},
	} {
		t.Setenv(saslPasswordEnv, tc.env)
		_, err := plainCLI(append([]string{"topic", "list"}, tc.args...)...)
		wantErr(t, err, tc.want)
	}
}
