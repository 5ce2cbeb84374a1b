package deploy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestComposeClusterProducesAndConsumesThroughEveryBroker runs
// docker-compose.yml for real: it builds the shale, etcd and MinIO images
// FROM scratch with binaries built here (no image is pulled), starts the
// project, writes with acks=all to a topic replicated on the three brokers
// through clients seeded with each broker's published address, reads it
// all back, and finds the bucket the brokers created in MinIO with the
// sealed segments they uploaded.
func TestComposeClusterProducesAndConsumesThroughEveryBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a docker compose project (skipped with -short)")
	}
	compose := composeCommand(t)
	root := moduleRoot(t)
	id := randomID()
	project := "shaletest" + id

	images := buildImages(t, root, id)
	ports := freePorts(t, 8)
	env := append(os.Environ(),
		"SHALE_IMAGE="+images["shale"],
		"ETCD_IMAGE="+images["etcd"],
		"MINIO_IMAGE="+images["minio"],
		"MINIO_ROOT_USER=shaletest",
		"MINIO_ROOT_PASSWORD=shaletest-secret",
		"SHALE_BUCKET=shale-test",
	)
	kafka := make([]string, 3)
	for i := range 3 {
		kafka[i] = fmt.Sprintf("127.0.0.1:%d", ports[i])
		env = append(env,
			fmt.Sprintf("SHALE_BROKER%d_PORT=%d", i+1, ports[i]),
			fmt.Sprintf("SHALE_BROKER%d_HTTP_PORT=%d", i+1, ports[3+i]))
	}
	env = append(env, fmt.Sprintf("SHALE_MINIO_PORT=%d", ports[6]), fmt.Sprintf("SHALE_MINIO_CONSOLE_PORT=%d", ports[7]))

	run := func(timeout time.Duration, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		full := append(slices.Clone(compose[1:]), append([]string{"-p", project, "-f", filepath.Join(root, "deploy", "docker-compose.yml")}, args...)...)
		cmd := exec.CommandContext(ctx, compose[0], full...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := run(time.Minute, "logs", "--no-color", "--tail", "40")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := run(2*time.Minute, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	start := time.Now()
	if out, err := run(3*time.Minute, "up", "-d"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	for i := range 3 {
		waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[3+i]))
	}
	t.Logf("three brokers ready %v after compose up", time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl := newClient(t, kafka[0])
	adm := kadm.NewClient(cl)
	// Asked until the first broker's metadata lists the last to become
	// ready, a Metadata request each time (kadm's BrokerMetadata would
	// answer from the client's first answer).
	published := slices.Sorted(slices.Values(kafka))
	for {
		req := kmsg.NewPtrMetadataRequest()
		req.Topics = []kmsg.MetadataRequestTopic{}
		meta, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		var advertised []string
		for _, b := range meta.Brokers {
			advertised = append(advertised, net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))))
		}
		slices.Sort(advertised)
		if slices.Equal(advertised, published) {
			break
		}
		if len(advertised) >= len(published) || ctx.Err() != nil {
			t.Fatalf("brokers advertise %v, want the published %v", advertised, published)
		}
		time.Sleep(100 * time.Millisecond)
	}
	const topic, partitions = "deploy", 3
	resp, err := adm.CreateTopic(ctx, partitions, 3, map[string]*string{
		"segment.bytes": kadm.StringPtr("65536"),
		"segment.ms":    kadm.StringPtr("1000"),
	}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic with three replicas: %v", err)
	}

	// Each client knows one broker only and reaches the leaders of all
	// partitions through the addresses the cluster advertises.
	value := bytes.Repeat([]byte("x"), 1000)
	const perBroker = 300
	want := map[string]bool{}
	for i, seed := range kafka {
		// Batches of at most 16 KiB: a segment rolls only between
		// batches, so several 64 KiB segments seal on each partition.
		cl := newClient(t, seed, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic(topic),
			kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.ProducerBatchMaxBytes(16<<10),
			kgo.ProducerBatchCompression(kgo.NoCompression()))
		var recs []*kgo.Record
		for j := range perBroker {
			key := fmt.Sprintf("b%d-%d", i+1, j)
			want[key] = true
			recs = append(recs, &kgo.Record{Key: []byte(key), Value: value})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce through %s with acks=all: %v", seed, err)
		}
	}
	cons := newClient(t, kafka[2], kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for len(want) > 0 {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed all but %d records: %v", len(want), err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { delete(want, string(r.Key)) })
	}

	// The brokers created their bucket in MinIO (create_bucket=true).
	mc, err := minio.New(fmt.Sprintf("127.0.0.1:%d", ports[6]), &minio.Options{Creds: credentials.NewStaticV4("shaletest", "shaletest-secret", "")})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := mc.BucketExists(ctx, "shale-test"); err != nil || !ok {
		t.Fatalf("the brokers' bucket in MinIO: exists=%v %v", ok, err)
	}
	// The leaders upload the sealed segments there.
	for {
		var keys []string
		segments := 0
		for o := range mc.ListObjects(ctx, "shale-test", minio.ListObjectsOptions{Recursive: true}) {
			if o.Err == nil {
				keys = append(keys, o.Key)
				if strings.HasSuffix(o.Key, ".log") {
					segments++
				}
			}
		}
		if segments >= partitions {
			t.Logf("%d segments uploaded to MinIO", segments)
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no sealed segment reached MinIO; the bucket holds %v", keys)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("produced and consumed through three brokers %v after compose up", time.Since(start).Round(time.Millisecond))
}

// composeCommand is `docker compose` (the plugin) or `docker-compose`
// (v1), whichever runs, once the daemon answers.
func composeCommand(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		missing(t, "docker is not installed")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		missing(t, "the docker daemon does not answer (start it; make tools tries): %v: %s", err, bytes.TrimSpace(out))
	}
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if exec.Command("docker-compose", "version").Run() == nil {
		return []string{"docker-compose"}
	}
	missing(t, "neither `docker compose` nor `docker-compose` runs")
	return nil
}

// buildImages builds the three images from scratch and removes them at
// the end: shale from deploy/Dockerfile.scratch with a binary built now,
// etcd and MinIO from the static binaries `make tools` built, at the
// paths of their upstream images (the compose file names them there).
func buildImages(t *testing.T, root, id string) map[string]string {
	t.Helper()
	minioBin := tool(t, "SHALE_MINIO", "minio")
	etcdBin := tool(t, "SHALE_ETCD_BINARY", "etcd")
	etcdctlBin := tool(t, "SHALE_ETCDCTL_BINARY", "etcdctl")

	shaleCtx := scratchContext(t)
	build := exec.Command("go", "build", "-o", filepath.Join(shaleCtx, "shale"), "./cmd/shale")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	etcdCtx := scratchContext(t, etcdBin, etcdctlBin)
	writeFile(t, filepath.Join(etcdCtx, "Dockerfile"), `FROM scratch
COPY etcd etcdctl /usr/local/bin/
COPY tmp /tmp
COPY --chown=65532:65532 data /var/lib/etcd
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/etcd"]
`)
	minioCtx := scratchContext(t, minioBin)
	writeFile(t, filepath.Join(minioCtx, "Dockerfile"), `FROM scratch
COPY minio /usr/bin/minio
COPY tmp /tmp
COPY --chown=65532:65532 data /data
USER 65532:65532
ENTRYPOINT ["/usr/bin/minio"]
`)
	images := map[string]string{
		"shale": "shale-test-" + id + ":latest",
		"etcd":  "shale-test-etcd-" + id + ":latest",
		"minio": "shale-test-minio-" + id + ":latest",
	}
	t.Cleanup(func() {
		for _, img := range images {
			if out, err := exec.Command("docker", "rmi", "-f", img).CombinedOutput(); err != nil {
				t.Logf("docker rmi %s: %v: %s", img, err, out)
			}
		}
	})
	for _, b := range []struct{ name, dir, dockerfile, bin string }{
		{"shale", shaleCtx, filepath.Join(root, "deploy", "Dockerfile.scratch"), "shale"},
		{"etcd", etcdCtx, filepath.Join(etcdCtx, "Dockerfile"), "etcd"},
		{"minio", minioCtx, filepath.Join(minioCtx, "Dockerfile"), "minio"},
	} {
		checkStatic(t, filepath.Join(b.dir, b.bin))
		cmd := exec.Command("docker", "build", "-q", "-f", b.dockerfile, "-t", images[b.name], b.dir)
		// The classic builder: it needs no buildx plugin and builds FROM
		// scratch offline.
		cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("docker build %s: %v\n%s", b.name, err, out)
		}
	}
	return images
}

// scratchContext is a build context with data/, tmp/ (mode 1777) and
// hard links (or copies) of the binaries.
func scratchContext(t *testing.T, bins ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"data", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	for _, b := range bins {
		dst := filepath.Join(dir, filepath.Base(b))
		if os.Link(b, dst) == nil {
			continue
		}
		data, err := os.ReadFile(b)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, dst, string(data))
		os.Chmod(dst, 0o755)
	}
	return dir
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newClient(t *testing.T, seed string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seed)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// waitReady polls a broker's /readyz until it answers 200.
func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s not ready after 2m: %s", url, last)
}

// freePorts finds n free TCP ports on the host.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

func randomID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
