package mongo

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a test starts (the proxy's sessions, the driver's
// monitors) ends with it: Serve's ctx ending must close and wait for every
// session.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
