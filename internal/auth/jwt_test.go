package auth_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"tandem/client"
	"tandem/internal/auth"
	"tandem/protocol"
)

const (
	testAudience = "https://call.example.org"
	testIssuer   = "https://app.example.org"
)

var jwtSecret = []byte("the app's shared secret, 32 bytes or more")

// claims returns standard claims for name, valid for an hour, with the test's audience and issuer.
func claims(name string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"sub": name, "aud": testAudience, "iss": testIssuer, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
}

func sign(t *testing.T, m jwt.SigningMethod, c jwt.MapClaims, key any, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The jwt mode with a shared secret: the token names the user; expired, forged, wrong-algorithm, wrong audience
// or issuer, exp-less and replayed tokens are refused, each with its own message.
func TestJWTModeSecret(t *testing.T) {
	e := start(t, auth.Config{Mode: auth.JWT, JWT: auth.JWTConfig{Secret: jwtSecret, Audience: testAudience, Issuer: testIssuer}}, nil)
	if info := e.authInfo(); info["mode"] != "jwt" {
		t.Errorf("/auth.json = %v", info)
	}
	e.refused("alice", client.Credentials{}, protocol.CodeAuthRequired)
	e.refused("alice", client.Credentials{Password: "anything"}, protocol.CodeAuthRequired)

	good := sign(t, jwt.SigningMethodHS256, claims("alice"), jwtSecret, "")
	c, m := e.in("", client.Credentials{JWT: good})
	if m.Name != "alice" || m.Device != "" {
		t.Fatalf("token login: name %q device %q (the jwt mode hands out no device credential)", m.Name, m.Device)
	}
	// The token's name is the user's: no other name, and no rename.
	expectRefusal(t, e.login(c, "bob", "", client.Credentials{}), protocol.CodeUnauthorized)
	e.refused("mallory", client.Credentials{JWT: sign(t, jwt.SigningMethodHS256, claims("bob"), jwtSecret, "")}, protocol.CodeUnauthorized)

	cases := []struct {
		name, token, code, message string
	}{
		{"expired", sign(t, jwt.SigningMethodHS256, with(claims("bob"), "exp", time.Now().Add(-time.Hour).Unix()), jwtSecret, ""), protocol.CodeExpired, "expired"},
		{"forged", sign(t, jwt.SigningMethodHS256, claims("bob"), []byte("another secret, also 32 bytes long!!"), ""), protocol.CodeUnauthorized, "signature"},
		{"tampered", tamper(t, sign(t, jwt.SigningMethodHS256, claims("bob"), jwtSecret, ""), "sub", "root"), protocol.CodeUnauthorized, "signature"},
		{"alg none", sign(t, jwt.SigningMethodNone, claims("bob"), jwt.UnsafeAllowNoneSignatureType, ""), protocol.CodeUnauthorized, "algorithm"},
		{"HS384 not pinned", sign(t, jwt.SigningMethodHS384, claims("bob"), jwtSecret, ""), protocol.CodeUnauthorized, "algorithm"},
		{"no exp", sign(t, jwt.SigningMethodHS256, without(claims("bob"), "exp"), jwtSecret, ""), protocol.CodeUnauthorized, "expiry"},
		{"not yet", sign(t, jwt.SigningMethodHS256, with(claims("bob"), "nbf", time.Now().Add(time.Hour).Unix()), jwtSecret, ""), protocol.CodeUnauthorized, "not valid yet"},
		{"audience", sign(t, jwt.SigningMethodHS256, with(claims("bob"), "aud", "https://other.example"), jwtSecret, ""), protocol.CodeUnauthorized, "audience"},
		{"no audience", sign(t, jwt.SigningMethodHS256, without(claims("bob"), "aud"), jwtSecret, ""), protocol.CodeUnauthorized, "audience"},
		{"issuer", sign(t, jwt.SigningMethodHS256, with(claims("bob"), "iss", "https://evil.example"), jwtSecret, ""), protocol.CodeUnauthorized, "issuer"},
		{"bad name", sign(t, jwt.SigningMethodHS256, with(claims("bob"), "sub", "a\nb"), jwtSecret, ""), protocol.CodeUnauthorized, "name"},
		{"garbage", "not.a.token", protocol.CodeUnauthorized, "malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := e.refused("", client.Credentials{JWT: tc.token}, tc.code)
			if !strings.Contains(m.Message, tc.message) {
				t.Errorf("message %q does not say %q", m.Message, tc.message)
			}
		})
	}

	// A token with a jti is single-use: replayed, it is refused.
	once := sign(t, jwt.SigningMethodHS256, with(claims("carol"), "jti", "token-1"), jwtSecret, "")
	carol, _ := e.in("", client.Credentials{JWT: once})
	_ = carol.Close()
	eventually(t, "carol's name is freed", func() bool { return e.srv.Online() == 1 })
	m = e.refused("", client.Credentials{JWT: once}, protocol.CodeUnauthorized)
	if !strings.Contains(m.Message, "used already") {
		t.Errorf("replayed token: %q", m.Message)
	}
}

func with(c jwt.MapClaims, k string, v any) jwt.MapClaims { c[k] = v; return c }
func without(c jwt.MapClaims, k string) jwt.MapClaims     { delete(c, k); return c }

// tamper changes one claim of a signed token and keeps the old signature.
func tamper(t *testing.T, token, k, v string) string {
	parts := strings.Split(token, ".")
	body, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	c[k] = v
	body, _ = json.Marshal(c)
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(body) + "." + parts[2]
}

