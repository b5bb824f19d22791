package mysql

import (
	"bytes"
	"fmt"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/proxy"
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
	greeting := plugin
	if plugin == pluginEd25519 {
		// As MariaDB does: the greeting offers mysql_native_password with
		// its 20-byte scramble, and every client is switched to ed25519,
		// whose nonce is 32 bytes.
		greeting = pluginNative
	}
	s.scratch = appendHandshakeV10(s.scratch[:0], s.p.serverVersion(), s.id, scramble, caps, greeting)
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
	switch {
	case usedPlugin == pluginClear && !s.tls:
		// The client has already sent its password in the clear; refusing
		// it makes sure such a setup never works, rather than leaking every
		// password it is used with.
		s.p.metrics.AuthFailures.Inc()
		_ = s.writeErr(seq, clearRefused(resp.user))
		return fmt.Errorf("user %s: mysql_clear_password without TLS", resp.user)
	case usedPlugin == pluginEd25519 || (plugin == pluginEd25519 && usedPlugin != pluginClear):
		// A client that asks for ed25519 sends an empty response and waits
		// for its nonce; with auth_plugin client_ed25519 every client is
		// asked for it, whatever it answered the greeting with.
		nonce, err := newNonce()
		if err != nil {
			return err
		}
		if authResp, seq, err = s.authSwitch(seq, pluginEd25519, nonce); err != nil {
			return err
		}
		usedPlugin, scramble = pluginEd25519, nonce
	case usedPlugin != pluginNative && usedPlugin != pluginSHA2 && usedPlugin != pluginClear:
		// Ask the client to use one the proxy speaks.
		if authResp, seq, err = s.authSwitch(seq, plugin, append(scramble, 0)); err != nil {
			return err
		}
		usedPlugin = plugin
	}
	if u == nil || !verifyAuth(usedPlugin, scramble, authResp, u.Password) {
		s.p.metrics.AuthFailures.Inc()
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

// clearRefused is the error for mysql_clear_password without TLS.
func clearRefused(user string) *ServerError {
	return &ServerError{Code: CodeAccessDenied, State: "28000", Message: fmt.Sprintf(
		"dbrouter: access denied for user '%s': mysql_clear_password is refused on a connection without TLS (the password crosses the network in the clear); use TLS or another plugin", user)}
}

// authSwitch asks the client to authenticate with plugin, sending it data
// (a scramble or nonce), and returns its answer and the sequence number of
// the next packet.
func (s *session) authSwitch(seq uint8, plugin string, data []byte) ([]byte, uint8, error) {
	s.scratch = append(s.scratch[:0], 0xfe)
	s.scratch = append(s.scratch, plugin...)
	s.scratch = append(s.scratch, 0)
	s.scratch = append(s.scratch, data...)
	if err := s.writeFlush(seq, s.scratch); err != nil {
		return nil, 0, err
	}
	b, err := s.pr.readPacket()
	if err != nil {
		return nil, 0, fmt.Errorf("read auth switch response: %w", err)
	}
	return bytes.Clone(b), s.pr.seq, nil
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
	s.cred = proxy.Login{User: u.BackendUser, Password: u.BackendPassword}
	s.log = s.log.With(zap.String("user", u.Name))
}

// comChangeUser re-authenticates on the same connection (verified against the
// connection's scramble) and starts a fresh session state.
func (s *session) comChangeUser(pkt []byte) error {
	user, pos, ok := readNulString(pkt, 1)
	if !ok {
		return s.writeErr(s.pr.seq, &ServerError{Code: CodeMalformedPacket, State: "HY000", Message: "dbrouter: malformed COM_CHANGE_USER"})
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
	if plugin == pluginClear && !s.tls {
		s.p.metrics.AuthFailures.Inc()
		return s.writeErr(s.pr.seq, clearRefused(string(user)))
	}
	u := s.p.cfg.Users[string(user)]
	if u == nil || !verifyAuth(plugin, s.scramble, auth, u.Password) {
		s.p.metrics.AuthFailures.Inc()
		return s.writeErr(s.pr.seq, &ServerError{Code: CodeAccessDenied, State: "28000",
			Message: fmt.Sprintf("Access denied for user '%s'@'%s' (using password: YES)", user, clientHost(s.nc))})
	}
	s.resetSession()
	s.login(u, s.caps, collation, string(db))
	return s.writeOK(s.pr.seq, 0, 0)
}
