package mongo

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/xdg-go/scram"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// mechSCRAMSHA256 is the one mechanism the proxy speaks: mongod's default
// since 4.0, and what every current driver picks when hello lists it.
const mechSCRAMSHA256 = "SCRAM-SHA-256"

// authDB is the one source database users live in (authSource=admin).
const authDB = "admin"

// scramIterations is mongod's default scramSHA256IterationCount; drivers
// refuse fewer than 4096.
const scramIterations = 15000

// authenticator holds the users' SCRAM credentials. Only the salted
// derivatives (StoredKey, ServerKey, salt, iterations) are kept: they let
// the proxy check a proof and prove itself, but not log in as the user
// elsewhere, so a heap dump of the proxy gives no password.
type authenticator struct {
	creds  map[string]scram.StoredCredentials
	server *scram.Server
}

func newAuthenticator(users []User) (*authenticator, error) {
	a := &authenticator{creds: make(map[string]scram.StoredCredentials, len(users))}
	for i, u := range users {
		if u.Name == "" {
			return nil, fmt.Errorf("users[%d].name: missing", i)
		}
		if u.Password == "" {
			return nil, fmt.Errorf("users[%d] (%s).password: missing", i, u.Name)
		}
		if _, dup := a.creds[u.Name]; dup {
			return nil, fmt.Errorf("users[%d].name: %q appears twice", i, u.Name)
		}
		c, err := deriveCredentials(u.Name, u.Password)
		if err != nil {
			return nil, fmt.Errorf("users[%d] (%s): %w", i, u.Name, err)
		}
		a.creds[u.Name] = c
	}
	srv, err := scram.SHA256.NewServer(a.lookup)
	if err != nil {
		return nil, fmt.Errorf("scram server: %w", err)
	}
	a.server = srv
	return a, nil
}

// deriveCredentials salts and stretches the password once, at start-up, as
// mongod does when a user is created. The scram.Client used for it caches
// the ClientKey, which would let anyone holding it log in: it is dropped
// here, and only the StoredCredentials survive.
func deriveCredentials(name, password string) (scram.StoredCredentials, error) {
	// SHA256.NewClient SASLprep's the password, as drivers do before they
	// derive their side of the proof.
	c, err := scram.SHA256.NewClient(name, password, "")
	if err != nil {
		return scram.StoredCredentials{}, fmt.Errorf("password: %w", err)
	}
	salt := make([]byte, 28) // mongod's salt length for SCRAM-SHA-256
	if _, err := rand.Read(salt); err != nil {
		return scram.StoredCredentials{}, fmt.Errorf("salt: %w", err)
	}
	sc, err := c.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: scramIterations})
	if err != nil {
		return scram.StoredCredentials{}, fmt.Errorf("derive keys: %w", err)
	}
	return sc, nil
}

var errUnknownUser = errors.New("unknown user")

func (a *authenticator) lookup(name string) (scram.StoredCredentials, error) {
	c, ok := a.creds[name]
	if !ok {
		return scram.StoredCredentials{}, errUnknownUser
	}
	return c, nil
}

// mechsFor reports whether hello's saslSupportedMechs ("db.user") names a
// known user, whose mechanism (SCRAM-SHA-256) the reply then lists; for
// anyone else the field is left out, as mongod does.
func (a *authenticator) mechsFor(dbUser string) bool {
	if a == nil {
		return false
	}
	db, user, ok := strings.Cut(dbUser, ".")
	if !ok || db != authDB {
		return false
	}
	_, known := a.creds[user]
	return known
}

// conversation is one session's SASL exchange in progress.
type conversation struct {
	id   int32
	conv *scram.ServerConversation
	// skipEmpty: the client asked (options.skipEmptyExchange) for done
	// with the server's final message, rather than after one more empty
	// round trip.
	skipEmpty bool
	// verified: the proof was checked; the conversation only waits for
	// the client's empty last step.
	verified bool
}

// authFailure is why a SASL step failed, for the log; the client is told
// only "Authentication failed." when the reason would say whether a user
// exists or what was wrong with a proof, as mongod does.
type authFailure struct {
	reason string
	// public: reason may be shown to the client (it reveals nothing about
	// users or credentials: a mechanism, a database, a protocol slip).
	public bool
	// user is the name the client gave, for the log, when it got that far.
	user string
}

func (f *authFailure) Error() string { return "authentication failed: " + f.reason }

func failPublic(reason string) *authFailure { return &authFailure{reason: reason, public: true} }

func failSecret(reason string) *authFailure { return &authFailure{reason: reason} }

// errmsg is what the client reads.
func (f *authFailure) errmsg() string {
	if f.public {
		return "Authentication failed: " + f.reason
	}
	return "Authentication failed."
}

// saslStart begins a SCRAM-SHA-256 conversation (the client's first
// message in payload) and answers the server's first message.
func (s *session) saslStart(dst []byte, db string, cmd bsoncore.Document) []byte {
	c, resp, f := s.startSASL(db, cmd)
	if f != nil {
		return s.authFailed(dst, f)
	}
	return appendSASLReply(dst, c.id, false, resp)
}

