package broker

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// metaProperties is Kafka's meta.properties in the data directory: which
// node and cluster the directory belongs to, and the directory's own id.
// A directory of another node or cluster is refused at start, so a
// misconfigured broker cannot serve (or truncate) someone else's data.
type metaProperties struct {
	nodeID      int32
	clusterID   string
	directoryID string
}

const metaPropertiesFile = "meta.properties"

func loadOrCreateMetaProperties(dir string, nodeID int32, clusterID string) (metaProperties, error) {
	path := filepath.Join(dir, metaPropertiesFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		var raw [16]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return metaProperties{}, err
		}
		mp := metaProperties{nodeID: nodeID, clusterID: clusterID, directoryID: base64.RawURLEncoding.EncodeToString(raw[:])}
		content := fmt.Sprintf("version=1\nnode.id=%d\ncluster.id=%s\ndirectory.id=%s\n", mp.nodeID, mp.clusterID, mp.directoryID)
		return mp, writeFileAtomic(path, []byte(content))
	}
	if err != nil {
		return metaProperties{}, err
	}
	props := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			props[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	id, err := strconv.ParseInt(props["node.id"], 10, 32)
	if err != nil {
		return metaProperties{}, fmt.Errorf("broker: %s has no valid node.id", path)
	}
	mp := metaProperties{nodeID: int32(id), clusterID: props["cluster.id"], directoryID: props["directory.id"]}
	switch {
	case mp.nodeID != nodeID:
		return mp, fmt.Errorf("broker: %s belongs to node %d, this is node %d", dir, mp.nodeID, nodeID)
	case mp.clusterID != clusterID:
		return mp, fmt.Errorf("broker: %s belongs to cluster %s, the metadata store is cluster %s", dir, mp.clusterID, clusterID)
	case mp.directoryID == "":
		return mp, fmt.Errorf("broker: %s has no directory.id", path)
	}
	return mp, nil
}

// writeFileAtomic writes a file through a temporary, fsyncs it, renames it
// into place and fsyncs the directory.
func writeFileAtomic(path string, content []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
