package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A device credential is what a login reply hands a user who got in with a password or an invite, so that the
// device logs in again (after a reload, a network change, the next day) without a password hash on the server
// and without keeping the password: a bearer credential, signed with the server's key (HMAC-SHA256), that says
// how the user got in, until when it is good, and the generation of what it was granted against (the server's
// password, the account's hash, the invite), so that changing the password, the account's password, or revoking
// the invite ends it. Checking one costs one HMAC.
//
//	d1.<base64url of the JSON claims>.<base64url of the HMAC>

const devicePrefix = "d1."

// deviceClaims are what a device credential says.
type deviceClaims struct {
	Kind    string `json:"k"`           // kindPassword, kindAccount, kindInvite
	Name    string `json:"n,omitempty"` // the account's name, or the name an invite fixes
	Gen     string `json:"g"`           // the generation of what it was granted against
	Expires int64  `json:"e"`           // unix seconds
}

// How a user got in.
const (
	kindPassword = "p"
	kindAccount  = "a"
	kindInvite   = "i"
)

var (
	errDeviceInvalid = errors.New("the device credential is not valid")
	errDeviceExpired = errors.New("the device credential has expired")
)

// deviceKey signs device credentials.
type deviceKey []byte

func (k deviceKey) mac(data string) []byte {
	m := hmac.New(sha256.New, k)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// mint makes a device credential for c.
func (k deviceKey) mint(c deviceClaims) string {
	body, _ := json.Marshal(c)
	payload := devicePrefix + base64.RawURLEncoding.EncodeToString(body)
	return payload + "." + base64.RawURLEncoding.EncodeToString(k.mac(payload))
}

// open checks a device credential's signature and expiry and returns its claims.
func (k deviceKey) open(s string, now time.Time) (deviceClaims, error) {
	var c deviceClaims
	if len(s) > 1024 || !strings.HasPrefix(s, devicePrefix) {
		return c, errDeviceInvalid
	}
	i := strings.LastIndexByte(s, '.')
	if i <= len(devicePrefix) {
		return c, errDeviceInvalid
	}
	payload, sig := s[:i], s[i+1:]
	// Strict: otherwise the unused low bits of the last character could vary, and one credential have many
	// spellings.
	b64 := base64.RawURLEncoding.Strict()
	got, err := b64.DecodeString(sig)
	if err != nil || !hmac.Equal(got, k.mac(payload)) {
		return c, errDeviceInvalid
	}
	body, err := b64.DecodeString(payload[len(devicePrefix):])
	if err != nil || json.Unmarshal(body, &c) != nil {
		return c, errDeviceInvalid
	}
	if now.Unix() >= c.Expires {
		return c, errDeviceExpired
	}
	return c, nil
}

// generation is a short fingerprint of secret (the server's password, an account's hash) under the key, so a
// device credential can say what it was granted against without carrying it.
func (k deviceKey) generation(what, secret string) string {
	return base64.RawURLEncoding.EncodeToString(k.mac("gen:" + what + ":" + secret)[:12])
}

// LoadOrCreateKey reads the device-credential key kept in file (hex), or makes a random one and keeps it there.
// Several nodes that serve the same users must share it (give each the same file, or TANDEM_AUTH_KEY).
func LoadOrCreateKey(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err == nil {
		key, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(key) < 16 {
			return nil, fmt.Errorf("auth: key file %s: want at least 16 bytes in hex", file)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("auth: %w", err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if err := writeFileAtomic(file, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, err
	}
	return key, nil
}
