package rssim

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

type cmdKind int

const (
	kindWrite   cmdKind = iota // anything not known to be something else
	kindRead                   // needs a primary or a secondary read preference
	kindCursor                 // continues a cursor: wherever it was opened
	kindNeutral                // no data: any member, arbiters too
)

var kinds = map[string]cmdKind{
	"find": kindRead, "aggregate": kindRead, "count": kindRead, "distinct": kindRead, "listCollections": kindRead,
	"listIndexes": kindRead, "listDatabases": kindRead, "dbStats": kindRead, "collStats": kindRead, "dataSize": kindRead,
	"explain": kindRead, "validate": kindRead,
	"getMore": kindCursor, "killCursors": kindCursor,
	"ping": kindNeutral, "buildInfo": kindNeutral, "buildinfo": kindNeutral, "getParameter": kindNeutral,
	"serverStatus": kindNeutral, "connectionStatus": kindNeutral, "whatsmyuri": kindNeutral, "getCmdLineOpts": kindNeutral,
	"hostInfo": kindNeutral, "listCommands": kindNeutral, "getLog": kindNeutral, "saslStart": kindNeutral,
	"saslContinue": kindNeutral, "logout": kindNeutral, "getFreeMonitoringStatus": kindNeutral, "currentOp": kindNeutral,
}

// classify says what a command is. Unknown means write: sending a read to
// the write path costs a no-op entry, the reverse would skip replication.
func classify(name string, doc bson.Raw) cmdKind {
	k, ok := kinds[name]
	if !ok {
		return kindWrite
	}
	if name == "aggregate" {
		arr, _ := doc.Lookup("pipeline").ArrayOK()
		vals, _ := arr.Values()
		for _, v := range vals {
			if d, ok := v.DocumentOK(); ok {
				if _, err := d.LookupErr("$out"); err == nil {
					return kindWrite
				}
				if _, err := d.LookupErr("$merge"); err == nil {
					return kindWrite
				}
			}
		}
	}
	return k
}

// secondaryOk reports whether a read may run on a secondary: a
// $readPreference other than primary.
func secondaryOk(doc bson.Raw) bool {
	rp, ok := doc.Lookup("$readPreference").DocumentOK()
	if !ok {
		return false
	}
	mode, _ := rp.Lookup("mode").StringValueOK()
	return mode != "" && mode != "primary"
}

var okReply = mustMarshal(bson.D{{Key: "ok", Value: 1.0}})

// errNoTransactions is the reply to any transaction: FerretDB would run
// its statements one by one, not atomically.
var errNoTransactions = errf(codeIllegalOperation, "the replica-set member simulator (chaos/rssim) does not support transactions: FerretDB would run their statements one by one, not atomically")

// handle answers a command the shim owns, or says to pass it through to
// FerretDB (pass true).
func (n *node) handle(ctx context.Context, connID int64, name, db string, doc bson.Raw) (reply bson.Raw, pass bool) {
	switch name {
	case "hello", "isMaster", "ismaster":
		return n.hello(doc, name != "hello", connID), false
	case "endSessions", "killSessions", "refreshSessions", "killAllSessions", "killAllSessionsByPattern":
		return okReply, false // FerretDB has no sessions to end
	case "commitTransaction", "abortTransaction":
		return errNoTransactions.reply(), false
	case "replSetGetStatus":
		return n.status(), false
	case "replSetGetConfig":
		return n.config(), false
	case "replSetStepUp":
		return n.stepUp(ctx, doc), false
	case "replSetStepDown":
		return n.stepDown(ctx, doc), false
	case "replSetFreeze":
		return n.freeze(doc), false
	case "replSetInitiate", "replSetReconfig":
		return errf(23, "the member simulator's set is configured by flags and already initialized").reply(), false
	case "rssimHeartbeat":
		return n.handleHeartbeat(ctx, doc), false
	case "rssimVote":
		return n.handleVote(ctx, doc), false
	case "rssimFetch":
		return n.handleFetch(ctx, doc), false
	case "rssimControl":
		return n.control(doc), false
	}
	if st, _ := doc.Lookup("startTransaction").BooleanOK(); st {
		return errNoTransactions.reply(), false
	}
	if ac, ok := doc.Lookup("autocommit").BooleanOK(); ok && !ac {
		return errNoTransactions.reply(), false
	}
	kind := classify(name, doc)
	n.mu.Lock()
	st := n.state
	n.mu.Unlock()
	switch kind {
	case kindNeutral:
		return nil, true
	case kindCursor, kindRead:
		if st == stateArbiter {
			return errf(codeNotPrimaryOrSecondary, "node is not in primary or recovering state").reply(), false
		}
		if kind == kindRead && st != statePrimary && !secondaryOk(doc) {
			return errf(codeNotPrimaryNoSecondaryOk, "not primary and secondaryOk=false").reply(), false
		}
		return nil, true
	}
	if st != statePrimary {
		return errf(codeNotWritablePrimary, "not primary").reply(), false
	}
	return n.write(ctx, name, db, doc), false
}

