package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"tandem/protocol"
)

// JWTConfig configures the jwt mode: tokens signed by the operator's own app, whose claim names the user.
type JWTConfig struct {
	// Secret is a shared HMAC secret (HS256 unless Algorithms says otherwise); nil for none.
	Secret []byte
	// PublicKeysPEM holds PEM public keys (RSA, ECDSA, Ed25519), one or several; nil for none.
	PublicKeysPEM []byte
	// JWKS is a JSON Web Key Set: a file (re-read when it changes), or an https URL (fetched at start, every
	// JWKSRefresh, and when a token names a key it does not know, at most every 30 s). "" for none.
	JWKS string
	// JWKSRefresh is how often a JWKS URL is fetched again; default 10 minutes.
	JWKSRefresh time.Duration
	// Audience and Issuer must be the token's aud (one of them) and iss. Both are required.
	Audience string
	Issuer   string
	// Claim is the claim that holds the user's name; default "sub".
	Claim string
	// Algorithms pins the signature algorithms accepted; default: HS256 for Secret, and for each public key the
	// one its type implies (RS256, ES256/ES384/ES512, EdDSA) or its JWK's alg. "none" is never accepted.
	Algorithms []string
	// Leeway is the clock skew allowed on exp, nbf and iat; default 30 s.
	Leeway time.Duration
	// HTTPClient fetches a JWKS URL; default one with a 10 s timeout.
	HTTPClient *http.Client
}

// verifier checks tokens.
type verifier struct {
	cfg     JWTConfig
	parser  *jwt.Parser
	secret  []byte
	static  []verifyKey // from PublicKeysPEM
	algs    []string
	mu      sync.Mutex
	jwks    []verifyKey
	fetched time.Time // last fetch of a JWKS URL (tried)
	unknown time.Time // last fetch for a token naming an unknown key
	stamp   stamp     // of a JWKS file
	used    map[string]time.Time
}

// verifyKey is one public key, with the algorithm it may verify and its key id.
type verifyKey struct {
	kid string
	alg string
	key crypto.PublicKey
}

const (
	defaultJWKSRefresh = 10 * time.Minute
	jwksUnknownKidWait = 30 * time.Second
	maxJWKSSize        = 1 << 20
	maxUsedTokens      = 100_000
)

