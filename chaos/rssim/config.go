// Package rssim is the replica-set member simulator: a shim in front of one
// embedded FerretDB that makes it answer as a mongod replica-set member
// (hello, roles, replication by an oplog of post-images, write concern,
// term-based elections, rollback, retryable-write dedupe, replSet* admin
// commands). It is a test double for replica-set behaviour only, used by
// the chaos harness because no mongod exists on the machines the tests run
// on; FerretDB stays the real storage and wire server behind it.
//
// Everything runs in-process (Server), so the logic is unit-testable; the
// harness runs one Server per cmd/ferretmember process so that kill -9 and
// SIGSTOP hit a real process. docs/mongosim.md says what is modelled and
// what is not.
package rssim

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Member is one member of the simulated set as a member sees it.
type Member struct {
	// Name identifies the member in flags, votes and logs.
	Name string
	// Host is the address clients use (hello's hosts, me, primary).
	Host string
	// Dial is the address this member dials to reach it: Host, or a link
	// (toxiproxy) in front of it so that a test can cut the path.
	Dial string
	// Arbiter members vote and hold no data.
	Arbiter bool
}

// Config is one member's view of the set.
type Config struct {
	SetName string
	// Self is the name of this member in Members.
	Self    string
	Members []Member
	Tags    map[string]string
	// ElectionTimeout is how long a secondary waits without hearing from a
	// primary before it calls an election, and how long a primary waits
	// without a majority before it steps down (mongod: 10 s).
	ElectionTimeout time.Duration
	// Heartbeat is the interval between heartbeats to each peer (mongod: 2 s).
	Heartbeat time.Duration
	// Backend is the address of this member's FerretDB.
	Backend string
	// TLS, when set, makes the member listen with TLS only (mongod's
	// net.tls.mode requireTLS): a plaintext client is closed. PeerTLS is
	// then how it reaches the other members (which listen the same way);
	// its ServerName is each peer's Host.
	TLS     *tls.Config
	PeerTLS *tls.Config
}

// DefaultConfig has mongod's timings.
func DefaultConfig() Config {
	return Config{ElectionTimeout: 10 * time.Second, Heartbeat: 2 * time.Second}
}

// Validate names the first field that is wrong.
func (c *Config) Validate() error {
	if c.SetName == "" {
		return errors.New("rs: set name missing")
	}
	if c.ElectionTimeout <= 0 {
		return fmt.Errorf("election-timeout: %v: must be positive", c.ElectionTimeout)
	}
	if c.Heartbeat <= 0 || c.Heartbeat >= c.ElectionTimeout {
		return fmt.Errorf("heartbeat: %v: must be positive and shorter than the election timeout %v", c.Heartbeat, c.ElectionTimeout)
	}
	if _, _, err := net.SplitHostPort(c.Backend); err != nil {
		return fmt.Errorf("backend: %q: %w", c.Backend, err)
	}
	if len(c.Members) == 0 {
		return errors.New("peer: no members")
	}
	if c.TLS != nil && c.PeerTLS == nil {
		return errors.New("tls: the members listen with TLS only, so they need a CA to reach each other (PeerTLS)")
	}
	seen := map[string]bool{}
	self, data := false, 0
	for i, m := range c.Members {
		if m.Name == "" {
			return fmt.Errorf("peer[%d]: name missing", i)
		}
		if seen[m.Name] {
			return fmt.Errorf("peer[%d]: %s named twice", i, m.Name)
		}
		seen[m.Name] = true
		for _, a := range []string{m.Host, m.Dial} {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("peer %s: address %q: %w", m.Name, a, err)
			}
		}
		if m.Name == c.Self {
			self = true
		}
		if !m.Arbiter {
			data++
		}
	}
	if !self {
		return fmt.Errorf("member: %q is not among the peers", c.Self)
	}
	if data == 0 {
		return errors.New("peer: every member is an arbiter")
	}
	return nil
}

// ParsePeer parses a -peer flag value, NAME=HOST:PORT, with an optional
// ",dial=HOST:PORT" (the address this member dials, a link in front of
// HOST:PORT) and ",arbiter".
func ParsePeer(s string) (Member, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return Member{}, fmt.Errorf("peer %q: want NAME=HOST:PORT[,dial=HOST:PORT][,arbiter]", s)
	}
	parts := strings.Split(rest, ",")
	m := Member{Name: name, Host: parts[0]}
	for _, p := range parts[1:] {
		switch {
		case p == "arbiter":
			m.Arbiter = true
		case strings.HasPrefix(p, "dial="):
			m.Dial = strings.TrimPrefix(p, "dial=")
		default:
			return Member{}, fmt.Errorf("peer %q: unknown option %q", s, p)
		}
	}
	if m.Dial == "" {
		m.Dial = m.Host
	}
	if _, _, err := net.SplitHostPort(m.Host); err != nil {
		return Member{}, fmt.Errorf("peer %q: %w", s, err)
	}
	return m, nil
}

// String is the -peer flag value that ParsePeer reads back.
func (m Member) String() string {
	s := m.Name + "=" + m.Host
	if m.Dial != "" && m.Dial != m.Host {
		s += ",dial=" + m.Dial
	}
	if m.Arbiter {
		s += ",arbiter"
	}
	return s
}