// hello is mongod's hello for a replica-set member.
func (n *node) hello(req bson.Raw, legacy bool, connID int64) bson.Raw {
	n.mu.Lock()
	st, term, last, maj, prim := n.state, n.term, n.lastLocked(), n.majorityLocked(), n.primaryName
	if st != statePrimary && time.Since(n.heardPrimary) > n.cfg.ElectionTimeout {
		prim = "" // not heard of for an election timeout: mongod marks it down
	}
	n.mu.Unlock()
	var hosts, arbiters bson.A
	for _, m := range n.cfg.Members {
		if m.Arbiter {
			arbiters = append(arbiters, m.Host)
		} else {
			hosts = append(hosts, m.Host)
		}
	}
	writable := st == statePrimary
	d := bson.D{}
	if legacy {
		d = append(d, bson.E{Key: "ismaster", Value: writable})
	} else {
		d = append(d, bson.E{Key: "isWritablePrimary", Value: writable})
	}
	d = append(d, bson.E{Key: "hosts", Value: hosts})
	if len(arbiters) > 0 {
		d = append(d, bson.E{Key: "arbiters", Value: arbiters})
	}
	d = append(d, bson.E{Key: "setName", Value: n.cfg.SetName}, bson.E{Key: "setVersion", Value: int32(1)},
		bson.E{Key: "secondary", Value: st == stateSecondary})
	if st == stateArbiter {
		d = append(d, bson.E{Key: "arbiterOnly", Value: true})
	}
	if prim != "" {
		d = append(d, bson.E{Key: "primary", Value: n.member(prim).Host})
	}
	d = append(d, bson.E{Key: "me", Value: n.self.Host})
	if writable {
		d = append(d, bson.E{Key: "electionId", Value: electionID(term)})
	}
	if st != stateArbiter {
		d = append(d, bson.E{Key: "lastWrite", Value: bson.D{
			{Key: "opTime", Value: bson.D{{Key: "ts", Value: last.TS}, {Key: "t", Value: last.Term}}},
			{Key: "lastWriteDate", Value: bson.NewDateTimeFromTime(dateOf(last))},
			{Key: "majorityOpTime", Value: bson.D{{Key: "ts", Value: maj.TS}, {Key: "t", Value: maj.Term}}},
			{Key: "majorityWriteDate", Value: bson.NewDateTimeFromTime(dateOf(maj))},
		}})
	}
	if len(n.cfg.Tags) > 0 {
		d = append(d, bson.E{Key: "tags", Value: n.cfg.Tags})
	}
	if h, _ := req.Lookup("helloOk").BooleanOK(); h {
		d = append(d, bson.E{Key: "helloOk", Value: true})
	}
	d = append(d,
		bson.E{Key: "maxBsonObjectSize", Value: int32(16777216)}, bson.E{Key: "maxMessageSizeBytes", Value: int32(48000000)},
		bson.E{Key: "maxWriteBatchSize", Value: int32(100000)}, bson.E{Key: "localTime", Value: bson.NewDateTimeFromTime(time.Now())},
		bson.E{Key: "logicalSessionTimeoutMinutes", Value: int32(30)}, bson.E{Key: "connectionId", Value: connID},
		bson.E{Key: "minWireVersion", Value: n.wireMin}, bson.E{Key: "maxWireVersion", Value: n.wireMax},
		bson.E{Key: "readOnly", Value: false}, bson.E{Key: "ok", Value: 1.0})
	return mustMarshal(d)
}

