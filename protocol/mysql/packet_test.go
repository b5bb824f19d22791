package mysql

import (
	"bytes"
	"testing"
)

// OK packets as MariaDB 10.11 sends them to a connection that negotiated
// CLIENT_SESSION_TRACK with session_track_system_variables='last_gtid'.
var (
	okPlain     = []byte("\x00\x00\x00\x02\x00\x00\x00")
	okSchema    = []byte("\x00\x00\x00\x02@\x00\x00\x00\x06\x01\x04\x03app")
	okGTID      = []byte("\x00\x01\x00\x02@\x00\x00\x00\x12\x00\x10\tlast_gtid\x050-1-2")
	okInfoGTID  = []byte("\x00\x02\x00\x02@\x00\x00&Records: 2  Duplicates: 0  Warnings: 0\x12\x00\x10\tlast_gtid\x050-1-3")
	okInfoOnly  = []byte("\x00\x00\x00\x02\x00\x00\x00(Rows matched: 1  Changed: 0  Warnings: 0")
	okCommit    = []byte("\x00\x00\x00\x00@\x00\x00\x00\x12\x00\x10\tlast_gtid\x050-1-6")
	okAutocommt = []byte("\x00\x00\x00\x00@\x00\x00\x00\x11\x00\x0f\nautocommit\x03OFF")
	// Several entries: a schema change, another variable, then two
	// last_gtid reports (the last one counts), with 2-byte lengths.
	okMany = func() []byte {
		var st []byte
		st = append(st, 1)
		st = appendLenEncString(st, appendLenEncString(nil, []byte("shop")))
		st = append(st, 0)
		st = appendLenEncString(st, append(appendLenEncString(nil, []byte("autocommit")), appendLenEncString(nil, []byte("ON"))...))
		st = append(st, 0)
		st = appendLenEncString(st, append(appendLenEncString(nil, []byte("last_gtid")), appendLenEncString(nil, []byte("0-1-9"))...))
		st = append(st, 5) // transaction state (MySQL): skipped
		st = appendLenEncString(st, appendLenEncString(nil, bytes.Repeat([]byte{'_'}, 300)))
		st = append(st, 0)
		st = appendLenEncString(st, append(appendLenEncString(nil, []byte("last_gtid")), appendLenEncString(nil, []byte("7-2-100"))...))
		p := []byte("\x00\xfc\x2c\x01\x00\x02@\x01\x00\x02hi")
		return appendLenEncString(p, st)
	}()
)

// TestTrackedOKKeepsInfoDropsStateAndFindsLastGTID: the session-state info
// of an OK packet is found, its last_gtid read, and the packet rewritten
// as a client without session tracking expects it: the info string kept,
// the state and its status flag gone.
func TestTrackedOKKeepsInfoDropsStateAndFindsLastGTID(t *testing.T) {
	for _, tc := range []struct {
		name     string
		p        []byte
		gtid     string // "" none
		stripped []byte
	}{
		{"no state", okPlain, "", okPlain},
		{"schema change only", okSchema, "", []byte("\x00\x00\x00\x02\x00\x00\x00")},
		{"write", okGTID, "0-1-2", []byte("\x00\x01\x00\x02\x00\x00\x00")},
		{"write with info", okInfoGTID, "0-1-3", []byte("\x00\x02\x00\x02\x00\x00\x00&Records: 2  Duplicates: 0  Warnings: 0")},
		{"info only", okInfoOnly, "", okInfoOnly},
		{"commit", okCommit, "0-1-6", []byte("\x00\x00\x00\x00\x00\x00\x00")},
		{"another variable", okAutocommt, "", []byte("\x00\x00\x00\x00\x00\x00\x00")},
		{"many entries, the last last_gtid wins", okMany, "7-2-100", []byte("\x00\xfc\x2c\x01\x00\x02\x00\x01\x00\x02hi")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := bytes.Clone(tc.p)
			o, ok := parseTrackedOK(p)
			if !ok {
				t.Fatalf("parseTrackedOK(%q) failed", p)
			}
			v, found, ok := trackedVar(o.state, "last_gtid")
			if !ok || found != (tc.gtid != "") || string(v) != tc.gtid {
				t.Fatalf("last_gtid = %q, %v, %v; want %q", v, found, ok, tc.gtid)
			}
			n := p[:stripSessionState(p, o)]
			if !bytes.Equal(n, tc.stripped) {
				t.Fatalf("stripped to %q, want %q", n, tc.stripped)
			}
			if o, ok := parseOK(n); !ok || o.status&statusSessionStateChanged != 0 {
				t.Fatalf("stripped packet %q: %+v, %v", n, o, ok)
			}
		})
	}
}

