package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestHelmChartLints: `helm lint --strict` passes with the default values
// and with every optional part switched on.
func TestHelmChartLints(t *testing.T) {
	helm := tool(t, "SHALE_HELM", "helm")
	chart := filepath.Join(moduleRoot(t), "deploy", "helm", "shale")
	for _, set := range [][]string{nil, nonDefaultValues} {
		args := []string{"lint", "--strict", "--kube-version", kubeVersion, chart}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		if out, err := exec.Command(helm, args...).CombinedOutput(); err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// kubeVersion is the cluster version helm renders for (a helm built with
// go install assumes v1.20 otherwise, older than the chart's minimum).
const kubeVersion = "1.30.0"

var nonDefaultValues = append([]string{
	"replicas=5",
	"etcd.endpoints=etcd-0.etcd:2379\\,etcd-1.etcd:2379",
	"etcd.cluster=prod",
	"objectStore.url=s3://logs/shale?region=eu-west-1",
	"objectStore.accessKeyId=AKIDEXAMPLE",
	"objectStore.secretAccessKey=secret",
	"metrics.serviceMonitor.enabled=true",
	"metrics.prometheusRule.enabled=true",
	"metrics.prometheusRule.labels.release=kube-prometheus",
	"rackFromZoneLabel=true",
	"ports.kafka=19092",
	"persistence.size=1Ti",
	"persistence.storageClassName=nvme",
	"config.topicDefaults.log\\.retention\\.ms=3600000",
	"config.topicDefaults.log\\.segment\\.bytes=8388608",
	"podDisruptionBudget.maxUnavailable=2",
	"config.maxConnectionsPerIP=100",
	"config.replicaSelector=leader",
}, securityValues...)

// securityValues switch on TLS (the certificate, key and CA of a Secret of
// the user's, client certificates required), SASL (two mechanisms, a
// bootstrap user whose password is in another Secret of the user's), ACLs
// (two super users, resources no ACL names open to everyone), and TLS and
// a user for etcd (etcd's CA and the brokers' client certificate in a
// Secret of the user's, the etcd user's password in another).
var securityValues = []string{
	"tls.enabled=true",
	"tls.secretName=shale-tls",
	"tls.clientAuth=required",
	"sasl.mechanisms={SCRAM-SHA-512,PLAIN}",
	"sasl.bootstrapUser=admin",
	"sasl.bootstrapPasswordSecret.name=shale-admin",
	"sasl.bootstrapPasswordSecret.key=admin-password",
	"acls.enabled=true",
	"acls.superUsers={User:ops,User:CN=alice}",
	"acls.allowEveryoneIfNoAclFound=true",
	"etcd.tls.enabled=true",
	"etcd.tls.secretName=shale-etcd-client",
	"etcd.user=shale",
	"etcd.passwordSecret.name=shale-etcd",
	"etcd.passwordSecret.key=etcd-password",
}

// TestHelmTemplateDefaults renders the chart with its default values and
// checks what the brokers depend on: ids from the pod ordinal, stable
// advertised names under the headless service, probes on /healthz and
// /readyz, a volume per broker, a PDB, and no Secret or ServiceMonitor.
func TestHelmTemplateDefaults(t *testing.T) {
	objs := helmTemplate(t, nil)
	if got := kinds(objs); !slices.Equal(got, []string{"PodDisruptionBudget", "Service", "Service", "ServiceAccount", "StatefulSet"}) {
		t.Fatalf("kinds %v", got)
	}
	sts := only(t, objs, "StatefulSet", "")
	if r := dig(sts, "spec", "replicas"); r != 3 {
		t.Errorf("replicas %v, want 3", r)
	}
	headless := only(t, objs, "Service", "rel-shale-headless")
	if dig(sts, "spec", "serviceName") != "rel-shale-headless" || dig(headless, "spec", "clusterIP") != "None" ||
		dig(headless, "spec", "publishNotReadyAddresses") != true {
		t.Errorf("headless service %v / serviceName %v", dig(headless, "spec"), dig(sts, "spec", "serviceName"))
	}
	c := container(t, sts)
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"} {
		if got := dig(c, probe, "httpGet", "path"); got != path {
			t.Errorf("%s path %v, want %s", probe, got, path)
		}
		if got := dig(c, probe, "httpGet", "port"); got != "http" {
			t.Errorf("%s port %v", probe, got)
		}
	}
	// /healthz waits up to 5s for a held lock before it says 503: a
	// shorter probe timeout would restart a broker that is only busy.
	if got, ok := dig(c, "livenessProbe", "timeoutSeconds").(int); !ok || got <= 5 {
		t.Errorf("livenessProbe timeoutSeconds %v, want above 5", dig(c, "livenessProbe", "timeoutSeconds"))
	}
	env := envOf(t, c)
	want := map[string]string{
		"SHALE_ADVERTISED_ADDR":            "$(POD_NAME).rel-shale-headless.$(POD_NAMESPACE).svc:9092",
		"SHALE_KAFKA_ADDR":                 "0.0.0.0:9092",
		"SHALE_HTTP_ADDR":                  "0.0.0.0:9644",
		"SHALE_ETCD":                       "etcd:2379",
		"SHALE_CLUSTER":                    "shale",
		"SHALE_OBJECT_STORE":               "none",
		"SHALE_DATA_DIR":                   "/var/lib/shale",
		"SHALE_DEFAULT_REPLICATION_FACTOR": "3",
		"SHALE_MAX_CONNECTIONS":            "10000",
		"SHALE_MAX_CONNECTIONS_PER_IP":     "0",
		"SHALE_REPLICA_SELECTOR":           "rack-aware",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
	if env["SHALE_ID"] != "fieldRef:metadata.labels['apps.kubernetes.io/pod-index']" {
		t.Errorf("SHALE_ID from %q, want the pod-index label", env["SHALE_ID"])
	}
	if _, ok := env["AWS_ACCESS_KEY_ID"]; ok {
		t.Error("credentials without an object store")
	}
	// No TLS and no SASL: a PLAINTEXT listener, as before they existed.
	if args := strs(dig(c, "args")); !slices.Equal(args, []string{"broker"}) {
		t.Errorf("args %q, want only broker", args)
	}
	if _, ok := env["SHALE_SASL_BOOTSTRAP_PASSWORD"]; ok {
		t.Error("a SASL bootstrap password without sasl.bootstrapUser")
	}
	if _, ok := env["SHALE_ETCD_PASSWORD"]; ok {
		t.Error("an etcd password without etcd.user")
	}
	if got := names(dig(sts, "spec", "template", "spec", "volumes")); !slices.Equal(got, []string{"tmp"}) {
		t.Errorf("volumes %v, want tmp", got)
	}
	if got := names(dig(c, "volumeMounts")); !slices.Equal(got, []string{"data", "tmp"}) {
		t.Errorf("volumeMounts %v, want data and tmp", got)
	}
	// POD_NAME and POD_NAMESPACE come before the variable that uses them.
	if names := envNames(c); slices.Index(names, "POD_NAME") > slices.Index(names, "SHALE_ADVERTISED_ADDR") ||
		slices.Index(names, "POD_NAMESPACE") > slices.Index(names, "SHALE_ADVERTISED_ADDR") {
		t.Errorf("env order %v", names)
	}
	if got := dig(sts, "spec", "volumeClaimTemplates", 0, "metadata", "name"); got != "data" {
		t.Errorf("volumeClaimTemplates %v", dig(sts, "spec", "volumeClaimTemplates"))
	}
	if got := dig(sts, "spec", "volumeClaimTemplates", 0, "spec", "resources", "requests", "storage"); got != "50Gi" {
		t.Errorf("volume size %v", got)
	}
	if !slices.ContainsFunc(dig(c, "volumeMounts").([]any), func(m any) bool {
		return dig(m, "name") == "data" && dig(m, "mountPath") == "/var/lib/shale"
	}) {
		t.Errorf("volumeMounts %v", dig(c, "volumeMounts"))
	}
	pdb := only(t, objs, "PodDisruptionBudget", "")
	if dig(pdb, "spec", "maxUnavailable") != 1 {
		t.Errorf("pdb %v", dig(pdb, "spec"))
	}
	// Every selector selects the pods.
	podLabels := dig(sts, "spec", "template", "metadata", "labels").(map[string]any)
	for _, sel := range []any{dig(pdb, "spec", "selector", "matchLabels"), dig(headless, "spec", "selector"),
		dig(only(t, objs, "Service", "rel-shale"), "spec", "selector"), dig(sts, "spec", "selector", "matchLabels")} {
		for k, v := range sel.(map[string]any) {
			if podLabels[k] != v {
				t.Errorf("selector %v does not select the pods %v", sel, podLabels)
			}
		}
	}
}

// TestHelmTemplateNonDefaults renders every optional part: credentials in
// a Secret, the ServiceMonitor, the PrometheusRule, the rack from the zone label, topic
// defaults, other ports and sizes.
func TestHelmTemplateNonDefaults(t *testing.T) {
	objs := helmTemplate(t, nonDefaultValues)
	if got := kinds(objs); !slices.Equal(got, []string{"PodDisruptionBudget", "PrometheusRule", "Secret", "Service", "Service", "ServiceAccount", "ServiceMonitor", "StatefulSet"}) {
		t.Fatalf("kinds %v", got)
	}
	sts := only(t, objs, "StatefulSet", "")
	if r := dig(sts, "spec", "replicas"); r != 5 {
		t.Errorf("replicas %v, want 5", r)
	}
	env := envOf(t, container(t, sts))
	want := map[string]string{
		"SHALE_ADVERTISED_ADDR":        "$(POD_NAME).rel-shale-headless.$(POD_NAMESPACE).svc:19092",
		"SHALE_KAFKA_ADDR":             "0.0.0.0:19092",
		"SHALE_ETCD":                   "etcd-0.etcd:2379,etcd-1.etcd:2379",
		"SHALE_CLUSTER":                "prod",
		"SHALE_OBJECT_STORE":           "s3://logs/shale?region=eu-west-1",
		"SHALE_RACK":                   "fieldRef:metadata.labels['topology.kubernetes.io/zone']",
		"SHALE_TOPIC_DEFAULT":          "log.retention.ms=3600000,log.segment.bytes=8388608",
		"AWS_ACCESS_KEY_ID":            "secret:rel-shale-object-store/AWS_ACCESS_KEY_ID",
		"AWS_SECRET_ACCESS_KEY":        "secret:rel-shale-object-store/AWS_SECRET_ACCESS_KEY",
		"SHALE_MAX_CONNECTIONS_PER_IP": "100",
		"SHALE_REPLICA_SELECTOR":       "leader",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
	secret := only(t, objs, "Secret", "rel-shale-object-store")
	if dig(secret, "stringData", "AWS_ACCESS_KEY_ID") != "AKIDEXAMPLE" || dig(secret, "stringData", "AWS_SECRET_ACCESS_KEY") != "secret" {
		t.Errorf("secret %v", secret)
	}
	if dig(sts, "spec", "template", "metadata", "annotations", "checksum/object-store") == nil {
		t.Error("no checksum annotation: pods would not restart when the credentials change")
	}
	sm := only(t, objs, "ServiceMonitor", "")
	if dig(sm, "spec", "endpoints", 0, "port") != "http" || dig(sm, "spec", "endpoints", 0, "path") != "/metrics" {
		t.Errorf("servicemonitor %v", dig(sm, "spec"))
	}
	// The PrometheusRule holds the rule groups of deploy/prometheus's
	// alerts and costs as they are, with the labels its ruleSelector
	// picks.
	pr := only(t, objs, "PrometheusRule", "")
	var groups []any
	for _, name := range []string{"shale-alerts.yml", "shale-cost.yml"} {
		path := filepath.Join(moduleRoot(t), "deploy", "prometheus", name)
		var rules struct{ Groups []any }
		if raw, err := os.ReadFile(path); err != nil || yaml.Unmarshal(raw, &rules) != nil || len(rules.Groups) == 0 {
			t.Fatalf("%s: %v", path, err)
		}
		groups = append(groups, rules.Groups...)
	}
	if !reflect.DeepEqual(dig(pr, "spec", "groups"), groups) || dig(pr, "metadata", "labels", "release") != "kube-prometheus" {
		t.Errorf("prometheusrule %v", pr)
	}
	vct := dig(sts, "spec", "volumeClaimTemplates", 0, "spec")
	if dig(vct, "storageClassName") != "nvme" || dig(vct, "resources", "requests", "storage") != "1Ti" {
		t.Errorf("volumeClaimTemplates %v", vct)
	}
	if dig(only(t, objs, "PodDisruptionBudget", ""), "spec", "maxUnavailable") != 2 {
		t.Error("pdb maxUnavailable")
	}

	// Credentials from an existing Secret: no Secret of the chart's own.
	objs = helmTemplate(t, []string{"objectStore.url=s3://logs", "objectStore.existingSecret=mine"})
	if slices.Contains(kinds(objs), "Secret") {
		t.Error("a Secret beside objectStore.existingSecret")
	}
	env = envOf(t, container(t, only(t, objs, "StatefulSet", "")))
	if env["AWS_SECRET_ACCESS_KEY"] != "secret:mine/AWS_SECRET_ACCESS_KEY" {
		t.Errorf("existingSecret: %q", env["AWS_SECRET_ACCESS_KEY"])
	}
}

// TestHelmTemplateTLSAndSASL renders tls, sasl, acls and etcd's tls and
// user: the brokers mount the certificate Secrets read-only where their
// TLS and etcd TLS flags point, get the SASL, ACL and etcd user flags,
// which the real binary's flag parser accepts, and read the bootstrap
// password and the etcd user's from the user's Secrets, never from a
// value of the chart's.
func TestHelmTemplateTLSAndSASL(t *testing.T) {
	objs := helmTemplate(t, securityValues)
	if slices.Contains(kinds(objs), "Secret") {
		t.Error("the chart made a Secret of its own: the certificate and the password are the user's")
	}
	sts := only(t, objs, "StatefulSet", "")
	c := container(t, sts)
	args := strs(dig(c, "args"))
	want := []string{"broker",
		"--tls-cert=/etc/shale/tls/tls.crt", "--tls-key=/etc/shale/tls/tls.key", "--tls-ca=/etc/shale/tls/ca.crt",
		"--tls-client-auth=required", "--sasl-mechanisms=SCRAM-SHA-512,PLAIN", "--sasl-bootstrap-user=admin",
		"--acls", "--super-users=User:ops;User:CN=alice", "--allow-everyone-if-no-acl-found",
		"--etcd-tls-ca=/etc/shale/etcd-tls/ca.crt", "--etcd-tls-cert=/etc/shale/etcd-tls/tls.crt", "--etcd-tls-key=/etc/shale/etcd-tls/tls.key",
		"--etcd-user=shale"}
	if !slices.Equal(args, want) {
		t.Errorf("args %q, want %q", args, want)
	}
	vol := named(dig(sts, "spec", "template", "spec", "volumes"), "tls")
	if dig(vol, "secret", "secretName") != "shale-tls" || dig(vol, "secret", "defaultMode") != 0o440 {
		t.Errorf("tls volume %v, want the Secret shale-tls, mode 0440", vol)
	}
	mount := named(dig(c, "volumeMounts"), "tls")
	if dig(mount, "mountPath") != "/etc/shale/tls" || dig(mount, "readOnly") != true {
		t.Errorf("tls volumeMount %v, want /etc/shale/tls read-only", mount)
	}
	vol = named(dig(sts, "spec", "template", "spec", "volumes"), "etcd-tls")
	if dig(vol, "secret", "secretName") != "shale-etcd-client" || dig(vol, "secret", "defaultMode") != 0o440 {
		t.Errorf("etcd-tls volume %v, want the Secret shale-etcd-client, mode 0440", vol)
	}
	mount = named(dig(c, "volumeMounts"), "etcd-tls")
	if dig(mount, "mountPath") != "/etc/shale/etcd-tls" || dig(mount, "readOnly") != true {
		t.Errorf("etcd-tls volumeMount %v, want /etc/shale/etcd-tls read-only", mount)
	}
	env := envOf(t, c)
	for name, want := range map[string]string{"SHALE_SASL_BOOTSTRAP_PASSWORD": "secret:shale-admin/admin-password", "SHALE_ETCD_PASSWORD": "secret:shale-etcd/etcd-password"} {
		if env[name] != want {
			t.Errorf("%s from %q, want %s", name, env[name], want)
		}
		if e := named(dig(c, "env"), name); dig(e, "value") != nil {
			t.Errorf("%s has a value beside its secretKeyRef: %v", name, e)
		}
	}
	// The probes stay plain HTTP on the HTTP port, which TLS does not cover.
	for _, probe := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
		if dig(c, probe, "httpGet", "port") != "http" || dig(c, probe, "httpGet", "scheme") != nil {
			t.Errorf("%s %v", probe, dig(c, probe))
		}
	}
	// --help after the flags: cobra parses every flag (an unknown one or
	// a bad value fails) and then prints the help.
	shale := buildShale(t)
	if out, err := exec.Command(shale, append(args, "--help")...).CombinedOutput(); err != nil {
		t.Errorf("shale %s: %v\n%s", strings.Join(args, " "), err, out)
	}

	// A Secret without ca.crt (a publicly trusted certificate): no
	// --tls-ca, the image's CAs verify the other brokers.
	c = container(t, only(t, helmTemplate(t, []string{"tls.enabled=true", "tls.secretName=public", "tls.caKey="}), "StatefulSet", ""))
	if args, want := strs(dig(c, "args")), []string{"broker", "--tls-cert=/etc/shale/tls/tls.crt", "--tls-key=/etc/shale/tls/tls.key", "--tls-client-auth=none"}; !slices.Equal(args, want) {
		t.Errorf("without caKey: args %q, want %q", args, want)
	}
	// etcd's CA alone (an etcd that does not ask for client
	// certificates): --etcd-tls-ca only.
	c = container(t, only(t, helmTemplate(t, []string{"etcd.tls.enabled=true", "etcd.tls.secretName=etcd-ca", "etcd.tls.cert=", "etcd.tls.key="}), "StatefulSet", ""))
	if args, want := strs(dig(c, "args")), []string{"broker", "--etcd-tls-ca=/etc/shale/etcd-tls/ca.crt"}; !slices.Equal(args, want) {
		t.Errorf("etcd CA alone: args %q, want %q", args, want)
	}
	// ACLs alone: --acls only.
	c = container(t, only(t, helmTemplate(t, []string{"acls.enabled=true"}), "StatefulSet", ""))
	if args, want := strs(dig(c, "args")), []string{"broker", "--acls"}; !slices.Equal(args, want) {
		t.Errorf("acls.enabled alone: args %q, want %q", args, want)
	}
}

// TestHelmTemplateRefusesMissingSettings: an empty etcd endpoint list, an
// access key without its secret, and TLS, SASL, ACL or etcd settings the
// broker would refuse at start fail with one clear message.
func TestHelmTemplateRefusesMissingSettings(t *testing.T) {
	helm := tool(t, "SHALE_HELM", "helm")
	chart := filepath.Join(moduleRoot(t), "deploy", "helm", "shale")
	for set, want := range map[string]string{
		"etcd.endpoints=":                                      "etcd.endpoints is required",
		"objectStore.accessKeyId=AKIDEXA":                      "objectStore.secretAccessKey is required",
		"tls.enabled=true":                                     "tls.secretName is required",
		"tls.enabled=true,tls.secretName=s,tls.clientAuth=yes": `tls.clientAuth "yes": none, requested or required`,
		"tls.enabled=true,tls.secretName=s,tls.caKey=,tls.clientAuth=required": "tls.clientAuth required needs tls.caKey",
		"sasl.bootstrapUser=admin":                                                              "sasl.bootstrapPasswordSecret.name is required",
		"sasl.mechanisms={SCRAM-SHA-512,GSSAPI}":                                                `sasl.mechanisms: "GSSAPI" is none of`,
		"acls.enabled=true,acls.superUsers={User:ops,admin}":                                    `acls.superUsers: "admin" is not a principal`,
		"acls.superUsers={User:ops}":                                                            "acls.superUsers and acls.allowEveryoneIfNoAclFound need acls.enabled",
		"acls.allowEveryoneIfNoAclFound=true":                                                   "acls.superUsers and acls.allowEveryoneIfNoAclFound need acls.enabled",
		"etcd.tls.enabled=true":                                                                 "etcd.tls.secretName is required",
		"etcd.tls.enabled=true,etcd.tls.secretName=s,etcd.tls.key=":                             "etcd.tls.cert and etcd.tls.key: both",
		"etcd.tls.enabled=true,etcd.tls.secretName=s,etcd.tls.ca=,etcd.tls.cert=,etcd.tls.key=": "etcd.tls.enabled needs etcd.tls.ca or etcd.tls.cert",
		"etcd.tls.enabled=true,etcd.tls.secretName=s,etcd.endpoints=http://etcd:2379":           `etcd.endpoints "http://etcd:2379": http:// is plain TCP`,
		"etcd.user=shale": "etcd.passwordSecret.name is required",
	} {
		out, err := exec.Command(helm, "template", "rel", chart, "--kube-version", kubeVersion, "--set", set).CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("--set %s: %v\n%s", set, err, out)
		}
	}
}

func helmTemplate(t *testing.T, set []string) []map[string]any {
	t.Helper()
	helm := tool(t, "SHALE_HELM", "helm")
	args := []string{"template", "rel", filepath.Join(moduleRoot(t), "deploy", "helm", "shale"), "--namespace", "ns", "--kube-version", kubeVersion}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	cmd := exec.Command(helm, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	var objs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("rendered YAML: %v\n%s", err, out)
		}
		if m != nil {
			objs = append(objs, m)
		}
	}
	return objs
}

