package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters of new hashes: OWASP's recommended minimum (19 MiB, 2 passes, one lane). A hash costs
// 35-80 ms of one core and 19 MiB while it runs, which is why hashes run only on the bounded pool (pool.go).
const (
	argonMemory  = 19 * 1024 // KiB
	argonTime    = 2
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
)

// Bounds on the parameters of a stored hash, so that a users file cannot make one check take unbounded memory
// or time.
const (
	maxArgonMemory = 256 * 1024 // KiB
	maxArgonTime   = 16
)

// HashPassword returns the Argon2id hash of password in the PHC string format
// ($argon2id$v=19$m=19456,t=2,p=1$salt$hash), with a fresh random salt.
func HashPassword(password string) string {
	salt := make([]byte, argonSaltLen)
	_, _ = rand.Read(salt)
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// phc is a parsed Argon2id hash.
type phc struct {
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

var errBadHash = errors.New("not an Argon2id hash in the PHC format ($argon2id$v=19$m=...,t=...,p=...$salt$hash)")

// parseHash reads a PHC string made by HashPassword (or by another Argon2id implementation).
func parseHash(s string) (phc, error) {
	var h phc
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return h, errBadHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return h, fmt.Errorf("%w: version %q", errBadHash, parts[2])
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &h.memory, &h.time, &h.threads); err != nil {
		return h, fmt.Errorf("%w: parameters %q", errBadHash, parts[3])
	}
	if h.memory < 8 || h.memory > maxArgonMemory || h.time < 1 || h.time > maxArgonTime || h.threads < 1 || h.threads > 4 {
		return h, fmt.Errorf("%w: parameters %q out of bounds (m at most %d KiB, t at most %d)", errBadHash, parts[3], maxArgonMemory, maxArgonTime)
	}
	var err error
	b64 := base64.RawStdEncoding
	if h.salt, err = b64.DecodeString(parts[4]); err != nil || len(h.salt) < 8 {
		return h, fmt.Errorf("%w: salt", errBadHash)
	}
	if h.key, err = b64.DecodeString(parts[5]); err != nil || len(h.key) < 16 || len(h.key) > 64 {
		return h, fmt.Errorf("%w: hash", errBadHash)
	}
	return h, nil
}

// verify reports whether password matches h. It costs what the hash's parameters say: call it on the pool.
func (h phc) verify(password string) bool {
	key := argon2.IDKey([]byte(password), h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(key, h.key) == 1
}

// dummyHash is checked against when a login names no account, so that such a login takes as long as one with
// a wrong password, and does not tell which names have accounts.
var dummyHash = sync.OnceValue(func() phc {
	h, _ := parseHash(HashPassword("tandem: no such account"))
	return h
})
