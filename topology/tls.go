package topology

import (
	"crypto/tls"
	"net"
)

// MemberTLS is the client TLS config for the member configured at addr (nil
// without TLS): cfg, with the host of addr as the name the member's
// certificate must carry unless cfg names one, as a driver verifies the
// host it was given. addr is the configured address, never a test link's
// the member may be dialled through.
func MemberTLS(cfg *tls.Config, addr string) *tls.Config {
	if cfg == nil {
		return nil
	}
	c := cfg.Clone()
	if c.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			c.ServerName = host
		}
	}
	return c
}