func newVerifier(cfg JWTConfig) (*verifier, error) {
	if cfg.Audience == "" || cfg.Issuer == "" {
		return nil, errors.New("auth: the jwt mode needs the audience and the issuer its tokens must carry (-auth-jwt-audience, -auth-jwt-issuer)")
	}
	if cfg.Secret == nil && cfg.PublicKeysPEM == nil && cfg.JWKS == "" {
		return nil, errors.New("auth: the jwt mode needs a key: a secret (TANDEM_AUTH_JWT_SECRET), public keys (-auth-jwt-keys) or a JWKS (-auth-jwks)")
	}
	if cfg.Secret != nil && len(cfg.Secret) < 32 {
		return nil, errors.New("auth: the JWT secret must be at least 32 bytes")
	}
	if cfg.Claim == "" {
		cfg.Claim = "sub"
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.JWKSRefresh <= 0 {
		cfg.JWKSRefresh = defaultJWKSRefresh
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	v := &verifier{cfg: cfg, secret: cfg.Secret, used: make(map[string]time.Time)}
	if cfg.PublicKeysPEM != nil {
		keys, err := parsePEMKeys(cfg.PublicKeysPEM)
		if err != nil {
			return nil, err
		}
		v.static = keys
	}
	if cfg.JWKS != "" {
		if err := v.loadJWKS(context.Background()); err != nil {
			return nil, err
		}
	}
	for _, a := range cfg.Algorithms {
		if a == "none" || jwt.GetSigningMethod(a) == nil {
			return nil, fmt.Errorf("auth: JWT algorithm %q is not supported", a)
		}
		if strings.HasPrefix(a, "HS") && v.secret == nil {
			return nil, fmt.Errorf("auth: JWT algorithm %s needs a secret", a)
		}
	}
	v.algs = cfg.Algorithms
	if v.algs == nil {
		if v.secret != nil {
			v.algs = append(v.algs, "HS256")
		}
		for _, k := range v.static {
			v.algs = append(v.algs, k.alg)
		}
		if cfg.JWKS != "" { // any the set may hold: each key is still held to its own
			v.algs = append(v.algs, "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
		}
		slices.Sort(v.algs)
		v.algs = slices.Compact(v.algs)
	}
	v.parser = jwt.NewParser(jwt.WithValidMethods(v.algs), jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
		jwt.WithAudience(cfg.Audience), jwt.WithIssuer(cfg.Issuer), jwt.WithLeeway(cfg.Leeway))
	return v, nil
}

// Why a token does not let a login in.
var (
	errTokenExpired = errors.New("the token has expired")
	errTokenUsed    = errors.New("this token has been used already (its jti was seen before)")
)

// check verifies a token and returns the user's name and the token's id (jti, "" for none) and expiry. It may
// fetch a JWKS: call it on the pool.
func (v *verifier) check(token string, now time.Time) (name, jti string, exp time.Time, err error) {
	// The algorithm first, for a precise refusal (the parser calls any algorithm it does not accept a bad
	// signature).
	if t, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{}); err == nil && !slices.Contains(v.algs, t.Method.Alg()) {
		return "", "", exp, fmt.Errorf("the token is signed with the algorithm %q, which this server does not accept", t.Method.Alg())
	}
	claims := jwt.MapClaims{}
	if _, err = v.parser.ParseWithClaims(token, claims, v.keyFunc); err != nil {
		return "", "", exp, describeJWTError(err)
	}
	raw, _ := claims[v.cfg.Claim].(string)
	n, nerr := protocol.ValidateName([]byte(raw))
	if nerr != nil {
		return "", "", exp, fmt.Errorf("the token's %q claim is not a valid name: %w", v.cfg.Claim, nerr)
	}
	if e, _ := claims.GetExpirationTime(); e != nil {
		exp = e.Time
	}
	jti, _ = claims["jti"].(string)
	return n, jti, exp, nil
}

// describeJWTError turns the parser's error into what the login reply says.
func describeJWTError(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && strings.Contains(msg, "exp claim"):
		return errors.New("the token must have an expiry (exp)")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && strings.Contains(msg, "aud claim"):
		return errors.New("the token must name this server's audience (aud)")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && strings.Contains(msg, "iss claim"):
		return errors.New("the token must name its issuer (iss)")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return errors.New("the token lacks a required claim")
	case errors.Is(err, jwt.ErrTokenExpired):
		return errTokenExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return errors.New("the token is not valid yet (nbf)")
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return errors.New("the token was issued in the future (iat)")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return errors.New("the token is for another audience (aud)")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return errors.New("the token is from another issuer (iss)")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return errors.New("the token's signature is not valid")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return errors.New("the token is signed with an algorithm or key this server does not accept")
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errors.New("the token is malformed")
	}
	return errors.New("the token is not valid")
}

// keyFunc picks the key for a token: the secret for HMAC, else the public keys of the token's algorithm (and
// key id, when it has one). Each key verifies only its own algorithm, so no token can have a public key used as
// an HMAC secret.
func (v *verifier) keyFunc(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if strings.HasPrefix(alg, "HS") {
		if v.secret == nil {
			return nil, errors.New("no secret")
		}
		return v.secret, nil
	}
	kid, _ := t.Header["kid"].(string)
	keys := v.keysFor(alg, kid)
	if len(keys) == 0 && v.cfg.JWKS != "" && v.refreshForUnknownKey() {
		keys = v.keysFor(alg, kid)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no %s key %q", alg, kid)
	}
	set := jwt.VerificationKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k)
	}
	return set, nil
}

func (v *verifier) keysFor(alg, kid string) []jwt.VerificationKey {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []jwt.VerificationKey
	for _, list := range [][]verifyKey{v.static, v.jwks} {
		for _, k := range list {
			if k.alg == alg && (kid == "" || k.kid == "" || k.kid == kid) {
				out = append(out, k.key)
			}
		}
	}
	return out
}

