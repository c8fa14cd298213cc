package turnserver

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is what the TURN REST API scheme (and coturn) specify.
	"crypto/sha256"
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

// tagLength is the length of a session tag: 16 characters of unpadded base64url, 96 bits.
const tagLength = 16

var (
	errMalformedUsername = errors.New("turnserver: username is not <expiry unix time>:<session tag>:<user>")
	errExpired           = errors.New("turnserver: credential expired")
)

// Credentials mints and checks short-lived TURN credentials in the scheme of the TURN REST API, which coturn
// calls use-auth-secret: the username is "<expiry unix time>:<session tag>:<user>" and the password is
// base64(HMAC-SHA1(secret, username)). The scheme only needs the expiry first (coturn and pion read the digits
// before the first colon); the rest is tandem's: the session tag names the login the credential was minted for,
// so that the embedded server can hold that login to its quota and refuse its credential once the login is gone.
// Anyone holding the secret can mint a credential, so the same secret lets tandem hand out credentials for an
// external coturn. A Credentials is safe for concurrent use.
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

// Mint returns a username and password for user in the session whose tag is tag (from SessionTag or NewTag),
// valid for the TTL from now. An empty user is minted as "-", so that the username keeps its three parts.
func (c *Credentials) Mint(tag, user string) (username, password string) {
	if user == "" {
		user = "-"
	}
	expiry := c.now().Add(c.ttl).Unix()
	username = strconv.FormatInt(expiry, 10) + ":" + tag + ":" + user
	return username, c.password(username)
}

// SessionTag returns the tag of the login session named session: the same for the same session, unguessable
// without the secret, and revealing nothing of the session id, which is the hub's.
func (c *Credentials) SessionTag(session string) string {
	mac := hmac.New(sha256.New, c.secret)
	mac.Write([]byte("tandem TURN session\x00" + session)) // a hash.Hash never fails to write
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))[:tagLength]
}

// NewTag returns a random session tag, for credentials minted outside any login.
func NewTag() string {
	raw := make([]byte, tagLength*3/4)
	_, _ = rand.Read(raw) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(raw)
}

func (c *Credentials) password(username string) string {
	mac := hmac.New(sha1.New, c.secret)
	mac.Write([]byte(username)) // a hash.Hash never fails to write
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// parseUsername splits a username into its expiry, session tag and user parts.
func parseUsername(username string) (expiry time.Time, tag, user string, err error) {
	stamp, rest, ok := strings.Cut(username, ":")
	if !ok || stamp == "" || len(stamp) > 19 {
		return time.Time{}, "", "", errMalformedUsername
	}
	tag, user, ok = strings.Cut(rest, ":")
	if !ok || user == "" || !validTag(tag) {
		return time.Time{}, "", "", errMalformedUsername
	}
	for _, r := range stamp {
		if r < '0' || r > '9' {
			return time.Time{}, "", "", errMalformedUsername
		}
	}
	secs, err := strconv.ParseInt(stamp, 10, 64)
	if err != nil {
		return time.Time{}, "", "", errMalformedUsername
	}
	return time.Unix(secs, 0), tag, user, nil
}

func validTag(tag string) bool {
	if len(tag) != tagLength {
		return false
	}
	for i := 0; i < len(tag); i++ {
		b := tag[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}

// check returns the password that belongs to username and its session tag, or an error wrapping
// errMalformedUsername or errExpired (with the tag). Whether the client knows that password is for the STUN
// message integrity check to tell.
func (c *Credentials) check(username string) (password, tag string, err error) {
	expiry, tag, _, err := parseUsername(username)
	if err != nil {
		return "", "", err
	}
	if c.now().After(expiry) {
		return "", tag, fmt.Errorf("%w at %s", errExpired, expiry.UTC().Format(time.RFC3339))
	}
	return c.password(username), tag, nil
}
