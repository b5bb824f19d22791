package mongo

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
)

// Actions runs the control plane's steps on replica-set members, one
// member at a time, each over a direct connection (the driver never looks
// for the set's primary: the arbiter says which member it means). It is
// the Mongo arbiter's actuator (arbiter.MongoActuator). Every step is safe
// to repeat: hello and replSetGetStatus only read, and replSetStepUp on a
// member that already is primary answers ok.
type Actions struct {
	// User and Password, when User is set, authenticate (SCRAM on
	// AuthSource, default admin): the account needs clusterManager.
	User, Password, AuthSource string
	// Timeout bounds connecting and each command (default 5 s); a step-up
	// gets at least 10 s, the longest an election takes.
	Timeout time.Duration
	// Dial maps a member's address to the one to connect to (test links);
	// nil: the address itself.
	Dial func(addr string) string
	// TLS, when set, is the client side of every connection to a member
	// (config mongodb.member_tls), as the monitor's.
	TLS *tls.Config

	mu      sync.Mutex
	clients map[string]*mongodrv.Client
}

func (a *Actions) timeout() time.Duration {
	if a.Timeout <= 0 {
		return 5 * time.Second
	}
	return a.Timeout
}

func (a *Actions) client(addr string) (*mongodrv.Client, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.clients[addr]; ok {
		return c, nil
	}
	dial := addr
	if a.Dial != nil {
		dial = a.Dial(addr)
	}
	c, err := mongodrv.Connect(directOptions(dial, a.timeout(), 2, "dbrouter-arbiter", a.User, a.Password, a.AuthSource, a.TLS))
	if err != nil {
		return nil, fmt.Errorf("member %s: client: %w", addr, err)
	}
	if a.clients == nil {
		a.clients = map[string]*mongodrv.Client{}
	}
	a.clients[addr] = c
	return c, nil
}

// Close disconnects every client.
func (a *Actions) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for addr, c := range a.clients {
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout())
		if err := c.Disconnect(ctx); err != nil {
			errs = append(errs, fmt.Errorf("member %s: disconnect: %w", addr, err))
		}
		cancel()
	}
	a.clients = nil
	return errors.Join(errs...)
}

func (a *Actions) run(ctx context.Context, addr string, cmd bson.D, d time.Duration) (bson.Raw, error) {
	c, err := a.client(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	raw, err := c.Database("admin").RunCommand(ctx, cmd).Raw()
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", cmd[0].Key, addr, err)
	}
	return raw, nil
}

// Hello reads the member's hello afresh: decisions are never taken on a
// snapshot's.
func (a *Actions) Hello(ctx context.Context, addr string) (*Detail, error) {
	raw, err := a.run(ctx, addr, helloCmd, a.timeout())
	if err != nil {
		return nil, err
	}
	m, err := parseHello(raw)
	if err != nil {
		return nil, fmt.Errorf("member %s: %w", addr, err)
	}
	d, _ := DetailOf(m)
	d.Observed = time.Now()
	return d, nil
}

// StepUp asks the member to run for primary now (replSetStepUp). The set's
// vote rules still decide: a member behind the others' optimes, or one a
// majority does not vote for, is refused, and the error says why.
func (a *Actions) StepUp(ctx context.Context, addr string) error {
	_, err := a.run(ctx, addr, bson.D{{Key: "replSetStepUp", Value: 1}}, max(a.timeout(), 10*time.Second))
	return err
}

// codeNotWritablePrimary is the server's NotWritablePrimary (10107).
const codeNotWritablePrimary = 10107

// StepDown makes the member step down now if it is primary
// (replSetStepDown with force and no catch-up period, not electable for
// 10 s); a member that is not primary is left as it is. The server closes
// its client connections as it steps down.
func (a *Actions) StepDown(ctx context.Context, addr string) error {
	_, err := a.run(ctx, addr, bson.D{{Key: "replSetStepDown", Value: 10}, {Key: "secondaryCatchUpPeriodSecs", Value: 0},
		{Key: "force", Value: true}}, a.timeout())
	var ce mongodrv.CommandError
	if errors.As(err, &ce) && ce.Code == codeNotWritablePrimary {
		return nil // not primary (any more): nothing to fence
	}
	return err
}

// Hears reports, from member addr's replSetGetStatus, whether it heard
// from the member at peer (its address) within d: its last heartbeat to
// that peer succeeded (health 1) and the peer's last heartbeat, or its last
// answer, is that recent by addr's own clock ("date" in the same reply).
func (a *Actions) Hears(ctx context.Context, addr, peer string, d time.Duration) (bool, error) {
	raw, err := a.run(ctx, addr, bson.D{{Key: "replSetGetStatus", Value: 1}}, a.timeout())
	if err != nil {
		return false, err
	}
	var st struct {
		Date    time.Time `bson:"date"`
		Members []struct {
			Name              string    `bson:"name"`
			Health            float64   `bson:"health"`
			Self              bool      `bson:"self"`
			LastHeartbeat     time.Time `bson:"lastHeartbeat"`
			LastHeartbeatRecv time.Time `bson:"lastHeartbeatRecv"`
		} `bson:"members"`
	}
	if err := bson.Unmarshal(raw, &st); err != nil {
		return false, fmt.Errorf("replSetGetStatus on %s: %w", addr, err)
	}
	for _, m := range st.Members {
		if m.Name != peer || m.Self {
			continue
		}
		if m.Health != 1 {
			return false, nil
		}
		last := m.LastHeartbeatRecv
		if m.LastHeartbeat.After(last) {
			last = m.LastHeartbeat
		}
		return st.Date.Sub(last) < d, nil
	}
	return false, nil
}

// Newer reports whether a's last write is after b's (term, then
// timestamp); a nil LastWrite is older than any.
func Newer(a, b *LastWrite) bool {
	switch {
	case a == nil:
		return false
	case b == nil:
		return true
	case a.Term != b.Term:
		return a.Term > b.Term
	case a.OpTime.T != b.OpTime.T:
		return a.OpTime.T > b.OpTime.T
	}
	return a.OpTime.I > b.OpTime.I
}

// CompareElection orders two primaries' hellos by the elector's rule:
// electionId, then setVersion, a missing value older than any.
func CompareElection(a, b *Detail) int {
	return compareKeys(electionKey{a.ElectionID, a.SetVersion}, electionKey{b.ElectionID, b.SetVersion})
}