// dateOf is the wall time of a position (the epoch for none).
func dateOf(o opTime) time.Time {
	if o.Wall.IsZero() {
		return time.Unix(0, 0)
	}
	return o.Wall
}

func optimeDoc(o opTime) bson.D {
	return bson.D{{Key: "ts", Value: o.TS}, {Key: "t", Value: o.Term}}
}

// status is replSetGetStatus, mongod's shape plus rollbacks.
func (n *node) status() bson.Raw {
	n.mu.Lock()
	defer n.mu.Unlock()
	last, maj := n.lastLocked(), n.majorityLocked()
	var members bson.A
	for i, m := range n.cfg.Members {
		md := bson.D{{Key: "_id", Value: int32(i)}, {Key: "name", Value: m.Host}}
		if m.Name == n.self.Name {
			md = append(md, bson.E{Key: "health", Value: 1.0}, bson.E{Key: "state", Value: stateCode(n.state.String())},
				bson.E{Key: "stateStr", Value: n.state.String()}, bson.E{Key: "uptime", Value: int64(time.Since(n.started).Seconds())})
			if n.state != stateArbiter {
				md = append(md, bson.E{Key: "optime", Value: optimeDoc(last)}, bson.E{Key: "optimeDate", Value: bson.NewDateTimeFromTime(dateOf(last))})
			}
			src := ""
			if n.state == stateSecondary && n.primaryName != "" {
				src = n.member(n.primaryName).Host
			}
			md = append(md, bson.E{Key: "syncSourceHost", Value: src}, bson.E{Key: "self", Value: true})
			if n.state == statePrimary {
				md = append(md, bson.E{Key: "electionId", Value: electionID(n.term)})
			}
		} else {
			ps := n.peerInfo[m.Name]
			health, stateStr := 0.0, "(not reachable/healthy)"
			if ps.healthy {
				health, stateStr = 1.0, ps.state
			}
			md = append(md, bson.E{Key: "health", Value: health}, bson.E{Key: "state", Value: stateCode(stateStr)},
				bson.E{Key: "stateStr", Value: stateStr})
			if !m.Arbiter {
				md = append(md, bson.E{Key: "optime", Value: optimeDoc(ps.last)}, bson.E{Key: "optimeDate", Value: bson.NewDateTimeFromTime(dateOf(ps.last))})
			}
			md = append(md, bson.E{Key: "lastHeartbeat", Value: bson.NewDateTimeFromTime(ps.lastHeartbeat)},
				bson.E{Key: "lastHeartbeatRecv", Value: bson.NewDateTimeFromTime(ps.lastHeard)},
				bson.E{Key: "pingMs", Value: ps.ping.Milliseconds()}, bson.E{Key: "syncSourceHost", Value: ""}, bson.E{Key: "self", Value: false})
		}
		members = append(members, md)
	}
	return mustMarshal(bson.D{{Key: "set", Value: n.cfg.SetName}, {Key: "date", Value: bson.NewDateTimeFromTime(time.Now())},
		{Key: "myState", Value: stateCode(n.state.String())}, {Key: "term", Value: n.term},
		{Key: "heartbeatIntervalMillis", Value: n.cfg.Heartbeat.Milliseconds()},
		{Key: "optimes", Value: bson.D{{Key: "lastCommittedOpTime", Value: optimeDoc(maj)}, {Key: "appliedOpTime", Value: optimeDoc(last)},
			{Key: "durableOpTime", Value: optimeDoc(last)}}},
		{Key: "members", Value: members}, {Key: "rollbacks", Value: n.rollbacks}, {Key: "ok", Value: 1.0}})
}