// TestTrackedOKRejectsMalformedPackets: every truncation of a valid
// packet, and lengths that point past the end, are reported, never read
// out of bounds.
func TestTrackedOKRejectsMalformedPackets(t *testing.T) {
	for _, p := range [][]byte{okGTID, okInfoGTID, okMany} {
		for i := 1; i < len(p); i++ {
			cut := bytes.Clone(p[:i])
			o, ok := parseTrackedOK(cut)
			if !ok {
				continue
			}
			// A cut may end exactly after warnings or info: then there is
			// no state to read, and nothing past the end was.
			if o.state != nil || o.infoEnd > len(cut) {
				t.Fatalf("cut at %d of %q parsed with state %q", i, p, o.state)
			}
		}
	}
	for _, tc := range []struct {
		name  string
		p     []byte
		state []byte // for trackedVar; nil: the packet itself is malformed
	}{
		{"empty", []byte{}, nil},
		{"not an OK", []byte("\xff\x01\x02"), nil},
		{"no status", []byte("\x00\x00\x00\x02"), nil},
		{"no warnings", []byte("\x00\x00\x00\x02@\x00"), nil},
		{"info longer than the packet", []byte("\x00\x00\x00\x02\x00\x00\x00\x09abc"), nil},
		{"state longer than the packet", []byte("\x00\x00\x00\x02@\x00\x00\x00\x12\x00\x10\tlast_gtid"), nil},
		{"bytes after the state", append(bytes.Clone(okGTID), 'x'), nil},
		{"0xff length", []byte("\x00\xff\x00\x02\x00\x00\x00"), nil},
		{"entry longer than the state", okGTID, []byte("\x00\x20\tlast_gtid")},
		{"value longer than the entry", okGTID, []byte("\x00\x0b\tlast_gtid\x05")},
		{"bytes after the value", okGTID, []byte("\x00\x11\tlast_gtid\x050-1-2x")},
		{"type without entry", okGTID, []byte("\x00")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.state == nil {
				if _, ok := parseTrackedOK(tc.p); ok {
					t.Fatalf("parseTrackedOK(%q) accepted it", tc.p)
				}
				return
			}
			if _, _, ok := trackedVar(tc.state, "last_gtid"); ok {
				t.Fatalf("trackedVar(%q) accepted it", tc.state)
			}
		})
	}
}

// FuzzTrackedOK: any bytes off a member connection are parsed or
// rejected, never read out of bounds; what parses can be stripped, and the
// result is a well-formed OK packet without the session-state flag, no
// longer than the original and with the same leading fields.
func FuzzTrackedOK(f *testing.F) {
	for _, p := range [][]byte{okPlain, okSchema, okGTID, okInfoGTID, okInfoOnly, okCommit, okAutocommt, okMany} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		orig := bytes.Clone(p)
		o, ok := parseTrackedOK(p)
		if !ok {
			return
		}
		v, found, ok := trackedVar(o.state, "last_gtid")
		if ok && found {
			_, _ = parseGTID(v)
		}
		before, _ := parseOK(orig)
		n := stripSessionState(p, o)
		if n > len(orig) {
			t.Fatalf("stripped to %d bytes from %d", n, len(orig))
		}
		after, ok := parseOK(p[:n])
		if !ok || after.status&statusSessionStateChanged != 0 {
			t.Fatalf("stripped %q to %q: %+v %v", orig, p[:n], after, ok)
		}
		if after.affected != before.affected || after.lastInsertID != before.lastInsertID || after.status != before.status&^statusSessionStateChanged {
			t.Fatalf("stripping %q changed the leading fields: %+v, was %+v", orig, after, before)
		}
	})
}
