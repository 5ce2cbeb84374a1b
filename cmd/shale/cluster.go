package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
)

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Cluster information",
		Args:  noCommand,
		RunE:  helpOrUnknown,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newClusterInfoCmd())
	return cmd
}

type clusterInfo struct {
	ClusterID  string          `json:"cluster_id"`
	Controller int32           `json:"controller"`
	Brokers    []clusterBroker `json:"brokers"`
}

type clusterBroker struct {
	ID   int32  `json:"id"`
	Addr string `json:"addr"`
	Rack string `json:"rack,omitempty"`
	// HTTPAddr is the broker's advertised HTTP address (/metrics,
	// /healthz, /readyz), empty when it did not say.
	HTTPAddr string `json:"http_addr,omitempty"`
	// LogDirs are the broker's log directories (DescribeLogDirs), with
	// their filesystem's total and usable bytes (-1: unknown).
	LogDirs []clusterLogDir `json:"log_dirs"`
}

type clusterLogDir struct {
	Dir         string `json:"dir"`
	TotalBytes  int64  `json:"total_bytes"`
	UsableBytes int64  `json:"usable_bytes"`
	// LogBytes is the size of the partition logs in the directory.
	LogBytes int64  `json:"log_bytes"`
	Error    string `json:"error,omitempty"`
}

func newClusterInfoCmd() *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Show the cluster id, the controller and the brokers (address, HTTP address, rack, log dir space)",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				m, err := adm.BrokerMetadata(ctx)
				if err != nil {
					return err
				}
				// Space per broker; a broker that does not answer keeps
				// its row without it.
				dirs, err := adm.DescribeAllLogDirs(ctx, kadm.TopicsSet{})
				var se *kadm.ShardErrors
				if err != nil && !errors.As(err, &se) {
					return err
				}
				// HTTP addresses likewise: a row without one shows "-".
				httpAddrs, _ := brokerHTTPAddrs(ctx, adm, m.Brokers.NodeIDs())
				info := clusterInfo{ClusterID: m.Cluster, Controller: m.Controller, Brokers: []clusterBroker{}}
				for _, b := range m.Brokers {
					cb := clusterBroker{ID: b.NodeID, Addr: net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))), HTTPAddr: httpAddrs[b.NodeID], LogDirs: []clusterLogDir{}}
					if b.Rack != nil {
						cb.Rack = *b.Rack
					}
					for _, d := range dirs[b.NodeID].Sorted() {
						ld := clusterLogDir{Dir: d.Dir, TotalBytes: d.TotalBytes, UsableBytes: d.UsableBytes, LogBytes: d.Size()}
						if d.Err != nil {
							ld.Error = d.Err.Error()
						}
						cb.LogDirs = append(cb.LogDirs, ld)
					}
					info.Brokers = append(info.Brokers, cb)
				}
				if out.json() {
					return writeJSON(cmd, info)
				}
				t := newTable(cmd)
				t.row("CLUSTER", info.ClusterID)
				t.row("CONTROLLER", info.Controller)
				t.flush()
				fmt.Fprintln(cmd.OutOrStdout())
				t = newTable(cmd, "ID", "ADDRESS", "HTTP", "RACK", "LOG-DIR", "DISK-USABLE", "DISK-TOTAL")
				for _, b := range info.Brokers {
					id := strconv.Itoa(int(b.ID))
					if b.ID == info.Controller {
						id += "*"
					}
					dir, usable, total := "-", "-", "-"
					if len(b.LogDirs) > 0 {
						d := b.LogDirs[0]
						dir, usable, total = d.Dir, humanBytes(d.UsableBytes), humanBytes(d.TotalBytes)
					}
					t.row(id, b.Addr, orDash(b.HTTPAddr), orDash(b.Rack), dir, usable, total)
				}
				return t.flush()
			})
		},
	}
	out.register(cmd.Flags())
	return cmd
}
