package proxy

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dbrouter/dbrouter/proxy/proxytest"
	"github.com/dbrouter/dbrouter/router"
)

// routerSentinels are the router's errors, by name.
// TestEveryRouterErrorHasAKind finds every `var ErrX = errors.New(...)` in
// the router's source and requires it here with a kind, so a new routing
// error cannot reach clients as KindOther.
var routerSentinels = map[string]error{
	"ErrNoPrimary":        router.ErrNoPrimary,
	"ErrWritableConflict": router.ErrWritableConflict,
	"ErrNoReplica":        router.ErrNoReplica,
	"ErrNoLease":          router.ErrNoLease,
	"ErrChanging":         router.ErrChanging,
}

func TestEveryRouterErrorHasAKind(t *testing.T) {
	declared, _ := proxytest.DeclaredErrors(t, "../router")
	if len(declared) < len(routerSentinels) {
		t.Fatalf("found only %v: is the source scan broken?", declared)
	}
	for _, name := range declared {
		err, ok := routerSentinels[name]
		if !ok {
			t.Errorf("router.%s is declared but not in this test's routerSentinels: give it a kind (routerKinds) and list it here", name)
			continue
		}
		if KindOf(err) == KindOther {
			t.Errorf("router.%s has no kind in routerKinds", name)
		}
	}
}

// TestKindLabelsAreDistinct: each kind is its own series of
// dbrouter_errors_total; two kinds under one label would merge two errors.
func TestKindLabelsAreDistinct(t *testing.T) {
	seen := map[string]Kind{}
	for _, k := range Kinds() {
		l := k.String()
		if l == "" {
			t.Errorf("kind %d has no label", k)
		}
		if o, ok := seen[l]; ok {
			t.Errorf("kinds %d and %d share the label %q", o, k, l)
		}
		seen[l] = k
	}
	if len(Kinds()) != NumKinds || Kinds()[0] != KindOther {
		t.Errorf("Kinds() = %v, want %d kinds, KindOther first", Kinds(), NumKinds)
	}
	if Kind(200).String() != "other" {
		t.Errorf("an unknown kind is labelled %q, want other", Kind(200).String())
	}
}

func TestKindOfTakesTheVerdictBeforeItsCause(t *testing.T) {
	tooBig := NewError(KindPacketTooLarge, "packet too large")
	for _, tc := range []struct {
		name string
		err  error
		want Kind
	}{
		{"nil", nil, KindOther},
		{"an error of no kind", errors.New("boom"), KindOther},
		{"a sentinel", ErrPoolTimeout, KindPoolTimeout},
		{"a wrapped sentinel", fmt.Errorf("member db1: %w: all 8 connections in use", ErrPoolTimeout), KindPoolTimeout},
		{"a router error", fmt.Errorf("route: %w", router.ErrNoLease), KindNoLease},
		{"a protocol's own sentinel", fmt.Errorf("read: %w", tooBig), KindPacketTooLarge},
		{"a verdict wrapping its cause", fmt.Errorf("%w: %w", fmt.Errorf("member db1: %w", ErrBackendLost), ErrOutcomeUnknown), KindOutcomeUnknown},
		{"a verdict wrapped by its cause", fmt.Errorf("%w: %w", ErrTxnLost, ErrBackendLost), KindTxnLost},
		{"a cause with an error of no kind", fmt.Errorf("%w on db1: %w", ErrSessionState, errors.New("unknown variable")), KindSessionState},
		{"a chain of one-error wraps", fmt.Errorf("a: %w", fmt.Errorf("b: %w", fmt.Errorf("c: %w", ErrBackendDown))), KindBackendDown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := KindOf(tc.err); got != tc.want {
				t.Fatalf("KindOf(%v) = %s, want %s", tc.err, got, tc.want)
			}
		})
	}
}

// TestSentinelsAreDistinct: two sentinels of one kind are still two
// errors (errors.Is compares identity), as with errors.New.
func TestSentinelsAreDistinct(t *testing.T) {
	a, b := NewError(KindBackendLost, "lost"), NewError(KindBackendLost, "lost")
	if errors.Is(a, b) || errors.Is(fmt.Errorf("x: %w", a), ErrBackendLost) {
		t.Fatal("sentinels of one kind compare equal")
	}
	if !errors.Is(fmt.Errorf("x: %w", ErrBackendLost), ErrBackendLost) {
		t.Fatal("a wrapped sentinel is not found")
	}
}
