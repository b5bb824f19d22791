package mongo

import (
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// FuzzParseHello: a member's reply is input from the network; parsing any
// bytes must return a member or an error, never panic.
func FuzzParseHello(f *testing.F) {
	for _, h := range []hello{
		{writable: true},
		{writable: true, set: "rs", setVersion: 3, electionID: &oid1, lastWrite: time.Unix(1700000000, 0), tags: map[string]string{"dc": "a"}},
		{secondary: true, set: "rs", lastWrite: time.Unix(1700000000, 0)},
		{arbiter: true, set: "rs"},
	} {
		f.Add([]byte(h.raw()))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseHello(bson.Raw(b))
		if err != nil {
			return
		}
		if _, ok := DetailOf(m); !ok {
			t.Fatal("parsed member without a detail")
		}
	})
}
