package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	saslplain "github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/shale-log/shale/broker/acl"
)

// rawPrincipal is the principal of the raw load's connections on a broker
// that does not require SASL: they do not authenticate.
const rawPrincipal = "User:ANONYMOUS"

// runACL measures what enforcing ACLs costs on the hot paths: the raw
// load generator's acks=1 produce and hot fetch against a second `shale
// dev` with --acls, beside the shale dev of the same run without them,
// its ceiling.
//
// The second broker requires no SASL, so its listener is the same
// PLAINTEXT one as the ceiling's and the raw load's connections, which do
// not authenticate, are User:ANONYMOUS: no super user, so each Produce's
// WRITE and each Fetch's READ on the topic goes through the broker's
// index of the ACLs. Its SASL bootstrap user, a super user, authenticates
// all the same (PLAIN, the one mechanism such a listener offers) to
// create the topic and the ACLs: two that let User:ANONYMOUS write and
// read the topic, beside o.aclCount of other principals (otherACLs). Before those two, a produce of the raw load's
// is checked to be refused, so the figures are those of a client the
// ACLs decide for.
func runACL(o options, plain *target) error {
	const admin, pass = "admin", "admin-secret"
	ao := o
	// At info the broker logs each resource's ACLs as they are created.
	ao.shaleArgs += " --acls --log-level warn --sasl-bootstrap-user " + admin
	if ao.shaleEnv != "" {
		ao.shaleEnv += ","
	}
	ao.shaleEnv += "SHALE_SASL_BOOTSTRAP_PASSWORD=" + pass
	sec, err := startShale(ao)
	if err != nil {
		return err
	}
	defer sec.close()
	sec.name = "shale --acls"

	cfg := o.raw.config()
	topic := fmt.Sprintf("raw-acl-%d", time.Now().UnixNano())
	others, grants := otherACLs(o.aclCount, topic), rawGrants(topic)
	if err := createTopicNamed(plain.addr, topic, cfg.partitions); err != nil {
		return fmt.Errorf("creating %s on %s: %w", topic, plain.name, err)
	}
	defer deleteTopic(plain.addr, topic)
	inForce, err := setUpACLs(sec.addr, kgo.SASL(saslplain.Auth{User: admin, Pass: pass}.AsMechanism()), topic, cfg.partitions, others, grants)
	if err != nil {
		return fmt.Errorf("%s: %w", sec.name, err)
	}
	fmt.Printf("acl: a second shale dev with --acls, beside this run's shale dev without them; the raw load's connections (no SASL) are %s, allowed WRITE and READ on the topic by 2 ACLs beside %d of other principals (%s): %d in force; %d round(s) of each workload, alternating which broker goes first\n",
		rawPrincipal, len(others), mixOf(others, topic), inForce, max(1, o.aclRounds))

	targets := []*target{sec, plain}
	profile := func(name string) func(t *target) string {
		return func(t *target) string {
			if o.raw.profileDir == "" || t.httpAddr == "" {
				return ""
			}
			side := "noacls"
			if t == sec {
				side = "acls"
			}
			return filepath.Join(o.raw.profileDir, "acl-"+profileSlug(name)+"-"+side)
		}
	}
	type workload struct {
		name string
		ms   []rawMeasure
	}
	var done []workload
	const produce = "produce acks=1"
	ms, err := alternateRounds(targets, o.aclRounds, produce, cfg, func(t *target, cfg rawConfig) (rawResult, error) {
		return rawProduce(t.addr, topic, 1, cfg)
	}, profile(produce))
	if err != nil {
		return err
	}
	done = append(done, workload{produce, ms})
	if o.raw.fetchBytes > 0 {
		const fetch = "fetch (hot)"
		fcfg, perFetch := o.raw.fetchConfig(cfg)
		ends := map[*target][]int64{}
		for _, t := range targets {
			if ends[t], err = endOffsets(t.addr, topic, cfg.partitions); err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			// What one produce run wrote, as the raw suite's fetch
			// reads: the rounds' gigabytes on both brokers would not
			// all stay in the page cache, and the fetch is of hot
			// data.
			for p := range ends[t] {
				ends[t][p] = max(1, ends[t][p]/int64(max(1, o.aclRounds)))
			}
		}
		ms, err := alternateRounds(targets, o.aclRounds, fetch, fcfg, func(t *target, cfg rawConfig) (rawResult, error) {
			return rawFetch(t.addr, topic, ends[t], perFetch, cfg)
		}, profile(fetch))
		if err != nil {
			return err
		}
		done = append(done, workload{fetch, ms})
	}

	cpu := func(m rawMeasure) string {
		if v := msPerMB(m.brokerCPU, m.res.bytes); v >= 0 {
			return fmt.Sprintf("%.2f", v)
		}
		return "-"
	}
	var rows [][]string
	for _, w := range done {
		a, p := w.ms[0], w.ms[1]
		rows = append(rows, []string{w.name,
			fmt.Sprintf("%.0f", a.res.mbps()), fmt.Sprintf("%.0f", p.res.mbps()), fmt.Sprintf("%.3fx", a.res.mbps()/p.res.mbps()),
			cpu(a), cpu(p)})
	}
	printTable([]string{fmt.Sprintf("raw, %d ACLs in force", inForce), "acls MB/s", "no acls MB/s", "ratio", "acls broker CPU ms/MB", "no acls broker CPU ms/MB"}, rows)

	// The index alone, over the same ACLs: what the check costs beside
	// the rest of a request, which the runs above cannot resolve when it
	// is a small part of it.
	all := append(append([]acl.Binding(nil), others...), grants...)
	full, err := checkCost(all, topic)
	if err != nil {
		return err
	}
	bare, err := checkCost(grants, topic)
	if err != nil {
		return err
	}
	line := fmt.Sprintf("acl index alone (acl.Set.Allowed in this process, the broker's check without the request around it): %.0f ns a check of the topic over the %d ACLs, %.0f ns over its 2 alone",
		float64(full.Nanoseconds()), len(all), float64(bare.Nanoseconds()))
	for _, w := range done {
		// One check per request (for its one topic): per MB, as many
		// as the requests that carried one.
		r := w.ms[0].res
		if r.bytes > 0 {
			perMB := float64(r.requests) / (float64(r.bytes) / 1e6)
			line += fmt.Sprintf("; %s asks one per request, %.1f per MB: %.4f ms/MB", w.name, perMB, perMB*float64(full.Nanoseconds())/1e6)
		}
	}
	fmt.Println("  " + line)
	return nil
}

