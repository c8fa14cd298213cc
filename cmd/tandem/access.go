package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"tandem/internal/auth"
	"tandem/internal/netaddr"
	"tandem/internal/web"
	"tandem/internal/ws"
)

// accessOptions are the command line's access-control settings; docs/access.md explains them. The secrets (the
// server password, the JWT secret, the device-credential key) are never flags: they come from the environment
// or from files, so that they do not show in the process list.
type accessOptions struct {
	mode          string
	passwordFile  string
	usersFile     string
	invitesFile   string
	deviceTTL     time.Duration
	jwtSecretFile string
	jwtKeys       string
	jwks          string
	jwtAudience   string
	jwtIssuer     string
	jwtClaim      string
	jwtAlgs       string
	hashWorkers   int
	hashQueue     int
	loginRate     float64
	loginBurst    int
	maxBackoff    time.Duration
	proxies       []netip.Prefix   // -trusted-proxies
	embedders     []string         // -embed-origins
	redis         auth.RedisConfig // the cluster's Redis (-redis, -redis-prefix), for the shared login state
}

func (o *accessOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.mode, "auth", string(auth.Open), "who may log in: open (anyone, any free name), password (TANDEM_AUTH_PASSWORD or -auth-password-file), accounts (tandem user add), jwt (tokens from your app); see docs/access.md")
	fs.StringVar(&o.passwordFile, "auth-password-file", "", "password mode: a file holding the server password, or its Argon2id hash (tandem user hash); or set TANDEM_AUTH_PASSWORD")
	fs.StringVar(&o.usersFile, "auth-users", "", "accounts mode: the users file (empty: users.json in -data-dir)")
	fs.StringVar(&o.invitesFile, "auth-invites", "", `password and accounts modes: the invites file of tandem invite (empty: invites.json in -data-dir; "off": no invite links)`)
	fs.DurationVar(&o.deviceTTL, "auth-device-ttl", auth.DefaultDeviceTTL, "how long a device that signed in may come back without the password (each visit renews it)")
	fs.StringVar(&o.jwtSecretFile, "auth-jwt-secret-file", "", "jwt mode: a file holding the HMAC secret of the tokens; or set TANDEM_AUTH_JWT_SECRET")
	fs.StringVar(&o.jwtKeys, "auth-jwt-keys", "", "jwt mode: a PEM file of the public keys that sign the tokens (RSA, ECDSA, Ed25519)")
	fs.StringVar(&o.jwks, "auth-jwks", "", "jwt mode: a JSON Web Key Set of the signing keys: a file, or an https URL (refetched every 10 minutes)")
	fs.StringVar(&o.jwtAudience, "auth-jwt-audience", "", "jwt mode: the aud the tokens must carry (e.g. this server's URL)")
	fs.StringVar(&o.jwtIssuer, "auth-jwt-issuer", "", "jwt mode: the iss the tokens must carry (your app)")
	fs.StringVar(&o.jwtClaim, "auth-jwt-claim", "sub", "jwt mode: the claim that holds the user's name")
	fs.StringVar(&o.jwtAlgs, "auth-jwt-algs", "", "jwt mode: the signature algorithms accepted, comma-separated (empty: HS256 for a secret, each key's own)")
	fs.IntVar(&o.hashWorkers, "auth-hash-workers", auth.DefaultHashWorkers(), "password hashes (and other costly login checks) run at once")
	fs.IntVar(&o.hashQueue, "auth-hash-queue", auth.DefaultHashQueue, "login checks that may wait for a worker; a login beyond is refused with server_busy")
	fs.Float64Var(&o.loginRate, "auth-login-rate", auth.DefaultLoginRate, "login attempts a second per client address (-1: no limit)")
	fs.IntVar(&o.loginBurst, "auth-login-burst", auth.DefaultLoginBurst, "login attempts at once per client address above -auth-login-rate")
	fs.DurationVar(&o.maxBackoff, "auth-max-backoff", auth.DefaultMaxBackoff, "longest wait after repeated failed logins from one address (or against one account)")
	fs.Func("trusted-proxies", "reverse proxies (addresses and CIDR prefixes, comma-separated) whose X-Forwarded-For or Forwarded header gives the client's address for the per-address limits; empty: none, the headers are ignored", func(v string) error {
		p, err := ws.ParseTrustedProxies(v)
		o.proxies = p
		return err
	})
	fs.Func("embed-origins", "sites (https origins, comma-separated, e.g. https://app.example.org) that may put the web client in an iframe and hand it a token; empty: none may frame it", func(v string) error {
		e, err := web.ParseEmbedOrigins(v)
		o.embedders = e
		return err
	})
}