// refreshForUnknownKey fetches a JWKS URL again for a token whose key is unknown, unless that was done less
// than 30 s ago; it reports whether it fetched.
func (v *verifier) refreshForUnknownKey() bool {
	if !isURL(v.cfg.JWKS) {
		return false
	}
	v.mu.Lock()
	recent := time.Since(v.unknown) < jwksUnknownKidWait
	if !recent {
		v.unknown = time.Now()
	}
	v.mu.Unlock()
	if recent {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return v.loadJWKS(ctx) == nil
}

// markUsed remembers a token's jti until it expires; false when it was seen already (a replay).
func (v *verifier) markUsed(jti string, exp, now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if until, ok := v.used[jti]; ok && now.Before(until) {
		return false
	}
	if len(v.used) >= maxUsedTokens {
		for k, until := range v.used {
			if !now.Before(until) {
				delete(v.used, k)
			}
		}
		if len(v.used) >= maxUsedTokens {
			return false // refused rather than forgotten: tokens with a jti are single-use
		}
	}
	v.used[jti] = exp.Add(v.cfg.Leeway)
	return true
}

// unmarkUsed forgets a jti whose login failed after all (its name was taken), so the token can be tried again.
func (v *verifier) unmarkUsed(jti string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.used, jti)
}

func isURL(s string) bool { return strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://") }

// loadJWKS reads the JWKS file or fetches the JWKS URL.
func (v *verifier) loadJWKS(ctx context.Context) error {
	var data []byte
	src := v.cfg.JWKS
	if isURL(src) {
		v.mu.Lock()
		v.fetched = time.Now()
		v.mu.Unlock()
		u, err := url.Parse(src)
		if err != nil {
			return fmt.Errorf("auth: JWKS URL: %w", err)
		}
		if u.Scheme != "https" && !loopbackHost(u.Hostname()) {
			return fmt.Errorf("auth: the JWKS URL %s must be https", src)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return fmt.Errorf("auth: JWKS: %w", err)
		}
		resp, err := v.cfg.HTTPClient.Do(req)
		if err != nil {
			return fmt.Errorf("auth: JWKS: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("auth: JWKS %s: %s", src, resp.Status)
		}
		if data, err = io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1)); err != nil {
			return fmt.Errorf("auth: JWKS: %w", err)
		}
		if len(data) > maxJWKSSize {
			return fmt.Errorf("auth: JWKS %s is over %d bytes", src, maxJWKSSize)
		}
	} else {
		st, err := stampOf(src)
		if err != nil {
			return fmt.Errorf("auth: %w", err)
		}
		if data, err = os.ReadFile(src); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
		v.mu.Lock()
		v.stamp = st
		v.mu.Unlock()
	}
	keys, err := parseJWKS(data)
	if err != nil {
		return fmt.Errorf("auth: JWKS %s: %w", src, err)
	}
	v.mu.Lock()
	v.jwks = keys
	v.mu.Unlock()
	return nil
}

// reload re-reads a JWKS file that changed, or fetches a JWKS URL whose refresh time has come; the reloader
// calls it.
func (v *verifier) reload(now time.Time) error {
	src := v.cfg.JWKS
	switch {
	case src == "":
		return nil
	case isURL(src):
		v.mu.Lock()
		due := now.Sub(v.fetched) >= v.cfg.JWKSRefresh
		v.mu.Unlock()
		if !due {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return v.loadJWKS(ctx)
	}
	st, err := stampOf(src)
	v.mu.Lock()
	same := err == nil && st == v.stamp
	v.mu.Unlock()
	if same {
		return nil
	}
	return v.loadJWKS(context.Background())
}

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// parsePEMKeys reads every public key of PEM data (PUBLIC KEY blocks, PKIX; RSA PUBLIC KEY, PKCS #1).
func parsePEMKeys(data []byte) ([]verifyKey, error) {
	var keys []verifyKey
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var k crypto.PublicKey
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			k, err = parsePKIX(pem.EncodeToMemory(block))
		case "RSA PUBLIC KEY":
			k, err = jwt.ParseRSAPublicKeyFromPEM(pem.EncodeToMemory(block))
		default:
			return nil, fmt.Errorf("auth: JWT keys: a %q PEM block: want public keys only", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("auth: JWT keys: %w", err)
		}
		alg, err := algOf(k)
		if err != nil {
			return nil, fmt.Errorf("auth: JWT keys: %w", err)
		}
		keys = append(keys, verifyKey{alg: alg, key: k})
	}
	if len(keys) == 0 {
		return nil, errors.New("auth: JWT keys: no PEM public key found")
	}
	return keys, nil
}