// setUpACLs creates the topic on the broker at addr and the ACLs, as the
// super user auth authenticates: others first, then, once the raw load's
// produce is seen refused, grants. It returns how many ACLs the broker
// then lists.
func setUpACLs(addr string, auth kgo.Opt, topic string, partitions int, others, grants []acl.Binding) (int, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), auth)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, int32(partitions), 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return 0, fmt.Errorf("creating %s: %w", topic, err)
	}
	if err := createACLs(ctx, cl, others); err != nil {
		return 0, err
	}
	code, err := produceOnce(addr, topic)
	if err != nil {
		return 0, fmt.Errorf("produce before the grants: %w", err)
	}
	if code != kerr.TopicAuthorizationFailed.Code {
		return 0, fmt.Errorf("produce before the grants: error code %d, want %d (TOPIC_AUTHORIZATION_FAILED): the ACLs do not decide for %s", code, kerr.TopicAuthorizationFailed.Code, rawPrincipal)
	}
	if err := createACLs(ctx, cl, grants); err != nil {
		return 0, err
	}
	return countACLs(ctx, cl)
}

// createACLs creates bindings, a few hundred to a request (the broker
// writes each resource's in turn, within the request's timeout).
func createACLs(ctx context.Context, cl *kgo.Client, bindings []acl.Binding) error {
	for len(bindings) > 0 {
		chunk := bindings[:min(200, len(bindings))]
		bindings = bindings[len(chunk):]
		req := kmsg.NewPtrCreateACLsRequest()
		for _, b := range chunk {
			c := kmsg.NewCreateACLsRequestCreation()
			c.ResourceType = kmsg.ACLResourceType(b.Resource.Type)
			c.ResourceName = b.Resource.Name
			c.ResourcePatternType = kmsg.ACLResourcePatternType(b.Resource.Pattern)
			c.Principal, c.Host = b.Entry.Principal, b.Entry.Host
			c.Operation = kmsg.ACLOperation(b.Entry.Operation)
			c.PermissionType = kmsg.ACLPermissionType(b.Entry.Permission)
			req.Creations = append(req.Creations, c)
		}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return fmt.Errorf("creating ACLs: %w", err)
		}
		if len(resp.Results) != len(chunk) {
			return fmt.Errorf("creating ACLs: %d results for %d ACLs", len(resp.Results), len(chunk))
		}
		for i, r := range resp.Results {
			if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
				return fmt.Errorf("creating ACL %s: %w", chunk[i], err)
			}
		}
	}
	return nil
}