// buildShale builds the shale binary into a temporary directory.
func buildShale(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shale")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/shale")
	cmd.Dir = moduleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/shale: %v\n%s", err, out)
	}
	return bin
}

// strs is a list of strings, nil when l is not one.
func strs(l any) []string {
	var out []string
	for _, v := range asList(l) {
		s, ok := v.(string)
		if !ok {
			return nil
		}
		out = append(out, s)
	}
	return out
}

// names are the name fields of a list of objects (volumes, mounts, env).
func names(l any) []string {
	var out []string
	for _, v := range asList(l) {
		n, _ := dig(v, "name").(string)
		out = append(out, n)
	}
	return out
}

// named is the object of a list whose name field is name; nil if none.
func named(l any, name string) any {
	for _, v := range asList(l) {
		if dig(v, "name") == name {
			return v
		}
	}
	return nil
}

func asList(l any) []any {
	list, _ := l.([]any)
	return list
}

func kinds(objs []map[string]any) []string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o["kind"].(string))
	}
	slices.Sort(ks)
	return ks
}

// only is the one object of kind (and name, when not empty).
func only(t *testing.T, objs []map[string]any, kind, name string) map[string]any {
	t.Helper()
	var found []map[string]any
	for _, o := range objs {
		if o["kind"] == kind && (name == "" || dig(o, "metadata", "name") == name) {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d objects of kind %s named %q", len(found), kind, name)
	}
	return found[0]
}

func container(t *testing.T, sts map[string]any) any {
	t.Helper()
	cs, _ := dig(sts, "spec", "template", "spec", "containers").([]any)
	if len(cs) != 1 {
		t.Fatalf("containers %v", cs)
	}
	return cs[0]
}

// envOf maps a container's variables to their values, or to
// "fieldRef:PATH" and "secret:NAME/KEY" for the ones read from elsewhere.
func envOf(t *testing.T, c any) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range dig(c, "env").([]any) {
		name := dig(e, "name").(string)
		if _, dup := env[name]; dup {
			t.Errorf("env %s set twice", name)
		}
		switch {
		case dig(e, "valueFrom", "fieldRef", "fieldPath") != nil:
			env[name] = "fieldRef:" + dig(e, "valueFrom", "fieldRef", "fieldPath").(string)
		case dig(e, "valueFrom", "secretKeyRef") != nil:
			env[name] = "secret:" + dig(e, "valueFrom", "secretKeyRef", "name").(string) + "/" + dig(e, "valueFrom", "secretKeyRef", "key").(string)
		default:
			v, _ := dig(e, "value").(string)
			env[name] = v
		}
	}
	return env
}

func envNames(c any) []string {
	var names []string
	for _, e := range dig(c, "env").([]any) {
		names = append(names, dig(e, "name").(string))
	}
	return names
}

// dig follows map keys (strings) and list indexes (ints); nil when absent.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}