// config is replSetGetConfig.
func (n *node) config() bson.Raw {
	n.mu.Lock()
	term := n.term
	n.mu.Unlock()
	var members bson.A
	for i, m := range n.cfg.Members {
		prio := 1.0
		if m.Arbiter {
			prio = 0
		}
		md := bson.D{{Key: "_id", Value: int32(i)}, {Key: "host", Value: m.Host}, {Key: "arbiterOnly", Value: m.Arbiter},
			{Key: "buildIndexes", Value: true}, {Key: "hidden", Value: false}, {Key: "priority", Value: prio},
			{Key: "tags", Value: bson.D{}}, {Key: "secondaryDelaySecs", Value: int64(0)}, {Key: "votes", Value: int32(1)}}
		if m.Name == n.self.Name && len(n.cfg.Tags) > 0 {
			md[6].Value = n.cfg.Tags
		}
		members = append(members, md)
	}
	return mustMarshal(bson.D{{Key: "config", Value: bson.D{{Key: "_id", Value: n.cfg.SetName}, {Key: "version", Value: int32(1)},
		{Key: "term", Value: term}, {Key: "protocolVersion", Value: int64(1)}, {Key: "members", Value: members},
		{Key: "settings", Value: bson.D{{Key: "electionTimeoutMillis", Value: n.cfg.ElectionTimeout.Milliseconds()},
			{Key: "heartbeatIntervalMillis", Value: n.cfg.Heartbeat.Milliseconds()}}}}}, {Key: "ok", Value: 1.0}})
}

// stepUp is replSetStepUp: an election now, refused when this member is
// behind the majority point it knows (it could not win, and should not).
func (n *node) stepUp(ctx context.Context, doc bson.Raw) bson.Raw {
	n.mu.Lock()
	st, last, maj := n.state, n.lastLocked(), n.commit
	n.mu.Unlock()
	switch st {
	case statePrimary:
		return mustMarshal(bson.D{{Key: "ok", Value: 1.0}, {Key: "info", Value: "already primary"}})
	case stateArbiter:
		return errf(codeCommandFailed, "Election failed: an arbiter cannot become primary").reply()
	}
	if last.less(maj) {
		return errf(codeCommandFailed, "Election failed: not caught up: my last applied optime (%d, %d) is behind the majority optime (%d, %d)",
			last.Term, last.Index, maj.Term, maj.Index).reply()
	}
	skip, _ := doc.Lookup("skipDryRun").BooleanOK()
	if err := n.runElection(ctx, true, skip); err != nil {
		return errf(codeCommandFailed, "Election failed: %v", err).reply()
	}
	return okReply
}

