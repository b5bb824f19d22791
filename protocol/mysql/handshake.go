package mysql

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"filippo.io/edwards25519"
	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/dbrouter/dbrouter/proxy"
)

// Capabilities the proxy offers clients. CLIENT_DEPRECATE_EOF, compression,
// session tracking and query attributes are deliberately not offered: result
// packets are forwarded raw, so every client must see the packet format the
// pooled backend connections speak.
const proxyCaps = gm.CLIENT_LONG_PASSWORD | gm.CLIENT_FOUND_ROWS | gm.CLIENT_LONG_FLAG |
	gm.CLIENT_CONNECT_WITH_DB | gm.CLIENT_LOCAL_FILES | gm.CLIENT_PROTOCOL_41 |
	gm.CLIENT_INTERACTIVE | gm.CLIENT_TRANSACTIONS | gm.CLIENT_SECURE_CONNECTION |
	gm.CLIENT_MULTI_STATEMENTS | gm.CLIENT_MULTI_RESULTS | gm.CLIENT_PS_MULTI_RESULTS |
	gm.CLIENT_PLUGIN_AUTH | gm.CLIENT_CONNECT_ATTRS | gm.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA

// backendCaps is what the proxy asks of members. Multi-statements are always
// on at the connection level and toggled per session with COM_SET_OPTION.
const backendCaps = gm.CLIENT_LONG_PASSWORD | gm.CLIENT_LONG_FLAG | gm.CLIENT_CONNECT_WITH_DB |
	gm.CLIENT_LOCAL_FILES | gm.CLIENT_PROTOCOL_41 | gm.CLIENT_TRANSACTIONS |
	gm.CLIENT_SECURE_CONNECTION | gm.CLIENT_MULTI_STATEMENTS | gm.CLIENT_MULTI_RESULTS |
	gm.CLIENT_PS_MULTI_RESULTS | gm.CLIENT_PLUGIN_AUTH | gm.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA

const (
	pluginNative  = gm.AUTH_NATIVE_PASSWORD
	pluginSHA2    = gm.AUTH_CACHING_SHA2_PASSWORD
	pluginEd25519 = gm.AUTH_MARIADB_ED25519 // client_ed25519, MariaDB's ed25519 plugin
	pluginClear   = gm.AUTH_CLEAR_PASSWORD
	// ed25519NonceLen is the length of the nonce MariaDB's ed25519 plugin
	// signs (NONCE_BYTES in its server plugin).
	ed25519NonceLen = 32
)

// serverStatusAutocommit etc. are the status flags the proxy reads.
const (
	statusInTrans      = gm.SERVER_STATUS_IN_TRANS
	statusAutocommit   = gm.SERVER_STATUS_AUTOCOMMIT
	statusMoreResults  = gm.SERVER_MORE_RESULTS_EXISTS
	statusCursorExists = gm.SERVER_STATUS_CURSOR_EXISTS
	statusLastRowSent  = gm.SERVER_STATUS_LAST_ROW_SEND
	defaultCollationID = 45 // utf8mb4_general_ci
	handshakeVersion   = 10
	scrambleLen        = 20
)

func newScramble() ([]byte, error) {
	b := make([]byte, scrambleLen)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	// Printable, non-NUL bytes: some clients treat the scramble as a C string.
	for i := range b {
		b[i] = b[i]%94 + 33
	}
	return b, nil
}

// newNonce is an ed25519 nonce for a client. It holds no zero byte: some
// clients strip a trailing NUL from an auth-switch payload (as they must
// for mysql_native_password's) or read it as a C string, and would then
// sign another nonce. 255 values a byte leave 255 bits of randomness.
func newNonce() ([]byte, error) {
	b := make([]byte, ed25519NonceLen)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	for i := range b {
		b[i] = b[i]%255 + 1
	}
	return b, nil
}

// ed25519PublicKey is the public key MariaDB's ed25519 plugin keeps for a
// password: the password, of any length, is hashed with SHA-512 where RFC
// 8032 hashes a 32-byte seed, so crypto/ed25519 cannot derive it (its
// signatures verify with crypto/ed25519 all the same).
func ed25519PublicKey(password string) ed25519.PublicKey {
	h := sha512.Sum512([]byte(password))
	s, err := edwards25519.NewScalar().SetBytesWithClamping(h[:32])
	if err != nil {
		panic(err) // only for an input that is not 32 bytes
	}
	return (&edwards25519.Point{}).ScalarBaseMult(s).Bytes()
}

