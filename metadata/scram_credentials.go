package metadata

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
)

// ScramCredential is a user's SCRAM credential for one mechanism, as
// Kafka keeps it (KIP-554): the salt, the iteration count and the keys
// derived from the salted password, never the password.
type ScramCredential struct {
	Salt       []byte `json:"salt"`
	Iterations int    `json:"iterations"`
	StoredKey  []byte `json:"stored_key"`
	ServerKey  []byte `json:"server_key"`
}

func (s *Store) scramCredentialsPrefix() string { return s.prefix + "scram-credentials/" }

// noScramCredentials is the record of a user whose credentials were all
// deleted: it reads as no record.
var noScramCredentials = []byte("{}")

// UpdateScramCredentials replaces user's SCRAM credentials (by mechanism,
// "SCRAM-SHA-256" or "SCRAM-SHA-512") with mutate's result, as
// UpdateClientQuotas replaces an entity's quotas. The user name is
// query-escaped in the key, so any name Kafka takes is one key.
func (s *Store) UpdateScramCredentials(ctx context.Context, user string, mutate func(map[string]ScramCredential) (map[string]ScramCredential, error)) (int64, error) {
	if user == "" {
		return 0, fmt.Errorf("metadata: an empty SCRAM user name")
	}
	return swapJSONMap(ctx, s, s.scramCredentialsPrefix()+url.QueryEscape(user), noScramCredentials, "SCRAM credentials", mutate)
}

// putScramCredentials records a scram-credentials/ key in the watcher's
// state.
func (st *state) putScramCredentials(log *slog.Logger, key, rest string, val []byte) {
	user, err := url.QueryUnescape(rest)
	if err != nil || user == "" {
		log.Error("bad SCRAM credentials key", "key", key)
		return
	}
	var m map[string]ScramCredential
	if err := json.Unmarshal(val, &m); err != nil {
		// The user keeps the credentials read before: a record
		// unreadable now is not a reason to let no one in.
		log.Error("unreadable SCRAM credentials record: the previous credentials stay in force", "key", key, "err", err)
		return
	}
	if len(m) == 0 {
		delete(st.scramCredentials, user)
		return
	}
	st.scramCredentials[user] = m
}

func (st *state) delScramCredentials(rest string) {
	if user, err := url.QueryUnescape(rest); err == nil {
		delete(st.scramCredentials, user)
	}
}