// countACLs is how many ACLs the broker lists.
func countACLs(ctx context.Context, cl *kgo.Client) (int, error) {
	req := kmsg.NewPtrDescribeACLsRequest()
	req.ResourceType = kmsg.ACLResourceTypeAny
	req.ResourcePatternType = kmsg.ACLResourcePatternTypeAny
	req.Operation = kmsg.ACLOperationAny
	req.PermissionType = kmsg.ACLPermissionTypeAny
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, fmt.Errorf("listing ACLs: %w", err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return 0, fmt.Errorf("listing ACLs: %w", err)
	}
	n := 0
	for _, r := range resp.Resources {
		n += len(r.ACLs)
	}
	return n, nil
}

// produceOnce sends one acks=1 Produce of a small batch to partition 0
// of topic on a connection of its own, as the raw load's (no SASL), and
// returns the partition's error code.
func produceOnce(addr, topic string) (int16, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return 0, err
	}
	batch, _ := encodeBatch(100, 1024, time.Now())
	frame := produceFrame(topic, 0, 1, batch)
	setCorrelationID(frame, 1)
	if _, err := c.Write(frame); err != nil {
		return 0, err
	}
	body, _, err := readResponse(bufio.NewReader(c), nil, 1)
	if err != nil {
		return 0, err
	}
	resp := kmsg.ProduceResponse{Version: rawProduceVersion}
	if err := resp.ReadFrom(body); err != nil {
		return 0, err
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			return p.ErrorCode, nil
		}
	}
	return 0, errors.New("the produce response names no partition")
}

// checkCost is what one check of an index of bindings costs in this
// process: the raw load's WRITE on topic, as the broker asks it for each
// Produce (acl.Set.Allowed, without the request around it).
func checkCost(bindings []acl.Binding, topic string) (time.Duration, error) {
	s := acl.NewSet(bindings)
	req := acl.Request{Principal: rawPrincipal, Host: "127.0.0.1"}
	if !s.Allowed(req, acl.Write, acl.Topic, topic, false) {
		return 0, fmt.Errorf("the ACLs do not allow %s to write %s", rawPrincipal, topic)
	}
	const n = 200_000
	start := time.Now()
	for range n {
		s.Allowed(req, acl.Write, acl.Topic, topic, false)
	}
	return time.Since(start) / n, nil
}

// rawGrants are the ACLs that let the raw load's connections write and
// read topic.
func rawGrants(topic string) []acl.Binding {
	r := acl.Resource{Type: acl.Topic, Pattern: acl.Literal, Name: topic}
	return []acl.Binding{
		{Resource: r, Entry: acl.Entry{Principal: rawPrincipal, Host: acl.Wildcard, Operation: acl.Write, Permission: acl.Allow}},
		{Resource: r, Entry: acl.Entry{Principal: rawPrincipal, Host: acl.Wildcard, Operation: acl.Read, Permission: acl.Allow}},
	}
}

// aclTeams name the other principals' topics, groups and transactional
// ids: across the alphabet, so that their prefixes sort on both sides of
// the raw load's topic.
var aclTeams = []string{"analytics", "billing", "catalog", "checkout", "clicks", "fraud", "inventory", "ledger",
	"logistics", "marketing", "orders", "payments", "pricing", "search", "shipping", "users"}