// stepDown is replSetStepDown: writes stop, an electable secondary gets
// secondaryCatchUpPeriodSecs to catch up, then the primary steps down,
// not electable for stepDownSecs, and hands the election to that
// secondary (as mongod does since 4.2).
func (n *node) stepDown(ctx context.Context, doc bson.Raw) bson.Raw {
	secs := int64(60)
	if v, ok := doc.Lookup("replSetStepDown").AsInt64OK(); ok && v > 0 {
		secs = v
	}
	if v, ok := doc.Lookup("stepDownSecs").AsInt64OK(); ok {
		secs = v
	}
	catchUp := min(int64(10), secs)
	if v, ok := doc.Lookup("secondaryCatchUpPeriodSecs").AsInt64OK(); ok {
		catchUp = v
	}
	force, _ := doc.Lookup("force").BooleanOK()
	if catchUp > secs {
		return errf(codeBadValue, "stepdown period must be longer than secondaryCatchUpPeriodSecs").reply()
	}
	n.writeMu.Lock() // no write runs while the secondaries catch up
	defer n.writeMu.Unlock()
	deadline := time.Now().Add(time.Duration(catchUp) * time.Second)
	target := ""
	for {
		n.mu.Lock()
		if n.state != statePrimary {
			n.mu.Unlock()
			return errf(codeNotWritablePrimary, "not primary so can't step down").reply()
		}
		last := n.lastLocked().Index
		for name, i := range n.progress {
			if i >= last && !n.member(name).Arbiter && n.peerInfo[name].healthy {
				target = name
			}
		}
		ch := n.changed
		n.mu.Unlock()
		if target != "" || !time.Now().Before(deadline) {
			break
		}
		wait(ctx, ch, time.Until(deadline))
	}
	if target == "" && !force {
		return errf(codeExceededTimeLimit, "No electable secondaries caught up as of %s. Please use the replSetStepDown command with the argument {force: true} to force node to step down.",
			time.Now().UTC().Format(time.RFC3339)).reply()
	}
	n.mu.Lock()
	n.stepDownLocked("replSetStepDown", "target", target)
	n.frozenUntil = time.Now().Add(time.Duration(secs) * time.Second)
	n.mu.Unlock()
	if target != "" {
		c := n.peers[target]
		n.wg.Go(func() {
			hctx, cancel := context.WithTimeout(n.ctx, n.cfg.ElectionTimeout)
			defer cancel()
			if _, err := c.run(hctx, "admin", bson.D{{Key: "replSetStepUp", Value: 1}, {Key: "skipDryRun", Value: true}}); err != nil {
				n.log.Info("election handoff failed", "target", target, "err", err)
			}
		})
	}
	return okReply
}

// freeze is replSetFreeze: no elections on this member for seconds.
func (n *node) freeze(doc bson.Raw) bson.Raw {
	secs, ok := doc.Lookup("replSetFreeze").AsInt64OK()
	if !ok || secs < 0 {
		return errf(codeBadValue, "replSetFreeze: want a number of seconds").reply()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	switch n.state {
	case statePrimary:
		return errf(codeNotSecondary, "cannot freeze node when primary or running for election. state: Primary").reply()
	case stateArbiter:
		return errf(codeNotSecondary, "arbiters are never electable").reply()
	}
	if secs == 0 {
		n.frozenUntil = time.Time{}
		n.timer = time.Now()
		return mustMarshal(bson.D{{Key: "info", Value: "unfreezing"}, {Key: "ok", Value: 1.0}})
	}
	n.frozenUntil = time.Now().Add(time.Duration(secs) * time.Second)
	return okReply
}

// control is rssimControl, the test's handle on replication:
// pauseReplication stops pulling (and so acknowledging); applyDelayMS
// applies each entry no sooner than that long after it was written.
//
// Once a pause is answered the member's position no longer moves: an
// apply under way has finished (writeMu) and what was fetched but not
// applied is dropped (fetched again after the resume).
func (n *node) control(doc bson.Raw) bson.Raw {
	p, pause := doc.Lookup("pauseReplication").BooleanOK()
	if pause && p {
		n.writeMu.Lock()
		defer n.writeMu.Unlock()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if pause {
		n.paused = p
		if p {
			n.pending = nil
		}
	}
	if v, err := doc.LookupErr("applyDelayMS"); err == nil {
		ms, ok := v.AsInt64OK()
		if !ok || ms < 0 {
			return errf(codeBadValue, "applyDelayMS: want a number of milliseconds ≥ 0, got %s", v).reply()
		}
		n.applyDelay = time.Duration(ms) * time.Millisecond
	}
	n.notifyLocked()
	return mustMarshal(bson.D{{Key: "pauseReplication", Value: n.paused}, {Key: "applyDelayMS", Value: n.applyDelay.Milliseconds()},
		{Key: "state", Value: n.state.String()}, {Key: "term", Value: n.term}, {Key: "lastIndex", Value: n.lastLocked().Index},
		{Key: "rollbacks", Value: n.rollbacks}, {Key: "ok", Value: 1.0}})
}
