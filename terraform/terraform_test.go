// Package terraform holds the Terraform module for AWS (modules/shale) and
// its example (examples/aws); its tests check them with the terraform
// binary that `make tools` builds into .tools/bin.
package terraform

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
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

// TestTerraformValidate runs terraform init and terraform validate on the
// module and the example, with the stand-in AWS provider of
// internal/stubaws (its schema.json, the part of the AWS provider's schema
// they use) installed from a filesystem mirror: there is no registry here.
// A broken copy of the module must fail, so the check is known to bite.
func TestTerraformValidate(t *testing.T) {
	bin := requireTerraform(t)
	work := t.TempDir()
	mirror := filepath.Join(work, "mirror")
	const version = "5.0.0"
	plugin := filepath.Join(mirror, "registry.terraform.io", "hashicorp", "aws", version,
		runtime.GOOS+"_"+runtime.GOARCH, "terraform-provider-aws_v"+version)
	if out, err := exec.Command("go", "build", "-o", plugin, "./internal/stubaws").CombinedOutput(); err != nil {
		t.Fatalf("go build ./internal/stubaws: %v\n%s", err, out)
	}
	cliConfig := filepath.Join(work, "test.tfrc")
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
	tree := filepath.Join(work, "terraform")
	copyTree(t, ".", tree)

	validate := func(dir string) (string, bool) {
		t.Helper()
		if out, err := tfConfig(t, bin, dir, cliConfig, "init", "-backend=false", "-input=false", "-no-color"); err != nil {
			t.Fatalf("terraform init in %s: %v\n%s", dir, err, out)
		}
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

	broken := filepath.Join(work, "broken")
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

// TestBootScriptsRenderAndParse renders the brokers' and etcd members'
// boot scripts as the module does (templatefile, evaluated by terraform
// itself), checks every script in them with bash -n, and runs the rendered
// `shale broker` command line through the real binary's flag parser.
func TestBootScriptsRenderAndParse(t *testing.T) {
	bin := requireTerraform(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	templates, _ := filepath.Abs(filepath.Join("modules", "shale", "templates"))
	dir := t.TempDir()
	config := `
locals {
  broker = {
    shale_url    = "https://example.com/shale"
    id           = 2
    cluster      = "shale"
    kafka_port   = 9092
    http_port    = 9644
    advertised   = "10.42.32.20:9092"
    rack         = "eu-west-1c"
    etcd         = "10.42.0.10:2379,10.42.16.10:2379,10.42.32.10:2379"
    object_store = "s3://shale-tier-1234/shale?region=eu-west-1"
    replication  = 3
    extra_args   = ["--topic-default", "log.retention.ms=-1", "--log-level", "debug"]
  }
}
output "broker_ebs" {
  value = templatefile("` + templates + `/broker.sh.tftpl", merge(local.broker, { shale_sha256 = "0123abcd", ebs_serial = "vol0123456789abcdef0" }))
}
output "broker_instance_store" {
  value = templatefile("` + templates + `/broker.sh.tftpl", merge(local.broker, { shale_sha256 = "", ebs_serial = "" }))
}
output "etcd" {
  value = templatefile("` + templates + `/etcd.sh.tftpl", {
    name          = "shale-etcd-1"
    ip            = "10.42.16.10"
    cluster       = "shale-etcd-0=http://10.42.0.10:2380,shale-etcd-1=http://10.42.16.10:2380,shale-etcd-2=http://10.42.32.10:2380"
    cluster_token = "shale"
    etcd_url      = "https://github.com/etcd-io/etcd/releases/download/v3.5.17/etcd-v3.5.17-linux-amd64.tar.gz"
  })
}
`
	if err := os.WriteFile(filepath.Join(dir, "main.tf"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	tf(t, bin, dir, "init", "-backend=false")
	tf(t, bin, dir, "apply", "-auto-approve", "-state="+filepath.Join(dir, "state"))
	var outputs map[string]struct{ Value string }
	if err := json.Unmarshal([]byte(tf(t, bin, dir, "output", "-json", "-state="+filepath.Join(dir, "state"))), &outputs); err != nil {
		t.Fatal(err)
	}

	shale := filepath.Join(t.TempDir(), "shale")
	if out, err := exec.Command("go", "build", "-o", shale, "../cmd/shale").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/shale: %v\n%s", err, out)
	}
	for name, o := range outputs {
		t.Run(name, func(t *testing.T) {
			script := o.Value
			checkBash(t, bash, name, script)
			// The scripts written by the boot script are checked too.
			for _, m := range regexp.MustCompile(`(?s)<<'SCRIPT'\n(.*?)\nSCRIPT\n`).FindAllStringSubmatch(script, -1) {
				checkBash(t, bash, name+" (inner script)", m[1])
			}
			if !strings.HasPrefix(name, "broker") {
				return
			}
			if name == "broker_ebs" != strings.Contains(script, "vol0123456789abcdef0") {
				t.Errorf("%s: the EBS serial is where it should not be, or missing", name)
			}
			if name == "broker_ebs" != strings.Contains(script, "sha256sum -c") {
				t.Errorf("%s: the checksum check is where it should not be, or missing", name)
			}
			args := execStart(t, script, "/usr/local/bin/shale")
			want := []string{"broker", "--id", "2", "--rack", "eu-west-1c", "--advertised-addr", "10.42.32.20:9092",
				"--object-store", "s3://shale-tier-1234/shale?region=eu-west-1", "--log-level", "debug"}
			for _, w := range want {
				if !contains(args, w) {
					t.Errorf("ExecStart %q lacks %q", args, w)
				}
			}
			// --help after the flags: cobra parses every flag (unknown
			// flags and bad values fail) and then prints the help.
			cmd := exec.Command(shale, append(args, "--help")...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("shale %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
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

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