// appendHandshakeV10 builds the initial handshake a client receives.
func appendHandshakeV10(b []byte, version string, connID uint32, scramble []byte, caps uint32, plugin string) []byte {
	b = append(b, handshakeVersion)
	b = append(b, version...)
	b = append(b, 0)
	b = appendUint32(b, connID)
	b = append(b, scramble[:8]...)
	b = append(b, 0)
	b = appendUint16(b, uint16(caps))
	b = append(b, defaultCollationID)
	b = appendUint16(b, statusAutocommit)
	b = appendUint16(b, uint16(caps>>16))
	b = append(b, byte(len(scramble)+1))
	b = append(b, make([]byte, 10)...)
	b = append(b, scramble[8:]...)
	b = append(b, 0)
	b = append(b, plugin...)
	return append(b, 0)
}

// handshakeResponse is a client's HandshakeResponse41.
type handshakeResponse struct {
	caps      uint32
	collation uint8
	user      string
	authResp  []byte
	db        string
	plugin    string
}

var errMalformedHandshake = proxy.NewError(proxy.KindMalformedHandshake, "malformed handshake response")

// isSSLRequest: a 32-byte response with CLIENT_SSL asks for TLS before the
// real response.
func isSSLRequest(b []byte) bool {
	if len(b) != 32 {
		return false
	}
	caps, _, _ := readUint32(b, 0)
	return caps&gm.CLIENT_SSL != 0
}

func parseHandshakeResponse(b []byte) (handshakeResponse, error) {
	var r handshakeResponse
	caps, pos, ok := readUint32(b, 0)
	if !ok || caps&gm.CLIENT_PROTOCOL_41 == 0 {
		return r, fmt.Errorf("%w: protocol 4.1 required", errMalformedHandshake)
	}
	r.caps = caps
	pos += 4 // max packet size
	if pos+1+23 > len(b) {
		return r, errMalformedHandshake
	}
	r.collation = b[pos]
	pos += 1 + 23
	user, pos, ok := readNulString(b, pos)
	if !ok {
		return r, fmt.Errorf("%w: user name", errMalformedHandshake)
	}
	r.user = string(user)
	switch {
	case caps&gm.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0:
		r.authResp, pos, ok = readLenEncBytes(b, pos)
	case caps&gm.CLIENT_SECURE_CONNECTION != 0:
		if pos < len(b) && pos+1+int(b[pos]) <= len(b) {
			r.authResp = b[pos+1 : pos+1+int(b[pos])]
			pos += 1 + int(b[pos])
		} else {
			ok = false
		}
	default:
		r.authResp, pos, ok = readNulString(b, pos)
	}
	if !ok {
		return r, fmt.Errorf("%w: auth response", errMalformedHandshake)
	}
	r.authResp = bytes.Clone(r.authResp)
	if caps&gm.CLIENT_CONNECT_WITH_DB != 0 && pos < len(b) {
		db, p, ok := readNulString(b, pos)
		if !ok {
			return r, fmt.Errorf("%w: database", errMalformedHandshake)
		}
		r.db, pos = string(db), p
	}
	r.plugin = pluginNative
	if caps&gm.CLIENT_PLUGIN_AUTH != 0 && pos < len(b) {
		pl, p, ok := readNulString(b, pos)
		if !ok { // some clients omit the terminator at the end of the packet
			pl, p = b[pos:], len(b)
		}
		r.plugin, pos = string(pl), p
	}
	_ = pos // connection attributes are accepted and ignored
	return r, nil
}

