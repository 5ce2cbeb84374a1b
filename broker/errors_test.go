package broker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/metadata"
)

// Regression: every unknown error, context.Canceled among them, became
// KAFKA_STORAGE_ERROR on the data path while admin requests had a second
// mapping of their own. One table now maps both.
func TestErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want *kerr.Error
	}{
		{context.Canceled, kerr.RequestTimedOut},
		{fmt.Errorf("waiting: %w", context.DeadlineExceeded), kerr.RequestTimedOut},
		{errors.New("something nobody classified"), kerr.UnknownServerError},
		{&fs.PathError{Op: "write", Path: "x.log", Err: syscall.EIO}, kerr.KafkaStorageError},
		{fmt.Errorf("sync: %w", syscall.ENOSPC), kerr.KafkaStorageError},
		{fmt.Errorf("append: %w", localseg.ErrOffline), kerr.KafkaStorageError},
		{fmt.Errorf("%w: x", recordbatch.ErrCorrupt), kerr.CorruptMessage},
		{errNotLeader, kerr.NotLeaderForPartition},
		{fmt.Errorf("%w: a", errInvalidConfig), kerr.InvalidConfig},
		{fmt.Errorf("%w: a", errTopicExists), kerr.TopicAlreadyExists},
		{metaError(fmt.Errorf("%w: big", metadata.ErrTooLarge)), kerr.PolicyViolation},
		{metaError(fmt.Errorf("%w: t", metadata.ErrUnknownTopic)), kerr.UnknownTopicOrPartition},
		{fmt.Errorf("%w: %w", errInvalidReplicationFactor, errNotEnoughBrokers), kerr.InvalidReplicationFactor},
		// etcd could not answer, or a write's outcome is unknown:
		// retriable, and a retry reads what happened. They were
		// UNKNOWN_SERVER_ERROR, which clients do not retry.
		{metaError(fmt.Errorf("%w: w: %w", metadata.ErrIndeterminate, context.DeadlineExceeded)), kerr.RequestTimedOut},
		{fmt.Errorf("metadata: %w", status.Error(codes.Unavailable, "error reading from server: EOF")), kerr.RequestTimedOut},
		{fmt.Errorf("metadata: %w", rpctypes.ErrLeaderChanged), kerr.RequestTimedOut},
		{fmt.Errorf("metadata: %w", rpctypes.ErrTimeout), kerr.RequestTimedOut},
		{fmt.Errorf("metadata: %w", rpctypes.ErrNoLeader), kerr.RequestTimedOut},
		{fmt.Errorf("metadata: %w", rpctypes.ErrNoSpace), kerr.UnknownServerError},
	} {
		if got := kafkaError(tc.err); got != tc.want.Code {
			t.Errorf("%v: %v, want %v", tc.err, kerr.ErrorForCode(got), tc.want)
		}
	}
	if kafkaError(nil) != 0 {
		t.Error("nil is not 0")
	}
}

// A response's error message is read after the Kafka error name: it
// carries the detail, not the package prefix of the logs.
func TestErrorMessageDropsThePackagePrefix(t *testing.T) {
	got := *errorMessage(fmt.Errorf("%w: %q", errTopicExists, "orders"))
	if want := `topic already exists: "orders"`; got != want {
		t.Fatalf("message %q, want %q", got, want)
	}
	if errorMessage(nil) != nil {
		t.Fatal("a message for no error")
	}
}

// Errors wrap their cause with %w, never %v after a %w: that form keeps
// the sentinel and loses the cause (a deadline, a fencing), which callers
// and the Kafka error mapping then cannot see. The whole module's code is
// checked.
func TestErrorWrapsKeepTheirCause(t *testing.T) {
	bad := `"%w: ` + `%v"`
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".tools" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != ".." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, bad) {
				t.Errorf("%s:%d wraps with %s: %s", path, i+1, bad, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
