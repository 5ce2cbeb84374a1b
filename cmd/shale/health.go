package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// newHealthCmd is `shale health`: the probe of container health checks
// (the images have no shell or curl). It asks a broker's HTTP address for
// /readyz, or /healthz with --live, and exits 0 only on 200.
func newHealthCmd() *cobra.Command {
	var (
		addr    string
		live    bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Check that a broker is ready (/readyz) or alive (/healthz); exit 0 when it is",
		Long: `Asks the broker's HTTP address for /readyz (serving, metadata loaded), or for
/healthz (the process answers) with --live, and exits 0 only on 200 OK. It
is the health check of the container images, which have no shell or curl.
--http-addr reads SHALE_HTTP_ADDR like the broker's own flag, so inside the
broker's container it finds the broker with no flag; an unspecified host
(0.0.0.0, ::) means this machine.`,
		Args: exactArgs(0, "nothing"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd.Flags()); err != nil {
				return err
			}
			path := "/readyz"
			if live {
				path = "/healthz"
			}
			return checkHealth(cmd.Context(), addr, path, timeout)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&addr, "http-addr", "127.0.0.1:9644", "the broker's HTTP address (its --http-addr)")
	fs.BoolVar(&live, "live", false, "ask /healthz (alive) instead of /readyz (ready)")
	fs.DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the answer")
	return cmd
}

func checkHealth(ctx context.Context, addr, path string, timeout time.Duration) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--http-addr %q: %w", addr, err)
	}
	if host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(orBackground(ctx), timeout)
	defer cancel()
	target := "http://" + net.JoinHostPort(host, port) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%s: %w", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		msg := strings.Join(strings.Fields(string(body)), " ")
		return fmt.Errorf("%s: %s %s", target, resp.Status, msg)
	}
	return nil
}
