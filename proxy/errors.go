package proxy

import "github.com/dbrouter/dbrouter/router"

// Kind is what went wrong inside the proxy, as opposed to an error of a
// member, which reaches the client unchanged. Every protocol maps every
// kind to its own codes in one table (protocol/mysql: a MySQL error code
// and SQLSTATE), with a test that fails when a kind is left unmapped; the
// kind is also the kind label of dbrouter_errors_total.
//
// The order is the precedence: an error wrapping several kinds is of the
// first, so the verdicts about a statement's outcome (outcome unknown,
// transaction lost) come before the causes they wrap.
type Kind uint8

const (
	// KindOther is an error no kind covers: a bug (the protocols' table
	// tests list every sentinel), told to the client as a lost member
	// connection.
	KindOther Kind = iota
	// KindOutcomeUnknown: a statement that may have changed data ended
	// without an answer the proxy may pass on (ErrOutcomeUnknown).
	KindOutcomeUnknown
	// KindTxnLost: the session's open transaction was rolled back with its
	// connection (ErrTxnLost).
	KindTxnLost
	KindNoPrimary        // router.ErrNoPrimary
	KindWritableConflict // router.ErrWritableConflict
	KindNoReplica        // router.ErrNoReplica
	KindNoLease          // router.ErrNoLease
	KindChanging         // router.ErrChanging
	KindBackendDown      // ErrBackendDown
	KindBackendLost      // ErrBackendLost
	KindPoolTimeout      // ErrPoolTimeout
	KindSessionState     // ErrSessionState
	// The client broke its protocol: a message over the size limit, a
	// login the proxy cannot parse, a message out of sequence. Each
	// protocol declares its own sentinels of these kinds (NewError).
	KindPacketTooLarge
	KindMalformedHandshake
	KindPacketOutOfOrder
	numKinds
)

// NumKinds is the number of kinds: protocols size their tables with it.
const NumKinds = int(numKinds)

// kindLabels are the kind label values of dbrouter_errors_total
// (docs/admin.md lists them): they never change.
var kindLabels = [numKinds]string{
	KindOther:              "other",
	KindOutcomeUnknown:     "outcome_unknown",
	KindTxnLost:            "transaction_lost",
	KindNoPrimary:          "no_primary",
	KindWritableConflict:   "writable_conflict",
	KindNoReplica:          "no_replica",
	KindNoLease:            "no_lease",
	KindChanging:           "changing",
	KindBackendDown:        "backend_down",
	KindBackendLost:        "backend_lost",
	KindPoolTimeout:        "pool_timeout",
	KindSessionState:       "session_state",
	KindPacketTooLarge:     "packet_too_large",
	KindMalformedHandshake: "malformed_handshake",
	KindPacketOutOfOrder:   "packet_out_of_order",
}

// String is the kind's label in dbrouter_errors_total.
func (k Kind) String() string {
	if k < numKinds {
		return kindLabels[k]
	}
	return kindLabels[KindOther]
}

// Kinds lists every kind, KindOther first.
func Kinds() []Kind {
	out := make([]Kind, numKinds)
	for i := range out {
		out[i] = Kind(i)
	}
	return out
}

// The proxy's own sentinels of the kinds every protocol shares. Callers
// wrap them with what was being done (fmt.Errorf("member %s: %w: ...")).
var (
	ErrBackendDown  = NewError(KindBackendDown, "member unreachable")
	ErrBackendLost  = NewError(KindBackendLost, "member connection lost")
	ErrPoolTimeout  = NewError(KindPoolTimeout, "no free backend connection")
	ErrSessionState = NewError(KindSessionState, "session state replay failed")
	// ErrOutcomeUnknown and ErrTxnLost are verdicts about a statement,
	// wrapped with the reason (see Loss).
	ErrOutcomeUnknown = NewError(KindOutcomeUnknown, "outcome unknown")
	ErrTxnLost        = NewError(KindTxnLost, "transaction lost")
)

// kindError is a sentinel that knows its kind, so a protocol's own
// sentinels (a packet too large...) need no second table to be counted
// and answered. Compared by identity, as errors.New's are.
type kindError struct {
	kind Kind
	text string
}

func (e *kindError) Error() string { return e.text }

// NewError returns a sentinel error of kind k, distinct from every other
// (errors.Is compares identity).
func NewError(k Kind, text string) error {
	return &kindError{kind: k, text: text}
}

// routerKinds gives the router's sentinels their kinds: the router
// decides where a statement goes and knows nothing of proxies.
var routerKinds = [...]struct {
	err  error
	kind Kind
}{
	{router.ErrNoPrimary, KindNoPrimary},
	{router.ErrWritableConflict, KindWritableConflict},
	{router.ErrNoReplica, KindNoReplica},
	{router.ErrNoLease, KindNoLease},
	{router.ErrChanging, KindChanging},
}

// KindOf is the kind of err: of the sentinels err wraps (through Unwrap,
// single or multiple), the one whose kind takes precedence; KindOther for
// nil or an error that wraps none.
func KindOf(err error) Kind {
	if err == nil {
		return KindOther
	}
	k := ownKind(err)
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		k = first(k, KindOf(u.Unwrap()))
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			k = first(k, KindOf(e))
		}
	}
	return k
}

// ownKind is the kind of err itself, not of what it wraps.
func ownKind(err error) Kind {
	if ke, ok := err.(*kindError); ok {
		return ke.kind
	}
	for _, r := range routerKinds {
		if err == r.err {
			return r.kind
		}
	}
	return KindOther
}

// first is the kind of a and b that takes precedence (the lower; any kind
// before KindOther).
func first(a, b Kind) Kind {
	if a == KindOther || b != KindOther && b < a {
		return b
	}
	return a
}
