// Package mongo is the MongoDB flavour of topology: a Prober that runs hello
// on every member of a replica set and the Elector that picks the set's
// primary from what the members report, by the rule drivers follow (the
// server discovery and monitoring spec). What hello reports beyond the
// neutral topology.Member fields is kept in a Detail this package owns.
package mongo

import (
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/dbrouter/dbrouter/topology"
)

// Detail is what hello reported of a member beyond topology.Member's
// neutral fields; it is topology.Member.Detail for this flavour. It is
// never modified once stored in a Member: a probe builds a fresh one.
type Detail struct {
	// SetName is the replica set the member says it belongs to; "" for a
	// standalone.
	SetName string `json:"set_name,omitempty"`
	// SetVersion is the set's configuration version (nil: not reported).
	SetVersion *int64 `json:"set_version,omitempty"`
	// ElectionID is reported by a primary only: the election that made it
	// primary (nil: not reported).
	ElectionID *bson.ObjectID `json:"election_id,omitempty"`
	// Writable, Secondary, Arbiter and Hidden are hello's
	// isWritablePrimary, secondary, arbiterOnly and hidden.
	Writable  bool `json:"writable"`
	Secondary bool `json:"secondary,omitempty"`
	Arbiter   bool `json:"arbiter,omitempty"`
	Hidden    bool `json:"hidden,omitempty"`
	// LastWrite is the member's last applied write (nil: not reported,
	// as by a standalone or an arbiter).
	LastWrite *LastWrite `json:"last_write,omitempty"`
	// Primary and Me are who the member thinks the primary is and its own
	// address in the set's configuration; Hosts, Passives and Arbiters are
	// the set's members as this member reports them.
	Primary  string            `json:"primary,omitempty"`
	Me       string            `json:"me,omitempty"`
	Hosts    []string          `json:"hosts,omitempty"`
	Passives []string          `json:"passives,omitempty"`
	Arbiters []string          `json:"arbiters,omitempty"`
	Tags     map[string]string `json:"tags,omitempty"`
	// MaxWireVersion is the newest wire protocol the member speaks.
	MaxWireVersion int32 `json:"max_wire_version,omitempty"`
	// Observed is when, by the monitor's clock, the member answered the
	// hello this Detail comes from: the server selection spec's
	// lastUpdateTime, which maxStalenessSeconds is measured with.
	Observed time.Time `json:"observed"`
	// Heartbeat is how often the monitor probes the member (its probe
	// interval): the spec's heartbeatFrequencyMS, which bounds how stale
	// an observation may be and so enters the staleness estimate.
	Heartbeat time.Duration `json:"-"`
	// Note says why the Elector did not count the member (another set, a
	// standalone beside a set, a stale primary); set by Elect on a copy.
	Note string `json:"note,omitempty"`
}

// LastWrite is hello's lastWrite: the optime and wall-clock date of the
// member's last applied write.
type LastWrite struct {
	OpTime bson.Timestamp `json:"op_time"`
	Term   int64          `json:"term"`
	Date   time.Time      `json:"date"`
}

// DetailOf returns the Mongo detail of a member this flavour observed.
func DetailOf(m topology.Member) (*Detail, bool) {
	d, ok := m.Detail.(*Detail)
	return d, ok && d != nil
}

// helloReply is the part of a hello reply the prober reads. Unknown fields
// are ignored: servers add fields in every release.
type helloReply struct {
	OK                float64           `bson:"ok"`
	IsWritablePrimary bool              `bson:"isWritablePrimary"`
	Secondary         bool              `bson:"secondary"`
	ArbiterOnly       bool              `bson:"arbiterOnly"`
	Hidden            bool              `bson:"hidden"`
	SetName           string            `bson:"setName"`
	SetVersion        *int64            `bson:"setVersion"`
	ElectionID        *bson.ObjectID    `bson:"electionId"`
	Primary           string            `bson:"primary"`
	Me                string            `bson:"me"`
	Hosts             []string          `bson:"hosts"`
	Passives          []string          `bson:"passives"`
	Arbiters          []string          `bson:"arbiters"`
	Tags              map[string]string `bson:"tags"`
	MaxWireVersion    int32             `bson:"maxWireVersion"`
	LastWrite         *struct {
		OpTime struct {
			TS bson.Timestamp `bson:"ts"`
			T  int64          `bson:"t"`
		} `bson:"opTime"`
		LastWriteDate time.Time `bson:"lastWriteDate"`
	} `bson:"lastWrite"`
}

// parseHello turns a hello reply into the member it describes: the
// neutral fields the prober fills (ReadOnly, replication, Lag unknown
// until Elect knows the primary) and the Detail.
func parseHello(raw bson.Raw) (topology.Member, error) {
	var h helloReply
	if err := bson.Unmarshal(raw, &h); err != nil {
		return topology.Member{}, fmt.Errorf("parse hello reply: %w", err)
	}
	if h.OK != 1 {
		return topology.Member{}, fmt.Errorf("hello reply not ok: %s", raw)
	}
	d := &Detail{
		SetName: h.SetName, SetVersion: h.SetVersion, ElectionID: h.ElectionID,
		Writable: h.IsWritablePrimary, Secondary: h.Secondary, Arbiter: h.ArbiterOnly, Hidden: h.Hidden,
		Primary: h.Primary, Me: h.Me, Hosts: h.Hosts, Passives: h.Passives, Arbiters: h.Arbiters, Tags: h.Tags,
		MaxWireVersion: h.MaxWireVersion,
	}
	if h.LastWrite != nil {
		d.LastWrite = &LastWrite{OpTime: h.LastWrite.OpTime.TS, Term: h.LastWrite.OpTime.T, Date: h.LastWrite.LastWriteDate}
	}
	m := topology.Member{ReadOnly: !h.IsWritablePrimary, Lag: -1, SourceContact: -1, Detail: d}
	// A secondary replicates from the set; the neutral flags stand for
	// "receives and applies", which hello does not break down. A hidden
	// member replicates too, but the spec makes it RSOther, never chosen
	// for reads (operators hide members to keep traffic off them), so it
	// is left without the flags that make a replica eligible.
	if h.Secondary && !h.Hidden && !h.IsWritablePrimary {
		m.IORunning, m.SQLRunning = true, true
		m.Source = h.Primary
	}
	return m, nil
}
