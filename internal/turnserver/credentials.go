package turnserver

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is what the TURN REST API scheme (and coturn) specify.
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultCredentialTTL is how long a minted credential stays valid when Config.CredentialTTL is zero.
const DefaultCredentialTTL = 6 * time.Hour

// MinSecretLength is the shortest shared secret accepted, in bytes.
const MinSecretLength = 16

var (
	errMalformedUsername = errors.New("turnserver: username is not <expiry unix time>:<user>")
	errExpired           = errors.New("turnserver: credential expired")
)

// Credentials mints and checks short-lived TURN credentials in the scheme of the TURN REST API, which coturn
// calls use-auth-secret: the username is "<expiry unix time>:<user>" and the password is
// base64(HMAC-SHA1(secret, username)). Anyone holding the secret can mint a credential, so the same secret lets
// tandem hand out credentials for an external coturn. A Credentials is safe for concurrent use.
type Credentials struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
}

// NewCredentials returns a Credentials for the shared secret, at least MinSecretLength bytes long. A zero ttl means
// DefaultCredentialTTL.
func NewCredentials(secret string, ttl time.Duration) (*Credentials, error) {
	if len(secret) < MinSecretLength {
		return nil, fmt.Errorf("turnserver: the shared secret must be at least %d bytes, got %d", MinSecretLength, len(secret))
	}
	if ttl < 0 {
		return nil, fmt.Errorf("turnserver: negative credential TTL %v", ttl)
	}
	if ttl == 0 {
		ttl = DefaultCredentialTTL
	}
	return &Credentials{secret: []byte(secret), ttl: ttl, now: time.Now}, nil
}

// TTL reports how long a minted credential is valid.
func (c *Credentials) TTL() time.Duration { return c.ttl }

// Mint returns a username and password for user, valid for the TTL from now. An empty user is minted as "-", so
// that the username keeps its two parts.
func (c *Credentials) Mint(user string) (username, password string) {
	if user == "" {
		user = "-"
	}
	expiry := c.now().Add(c.ttl).Unix()
	username = strconv.FormatInt(expiry, 10) + ":" + user
	return username, c.password(username)
}

func (c *Credentials) password(username string) string {
	mac := hmac.New(sha1.New, c.secret)
	mac.Write([]byte(username)) // a hash.Hash never fails to write
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// parseUsername splits a username into its expiry and user parts.
func parseUsername(username string) (expiry time.Time, user string, err error) {
	stamp, user, ok := strings.Cut(username, ":")
	if !ok || user == "" || stamp == "" || len(stamp) > 19 {
		return time.Time{}, "", errMalformedUsername
	}
	for _, r := range stamp {
		if r < '0' || r > '9' {
			return time.Time{}, "", errMalformedUsername
		}
	}
	secs, err := strconv.ParseInt(stamp, 10, 64)
	if err != nil {
		return time.Time{}, "", errMalformedUsername
	}
	return time.Unix(secs, 0), user, nil
}

// check returns the password that belongs to username, or an error wrapping errMalformedUsername or errExpired.
// Whether the client knows that password is for the STUN message integrity check to tell.
func (c *Credentials) check(username string) (string, error) {
	expiry, _, err := parseUsername(username)
	if err != nil {
		return "", err
	}
	if c.now().After(expiry) {
		return "", fmt.Errorf("%w at %s", errExpired, expiry.UTC().Format(time.RFC3339))
	}
	return c.password(username), nil
}