func parsePKIX(p []byte) (crypto.PublicKey, error) {
	if k, err := jwt.ParseRSAPublicKeyFromPEM(p); err == nil {
		return k, nil
	}
	if k, err := jwt.ParseECPublicKeyFromPEM(p); err == nil {
		return k, nil
	}
	return jwt.ParseEdPublicKeyFromPEM(p)
}

// algOf is the algorithm a key of this type verifies by default.
func algOf(k crypto.PublicKey) (string, error) {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return "", errors.New("an RSA key must have at least 2048 bits")
		}
		return "RS256", nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "ES256", nil
		case elliptic.P384():
			return "ES384", nil
		case elliptic.P521():
			return "ES512", nil
		}
	case ed25519.PublicKey:
		return "EdDSA", nil
	}
	return "", fmt.Errorf("unsupported key type %T", k)
}

// jwk is one key of a JWKS, as far as tandem reads it.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS reads the signature keys of a JWKS (RSA, EC P-256/384/521, OKP Ed25519); keys for encryption and
// of other types are skipped.
func parseJWKS(data []byte) ([]verifyKey, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, err
	}
	b64 := base64.RawURLEncoding
	var keys []verifyKey
	for _, j := range set.Keys {
		if j.Use != "" && j.Use != "sig" {
			continue
		}
		var k crypto.PublicKey
		switch j.Kty {
		case "RSA":
			n, err1 := b64.DecodeString(j.N)
			e, err2 := b64.DecodeString(j.E)
			if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
				return nil, fmt.Errorf("key %q: bad RSA parameters", j.Kid)
			}
			k = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		case "EC":
			var curve elliptic.Curve
			switch j.Crv {
			case "P-256":
				curve = elliptic.P256()
			case "P-384":
				curve = elliptic.P384()
			case "P-521":
				curve = elliptic.P521()
			default:
				continue
			}
			x, err1 := b64.DecodeString(j.X)
			y, err2 := b64.DecodeString(j.Y)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("key %q: bad EC parameters", j.Kid)
			}
			// The uncompressed point, checked to be on the curve by ecdsa.ParseUncompressedPublicKey.
			size := (curve.Params().BitSize + 7) / 8
			if len(x) > size || len(y) > size {
				return nil, fmt.Errorf("key %q: bad EC parameters", j.Kid)
			}
			point := make([]byte, 1+2*size)
			point[0] = 4
			copy(point[1+size-len(x):], x)
			copy(point[1+2*size-len(y):], y)
			pk, err := ecdsa.ParseUncompressedPublicKey(curve, point)
			if err != nil {
				return nil, fmt.Errorf("key %q: %w", j.Kid, err)
			}
			k = pk
		case "OKP":
			x, err := b64.DecodeString(j.X)
			if j.Crv != "Ed25519" {
				continue
			}
			if err != nil || len(x) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("key %q: bad Ed25519 key", j.Kid)
			}
			k = ed25519.PublicKey(x)
		default:
			continue
		}
		alg, err := algOf(k)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", j.Kid, err)
		}
		if j.Alg != "" {
			if !compatible(j.Alg, k) {
				return nil, fmt.Errorf("key %q: alg %s does not fit a key of type %s", j.Kid, j.Alg, j.Kty)
			}
			alg = j.Alg
		}
		keys = append(keys, verifyKey{kid: j.Kid, alg: alg, key: k})
	}
	return keys, nil
}

// compatible reports whether alg may be verified with k.
func compatible(alg string, k crypto.PublicKey) bool {
	switch k.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		def, _ := algOf(k)
		return alg == def
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}
