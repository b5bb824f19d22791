package mysql

import (
	"bytes"
	"crypto/ed25519"
	"testing"
)

// The proxy signs a member's ed25519 nonce (scrambleFor) and verifies a
// client's signature (verifyAuth) with the same password: each must accept
// exactly what the other produces, for MariaDB's 32-byte nonce, including
// one whose last byte is zero (the backend handshake strips one trailing NUL
// from every auth-switch payload, since mysql_native_password's carries one).
func TestEd25519SignsAndVerifiesWithThePassword(t *testing.T) {
	nonce := bytes.Repeat([]byte{0x5a}, 32)
	zeroEnd := append(bytes.Repeat([]byte{0x7f}, 31), 0)
	for _, tc := range []struct {
		name     string
		sent     []byte // what scrambleFor is given
		verified []byte // the nonce the member verifies against
		password string
	}{
		{"32-byte nonce", nonce, nonce, "secret"},
		{"nonce ending in zero, stripped to 31 bytes", zeroEnd[:31], zeroEnd, "secret"},
		{"empty password", nonce, nonce, ""},
		{"long password", nonce, nonce, string(bytes.Repeat([]byte("pw"), 200))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sig, err := scrambleFor(pluginEd25519, tc.sent, tc.password)
			if err != nil {
				t.Fatal(err)
			}
			if len(sig) != ed25519.SignatureSize {
				t.Fatalf("signature of %d bytes", len(sig))
			}
			if !ed25519.Verify(ed25519PublicKey(tc.password), tc.verified, sig) {
				t.Fatal("the member would refuse the signature")
			}
			if !verifyAuth(pluginEd25519, tc.verified, sig, tc.password) {
				t.Fatal("the proxy refuses its own signature")
			}
			if verifyAuth(pluginEd25519, tc.verified, sig, tc.password+"x") {
				t.Fatal("accepted with another password")
			}
			other := bytes.Clone(tc.verified)
			other[0] ^= 1
			if verifyAuth(pluginEd25519, other, sig, tc.password) {
				t.Fatal("accepted for another nonce")
			}
		})
	}
}

func TestEd25519NonceOfTheWrongLengthIsAnError(t *testing.T) {
	for _, n := range []int{0, 20, 30, 33} {
		if _, err := scrambleFor(pluginEd25519, make([]byte, n), "pw"); err == nil {
			t.Errorf("%d-byte nonce: no error", n)
		}
	}
}

// Client nonces never contain a zero byte: some clients strip a trailing
// NUL from an auth-switch payload or read it as a C string.
func TestEd25519ClientNonceHasNoZeroByte(t *testing.T) {
	for range 1000 {
		n, err := newNonce()
		if err != nil {
			t.Fatal(err)
		}
		if len(n) != 32 || bytes.IndexByte(n, 0) >= 0 {
			t.Fatalf("nonce %x", n)
		}
	}
}

func TestVerifyAuthByPlugin(t *testing.T) {
	for _, tc := range []struct {
		name, plugin, password string
		resp                   []byte
		want                   bool
	}{
		{"clear password with its NUL", pluginClear, "pw", []byte("pw\x00"), true},
		{"clear password without NUL", pluginClear, "pw", []byte("pw"), true},
		{"wrong clear password", pluginClear, "pw", []byte("px\x00"), false},
		{"clear password prefix", pluginClear, "pw", []byte("p\x00"), false},
		{"ed25519 garbage", pluginEd25519, "pw", make([]byte, 64), false},
		{"ed25519 short response", pluginEd25519, "pw", make([]byte, 10), false},
		{"unknown plugin", "dialog", "pw", []byte("pw"), false},
		{"native, empty password, empty response", pluginNative, "", nil, true},
		{"native, empty password, some response", pluginNative, "", []byte{1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := verifyAuth(tc.plugin, bytes.Repeat([]byte{1}, 32), tc.resp, tc.password); got != tc.want {
				t.Fatalf("verifyAuth = %v, want %v", got, tc.want)
			}
		})
	}
}