// speculativeAuth answers hello's speculativeAuthenticate, a saslStart
// folded into the handshake to save a round trip per connection: it
// appends the saslStart reply (without ok) to the hello reply, or nothing
// when the attempt fails, which tells the driver to authenticate the usual
// way (so a failure here is only logged, at debug: the driver's own
// saslStart will fail the same way and be logged then).
func (s *session) speculativeAuth(dst []byte, db string, cmd bsoncore.Document) []byte {
	if v, ok := wire.Lookup(cmd, "db"); ok {
		db, _ = stringValue(v)
	}
	c, resp, f := s.startSASL(db, cmd)
	if f != nil {
		s.log.Debug("speculative authentication not answered", zap.String("user", f.user), zap.Error(f))
		return dst
	}
	idx, dst := bsoncore.AppendDocumentElementStart(dst, "speculativeAuthenticate")
	dst = appendSASLFields(dst, c.id, false, resp)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// startSASL checks a saslStart and takes its first step; the conversation
// it returns is the session's from then on.
func (s *session) startSASL(db string, cmd bsoncore.Document) (*conversation, string, *authFailure) {
	s.sasl = nil // a new start abandons any conversation in progress
	if s.p.auth == nil {
		return nil, "", failPublic("this proxy has no users configured; connect without credentials")
	}
	mech := ""
	if v, ok := wire.Lookup(cmd, "mechanism"); ok {
		mech, _ = stringValue(v)
	}
	if mech != mechSCRAMSHA256 {
		return nil, "", failPublic("mechanism " + strconv.Quote(mech) + " is not supported, only " + mechSCRAMSHA256 +
			" (a driver picks SCRAM-SHA-1 for a user hello did not list: check the user name and authSource=admin)")
	}
	if db != authDB {
		return nil, "", failPublic("users are defined in the admin database: use authSource=admin, not " + strconv.Quote(db))
	}
	payload, ok := saslPayload(cmd)
	if !ok {
		return nil, "", failPublic("saslStart has no payload")
	}
	conv := s.p.auth.server.NewConversation()
	resp, err := conv.Step(payload)
	if err != nil {
		f := failSecret(err.Error())
		f.user = conv.Username()
		return nil, "", f
	}
	c := &conversation{conv: conv}
	if v, ok := wire.Lookup(cmd, "options"); ok {
		if opts, ok := v.DocumentOK(); ok {
			if v, ok := wire.Lookup(opts, "skipEmptyExchange"); ok {
				c.skipEmpty, _ = v.BooleanOK()
			}
		}
	}
	s.lastConv++
	c.id = s.lastConv
	s.sasl = c
	return c, resp, nil
}

// saslContinue takes the client's next message: its proof (answered with
// the server's signature), or the empty message that ends an exchange
// without skipEmptyExchange.
func (s *session) saslContinue(dst []byte, cmd bsoncore.Document) []byte {
	c := s.sasl
	if c == nil {
		return s.authFailed(dst, failPublic("no SASL conversation in progress: saslStart comes first"))
	}
	if v, ok := wire.Lookup(cmd, "conversationId"); ok {
		if id, ok := v.AsInt64OK(); !ok || id != int64(c.id) {
			s.sasl = nil
			return s.authFailed(dst, failPublic("conversationId does not match the conversation in progress"))
		}
	}
	payload, ok := saslPayload(cmd)
	if !ok {
		s.sasl = nil
		return s.authFailed(dst, failPublic("saslContinue has no payload"))
	}
	if c.verified {
		s.sasl = nil
		return appendSASLReply(dst, c.id, true, "")
	}
	resp, err := c.conv.Step(payload)
	if err != nil || !c.conv.Valid() {
		s.sasl = nil
		if err == nil {
			err = errors.New("proof not verified")
		}
		f := failSecret(err.Error())
		f.user = c.conv.Username()
		return s.authFailed(dst, f)
	}
	// The proof is checked: the session is authenticated now, whether or
	// not the client sends the empty step that only acknowledges the
	// server's signature.
	s.user = c.conv.Username()
	s.log.Debug("client authenticated", zap.String("user", s.user))
	if c.skipEmpty {
		s.sasl = nil
		return appendSASLReply(dst, c.id, true, resp)
	}
	c.verified = true
	return appendSASLReply(dst, c.id, false, resp)
}

// authFailed answers AuthenticationFailed (18), mongod's code for every
// failed authentication, and logs the real reason: a failed login is an
// event an operator may look for, not a per-query message.
func (s *session) authFailed(dst []byte, f *authFailure) []byte {
	s.p.metrics.AuthFailures.Inc()
	s.log.Info("client authentication failed", zap.String("user", f.user), zap.Error(f))
	return appendError(dst, CodeAuthenticationFailed, f.errmsg())
}

// saslPayload reads a SASL payload: binary from every current driver, a
// string from some old ones.
func saslPayload(cmd bsoncore.Document) (string, bool) {
	v, ok := wire.Lookup(cmd, "payload")
	if !ok {
		return "", false
	}
	if _, data, ok := v.BinaryOK(); ok {
		return string(data), true
	}
	return stringValue(v)
}

func appendSASLReply(dst []byte, id int32, done bool, payload string) []byte {
	idx, dst := bsoncore.AppendDocumentStart(dst)
	dst = appendSASLFields(dst, id, done, payload)
	dst = bsoncore.AppendDoubleElement(dst, "ok", 1)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

func appendSASLFields(dst []byte, id int32, done bool, payload string) []byte {
	dst = bsoncore.AppendInt32Element(dst, "conversationId", id)
	dst = bsoncore.AppendBooleanElement(dst, "done", done)
	return bsoncore.AppendBinaryElement(dst, "payload", 0, []byte(payload))
}
