package daemon

import (
	"crypto/tls"
	"fmt"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/arbiter"
	"github.com/dbrouter/dbrouter/config"
	pmongo "github.com/dbrouter/dbrouter/protocol/mongo"
	"github.com/dbrouter/dbrouter/topology"
	tmongo "github.com/dbrouter/dbrouter/topology/mongo"
)

// startMongo assembles a kind mongodb cluster: the replica set's monitor
// (hello on every member) and, on a proxy, the Mongo-protocol listener
// (opened here, so a port in use fails start-up), which under a control
// plane writes only to the primary of the committed epoch while it holds
// its lease; on an arbiter, the cluster's arbiter.Mongo. The proxy's
// metrics go on reg, routerd's registry, as the MySQL proxy's do.
func startMongo(cl config.Cluster, members []topology.MemberConfig, cfg *config.Config, ctl *control, dialByAddr map[string]string, log *zap.Logger, reg prometheus.Registerer) (*unit, admin.Cluster, error) {
	md := cl.MongoDB
	// member_tls is every connection to members: the probes', the
	// proxy's and the arbiters'.
	var memberTLS *tls.Config
	if md.MemberTLS != nil {
		var err error
		if memberTLS, err = md.MemberTLS.ClientConfig(); err != nil {
			return nil, admin.Cluster{}, fmt.Errorf("cluster %s: mongodb.member_tls: %w", cl.Name, err)
		}
	}
	mon, err := tmongo.NewMonitor(tmongo.MonitorConfig{Cluster: cl.Name, Members: members, ProbeInterval: cl.ProbeInterval.D(),
		MaxReplicaLag: cl.MaxReplicaLag.D(), ReplicaSet: md.ReplicaSet, User: cl.Monitor.User, Password: config.Password(cl.Monitor.Password),
		TLS: memberTLS}, log)
	if err != nil {
		return nil, admin.Cluster{}, fmt.Errorf("cluster %s: %w", cl.Name, err)
	}
	u := &unit{cfg: cl, mon: mon}
	view := admin.Cluster{Name: cl.Name, Kind: cl.Kind, Listen: cl.Listen, Snapshot: mon.Snapshot,
		Warnings: func(s *topology.Snapshot) []topology.Warning {
			return tmongo.DurabilityWarnings(s, md.WriteConcern == config.WriteConcernMajority)
		},
		Describe: tmongo.Describe}
	if ctl != nil {
		view.State = ctl.clusterState(cl.Name)
		ctl.monitors[cl.Name] = mon
	}
	if cfg.Role == "arbiter" {
		ct := cfg.Control
		act := &tmongo.Actions{User: cl.Monitor.User, Password: config.Password(cl.Monitor.Password), Timeout: cl.ConnectTimeout.D() + cl.ProbeInterval.D(),
			TLS: memberTLS}
		if len(dialByAddr) > 0 {
			act.Dial = func(addr string) string {
				if d, ok := dialByAddr[addr]; ok {
					return d
				}
				return addr
			}
		}
		u.closeActs = act.Close
		u.arb = arbiter.NewMongo(arbiter.Config{Cluster: cl.Name, Arbiters: len(ct.Arbiters), FailureThreshold: ct.FailureThreshold.D(),
			Cooldown: ct.Cooldown.D(), Lease: ct.Lease.D(), LeaseMargin: ct.LeaseMargin.D(), DrainTimeout: ct.DrainTimeout.D(),
			MaxPromoteLag: cl.MaxPromoteLag.D(), Confirmed: ctl.confirmed, Voters: ctl.voters}, ctl.node, mon, ctl, act, log)
		ctl.arbiters[cl.Name] = u.arb
		return u, view, nil
	}
	acct := md.MemberAccount
	if acct.User == "" {
		acct = cl.Monitor
	}
	pc := pmongo.Config{Cluster: cl.Name, StopTimeout: cfg.StopTimeout.D(), MaxWireVersion: int32(md.MaxWireVersion), ClientIdleTimeout: cl.ClientIdleTimeout.D(),
		MemberUser: acct.User, MemberPassword: config.Password(acct.Password), MemberConnectTimeout: cl.ConnectTimeout.D(),
		MemberTimeout: cl.QueryTimeout.D(), MaxMemberConns: cl.MaxConnectionsPerMember, MemberWait: cl.PoolTimeout.D(),
		// The monitor's members are the proxy's, in the same order.
		Topology: mon, Site: cfg.Site, LocalThreshold: cl.LocalityWindow.D(),
		MajorityWrites: md.WriteConcern == config.WriteConcernMajority, MemberTLS: memberTLS, RequireTLS: cl.TLS.Require}
	if pc.TLS, err = cl.TLS.ServerConfig(); err != nil {
		return nil, admin.Cluster{}, fmt.Errorf("cluster %s: tls: %w", cl.Name, err)
	}
	if ctl != nil {
		// The control plane names the primary: writes go to the epoch's
		// primary while this proxy holds its lease, and a reply from a
		// primary whose epoch ended is not an acknowledgement.
		pc.Authority = ctl.authority(cl.Name)
		pc.WriteHold = cfg.Control.WriteHoldTimeout.D()
	}
	for _, u := range cl.Users {
		pc.Users = append(pc.Users, pmongo.User{Name: u.Name, Password: config.Password(u.Password)})
	}
	for _, m := range members {
		addr := m.Addr
		if m.Dial != "" {
			addr = m.Dial
		}
		pc.Members = append(pc.Members, pmongo.Member{Name: m.Name, Addr: addr})
	}
	px, err := pmongo.NewWithMetrics(pc, log, reg)
	if err != nil {
		return nil, admin.Cluster{}, fmt.Errorf("cluster %s: %w", cl.Name, err)
	}
	ln, err := net.Listen("tcp", cl.Listen)
	if err != nil {
		return nil, admin.Cluster{}, fmt.Errorf("cluster %s: listen: %w", cl.Name, err)
	}
	u.proxy, u.ln = px, ln
	if ctl != nil {
		u.excl = px
	}
	view.Proxy = px
	return u, view, nil
}