// Public keys from PEM: each key verifies its own algorithm only. The classic confusion (an HS256 token whose
// HMAC key is the server's public RSA key) is refused.
func TestJWTModePublicKeys(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var pems []byte
	for _, pub := range []any{&rsaKey.PublicKey, edPub} {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		pems = append(pems, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
	}
	e := start(t, auth.Config{Mode: auth.JWT, JWT: auth.JWTConfig{PublicKeysPEM: pems, Audience: testAudience, Issuer: testIssuer}}, nil)
	e.in("", client.Credentials{JWT: sign(t, jwt.SigningMethodRS256, claims("alice"), rsaKey, "")})
	e.in("", client.Credentials{JWT: sign(t, jwt.SigningMethodEdDSA, claims("bob"), edKey, "")})

	e.refused("", client.Credentials{JWT: sign(t, jwt.SigningMethodHS256, claims("mallory"), pems, "")}, protocol.CodeUnauthorized)
	e.refused("", client.Credentials{JWT: sign(t, jwt.SigningMethodPS256, claims("mallory"), rsaKey, "")}, protocol.CodeUnauthorized)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	e.refused("", client.Credentials{JWT: sign(t, jwt.SigningMethodRS256, claims("mallory"), other, "")}, protocol.CodeUnauthorized)
}

// A JWKS from a URL: keys chosen by kid, a key the server has not seen yet fetched when a token names it (key
// rotation), and a key that is gone no longer verifies.
func TestJWTModeJWKS(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var mu sync.Mutex
	published := []jwkEntry{ecJWK("k1", &k1.PublicKey)}
	fetches := 0
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fetches++
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": published})
	}))
	defer jwks.Close()

	e := start(t, auth.Config{Mode: auth.JWT, JWT: auth.JWTConfig{JWKS: jwks.URL, Audience: testAudience, Issuer: testIssuer}}, nil)
	e.in("", client.Credentials{JWT: sign(t, jwt.SigningMethodES256, claims("alice"), k1, "k1")})
	// k2 is published after the server fetched the set: the first token naming it makes the server fetch again.
	mu.Lock()
	published = append(published, ecJWK("k2", &k2.PublicKey))
	mu.Unlock()
	e.in("", client.Credentials{JWT: sign(t, jwt.SigningMethodES256, claims("bob"), k2, "k2")})
	// A token signed by k2 but naming k1 is refused (kid picks the key).
	e.refused("", client.Credentials{JWT: sign(t, jwt.SigningMethodES256, claims("carol"), k2, "k1")}, protocol.CodeUnauthorized)
	// An unknown kid is fetched for at most every 30 s: a flood of them costs no fetches.
	mu.Lock()
	before := fetches
	mu.Unlock()
	for range 3 {
		e.refused("", client.Credentials{JWT: sign(t, jwt.SigningMethodES256, claims("dave"), k2, "nope")}, protocol.CodeUnauthorized)
	}
	mu.Lock()
	after := fetches
	mu.Unlock()
	if after != before {
		t.Errorf("tokens naming unknown keys made %d fetches within 30 s", after-before)
	}
}

// A JWKS file is re-read when it changes.
func TestJWTModeJWKSFile(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	file := filepath.Join(t.TempDir(), "jwks.json")
	write := func(keys ...jwkEntry) {
		data, _ := json.Marshal(map[string]any{"keys": keys})
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write()
	e := start(t, auth.Config{Mode: auth.JWT, JWT: auth.JWTConfig{JWKS: file, Audience: testAudience, Issuer: testIssuer}}, nil)
	tok := sign(t, jwt.SigningMethodES384, claims("alice"), k1, "k1")
	e.refused("", client.Credentials{JWT: tok}, protocol.CodeUnauthorized)
	write(ecJWK("k1", &k1.PublicKey))
	eventually(t, "the new key is read", func() bool {
		return e.login(e.dial(), "", "", client.Credentials{JWT: tok}).Success
	})
}

type jwkEntry map[string]string

func ecJWK(kid string, k *ecdsa.PublicKey) jwkEntry {
	size := (k.Curve.Params().BitSize + 7) / 8
	pad := func(b *big.Int) string { return base64.RawURLEncoding.EncodeToString(b.FillBytes(make([]byte, size))) }
	return jwkEntry{"kty": "EC", "crv": k.Curve.Params().Name, "kid": kid, "use": "sig", "x": pad(k.X), "y": pad(k.Y)}
}

// Misconfigurations are refused at start.
func TestJWTConfigRefused(t *testing.T) {
	for name, cfg := range map[string]auth.JWTConfig{
		"no audience":     {Secret: jwtSecret, Issuer: testIssuer},
		"no issuer":       {Secret: jwtSecret, Audience: testAudience},
		"no key":          {Audience: testAudience, Issuer: testIssuer},
		"short secret":    {Secret: []byte("short"), Audience: testAudience, Issuer: testIssuer},
		"alg none":        {Secret: jwtSecret, Audience: testAudience, Issuer: testIssuer, Algorithms: []string{"none"}},
		"HS without key":  {PublicKeysPEM: nil, JWKS: "/nonexistent", Audience: testAudience, Issuer: testIssuer, Algorithms: []string{"HS256"}},
		"private key PEM": {PublicKeysPEM: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), Audience: testAudience, Issuer: testIssuer},
	} {
		if _, err := auth.New(auth.Config{Mode: auth.JWT, JWT: cfg}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
