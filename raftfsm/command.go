package raftfsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Type says which command a log entry holds. Values are part of the log
// format: never renumber one, only add.
type Type uint8

// Command types.
const (
	// TypeBootstrap records a cluster's first primary (epoch 0 → 1).
	TypeBootstrap Type = 1
	// TypeBegin starts a primary change: a new epoch whose primary is the
	// target, in phase switching or failing_over. Writes are held until
	// TypeOpen.
	TypeBegin Type = 2
	// TypeOpen ends a primary change: phase serving, writes flow.
	TypeOpen Type = 3
	// TypeAbort rolls a switchover back: a new epoch whose primary is the one
	// before TypeBegin, phase serving.
	TypeAbort Type = 4
	// TypeMember sets a member's maintenance, fenced and errant state.
	TypeMember Type = 5
	// TypeProxyJoin and TypeProxyLeave track the proxies in the group.
	TypeProxyJoin  Type = 6
	TypeProxyLeave Type = 7
	// TypeNote records a decision that changes no state (a refused failover,
	// a rejoin) in the cluster's history.
	TypeNote Type = 8
	// TypeArbiterJoin and TypeArbiterLeave record arbiters added to or
	// removed from a running group (their admin addresses, which nodes
	// configured before the change do not know).
	TypeArbiterJoin  Type = 9
	TypeArbiterLeave Type = 10
)

var typeNames = map[Type]string{
	TypeBootstrap: "bootstrap", TypeBegin: "begin", TypeOpen: "open", TypeAbort: "abort",
	TypeMember: "member", TypeProxyJoin: "proxy_join", TypeProxyLeave: "proxy_leave", TypeNote: "note",
	TypeArbiterJoin: "arbiter_join", TypeArbiterLeave: "arbiter_leave",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// FlagIgnoreUnknown lets a node that does not know a command's type skip it
// instead of stopping: set it only on commands that old nodes can safely miss
// during a rolling upgrade.
const FlagIgnoreUnknown uint8 = 1 << 0

// formatVersion is the first byte of every entry. A node refuses entries of a
// newer format rather than guess at them.
const formatVersion = 1

// headerLen: version, type, flags.
const headerLen = 3

// Command is one state change. Every field the change depends on travels in
// the command (notably At), so Apply is a pure function of state and log.
type Command struct {
	Type  Type  `json:"-"`
	Flags uint8 `json:"-"`

	Cluster string `json:"cluster,omitempty"`
	// Epoch is the epoch the command was decided at; the command applies only
	// if the cluster is still at it (compare-and-set), so a decision made on a
	// stale view never takes effect.
	Epoch uint64    `json:"epoch"`
	At    time.Time `json:"at"`

	// Begin / Bootstrap: the member that becomes primary; Phase for Begin.
	Primary string `json:"primary,omitempty"`
	Phase   Phase  `json:"phase,omitempty"`
	// Members lists the cluster's members (Bootstrap).
	Members []string `json:"members,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	// Opened (Bootstrap, Open, Abort): where the primary that takes writes
	// from this command on opened. Older leaders leave it out.
	Opened *OpenedAt `json:"opened,omitempty"`

	// Member changes (TypeMember).
	Member      string  `json:"member,omitempty"`
	Maintenance *bool   `json:"maintenance,omitempty"`
	Fenced      *bool   `json:"fenced,omitempty"`
	Errant      *string `json:"errant,omitempty"`

	// Proxy changes.
	Proxy *Proxy `json:"proxy,omitempty"`
	// Arbiter changes (the Site field is unused).
	Arbiter *Proxy `json:"arbiter,omitempty"`
}

// Encode returns the log entry: version, type, flags, then a JSON payload.
// JSON keeps entries readable in a debugger and tolerant of added fields.
func (c *Command) Encode() ([]byte, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.Type, err)
	}
	out := make([]byte, 0, headerLen+len(payload))
	out = append(out, formatVersion, byte(c.Type), c.Flags)
	return append(out, payload...), nil
}

// ErrMalformed: an entry that cannot be a command.
var ErrMalformed = errors.New("malformed command")

// Decode parses a log entry.
func Decode(b []byte) (*Command, error) {
	if len(b) < headerLen {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d", ErrMalformed, len(b), headerLen)
	}
	if b[0] != formatVersion {
		return nil, fmt.Errorf("%w: format version %d, this build knows %d", ErrMalformed, b[0], formatVersion)
	}
	c := &Command{Type: Type(b[1]), Flags: b[2]}
	if err := json.Unmarshal(b[headerLen:], c); err != nil {
		return nil, fmt.Errorf("%w: %s payload: %v", ErrMalformed, c.Type, err)
	}
	return c, nil
}