// otherACLs are n ACLs of principals other than the raw load's, as a
// cluster that teams share holds: each team's services allowed to read
// or write their topics (some from one host only), their applications'
// topics by prefix, their consumer groups and transactional ids, and
// contractors denied writing a team's topics by prefix. A few name the
// raw load's topic itself for other principals (some denied), a prefix
// of it, or every topic (monitoring's DESCRIBE), so that its checks read
// them as well. None allows or denies the raw load's principal anything,
// and no two are the same.
func otherACLs(n int, topic string) []acl.Binding {
	out := make([]acl.Binding, 0, n)
	for i := range n {
		team := aclTeams[i%len(aclTeams)]
		r := acl.Resource{Type: acl.Topic, Pattern: acl.Literal}
		e := acl.Entry{Principal: fmt.Sprintf("User:%s-svc-%03d", team, i), Host: acl.Wildcard, Operation: acl.Read, Permission: acl.Allow}
		switch {
		case i%100 == 8: // the topic's other producers and consumers
			r.Name = topic
			if i%200 == 8 {
				e.Operation, e.Permission = acl.Write, acl.Deny
			}
		case i%250 == 9: // every topic
			r.Name = acl.Wildcard
			e.Principal, e.Operation = fmt.Sprintf("User:monitoring-%03d", i), acl.Describe
		case i%50 == 9: // the topics named as the raw load's starts
			r.Pattern, r.Name = acl.Prefixed, topic[:len(topic)/2]
		case i%10 < 4: // a team's topics
			r.Name = fmt.Sprintf("%s.events-%03d", team, i)
			if i%2 == 0 {
				e.Operation = acl.Write
			}
			if i%10 == 3 {
				e.Host = fmt.Sprintf("10.%d.%d.%d", i%16, i/256%256, i%256)
			}
		case i%10 < 6: // an application's topics
			r.Pattern, r.Name = acl.Prefixed, fmt.Sprintf("%s.app-%03d.", team, i)
			if i%10 == 5 {
				e.Operation = acl.All
			}
		case i%10 == 6: // a consumer group
			r.Type, r.Name = acl.Group, fmt.Sprintf("%s-consumers-%03d", team, i)
		case i%10 == 7: // contractors kept from writing a team's topics
			r.Pattern, r.Name = acl.Prefixed, team+"."
			e.Principal, e.Operation, e.Permission = fmt.Sprintf("User:contractor-%03d", i), acl.Write, acl.Deny
		case i%10 == 8: // audit topics, read from one host
			r.Name = fmt.Sprintf("%s.audit-%03d", team, i)
			e.Host = fmt.Sprintf("10.0.%d.%d", i/256%256, i%256)
		default: // a transactional producer's id
			r.Type, r.Name = acl.TransactionalID, fmt.Sprintf("%s-tx-%03d", team, i)
			e.Operation = acl.Write
		}
		out = append(out, acl.Binding{Resource: r, Entry: e})
	}
	return out
}

// aclMix counts what bindings hold, as a check of topic meets them.
type aclMix struct {
	literalTopics, prefixedTopics, others, deny int
	onTopic, coveringTopic, everyTopic          int // bindings a check of topic reads
	prefixes, prefixesBefore                    int // prefixed topic patterns; those sorting before topic
}

func mixOf(bindings []acl.Binding, topic string) aclMix {
	var m aclMix
	patterns := map[string]bool{}
	for _, b := range bindings {
		r := b.Resource
		if b.Entry.Permission == acl.Deny {
			m.deny++
		}
		switch {
		case r.Type != acl.Topic:
			m.others++
		case r.Pattern == acl.Prefixed:
			m.prefixedTopics++
			patterns[r.Name] = true
			if strings.HasPrefix(topic, r.Name) {
				m.coveringTopic++
			}
		case r.Name == topic:
			m.literalTopics++
			m.onTopic++
		case r.Name == acl.Wildcard:
			m.literalTopics++
			m.everyTopic++
		default:
			m.literalTopics++
		}
	}
	m.prefixes = len(patterns)
	names := make([]string, 0, len(patterns))
	for p := range patterns {
		names = append(names, p)
	}
	sort.Strings(names)
	m.prefixesBefore = sort.SearchStrings(names, topic)
	return m
}

func (m aclMix) String() string {
	return fmt.Sprintf("%d on literal topics, %d on prefixed topics, %d on groups and transactional ids, %d of them DENY; on the topic itself %d, on prefixes of it %d, on every topic %d; %d prefixes, %d of them sorting before the topic",
		m.literalTopics, m.prefixedTopics, m.others, m.deny, m.onTopic, m.coveringTopic, m.everyTopic, m.prefixes, m.prefixesBefore)
}
