package mysql

import (
	"bytes"
	"fmt"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"go.uber.org/zap"
)

// handshake greets the client, optionally upgrades to TLS, and authenticates
// it against the configured users.
func (s *session) handshake() error {
	scramble, err := newScramble()
	if err != nil {
		return err
	}
	s.scramble = scramble
	caps := proxyCaps
	if s.p.cfg.TLS != nil {
		caps |= gm.CLIENT_SSL
	}
	plugin := s.p.cfg.AuthPlugin
	s.scratch = appendHandshakeV10(s.scratch[:0], s.p.serverVersion(), s.id, scramble, caps, plugin)
	if err := s.writeFlush(0, s.scratch); err != nil {
		return err
	}
	pkt, err := s.pr.readPacket()
	if err != nil {
		return fmt.Errorf("read handshake response: %w", err)
	}
	if isSSLRequest(pkt) {
		if s.p.cfg.TLS == nil {
			return fmt.Errorf("client asked for TLS, which is not configured")
		}
		if err := s.upgradeTLS(s.p.cfg.TLS); err != nil {
			return err
		}
		if pkt, err = s.pr.readPacket(); err != nil {
			return fmt.Errorf("read handshake response: %w", err)
		}
	}
	seq := s.pr.seq
	resp, err := parseHandshakeResponse(pkt)
	if err != nil {
		_ = s.writeErr(seq, &ServerError{Code: CodeMalformedPacket, State: "HY000", Message: "dbrouter: " + err.Error()})
		return err
	}
	if s.p.cfg.RequireTLS && !s.tls {
		_ = s.writeErr(seq, &ServerError{Code: CodeTLSRequired, State: "HY000", Message: "dbrouter: connections using insecure transport are prohibited (require_tls)"})
		return fmt.Errorf("user %s: TLS required", resp.user)
	}
	u := s.p.cfg.Users[resp.user]
	authResp := resp.authResp
	usedPlugin := resp.plugin
	if usedPlugin != pluginNative && usedPlugin != pluginSHA2 {
		// Ask the client to use one the proxy speaks.
		usedPlugin = plugin
		s.scratch = append(s.scratch[:0], 0xfe)
		s.scratch = append(s.scratch, plugin...)
		s.scratch = append(s.scratch, 0)
		s.scratch = append(s.scratch, scramble...)
		s.scratch = append(s.scratch, 0)
		if err := s.writeFlush(seq, s.scratch); err != nil {
			return err
		}
		b, err := s.pr.readPacket()
		if err != nil {
			return fmt.Errorf("read auth switch response: %w", err)
		}
		authResp = bytes.Clone(b)
		seq = s.pr.seq
	}
	if u == nil || !verifyAuth(usedPlugin, scramble, authResp, u.Password) {
		s.p.metrics.authFailures.Inc()
		s.log.Info("authentication failed", zap.String("user", resp.user), zap.Bool("known_user", u != nil))
		using := "NO"
		if len(authResp) > 0 {
			using = "YES"
		}
		_ = s.writeErr(seq, &ServerError{Code: CodeAccessDenied, State: "28000",
			Message: fmt.Sprintf("Access denied for user '%s'@'%s' (using password: %s)", resp.user, clientHost(s.nc), using)})
		return fmt.Errorf("access denied for %q", resp.user)
	}
	if usedPlugin == pluginSHA2 && u.Password != "" {
		if err := s.writeFlush(seq, []byte{0x01, 0x03}); err != nil { // fast auth success
			return err
		}
		seq++
	}
	s.login(u, resp.caps, resp.collation, resp.db)
	return s.writeOK(seq, 0, 0)
}

func (s *session) login(u *User, caps uint32, collation uint8, db string) {
	s.user = u
	s.killMu.Lock()
	s.owner = u.Name
	s.killMu.Unlock()
	s.caps = caps
	s.db = db
	s.multi = caps&gm.CLIENT_MULTI_STATEMENTS != 0
	s.key = poolKey{user: u.BackendUser, collation: collation, foundRows: caps&gm.CLIENT_FOUND_ROWS != 0}
	s.cred = credentials{user: u.BackendUser, password: u.BackendPassword}
	s.log = s.log.With(zap.String("user", u.Name))
}

// comChangeUser re-authenticates on the same connection (verified against the
// connection's scramble) and starts a fresh session state.
func (s *session) comChangeUser(pkt []byte) error {
	user, pos, ok := readNulString(pkt, 1)
	if !ok {
		return s.writeErr(1, &ServerError{Code: CodeMalformedPacket, State: "HY000", Message: "dbrouter: malformed COM_CHANGE_USER"})
	}
	var auth []byte
	if pos < len(pkt) && pos+1+int(pkt[pos]) <= len(pkt) {
		auth = pkt[pos+1 : pos+1+int(pkt[pos])]
		pos += 1 + int(pkt[pos])
	}
	db, pos, _ := readNulString(pkt, pos)
	collation := s.key.collation
	if pos+2 <= len(pkt) {
		collation = pkt[pos]
		pos += 2
	}
	plugin := pluginNative
	if pl, _, ok := readNulString(pkt, pos); ok && len(pl) > 0 {
		plugin = string(pl)
	}
	u := s.p.cfg.Users[string(user)]
	if u == nil || !verifyAuth(plugin, s.scramble, auth, u.Password) {
		s.p.metrics.authFailures.Inc()
		return s.writeErr(1, &ServerError{Code: CodeAccessDenied, State: "28000",
			Message: fmt.Sprintf("Access denied for user '%s'@'%s' (using password: YES)", user, clientHost(s.nc))})
	}
	s.resetSession()
	s.login(u, s.caps, collation, string(db))
	return s.writeOK(1, 0, 0)
}
