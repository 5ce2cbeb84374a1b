package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
	"github.com/shale-log/shale/broker/sasl"
	"github.com/shale-log/shale/metadata"
)

func init() {
	handler(kmsg.AlterUserSCRAMCredentials, 0, 0, handleAlterUserSCRAMCredentials)
}

// scramAlteration is one upsertion (cred set) or deletion (cred nil) of a
// user's credential for mech.
type scramAlteration struct {
	mech string
	cred *metadata.ScramCredential
}

// handleAlterUserSCRAMCredentials sets and deletes users' SCRAM
// credentials (kafka-configs --alter --entity-type users --add-config
// 'SCRAM-SHA-256=[password=...]'). The request carries the salted
// password, never the password; the broker keeps only what a SCRAM
// exchange needs. Each user's alterations are checked as Kafka checks
// them and applied in one etcd write, all or none; one result per user.
// A connection authenticated as a user whose credentials change stays
// authenticated, as in Kafka.
func handleAlterUserSCRAMCredentials(b *Broker, r *request, req *kmsg.AlterUserSCRAMCredentialsRequest) kmsg.Response {
	var users []string
	alts := map[string][]scramAlteration{}
	errs := map[string]error{} // a user's first error: nothing of it is applied
	note := func(user string, code int8, cred *metadata.ScramCredential, err error) {
		if _, seen := alts[user]; !seen {
			users = append(users, user)
		}
		mech := scramMechanisms[code]
		for _, o := range alts[user] {
			if mech != "" && o.mech == mech {
				err = fmt.Errorf("%w: A user credential cannot be altered twice in the same request", errDuplicateResource)
			}
		}
		switch {
		case user == "":
			err = fmt.Errorf("%w: Username must not be empty", errUnacceptableCredential)
		case mech == "":
			err = fmt.Errorf("%w: Unknown SCRAM mechanism", errUnsupportedSASLMechanism)
		}
		alts[user] = append(alts[user], scramAlteration{mech: mech, cred: cred})
		if errs[user] == nil {
			errs[user] = err
		}
	}
	for _, d := range req.Deletions {
		note(d.Name, d.Mechanism, nil, nil)
	}
	for _, u := range req.Upsertions {
		cred, err := upsertedCredential(u)
		note(u.Name, u.Mechanism, cred, err)
	}
	// ALTER on the cluster; refused, every user answers so.
	refused := !r.authorizedCluster(acl.Alter)
	go func() {
		ctx, cancel := adminContext(r.ctx(), 30000)
		defer cancel()
		resp := req.ResponseKind().(*kmsg.AlterUserSCRAMCredentialsResponse)
		var last int64
		for _, user := range users {
			res := kmsg.NewAlterUserSCRAMCredentialsResponseResult()
			res.User = user
			err := errs[user]
			if refused {
				err = errClusterAuthorization
			} else if err == nil {
				var rev int64
				rev, err = b.alterScramCredentials(ctx, r, user, alts[user])
				last = max(last, rev)
			}
			if err != nil {
				res.ErrorCode = kafkaError(err)
				res.ErrorMessage = errorMessage(err)
			}
			resp.Results = append(resp.Results, res)
		}
		if last > 0 {
			// Answered once this broker applies them: the user can
			// authenticate here at once.
			if err := b.waitApplied(ctx, last); err != nil {
				b.log.Debug("waiting for SCRAM credentials to apply", "err", err)
			}
		}
		r.respond(resp)
	}()
	return nil
}

// upsertedCredential is the credential an upsertion sets: Kafka's bounds
// on iterations, and a salt and salted password that can verify.
func upsertedCredential(u kmsg.AlterUserSCRAMCredentialsRequestUpsertion) (*metadata.ScramCredential, error) {
	mech, ok := scramMechanisms[u.Mechanism]
	switch {
	case !ok:
		return nil, nil // note refuses it
	case u.Iterations < sasl.MinIterations:
		return nil, fmt.Errorf("%w: Too few iterations", errUnacceptableCredential)
	case u.Iterations > sasl.MaxIterations:
		return nil, fmt.Errorf("%w: Too many iterations", errUnacceptableCredential)
	}
	c, err := sasl.CredentialFromSalted(mech, u.SaltedPassword, u.Salt, int(u.Iterations))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUnacceptableCredential, err)
	}
	mc := metadata.ScramCredential(c)
	return &mc, nil
}

// alterScramCredentials applies a user's checked alterations in one
// write: none if a deletion names a credential the user lacks.
func (b *Broker) alterScramCredentials(ctx context.Context, r *request, user string, alts []scramAlteration) (int64, error) {
	var before, after []string
	rev, err := b.meta.updateScramCredentials(ctx, user, func(cur map[string]metadata.ScramCredential) (map[string]metadata.ScramCredential, error) {
		next := maps.Clone(cur)
		if next == nil {
			next = map[string]metadata.ScramCredential{}
		}
		for _, a := range alts {
			if a.cred != nil {
				next[a.mech] = *a.cred
				continue
			}
			if _, ok := next[a.mech]; !ok {
				return nil, fmt.Errorf("%w: Attempt to delete a user credential that does not exist", errResourceNotFound)
			}
			delete(next, a.mech)
		}
		before, after = slices.Sorted(maps.Keys(cur)), slices.Sorted(maps.Keys(next))
		return next, nil
	})
	if err != nil {
		return 0, err
	}
	b.log.Info("SCRAM credentials changed", append([]any{"user", user, "before", before, "after", after}, r.clientAttrs()...)...)
	return rev, nil
}

var (
	errUnacceptableCredential   = errors.New("broker: unacceptable credential")
	errUnsupportedSASLMechanism = errors.New("broker: unsupported SASL mechanism")
	errResourceNotFound         = errors.New("broker: resource not found")
	errDuplicateResource        = errors.New("broker: duplicate resource")
)