// verifyAuth checks a client's auth response for the plugins the proxy
// speaks. The proxy holds the plaintext password from its config, so
// caching_sha2_password always succeeds on the fast path (no RSA or TLS
// exchange is needed), and an ed25519 signature is checked against the
// password's public key. mysql_clear_password is only verified here: the
// caller refuses it without TLS.
func verifyAuth(plugin string, scramble, resp []byte, password string) bool {
	switch plugin {
	case pluginEd25519:
		// Even an empty password signs: there is no empty response.
		return len(resp) == ed25519.SignatureSize && ed25519.Verify(ed25519PublicKey(password), scramble, resp)
	case pluginClear:
		resp = bytes.TrimSuffix(resp, []byte{0})
		return subtle.ConstantTimeCompare(resp, []byte(password)) == 1
	}
	if password == "" {
		return len(resp) == 0 || (len(resp) == 1 && resp[0] == 0)
	}
	var want []byte
	switch plugin {
	case pluginNative:
		want = gm.CalcNativePassword(scramble, []byte(password))
	case pluginSHA2:
		want = gm.CalcCachingSha2Password(scramble, []byte(password))
	default:
		return false
	}
	return len(want) == len(resp) && subtle.ConstantTimeCompare(want, resp) == 1
}

// serverHello is a member's initial handshake as the proxy sees it.
type serverHello struct {
	version  string
	connID   uint32
	caps     uint32
	scramble []byte
	plugin   string
}

func parseServerHello(b []byte) (serverHello, error) {
	var h serverHello
	if len(b) > 0 && b[0] == 0xff {
		return h, parseErr(b)
	}
	if len(b) < 1 || b[0] != handshakeVersion {
		return h, errors.New("unsupported handshake protocol")
	}
	v, pos, ok := readNulString(b, 1)
	if !ok {
		return h, errors.New("malformed server handshake")
	}
	h.version = string(v)
	if h.connID, pos, ok = readUint32(b, pos); !ok || pos+9 > len(b) {
		return h, errors.New("malformed server handshake")
	}
	h.scramble = append(h.scramble, b[pos:pos+8]...)
	pos += 9
	lo, pos, ok := readUint16(b, pos)
	if !ok {
		return h, errors.New("malformed server handshake")
	}
	h.caps = uint32(lo)
	if pos+5 > len(b) {
		return h, nil
	}
	pos += 3 // charset, status
	hi, pos, _ := readUint16(b, pos)
	h.caps |= uint32(hi) << 16
	authLen := 0
	if pos < len(b) {
		authLen = int(b[pos])
	}
	pos += 1 + 10
	if h.caps&gm.CLIENT_SECURE_CONNECTION != 0 && pos < len(b) {
		n := max(13, authLen-8)
		if pos+n > len(b) {
			n = len(b) - pos
		}
		part := b[pos : pos+n]
		part = bytes.TrimRight(part, "\x00")
		h.scramble = append(h.scramble, part...)
		pos += n
	}
	h.plugin = pluginNative
	if h.caps&gm.CLIENT_PLUGIN_AUTH != 0 && pos < len(b) {
		if pl, _, ok := readNulString(b, pos); ok {
			h.plugin = string(pl)
		} else {
			h.plugin = string(b[pos:])
		}
	}
	return h, nil
}

// scrambleFor computes the auth response a member expects.
func scrambleFor(plugin string, scramble []byte, password string) ([]byte, error) {
	if plugin == pluginEd25519 {
		// The backend handshake strips one trailing NUL from an auth
		// switch's data (mysql_native_password's scramble carries one).
		// MariaDB's nonce is exactly 32 bytes, without one: 31 bytes are a
		// nonce whose last byte was zero.
		if len(scramble) == ed25519NonceLen-1 {
			scramble = append(scramble[:len(scramble):len(scramble)], 0)
		}
		if len(scramble) != ed25519NonceLen {
			return nil, fmt.Errorf("member sent a %d-byte ed25519 nonce, want %d", len(scramble), ed25519NonceLen)
		}
		// Even an empty password signs.
		return gm.CalcEd25519Password(scramble, password)
	}
	if password == "" {
		return nil, nil
	}
	switch plugin {
	case pluginNative:
		return gm.CalcNativePassword(scramble, []byte(password)), nil
	case pluginSHA2:
		return gm.CalcCachingSha2Password(scramble, []byte(password)), nil
	case pluginClear:
		return append([]byte(password), 0), nil
	default:
		return nil, fmt.Errorf("member requested unsupported auth plugin %q", plugin)
	}
}

func encryptWithPEM(pemBytes []byte, password string, scramble []byte) ([]byte, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("member sent an invalid RSA public key")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("member RSA public key: %w", err)
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("member public key is not RSA")
	}
	return gm.EncryptPassword(password, scramble, rk)
}