// open makes the Auth the options describe; dataDir holds the default files and the device-credential key.
func (o *accessOptions) open(dataDir string, getenv func(string) string, limitLoopback bool, logger *slog.Logger) (*auth.Auth, error) {
	mode, err := auth.ParseMode(o.mode)
	if err != nil {
		return nil, fmt.Errorf("-auth: %w", err)
	}
	cfg := auth.Config{
		Mode: mode, DeviceTTL: o.deviceTTL, HashWorkers: o.hashWorkers, HashQueue: o.hashQueue,
		LoginRate: o.loginRate, LoginBurst: o.loginBurst, MaxBackoff: o.maxBackoff, LimitLoopback: limitLoopback,
		Redis: o.redis, Logger: logger,
	}
	if o.hashWorkers < 1 || o.hashQueue < 1 || o.loginBurst < 1 {
		return nil, errors.New("-auth-hash-workers, -auth-hash-queue and -auth-login-burst must be at least 1")
	}
	if mode == auth.Open {
		return auth.New(cfg)
	}
	if mode == auth.Password || mode == auth.Accounts {
		cfg.UsersFile = o.usersFile
		if cfg.UsersFile == "" {
			cfg.UsersFile = filepath.Join(dataDir, "users.json")
		}
		switch o.invitesFile {
		case "off":
		case "":
			cfg.InvitesFile = filepath.Join(dataDir, "invites.json")
		default:
			cfg.InvitesFile = o.invitesFile
		}
		if cfg.Key, err = deviceKey(dataDir, getenv); err != nil {
			return nil, err
		}
	}
	switch mode {
	case auth.Password:
		if cfg.Password, err = secret("TANDEM_AUTH_PASSWORD", o.passwordFile, "-auth-password-file", getenv); err != nil {
			return nil, err
		}
	case auth.JWT:
		j := auth.JWTConfig{JWKS: o.jwks, Audience: o.jwtAudience, Issuer: o.jwtIssuer, Claim: o.jwtClaim}
		if s, err := secret("TANDEM_AUTH_JWT_SECRET", o.jwtSecretFile, "-auth-jwt-secret-file", getenv); err == nil {
			j.Secret = []byte(s)
		} else if o.jwtSecretFile != "" {
			return nil, err
		}
		if o.jwtKeys != "" {
			if j.PublicKeysPEM, err = os.ReadFile(o.jwtKeys); err != nil {
				return nil, fmt.Errorf("-auth-jwt-keys: %w", err)
			}
		}
		j.Algorithms = splitList(o.jwtAlgs)
		cfg.JWT = j
	}
	return auth.New(cfg)
}

// secret reads a secret from the environment variable env, or else from file; flagName names the file's flag
// in errors.
func secret(env, file, flagName string, getenv func(string) string) (string, error) {
	if v := getenv(env); v != "" {
		return v, nil
	}
	if file == "" {
		return "", fmt.Errorf("set %s or %s", env, flagName)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flagName, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s: %s is empty", flagName, file)
	}
	return s, nil
}

// deviceKey is TANDEM_AUTH_KEY (hex; the same on every node that serves the same users), or a random key kept in
// the data directory.
func deviceKey(dataDir string, getenv func(string) string) ([]byte, error) {
	if v := getenv("TANDEM_AUTH_KEY"); v != "" {
		k, err := hex.DecodeString(strings.TrimSpace(v))
		if err != nil || len(k) < 16 {
			return nil, errors.New("TANDEM_AUTH_KEY: want at least 16 bytes in hex (openssl rand -hex 32)")
		}
		return k, nil
	}
	return auth.LoadOrCreateKey(filepath.Join(dataDir, "auth-key"))
}

// publicExposure says why a server listening on addr is reachable from the internet, or "" when it seems not to
// be (a loopback or private address; a machine with no public address).
func publicExposure(addr net.Addr, o *netOptions) string {
	if d := splitList(o.acmeDomains); len(d) > 0 {
		return "it serves the public domain " + d[0]
	}
	if ip, err := netip.ParseAddr(o.turnPublicIP); err == nil && public(ip) {
		return "its public address is " + ip.String()
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return ""
	}
	if ip := ap.Addr().Unmap(); !ip.IsUnspecified() {
		if public(ip) {
			return "it listens on the public address " + ip.String()
		}
		return ""
	}
	local, _ := netaddr.Local()
	for _, ip := range local {
		if public(ip) {
			return "it listens on every address of this machine, among them the public " + ip.String()
		}
	}
	return ""
}

func public(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsGlobalUnicast() && !ip.IsPrivate()
}

// warnIfOpen warns, in the open mode, when the server can be reached from the internet, and says how to close it.
func warnIfOpen(a *auth.Auth, addr net.Addr, o *netOptions, logger *slog.Logger) {
	if a.Mode() != auth.Open {
		return
	}
	if why := publicExposure(addr, o); why != "" {
		logger.Warn("tandem is open to anyone who reaches it ("+why+"): anyone can log in under any free name, see who is online, call them and use the TURN relay. "+
			"To close it, restart with -auth password (and TANDEM_AUTH_PASSWORD), -auth accounts (after tandem user add NAME) or -auth jwt; see docs/access.md",
			"auth", "open")
	}
}
