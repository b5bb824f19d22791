package mysql

// SetAuthPlugin changes the plugin a running proxy asks clients for: tests
// reach a plugin there before the configuration offers it.
func SetAuthPlugin(p *Proxy, plugin string) {
	// Under p.mu, which the accept loop takes for every new session: the
	// change happens before any session started later reads it.
	p.mu.Lock()
	p.cfg.AuthPlugin = plugin
	p.mu.Unlock()
}

// Ed25519PublicKey is the public key MariaDB stores for an ed25519 password.
var Ed25519PublicKey = ed25519PublicKey
