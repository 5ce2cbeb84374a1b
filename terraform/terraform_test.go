// Package terraform holds the Terraform module for AWS (modules/shale) and
// its example (examples/aws); its tests check them with the terraform
// binary that `make tools` builds into .tools/bin.
package terraform

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// terraformBinary finds terraform: $SHALE_TERRAFORM, .tools/bin at the
// module root, then PATH.
func terraformBinary() (string, error) {
	if p := os.Getenv("SHALE_TERRAFORM"); p != "" {
		return p, nil
	}
	if p := filepath.Join(moduleRoot(), ".tools", "bin", "terraform"); fileExists(p) {
		return p, nil
	}
	if p, err := exec.LookPath("terraform"); err == nil {
		return p, nil
	}
	return "", errors.New("no terraform binary: run `make tools` (builds it into .tools/bin) or set SHALE_TERRAFORM")
}

func requireTerraform(t *testing.T) string {
	t.Helper()
	bin, err := terraformBinary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	return bin
}

func moduleRoot() string {
	dir, _ := filepath.Abs("..")
	return dir
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// tf runs terraform in dir with no user configuration and no network
// checks, and returns its combined output.
func tf(t *testing.T, bin, dir string, args ...string) string {
	t.Helper()
	out, err := tfConfig(t, bin, dir, "", args...)
	if err != nil {
		t.Fatalf("terraform %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	return out
}

// tfConfig runs terraform in dir with the CLI configuration file cliConfig
// ("" for none) and its data directory under dir.
func tfConfig(t *testing.T, bin, dir, cliConfig string, args ...string) (string, error) {
	t.Helper()
	if cliConfig == "" {
		cliConfig = filepath.Join(t.TempDir(), "none.tfrc")
		if err := os.WriteFile(cliConfig, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1", "TF_INPUT=0",
		"TF_CLI_CONFIG_FILE="+cliConfig, "TF_PLUGIN_CACHE_DIR=",
		"TF_DATA_DIR="+filepath.Join(dir, ".terraform"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// stubSetup builds the stand-in AWS provider of internal/stubaws into a
// filesystem mirror (there is no registry here), writes a CLI
// configuration that installs it from there, and copies this directory's
// Terraform files to a scratch tree. It returns the configuration's path
// and the tree.
func stubSetup(t *testing.T) (cliConfig, tree string) {
	t.Helper()
	mirror := stubMirror(t)
	work := t.TempDir()
	cliConfig = filepath.Join(work, "test.tfrc")
	err := os.WriteFile(cliConfig, []byte(`provider_installation {
  filesystem_mirror {
    path    = "`+mirror+`"
    include = ["registry.terraform.io/hashicorp/aws"]
  }
}
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	tree = filepath.Join(work, "terraform")
	copyTree(t, ".", tree)
	return cliConfig, tree
}

// The mirror with the stand-in provider, built once for the package's
// tests and removed by TestMain.
var (
	mirrorOnce sync.Once
	mirrorDir  string
	mirrorErr  error
)

func stubMirror(t *testing.T) string {
	t.Helper()
	mirrorOnce.Do(func() {
		if mirrorDir, mirrorErr = os.MkdirTemp("", "shale-tf-mirror-"); mirrorErr != nil {
			return
		}
		const version = "5.0.0"
		plugin := filepath.Join(mirrorDir, "registry.terraform.io", "hashicorp", "aws", version,
			runtime.GOOS+"_"+runtime.GOARCH, "terraform-provider-aws_v"+version)
		if out, err := exec.Command("go", "build", "-o", plugin, "./internal/stubaws").CombinedOutput(); err != nil {
			mirrorErr = fmt.Errorf("go build ./internal/stubaws: %v\n%s", err, out)
		}
	})
	if mirrorErr != nil {
		t.Fatal(mirrorErr)
	}
	return mirrorDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if mirrorDir != "" {
		os.RemoveAll(mirrorDir)
	}
	os.Exit(code)
}

func tfInit(t *testing.T, bin, dir, cliConfig string) {
	t.Helper()
	if out, err := tfConfig(t, bin, dir, cliConfig, "init", "-backend=false", "-input=false", "-no-color"); err != nil {
		t.Fatalf("terraform init in %s: %v\n%s", dir, err, out)
	}
}

// TestTerraformValidate runs terraform init and terraform validate on the
// module and the example against the stand-in AWS provider, whose
// schema.json is the part of the AWS provider's schema they use. A broken
// copy of the module must fail, so the check is known to bite.
func TestTerraformValidate(t *testing.T) {
	t.Parallel()
	bin := requireTerraform(t)
	cliConfig, tree := stubSetup(t)
	validate := func(dir string) (string, bool) {
		t.Helper()
		tfInit(t, bin, dir, cliConfig)
		out, _ := tfConfig(t, bin, dir, cliConfig, "validate", "-json", "-no-color")
		var res struct {
			Valid        bool `json:"valid"`
			WarningCount int  `json:"warning_count"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("terraform validate in %s: %v\n%s", dir, err, out)
		}
		return out, res.Valid && res.WarningCount == 0
	}
	for _, dir := range []string{"modules/shale", "examples/aws"} {
		if out, ok := validate(filepath.Join(tree, dir)); !ok {
			t.Errorf("terraform validate %s:\n%s", dir, out)
		}
	}

	broken := filepath.Join(t.TempDir(), "broken")
	copyTree(t, filepath.Join("modules", "shale"), broken)
	outputs := filepath.Join(broken, "outputs.tf")
	b, err := os.ReadFile(outputs)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, []byte("\noutput \"typo\" {\n  value = aws_s3_bucket.this.bucket_arn\n}\n")...)
	if err := os.WriteFile(outputs, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, ok := validate(broken); ok || !strings.Contains(out, "bucket_arn") {
		t.Errorf("validate passed a reference to an attribute the schema lacks:\n%s", out)
	}
}

// TestTerraformPlanBootScripts plans two uses of the module (EBS with TLS,
// SASL and ACLs, and instance storage with the defaults; three subnets, four
// brokers in the second) against the stand-in provider, which makes up
// known values for what AWS would compute, so that terraform itself
// evaluates every expression: the addresses from the subnets' CIDRs, the
// zones, the etcd cluster, the rendered boot scripts. Each boot script
// passes bash -n, each broker's `shale broker` command line passes the
// real binary's flag parser and names its own id, zone and address, and
// each etcd member names all three. With TLS and SASL the unit reads the
// password from its EnvironmentFile and passes the TLS and ACL flags, and the boot
// script writes the PEM files and the password exactly, mode 0600;
// without them nothing of either is rendered and the user data is not
// hidden as sensitive.
func TestTerraformPlanBootScripts(t *testing.T) {
	t.Parallel()
	bin := requireTerraform(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	cliConfig, tree := stubSetup(t)
	root := filepath.Join(tree, "plan-test")
	config := `
provider "aws" {
  region = "eu-west-1"
}
module "ebs" {
  source            = "../modules/shale"
  vpc_id            = "vpc-stub"
  subnet_ids        = ["subnet-a", "subnet-b", "subnet-c"]
  allowed_cidrs     = ["10.0.0.0/8"]
  shale_binary_url  = "https://example.com/shale"
  shale_binary_sha256 = "0123abcd"
  broker_extra_args = ["--log-level", "debug"]
  max_connections_per_ip = 500
  replica_selector  = "leader"

  tls_cert_pem            = file("${path.module}/broker.pem")
  tls_key_pem             = file("${path.module}/broker-key.pem")
  tls_ca_pem              = file("${path.module}/ca.pem")
  tls_client_auth         = "required"
  sasl_mechanisms         = ["SCRAM-SHA-512", "PLAIN"]
  sasl_bootstrap_user     = "admin"
  sasl_bootstrap_password = file("${path.module}/password")
  acls_enabled            = true
  super_users             = ["User:ops", "User:CN=alice,O=example"]
  allow_everyone_if_no_acl_found = true
}
module "nvme" {
  source           = "../modules/shale"
  name             = "nvme"
  vpc_id           = "vpc-stub"
  subnet_ids       = ["subnet-a", "subnet-b", "subnet-c"]
  allowed_cidrs    = ["10.0.0.0/8"]
  shale_binary_url = "https://example.com/shale"
  hot_tier         = "instance-store"
  broker_count     = 4
}
`
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	// One certificate for the three brokers of module.ebs, naming their
	// advertised addresses; a password with every character systemd or
	// bash could take for something else.
	pems := testPKI(t, "10.42.0.20", "10.42.16.20", "10.42.32.20")
	const password = ` p'a"ss\ $HOME ${X} %i #;é `
	files := map[string]string{"main.tf": config, "broker.pem": pems.cert, "broker-key.pem": pems.key, "ca.pem": pems.ca, "password": password}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tfInit(t, bin, root, cliConfig)
	if out, err := tfConfig(t, bin, root, cliConfig, "plan", "-input=false", "-no-color", "-out", "plan"); err != nil {
		t.Fatalf("terraform plan: %v\n%s", err, out)
	}
	out, err := tfConfig(t, bin, root, cliConfig, "show", "-json", "plan")
	if err != nil {
		t.Fatalf("terraform show: %v\n%s", err, out)
	}
	var plan struct {
		ResourceChanges []struct {
			Address    string `json:"address"`
			ModuleAddr string `json:"module_address"`
			Type       string `json:"type"`
			Name       string `json:"name"`
			Index      any    `json:"index"` // a number (count) or a string (for_each)
			Change     struct {
				After struct {
					UserData string `json:"user_data"`
				} `json:"after"`
				AfterSensitive json.RawMessage `json:"after_sensitive"`
			} `json:"change"`
		} `json:"resource_changes"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatal(err)
	}

	shale := filepath.Join(t.TempDir(), "shale")
	if out, err := exec.Command("go", "build", "-o", shale, "../cmd/shale").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/shale: %v\n%s", err, out)
	}
	zones := []string{"eu-west-1a", "eu-west-1b", "eu-west-1c"}
	ips := []string{"10.42.0.%d", "10.42.16.%d", "10.42.32.%d"}
	seen := 0
	for _, rc := range plan.ResourceChanges {
		if rc.Type != "aws_instance" {
			continue
		}
		seen++
		i := int(rc.Index.(float64))
		script := rc.Change.After.UserData
		checkBash(t, bash, rc.Address, script)
		for _, m := range regexp.MustCompile(`(?s)<<'SCRIPT'\n(.*?)\nSCRIPT\n`).FindAllStringSubmatch(script, -1) {
			checkBash(t, bash, rc.Address+" (inner script)", m[1])
		}
		host := 10 + i/3
		if rc.Name == "etcd" {
			for j := range 3 {
				if ip := fmt.Sprintf(ips[j], 10); !strings.Contains(script, "=http://"+ip+":2380") {
					t.Errorf("%s: --initial-cluster lacks %s", rc.Address, ip)
				}
			}
			if !strings.Contains(script, fmt.Sprintf("--listen-peer-urls http://"+ips[i%3]+":2380", host)) {
				t.Errorf("%s: not listening on its own address", rc.Address)
			}
			continue
		}
		ebs := rc.ModuleAddr == "module.ebs"
		if ebs != strings.Contains(script, "sha256sum -c") {
			t.Errorf("%s: the checksum check is where it should not be, or missing", rc.Address)
		}
		if ebs != strings.Contains(script, "serial=") {
			t.Errorf("%s: looks for the EBS volume's serial without EBS, or not with it", rc.Address)
		}
		var hidden struct {
			UserData bool `json:"user_data"`
		}
		if err := json.Unmarshal(rc.Change.AfterSensitive, &hidden); err != nil {
			t.Fatalf("%s: after_sensitive: %v", rc.Address, err)
		}
		if hidden.UserData != ebs {
			t.Errorf("%s: user data sensitive %v, want %v (only with a key or a password in it)", rc.Address, hidden.UserData, ebs)
		}
		args := execStart(t, script, "/usr/local/bin/shale")
		// The shale unit's [Service] section up to its ExecStart.
		start := strings.Index(script, "ExecStart=/usr/local/bin/shale ")
		unit := script[strings.LastIndex(script[:start], "[Service]"):start]
		if ebs {
			if !strings.Contains(unit, "\nEnvironmentFile=/etc/shale/shale.env\n") {
				t.Errorf("%s: the unit lacks EnvironmentFile=/etc/shale/shale.env:\n%s", rc.Address, unit)
			}
			for flag, v := range map[string]string{
				"--tls-cert": "/etc/shale/tls/cert.pem", "--tls-key": "/etc/shale/tls/key.pem", "--tls-ca": "/etc/shale/tls/ca.pem",
				"--tls-client-auth": "required", "--sasl-mechanisms": "SCRAM-SHA-512,PLAIN", "--sasl-bootstrap-user": "admin",
				"--super-users": "User:ops;User:CN=alice,O=example",
			} {
				if got := flagValue(args, flag); got != v {
					t.Errorf("%s: ExecStart %s %q, want %q", rc.Address, flag, got, v)
				}
			}
			for _, flag := range []string{"--acls", "--allow-everyone-if-no-acl-found"} {
				if !contains(args, flag) {
					t.Errorf("%s: ExecStart %q lacks %s", rc.Address, args, flag)
				}
			}
			written := runSecrets(t, bash, script)
			for name, want := range map[string]struct{ owner, data string }{
				"tls/cert.pem": {"shale", pems.cert}, "tls/key.pem": {"shale", pems.key}, "tls/ca.pem": {"shale", pems.ca},
				"shale.env": {"root", "SHALE_SASL_BOOTSTRAP_PASSWORD=" + password},
			} {
				got, ok := written[name]
				if !ok {
					t.Errorf("%s: the boot script does not write /etc/shale/%s", rc.Address, name)
					continue
				}
				if got.mode != 0o600 || got.owner != want.owner {
					t.Errorf("%s: /etc/shale/%s mode %v owner %s, want 0600 %s", rc.Address, name, got.mode, got.owner, want.owner)
				}
				data := got.data
				if name == "shale.env" {
					data = systemdEnv(t, data)
				}
				if data != want.data {
					t.Errorf("%s: /etc/shale/%s holds %q, want %q", rc.Address, name, data, want.data)
				}
			}
			if strings.Contains(script, "PRIVATE KEY") || strings.Contains(script, password) {
				t.Errorf("%s: the key or the password is in the boot script in clear", rc.Address)
			}
		} else if strings.Contains(script, "/etc/shale") || strings.Contains(unit, "Environment") ||
			slices.ContainsFunc(args, func(a string) bool {
				return strings.HasPrefix(a, "--tls") || strings.HasPrefix(a, "--sasl") || a == "--acls" || a == "--super-users" || a == "--allow-everyone-if-no-acl-found"
			}) {
			t.Errorf("%s: TLS, SASL or ACL settings without them:\n%s", rc.Address, script)
		}
		want := []string{"broker", "--id", fmt.Sprint(i), "--rack", zones[i%3],
			"--advertised-addr", fmt.Sprintf(ips[i%3], 10+10+i/3) + ":9092",
			"--etcd", "10.42.0.10:2379,10.42.16.10:2379,10.42.32.10:2379",
			"--object-store", "s3://stub-bucket/shale?region=eu-west-1"}
		if ebs {
			want = append(want, "--log-level", "debug", "--max-connections-per-ip", "500", "--replica-selector", "leader")
		} else {
			want = append(want, "--max-connections", "10000", "--replica-selector", "rack-aware")
		}
		for _, w := range want {
			if !contains(args, w) {
				t.Errorf("%s: ExecStart %q lacks %q", rc.Address, args, w)
			}
		}
		// --help after the flags: cobra parses every flag (unknown
		// flags and bad values fail) and then prints the help.
		if out, err := exec.Command(shale, append(args, "--help")...).CombinedOutput(); err != nil {
			t.Errorf("%s: shale %s: %v\n%s", rc.Address, strings.Join(args, " "), err, out)
		}
	}
	if want := 3 + 3 + 3 + 4; seen != want {
		t.Errorf("planned %d instances, want %d", seen, want)
	}
}

// copyTree copies the Terraform files (.tf, .tftpl) under src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && p != src {
			return filepath.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(p, ".tf") || strings.HasSuffix(p, ".tftpl")) {
			return nil
		}
		rel, _ := filepath.Rel(src, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestTerraformFilesAreFormatted(t *testing.T) {
	bin := requireTerraform(t)
	tf(t, bin, ".", "fmt", "-check", "-recursive", "-diff", ".")
}

func checkBash(t *testing.T, bash, name, script string) {
	t.Helper()
	cmd := exec.Command(bash, "-n")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s: bash -n: %v\n%s\n%s", name, err, out, script)
	}
}

// execStart returns the arguments of the ExecStart line that runs prog,
// joined across its backslash-continued lines and split as systemd does
// for words without quotes.
func execStart(t *testing.T, script, prog string) []string {
	t.Helper()
	i := strings.Index(script, "ExecStart="+prog+" ")
	if i < 0 {
		t.Fatalf("no ExecStart=%s in\n%s", prog, script)
	}
	var line strings.Builder
	for _, l := range strings.Split(script[i+len("ExecStart="+prog+" "):], "\n") {
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			line.WriteString(s + " ")
			continue
		}
		line.WriteString(l)
		break
	}
	if strings.ContainsAny(line.String(), `'"%`) {
		t.Fatalf("ExecStart %q: quotes and %% would be interpreted by systemd", line.String())
	}
	return strings.Fields(line.String())
}

// flagValue is the word after flag in args ("" if flag is not there).
func flagValue(args []string, flag string) string {
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		return ""
	}
	return args[i+1]
}

// secretFile is a file the boot script's secret function wrote.
type secretFile struct {
	data, owner string
	mode        fs.FileMode
}

// runSecrets runs the part of a broker's boot script that writes the TLS
// files and the password (from its secret function to the shale-disk
// script) with /etc/shale moved to a temporary directory, chown and
// install -d stubbed (the test is not root and has no user shale), and
// returns what it wrote, by path under /etc/shale.
func runSecrets(t *testing.T, bash, script string) map[string]secretFile {
	t.Helper()
	start, end := strings.Index(script, "secret() {"), strings.Index(script, "cat >/usr/local/sbin/shale-disk")
	if start < 0 || end < start {
		t.Fatalf("no secret function before the shale-disk script in\n%s", script)
	}
	dir := t.TempDir()
	part := strings.ReplaceAll(script[start:end], "/etc/shale", dir)
	owners := filepath.Join(t.TempDir(), "owners")
	cmd := exec.Command(bash, "-c", `set -euo pipefail
chown() { echo "$1 $2" >>`+owners+`; }
install() { mkdir -p "${@: -1}"; }
`+part)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the boot script's secrets: %v\n%s\n%s", err, out, part)
	}
	chowned := map[string]string{}
	if b, err := os.ReadFile(owners); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			owner, file, _ := strings.Cut(l, " ")
			owner, _, _ = strings.Cut(owner, ":")
			chowned[strings.TrimSuffix(file, ".new")] = owner
		}
	}
	written := map[string]secretFile{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		written[filepath.ToSlash(rel)] = secretFile{data: string(b), owner: chowned[p], mode: info.Mode().Perm()}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return written
}

// systemdEnv reads a one-assignment EnvironmentFile as systemd does: a
// port of the value states of parse_env_file_internal (systemd's
// src/basic/env-file.c). Leading whitespace is skipped; unquoted, a
// backslash takes the next character verbatim and trailing unescaped
// whitespace is dropped; single quotes keep everything up to the next one;
// double quotes unescape \", \\, \$ and \` and keep other backslashes.
// It returns "KEY=VALUE".
func systemdEnv(t *testing.T, file string) string {
	t.Helper()
	line, ok := strings.CutSuffix(file, "\n")
	if !ok || strings.ContainsAny(line, "\n\r") {
		t.Fatalf("environment file %q: want one line", file)
	}
	key, raw, ok := strings.Cut(line, "=")
	if !ok {
		t.Fatalf("environment file %q: no =", file)
	}
	const (
		preValue = iota
		value
		valueEscape
		singleQuote
		doubleQuote
		doubleQuoteEscape
	)
	state, trailing := preValue, -1 // trailing: where unescaped trailing whitespace starts
	var v []rune
	for _, c := range raw {
		switch state {
		case preValue:
			switch c {
			case '\'':
				state = singleQuote
			case '"':
				state = doubleQuote
			case '\\':
				state = valueEscape
			case ' ', '\t':
			default:
				state, v = value, append(v, c)
			}
		case value:
			switch {
			case c == '\\':
				state, trailing = valueEscape, -1
			case c == ' ' || c == '\t':
				if trailing < 0 {
					trailing = len(v)
				}
				v = append(v, c)
			default:
				v, trailing = append(v, c), -1
			}
		case valueEscape:
			state, v = value, append(v, c)
		case singleQuote:
			if c == '\'' {
				state = preValue
			} else {
				v = append(v, c)
			}
		case doubleQuote:
			switch c {
			case '"':
				state = preValue
			case '\\':
				state = doubleQuoteEscape
			default:
				v = append(v, c)
			}
		case doubleQuoteEscape:
			state = doubleQuote
			if !strings.ContainsRune("\"\\`$", c) {
				v = append(v, '\\')
			}
			v = append(v, c)
		}
	}
	if state == value && trailing >= 0 {
		v = v[:trailing]
	}
	return key + "=" + string(v)
}

// pki is a CA and a certificate it signed for a set of IP addresses, PEM.
type pki struct{ ca, cert, key string }

// testPKI makes a CA and, signed by it, a certificate for both server and
// client authentication naming ips.
func testPKI(t *testing.T, ips ...string) pki {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "shale broker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(typ string, b []byte) string { return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})) }
	return pki{ca: enc("CERTIFICATE", caDER), cert: enc("CERTIFICATE", der), key: enc("PRIVATE KEY", keyDER)}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestTerraformRefusesBadInputs checks that the module's input validations
// refuse what would break the boot scripts or the bucket policy.
func TestTerraformRefusesBadInputs(t *testing.T) {
	t.Parallel()
	bin := requireTerraform(t)
	cliConfig, tree := stubSetup(t)
	for _, tc := range []struct{ name, input, want string }{
		{"extra-arg-with-space", `broker_extra_args = ["--topic-default", "log.retention.ms=1 2"]`, "broker_extra_args"},
		{"extra-arg-with-percent", `broker_extra_args = ["--log-level=%i"]`, "broker_extra_args"},
		{"prefix-with-slash", `object_prefix = "/shale/"`, "object_prefix"},
		{"unknown-hot-tier", `hot_tier = "nvme"`, "hot_tier"},
		{"even-etcd", `etcd_count = 2`, "etcd_count"},
		{"no-connections", `max_connections = 0`, "max_connections"},
		{"negative-per-ip", `max_connections_per_ip = -1`, "max_connections_per_ip"},
		{"unknown-selector", `replica_selector = "nearest"`, "replica_selector"},
		{"unknown-mechanism", `sasl_mechanisms = ["SCRAM-SHA-512", "GSSAPI"]`, "sasl_mechanisms"},
		{"bootstrap-user-with-dollar", `sasl_bootstrap_user = "$USER"`, "sasl_bootstrap_user"},
		{"password-of-two-lines", `sasl_bootstrap_password = "pass\nword"`, "sasl_bootstrap_password"},
		{"cert-not-pem", `tls_cert_pem = "broker.pem"`, "tls_cert_pem"},
		{"key-not-pem", `tls_key_pem = "-----BEGIN CERTIFICATE-----"`, "tls_key_pem"},
		{"unknown-client-auth", `tls_client_auth = "want"`, "tls_client_auth"},
		{"super-user-not-principal", `super_users = ["User:ops", "admin"]`, "super_users"},
		{"super-users-with-semicolon", `super_users = ["User:ops;User:admin"]`, "super_users"},
	} {
		root := filepath.Join(tree, "bad-"+tc.name)
		config := `
module "shale" {
  source           = "../modules/shale"
  vpc_id           = "vpc-stub"
  subnet_ids       = ["subnet-a", "subnet-b", "subnet-c"]
  allowed_cidrs    = ["10.0.0.0/8"]
  shale_binary_url = "https://example.com/shale"
  ` + tc.input + `
}
`
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "main.tf"), []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		tfInit(t, bin, root, cliConfig)
		out, err := tfConfig(t, bin, root, cliConfig, "validate", "-no-color")
		if err == nil || !strings.Contains(out, "Invalid value for variable") || !strings.Contains(out, tc.want) {
			t.Errorf("%s: validate accepted %s or failed otherwise: %v\n%s", tc.name, tc.input, err, out)
		}
	}
}

// TestTerraformRefusesInconsistentTLSAndSASL: TLS, SASL and ACL settings that
// shale broker would refuse at start (each broker, after it is created)
// fail the plan instead, each with its message.
func TestTerraformRefusesInconsistentTLSAndSASL(t *testing.T) {
	t.Parallel()
	bin := requireTerraform(t)
	cliConfig, tree := stubSetup(t)
	root := filepath.Join(tree, "inconsistent")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	pems := testPKI(t, "10.42.0.20")
	for name, data := range map[string]string{"broker.pem": pems.cert, "broker-key.pem": pems.key, "ca.pem": pems.ca} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const (
		cert = `tls_cert_pem = file("broker.pem")` + "\n"
		key  = `tls_key_pem = file("broker-key.pem")` + "\n"
		ca   = `tls_ca_pem = file("ca.pem")` + "\n"
	)
	write := func(input string) {
		t.Helper()
		config := `
provider "aws" {
  region = "eu-west-1"
}
module "shale" {
  source           = "../modules/shale"
  vpc_id           = "vpc-stub"
  subnet_ids       = ["subnet-a", "subnet-b", "subnet-c"]
  allowed_cidrs    = ["10.0.0.0/8"]
  shale_binary_url = "https://example.com/shale"
  broker_count     = 1
  ` + input + `
}
`
		if err := os.WriteFile(filepath.Join(root, "main.tf"), []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	tfInit(t, bin, root, cliConfig)
	for _, tc := range []struct{ name, input, want string }{
		{"cert-without-key", cert, "tls_cert_pem and tls_key_pem: both or neither"},
		{"key-without-cert", key, "tls_cert_pem and tls_key_pem: both or neither"},
		{"ca-without-cert", ca, "tls_ca_pem and tls_client_auth need tls_cert_pem"},
		{"client-auth-without-cert", `tls_client_auth = "requested"`, "tls_ca_pem and tls_client_auth need tls_cert_pem"},
		{"client-auth-without-ca", cert + key + `tls_client_auth = "required"`, "tls_client_auth required needs tls_ca_pem"},
		{"user-without-password", `sasl_bootstrap_user = "admin"`, "sasl_bootstrap_user and sasl_bootstrap_password: both or neither"},
		{"password-without-user", `sasl_bootstrap_password = "pw-7f3c9d"`, "sasl_bootstrap_user and sasl_bootstrap_password: both or neither"},
		{"super-users-without-acls", `super_users = ["User:ops"]`, "super_users and allow_everyone_if_no_acl_found need acls_enabled"},
		{"allow-everyone-without-acls", `allow_everyone_if_no_acl_found = true`, "super_users and allow_everyone_if_no_acl_found need acls_enabled"},
	} {
		write(tc.input)
		out, err := tfConfig(t, bin, root, cliConfig, "plan", "-input=false", "-no-color")
		if err == nil || !strings.Contains(out, "precondition failed") || !strings.Contains(out, tc.want) {
			t.Errorf("%s: plan accepted it or failed otherwise: %v\n%s", tc.name, err, out)
		}
		if strings.Contains(out, "pw-7f3c9d") || strings.Contains(out, "PRIVATE KEY") {
			t.Errorf("%s: the failed plan shows the password or the key:\n%s", tc.name, out)
		}
	}
	// All of it together is accepted.
	write(cert + key + ca + `tls_client_auth = "required"` + "\n" + `sasl_bootstrap_user = "admin"` + "\n" + `sasl_bootstrap_password = "pw-7f3c9d"`)
	if out, err := tfConfig(t, bin, root, cliConfig, "plan", "-input=false", "-no-color"); err != nil {
		t.Errorf("a consistent configuration: %v\n%s", err, out)
	}
}

// TestExamplePassesModuleSettingsThrough keeps the example in step with
// the module: each of the module's outputs is an output of the example, and
// each of its variables is either set in the example's module block or
// named here as one the example leaves to the module's default. A variable
// added to the module fails this test until the example decides.
func TestExamplePassesModuleSettingsThrough(t *testing.T) {
	t.Parallel()
	leftToDefault := map[string]bool{
		"architecture": true, "ami_id": true, "key_name": true, "bucket_name": true,
		"object_prefix": true, "kms_key_arn": true, "abort_incomplete_multipart_days": true,
		"force_destroy": true, "etcd_count": true, "etcd_volume_size_gb": true,
		"etcd_version": true, "etcd_download_url": true, "etcd_host_number": true,
		"broker_host_number": true, "broker_volume_iops": true, "broker_volume_throughput": true,
		"broker_root_volume_size_gb": true, "kafka_port": true, "http_port": true,
		"default_replication_factor": true, "broker_extra_args": true, "tags": true,
		"allow_everyone_if_no_acl_found": true,
	}
	notExampleOutputs := map[string]bool{"broker_role_arn": true, "security_group_ids": true}
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	names := func(kind, text string) []string {
		var out []string
		for _, m := range regexp.MustCompile(`(?m)^`+kind+` "([a-z0-9_]+)"`).FindAllStringSubmatch(text, -1) {
			out = append(out, m[1])
		}
		return out
	}
	mainTF := read("examples/aws/main.tf")
	block := mainTF[strings.Index(mainTF, `module "shale"`):]
	passed := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+([a-z0-9_]+)\s+=`).FindAllStringSubmatch(block, -1) {
		passed[m[1]] = true
	}
	for _, v := range names("variable", read("modules/shale/variables.tf")) {
		if !passed[v] && !leftToDefault[v] {
			t.Errorf("examples/aws does not pass the module's variable %q through (nor lists it as left to its default)", v)
		}
	}
	exampleOutputs := map[string]bool{}
	for _, o := range names("output", read("examples/aws/outputs.tf")) {
		exampleOutputs[o] = true
	}
	for _, o := range names("output", read("modules/shale/outputs.tf")) {
		if !exampleOutputs[o] && !notExampleOutputs[o] {
			t.Errorf("examples/aws lacks the module's output %q", o)
		}
	}
}
