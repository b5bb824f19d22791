package daemon

import (
	"fmt"
	"net"

	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/config"
	pmongo "github.com/dbrouter/dbrouter/protocol/mongo"
	"github.com/dbrouter/dbrouter/topology"
	tmongo "github.com/dbrouter/dbrouter/topology/mongo"
)

// startMongo assembles a kind mongodb cluster's proxy: the replica set's
// monitor (hello on every member) and the Mongo-protocol listener. The
// listener is opened here, so a port in use fails start-up.
func startMongo(cl config.Cluster, members []topology.MemberConfig, site string, log *zap.Logger) (*unit, admin.Cluster, error) {
	md := cl.MongoDB
	mon, err := tmongo.NewMonitor(tmongo.MonitorConfig{Cluster: cl.Name, Members: members, ProbeInterval: cl.ProbeInterval.D(),
		MaxReplicaLag: cl.MaxReplicaLag.D(), ReplicaSet: md.ReplicaSet, User: cl.Monitor.User, Password: config.Password(cl.Monitor.Password)}, log)
	if err != nil {
		return nil, admin.Cluster{}, fmt.Errorf("cluster %s: %w", cl.Name, err)
	}
	acct := md.MemberAccount
	if acct.User == "" {
		acct = cl.Monitor
	}
	pc := pmongo.Config{Cluster: cl.Name, MaxWireVersion: int32(md.MaxWireVersion), ClientIdleTimeout: cl.ClientIdleTimeout.D(),
		MemberUser: acct.User, MemberPassword: config.Password(acct.Password), MemberConnectTimeout: cl.ConnectTimeout.D(),
		MemberTimeout: cl.QueryTimeout.D(), MaxMemberConns: cl.MaxConnectionsPerMember, MemberWait: cl.PoolTimeout.D(),
		// The monitor's members are the proxy's, in the same order.
		Topology: mon, Site: site, LocalThreshold: cl.LocalityWindow.D()}
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
	px, err := pmongo.New(pc, log)
	if err != nil {
		return nil, admin.Cluster{}, fmt.Errorf("cluster %s: %w", cl.Name, err)
	}
	ln, err := net.Listen("tcp", cl.Listen)
	if err != nil {
		return nil, admin.Cluster{}, fmt.Errorf("cluster %s: listen: %w", cl.Name, err)
	}
	u := &unit{cfg: cl, mon: mon, proxy: px, ln: ln}
	return u, admin.Cluster{Name: cl.Name, Kind: cl.Kind, Listen: cl.Listen, Snapshot: mon.Snapshot, Proxy: px}, nil
}
