package chaos

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Link is an in-process TCP link (toxiproxy) in front of an address, on a free
// loopback port, with faults to inject: added latency (a member in another
// site) and a cut (a partition).
type Link struct {
	Addr     string
	upstream string
	proxy    *toxiproxy.Proxy
}

var toxiServer = toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())

// NewLink starts a link to upstream.
func NewLink(name, upstream string) (*Link, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p := toxiproxy.NewProxy(toxiServer, name, addr, upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("link %s -> %s: %w", name, upstream, err)
	}
	return &Link{Addr: addr, upstream: upstream, proxy: p}, nil
}

// SetLatency adds d to every chunk in each direction (so about 2d to a round
// trip); 0 removes it.
func (l *Link) SetLatency(d time.Duration) error {
	for _, stream := range []string{"upstream", "downstream"} {
		name := "latency_" + stream
		_ = l.proxy.Toxics.RemoveToxic(context.Background(), name) // absent is fine
		if d <= 0 {
			continue
		}
		js := fmt.Sprintf(`{"name":%q,"type":"latency","stream":%q,"attributes":{"latency":%d}}`, name, stream, d.Milliseconds())
		if _, err := l.proxy.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			return fmt.Errorf("link to %s: latency: %w", l.upstream, err)
		}
	}
	return nil
}

// Cut closes the link and every connection through it; Restore reopens it.
func (l *Link) Cut() { l.proxy.Stop() }

// Restore reopens a cut link on the same address.
func (l *Link) Restore() error { return l.proxy.Start() }

// Close stops the link.
func (l *Link) Close() { l.proxy.Stop() }
