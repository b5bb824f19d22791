package proxy

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a test starts (sessions waiting for a connection) ends
// with it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
