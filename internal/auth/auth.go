// Package auth decides who may log in to a tandem server: the access modes of docs/access.md (open, a server
// password, accounts, tokens from the operator's app), invite links, device credentials that spare a returning
// device a password hash, and the throttling of logins per client address. Expensive checks (Argon2id, token
// signatures, the invites file) run on a bounded pool of workers, never on the loops that read connections, and a
// connection's messages wait, in order and bounded, while its login is checked.
package auth

import (
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/hub"
	"tandem/internal/ws"
	"tandem/protocol"
)

// Mode is how a server lets users in.
type Mode string

// The modes.
const (
	Open     Mode = "open"     // anyone, under any free name: the tutorial's behaviour
	Password Mode = "password" // anyone who knows the server's password, under any free name
	Accounts Mode = "accounts" // account holders, each under their account's name
	JWT      Mode = "jwt"      // whoever the operator's app signs a token for, under the token's name
)

// ParseMode reads a -auth value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Open, Password, Accounts, JWT:
		return m, nil
	}
	return "", fmt.Errorf("auth: unknown mode %q: use open, password, accounts or jwt", s)
}

// Config configures an Auth. Zero fields take the defaults named beside them.
type Config struct {
	Mode Mode
	// Password is the password mode's server password: the password itself, or its Argon2id hash in the PHC
	// format (`tandem user hash` prints one), which costs a hash per login that carries it.
	Password string
	// UsersFile is the accounts mode's users file (tandem user add ...).
	UsersFile string
	// InvitesFile, in the password and accounts modes, enables invite links (tandem invite); "" for none.
	InvitesFile string
	// Key signs device credentials (at least 16 bytes; LoadOrCreateKey). Required but in the jwt mode.
	Key []byte
	// DeviceTTL is how long a device credential lets its device in without the password; each use renews it.
	// Default 30 days.
	DeviceTTL time.Duration
	// JWT configures the jwt mode.
	JWT JWTConfig

	// HashWorkers is how many expensive checks run at once; default half of GOMAXPROCS, at least 1.
	HashWorkers int
	// HashQueue is how many checks may wait for a worker; past it a login is refused with server_busy. Default 64.
	HashQueue int
	// LoginRate and LoginBurst limit login attempts per client address (a token bucket); defaults 2 a second,
	// bursts of 20. A negative LoginRate turns the limit off.
	LoginRate  float64
	LoginBurst int
	// MaxBackoff is the longest a client address (or an account) must wait after repeated failed logins;
	// default 30 s.
	MaxBackoff time.Duration
	// LimitLoopback throttles loopback clients too (by default they are exempt, as from the transport's
	// per-address caps: a reverse proxy on the same host would otherwise put everyone in one bucket).
	LimitLoopback bool
	// Redis, on the nodes of a cluster, shares the login allowance per address, the failure backoff, the token ids
	// seen and the invite uses between the nodes (shared.go); without it (a single node) they are kept in memory.
	Redis  RedisConfig
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultDeviceTTL = 30 * 24 * time.Hour
	DefaultHashQueue = 64
)

// DefaultHashWorkers is the default of Config.HashWorkers: half of GOMAXPROCS, at least 1, so that hashes never
// take every core from relaying.
func DefaultHashWorkers() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// Auth checks logins for a hub (hub.Authenticator) in one of the modes. Make it with New, give it to the hub
// (hub.Config.Auth) and make each connection's handler with Connect; Close it when the server has stopped.
type Auth struct {
	cfg      Config
	log      *slog.Logger
	pool     *pool
	throttle *throttle
	shared   *shared // nil on a single node
	key      deviceKey
	jwt      *verifier
	clock    atomic.Pointer[func() time.Time] // time.Now; tests replace it

	passwordMAC  []byte // of a plain server password
	passwordHash *phc   // of a hashed one
	passwordGen  string

	reloadMu   sync.Mutex // held while the files are re-read
	users      atomic.Pointer[map[string]userEntry]
	usersStamp stamp
	invites    atomic.Pointer[map[string]Invite] // by id
	invStamp   stamp

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	logins *prometheus.CounterVec
}

type userEntry struct {
	hash phc
	gen  string
}

// New checks cfg, loads what the mode needs and starts watching its files.
func New(cfg Config) (*Auth, error) {
	if cfg.Mode == "" {
		cfg.Mode = Open
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DeviceTTL <= 0 {
		cfg.DeviceTTL = DefaultDeviceTTL
	}
	if cfg.HashWorkers <= 0 {
		cfg.HashWorkers = DefaultHashWorkers()
	}
	if cfg.HashQueue <= 0 {
		cfg.HashQueue = DefaultHashQueue
	}
	if cfg.LoginRate == 0 {
		cfg.LoginRate = DefaultLoginRate
	}
	if cfg.LoginBurst <= 0 {
		cfg.LoginBurst = DefaultLoginBurst
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	a := &Auth{cfg: cfg, log: cfg.Logger, key: deviceKey(cfg.Key),
		stop: make(chan struct{}), done: make(chan struct{}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_auth_logins_total",
			Help: "Logins checked by the access mode, by result: ok, refused (wrong or missing credentials), throttled (per-address limits), busy (the check queue was full).",
		}, []string{"result"}),
	}
	now := time.Now
	a.clock.Store(&now)
	switch cfg.Mode {
	case Open:
		close(a.done)
		return a, nil
	case Password:
		if cfg.Password == "" {
			return nil, errors.New("auth: the password mode needs a password (TANDEM_AUTH_PASSWORD or -auth-password-file)")
		}
	case Accounts:
		if cfg.UsersFile == "" {
			return nil, errors.New("auth: the accounts mode needs a users file (-auth-users)")
		}
	case JWT:
		if cfg.InvitesFile != "" {
			return nil, errors.New("auth: invite links go with the password and accounts modes, not jwt")
		}
		v, err := newVerifier(cfg.JWT)
		if err != nil {
			return nil, err
		}
		a.jwt = v
	default:
		return nil, fmt.Errorf("auth: unknown mode %q", cfg.Mode)
	}
	if cfg.Mode != JWT && len(cfg.Key) < 16 {
		return nil, errors.New("auth: a key of at least 16 bytes is needed to sign device credentials")
	}
	if cfg.Mode == Password {
		a.passwordGen = a.key.generation("password", cfg.Password)
		if strings.HasPrefix(cfg.Password, "$argon2id$") {
			h, err := parseHash(cfg.Password)
			if err != nil {
				return nil, fmt.Errorf("auth: the server password: %w", err)
			}
			a.passwordHash = &h
		} else {
			a.passwordMAC = a.key.mac("password:" + cfg.Password)
		}
	}
	if err := a.loadUsers(); err != nil {
		return nil, err
	}
	if err := a.loadInvites(); err != nil {
		return nil, err
	}
	if cfg.Mode == Accounts && len(*a.users.Load()) == 0 {
		a.log.Warn("the users file has no accounts yet: nobody can log in until one is added (tandem user add NAME)", "file", cfg.UsersFile)
	}
	a.throttle = newThrottle(cfg.LoginRate, cfg.LoginBurst, cfg.MaxBackoff, cfg.LimitLoopback)
	if cfg.Redis.URL != "" || cfg.Redis.Client != nil {
		s, err := newShared(cfg.Redis, a.throttle, a.log)
		if err != nil {
			return nil, err
		}
		a.shared = s
	}
	a.pool = newPool(cfg.HashWorkers, cfg.HashQueue)
	go a.watch()
	return a, nil
}

func (a *Auth) now() time.Time { return (*a.clock.Load())() }

// Mode returns the mode.
func (a *Auth) Mode() Mode { return a.cfg.Mode }

// Close stops the workers (checks still waiting are refused) and the file watcher.
func (a *Auth) Close() {
	if a.cfg.Mode == Open {
		return
	}
	a.closeOnce.Do(func() {
		close(a.stop)
		<-a.done
		a.pool.close()
		if a.shared != nil {
			a.shared.close()
		}
	})
}

// Collectors are the metrics of a, for a Prometheus registry.
func (a *Auth) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		a.logins,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tandem_auth_checks_pending",
			Help: "Login checks (password hashes, tokens, invites) running or waiting for a worker.",
		}, func() float64 {
			if a.pool == nil {
				return 0
			}
			return float64(a.pool.busy.Load())
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tandem_auth_redis_errors_total",
			Help: "Calls to the cluster's Redis for the shared login state that failed: the allowance and backoff then fail open (each node's own still apply), single-use credentials closed.",
		}, func() float64 {
			if a.shared == nil {
				return 0
			}
			return float64(a.shared.errors.Load())
		}),
	}
}

// Connect makes the handler of a new connection: its hub session, which reaches the connection through a gate
// (gate.go) in every mode but open.
func (a *Auth) Connect(h *hub.Hub, c *ws.Conn, host string) ws.Handler {
	if a == nil || a.cfg.Mode == Open {
		return h.Connect(c, host)
	}
	return h.Connect(&gate{ws: c, ip: c.RemoteIP()}, host)
}

// Info is what a client may learn of the access mode without logging in (GET /auth.json).
type Info struct {
	Mode    Mode `json:"mode"`
	Invites bool `json:"invites,omitempty"` // invite links are accepted
	// Embedders are the origins (besides the page's own) that may hand the web client a token with postMessage,
	// in the jwt mode: the server's -embed-origins (the sites that may frame it) and -allowed-origins.
	Embedders []string `json:"embedders,omitempty"`
}

// Info returns the mode's description for clients.
func (a *Auth) Info() Info {
	if a == nil {
		return Info{Mode: Open}
	}
	return Info{Mode: a.cfg.Mode, Invites: a.cfg.InvitesFile != "" && a.cfg.Mode != Open}
}

// InfoHandler serves Info as JSON; a nil a is the open mode. embedders are the origins allowed to hand the web
// client a token (-embed-origins and -allowed-origins), told to it in the jwt mode.
func InfoHandler(a *Auth, embedders []string) http.Handler {
	info := a.Info()
	if info.Mode == JWT {
		info.Embedders = embedders
	}
	body, _ := json.Marshal(info)
	body = append(body, '\n')
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(body)
	})
}

// outcome is a check's result: the verdict for the hub and what to remember of it.
type outcome struct {
	v       hub.LoginVerdict
	grant   grant  // how the connection got in, when it did
	failed  bool   // a wrong credential: counted against the address (and account)
	account string // the account named, for the per-account backoff
	undo    func() // gives back what the check took (an invite use, a token's jti) if the login then fails
}

func refuse(code, message string) outcome {
	return outcome{v: hub.LoginVerdict{Code: code, Message: message, RetryAfter: -1}}
}

func failure(message string) outcome {
	o := refuse(protocol.CodeUnauthorized, message)
	o.failed = true
	return o
}

func waitOutcome(code, message string, wait time.Duration) outcome {
	secs := max(1, int((wait+time.Second-1)/time.Second))
	return outcome{v: hub.LoginVerdict{Code: code, Message: message + ": try again in " + strconv.Itoa(secs) + " s", RetryAfter: secs}}
}

func admit(name string, g grant) outcome {
	return outcome{v: hub.LoginVerdict{Name: name, RetryAfter: -1}, grant: g}
}

// CheckLogin is the hub's Authenticator: it decides a login at once when that is cheap (a repeat, a resume, a
// device credential, the plain server password), or else hands it to the pool.
func (a *Auth) CheckLogin(s *hub.Session, req *hub.LoginRequest) {
	g, _ := req.Conn.(*gate)
	var ip netip.Addr
	var gr grant
	if g != nil {
		ip, gr = g.ip, g.grant
	}
	if req.Current != "" && (req.Name == "" || req.Name == req.Current) { // the same login again
		a.conclude(g, s, req, ip, admit(req.Current, gr))
		return
	}
	if wait := a.throttle.attempt(ip); wait > 0 {
		a.logins.WithLabelValues("throttled").Inc()
		a.conclude(g, s, req, ip, waitOutcome(protocol.CodeRateLimited, "too many logins from your address", wait))
		return
	}
	if req.Resume { // the resume token of a user who got in: the same user
		a.conclude(g, s, req, ip, admit(req.Name, gr))
		return
	}
	var deviceErr error
	if req.Device != "" {
		o, err := a.checkDevice(req)
		if err == nil {
			a.conclude(g, s, req, ip, o)
			return
		}
		deviceErr = err
	}
	if req.Current != "" && gr.kind != "" && gr.kind != kindAccount && req.Password == "" && req.Invite == "" && req.JWT == "" {
		// A rename of a connection that got in with the server's password or an invite: no new credential is
		// needed, unless the invite fixed the name (or the token did).
		if gr.fixed != "" {
			a.conclude(g, s, req, ip, refuse(protocol.CodeUnauthorized, "you were let in as "+gr.fixed+" and cannot take another name"))
			return
		}
		a.conclude(g, s, req, ip, a.guestName(req.Name, gr))
		return
	}
	if req.Password == "" && req.Invite == "" && req.JWT == "" {
		switch {
		case errors.Is(deviceErr, errDeviceExpired):
			a.conclude(g, s, req, ip, refuse(protocol.CodeExpired, "your sign-in on this device has expired: "+a.needs()))
		case errors.Is(deviceErr, errDeviceStale):
			a.conclude(g, s, req, ip, refuse(protocol.CodeUnauthorized, deviceErr.Error()+": "+a.needs()))
		case deviceErr != nil:
			a.conclude(g, s, req, ip, failure(deviceErr.Error()))
		default:
			a.conclude(g, s, req, ip, refuse(protocol.CodeAuthRequired, "this server lets in only "+a.who()+": "+a.needs()))
		}
		return
	}
	account := ""
	if a.cfg.Mode == Accounts && req.Invite == "" {
		if _, ok := (*a.users.Load())[req.Name]; ok {
			account = req.Name
		}
	}
	if wait := a.throttle.backoff(ip, account); wait > 0 {
		a.logins.WithLabelValues("throttled").Inc()
		a.conclude(g, s, req, ip, waitOutcome(protocol.CodeRateLimited, "too many failed logins", wait))
		return
	}
	// In a cluster the attempts and failures the other nodes saw are asked of Redis, on the pool, before the check.
	checked := func(check func() outcome) func() outcome {
		if a.shared == nil {
			return check
		}
		return func() outcome {
			if wait := a.shared.attempt(ip, a.now()); wait > 0 {
				a.logins.WithLabelValues("throttled").Inc()
				return waitOutcome(protocol.CodeRateLimited, "too many logins from your address", wait)
			}
			if wait := a.shared.backoff(ip, account, a.now()); wait > 0 {
				a.logins.WithLabelValues("throttled").Inc()
				return waitOutcome(protocol.CodeRateLimited, "too many failed logins", wait)
			}
			return check()
		}
	}
	switch {
	case req.Invite != "":
		if a.cfg.InvitesFile == "" {
			a.conclude(g, s, req, ip, failure("this server takes no invite links"))
			return
		}
		a.async(g, s, req, ip, checked(func() outcome { return a.checkInvite(req) }))
	case a.cfg.Mode == Password && req.Password != "":
		if a.passwordHash != nil || a.shared != nil {
			a.async(g, s, req, ip, checked(func() outcome { return a.checkServerPassword(req) }))
			return
		}
		a.conclude(g, s, req, ip, a.checkServerPassword(req))
	case a.cfg.Mode == Accounts && req.Password != "":
		a.async(g, s, req, ip, checked(func() outcome { return a.checkAccount(req) }))
	case a.cfg.Mode == JWT && req.JWT != "":
		a.async(g, s, req, ip, checked(func() outcome { return a.checkJWT(req) }))
	default:
		a.conclude(g, s, req, ip, refuse(protocol.CodeAuthRequired, "this server lets in only "+a.who()+": "+a.needs()))
	}
}

// who and needs say, in a refusal, who may log in and what a login must carry.
func (a *Auth) who() string {
	switch a.cfg.Mode {
	case Password:
		return "those who know its password"
	case Accounts:
		return "its account holders"
	}
	return "users signed in through its app"
}

func (a *Auth) needs() string {
	var s string
	switch a.cfg.Mode {
	case Password:
		s = "log in with the server's password"
	case Accounts:
		s = "log in with your account's name and password"
	default:
		s = "log in with a token (jwt) from the app"
	}
	if a.Info().Invites {
		s += ", or an invite link"
	}
	return s
}

// async runs check on the pool while the connection's reading is paused (its later messages wait, in order); with
// the pool's queue full, the login is refused with server_busy at once.
func (a *Auth) async(g *gate, s *hub.Session, req *hub.LoginRequest, ip netip.Addr, check func() outcome) {
	if g == nil { // not behind a gate (a test's own connection): check here
		a.conclude(nil, s, req, ip, check())
		return
	}
	g.PauseReading() // before the job can end (and resume it)
	ok := a.pool.submit(job{
		run: func() {
			defer g.ResumeReading()
			a.conclude(g, s, req, ip, check())
		},
		cancel: func() {
			defer g.ResumeReading()
			a.conclude(g, s, req, ip, refuse(protocol.CodeServerBusy, "the server is shutting down"))
		},
	})
	if !ok {
		a.logins.WithLabelValues("busy").Inc()
		a.conclude(g, s, req, ip, waitOutcome(protocol.CodeServerBusy, "the server is busy checking other logins", time.Second))
		g.ResumeReading()
	}
}

// conclude hands the verdict to the hub and remembers what it means: a failure against the address, a success
// for the account and the connection's grant, or, if the hub refused the name after all, gives back what the
// check took.
func (a *Auth) conclude(g *gate, s *hub.Session, req *hub.LoginRequest, ip netip.Addr, o outcome) {
	if o.failed {
		a.throttle.failed(ip, o.account)
		if a.shared != nil {
			a.shared.failed(ip, o.account, a.now())
		}
	}
	if o.v.Code != "" && o.v.Code != protocol.CodeRateLimited && o.v.Code != protocol.CodeServerBusy {
		a.logins.WithLabelValues("refused").Inc()
	}
	if o.v.Code == "" && o.grant.kind != "" && o.grant.kind != kindJWT {
		o.v.Device = a.mintDevice(o.grant, o.v.Name)
	}
	in := s.FinishLogin(req, o.v)
	switch {
	case in && o.v.Code == "":
		a.logins.WithLabelValues("ok").Inc()
		if g != nil && o.grant.kind != "" {
			g.grant = o.grant
		}
		if o.account != "" {
			a.throttle.succeeded(o.account)
			if a.shared != nil {
				a.shared.succeeded(o.account)
			}
		}
	case o.v.Code == "" && o.undo != nil:
		o.undo()
	}
}

// checkServerPassword checks the server's password: its hash (on the pool), or its MAC (cheap).
func (a *Auth) checkServerPassword(req *hub.LoginRequest) outcome {
	if a.passwordHash != nil {
		return a.checkPassword(req, a.passwordHash.verify(req.Password))
	}
	return a.checkPassword(req, hmac.Equal(a.key.mac("password:"+req.Password), a.passwordMAC))
}

// checkPassword is the password mode's verdict once the password is checked.
func (a *Auth) checkPassword(req *hub.LoginRequest, right bool) outcome {
	if !right {
		return failure("wrong password")
	}
	return admit(req.Name, grant{kind: kindPassword})
}

// checkAccount checks an account's password (on the pool: it costs an Argon2id hash, also for a name that has
// no account, so that the time taken does not tell which names have one).
func (a *Auth) checkAccount(req *hub.LoginRequest) outcome {
	u, ok := (*a.users.Load())[req.Name]
	if !ok {
		dummyHash().verify(req.Password)
		return failure("unknown user or wrong password")
	}
	if !u.hash.verify(req.Password) {
		o := failure("unknown user or wrong password")
		o.account = req.Name
		return o
	}
	o := admit(req.Name, grant{kind: kindAccount, fixed: req.Name})
	o.account = req.Name
	return o
}

// checkInvite counts a use of an invite link (on the pool: it edits the invites file).
func (a *Auth) checkInvite(req *hub.LoginRequest) outcome {
	inv, err := a.useInvite(req.Invite)
	switch {
	case errors.Is(err, errShared):
		return refuse(protocol.CodeUnavailable, "the invite could not be checked (the cluster's shared state cannot be reached): try again shortly")
	case errors.Is(err, errInviteExpired):
		return refuse(protocol.CodeExpired, err.Error()+": ask for a new one")
	case errors.Is(err, errInviteUsed):
		return failure(err.Error() + ": ask for a new one")
	case errors.Is(err, errInviteUnknown):
		return failure(err.Error())
	case err != nil:
		a.log.Error("invite links: cannot update the invites file", "err", err)
		return refuse(protocol.CodeInternal, "the invite could not be checked: try again later")
	}
	a.rememberInvite(inv)
	gr := grant{kind: kindInvite, fixed: inv.Name}
	var o outcome
	if inv.Name != "" {
		if req.Name != "" && req.Name != inv.Name {
			o = refuse(protocol.CodeUnauthorized, "this invite link is for "+inv.Name)
		} else {
			o = admit(inv.Name, gr)
		}
	} else {
		o = a.guestName(req.Name, gr)
	}
	if o.v.Code != "" {
		_ = a.refundInvite(inv.ID)
		return o
	}
	o.undo = func() {
		if err := a.refundInvite(inv.ID); err != nil {
			a.log.Error("invite links: cannot give back an invite's use", "err", err)
		}
	}
	// The device credential names the invite, so that revoking it ends it.
	o.grant.kind = kindInvite + ":" + inv.ID
	return o
}

// useInvite counts a use of the invite whose secret is given: in the invites file on a single node, in Redis (the
// file only says which invites there are) in a cluster.
func (a *Auth) useInvite(secret string) (Invite, error) {
	now := a.now()
	if a.shared == nil {
		return useInvite(a.cfg.InvitesFile, secret, now)
	}
	inv, err := findInvite(a.cfg.InvitesFile, secret, now)
	if err != nil {
		return inv, err
	}
	ok, err := a.shared.useInvite(inv, now)
	switch {
	case err != nil:
		return inv, err
	case !ok:
		return inv, errInviteUsed
	}
	return inv, nil
}

// refundInvite gives back a use of invite id, where useInvite counted it.
func (a *Auth) refundInvite(id string) error {
	if a.shared != nil {
		a.shared.refundInvite(id)
		return nil
	}
	return refundInvite(a.cfg.InvitesFile, id)
}

// guestName lets a guest (server password, invite) in under a name of their choosing, which in the accounts
// mode must not be an account's.
func (a *Auth) guestName(name string, g grant) outcome {
	if a.cfg.Mode == Accounts && name != "" {
		for acct := range *a.users.Load() {
			if strings.EqualFold(acct, name) {
				return refuse(protocol.CodeNameTaken, "the name "+name+" belongs to an account: choose another")
			}
		}
	}
	return admit(name, g)
}

// checkJWT verifies a token from the operator's app (on the pool: a signature check, perhaps a JWKS fetch).
func (a *Auth) checkJWT(req *hub.LoginRequest) outcome {
	now := a.now()
	name, jti, exp, err := a.jwt.check(req.JWT, now)
	switch {
	case errors.Is(err, errTokenExpired):
		return refuse(protocol.CodeExpired, err.Error()+": get a new one from the app")
	case err != nil:
		return failure(err.Error())
	case req.Name != "" && req.Name != name:
		return refuse(protocol.CodeUnauthorized, "this token is for "+name+", not "+req.Name)
	}
	o := admit(name, grant{kind: kindJWT, fixed: name})
	switch {
	case jti == "":
	case a.shared != nil: // every node's tokens in one set, in Redis; refused when it cannot be asked
		ok, err := a.shared.useJTI(jti, exp.Add(a.jwt.cfg.Leeway), now)
		if err != nil {
			return refuse(protocol.CodeUnavailable, "the token could not be checked (the cluster's shared state cannot be reached): try again shortly")
		}
		if !ok {
			return failure(errTokenUsed.Error())
		}
		o.undo = func() { a.shared.forgetJTI(jti) }
	default:
		if !a.jwt.markUsed(jti, exp, now) {
			return failure(errTokenUsed.Error())
		}
		o.undo = func() { a.jwt.unmarkUsed(jti) }
	}
	return o
}

// errDeviceStale: a device credential whose grant is gone (the password changed, the account or the invite was
// removed). Not counted as a failure: the device did nothing wrong.
var errDeviceStale = errors.New("your sign-in on this device is no longer valid")

// checkDevice checks a device credential: signature, expiry, and that what it was granted against still holds.
func (a *Auth) checkDevice(req *hub.LoginRequest) (outcome, error) {
	if a.cfg.Mode == JWT {
		return outcome{}, errDeviceInvalid
	}
	c, err := a.key.open(req.Device, a.now())
	if err != nil {
		return outcome{}, err
	}
	name := req.Name
	kind, inviteID, _ := strings.Cut(c.Kind, ":")
	switch kind {
	case kindPassword:
		if a.cfg.Mode != Password || c.Gen != a.passwordGen {
			return outcome{}, errDeviceStale
		}
		return a.guestName(name, grant{kind: kindPassword}), nil
	case kindAccount:
		u, ok := (*a.users.Load())[c.Name]
		if a.cfg.Mode != Accounts || !ok || c.Gen != u.gen {
			return outcome{}, errDeviceStale
		}
		if name != "" && name != c.Name {
			return outcome{}, errDeviceStale
		}
		o := admit(c.Name, grant{kind: kindAccount, fixed: c.Name})
		o.account = c.Name
		return o, nil
	case kindInvite:
		inv, ok := (*a.invites.Load())[inviteID]
		if a.cfg.InvitesFile == "" || !ok || c.Gen != inv.ID {
			return outcome{}, errDeviceStale
		}
		if inv.Name != "" {
			if name != "" && name != inv.Name {
				return outcome{}, errDeviceStale
			}
			return admit(inv.Name, grant{kind: c.Kind, fixed: inv.Name}), nil
		}
		return a.guestName(name, grant{kind: c.Kind}), nil
	}
	return outcome{}, errDeviceInvalid
}

// mintDevice makes the device credential handed out with a login let in by g.
func (a *Auth) mintDevice(g grant, name string) string {
	c := deviceClaims{Kind: g.kind, Expires: a.now().Add(a.cfg.DeviceTTL).Unix()}
	kind, inviteID, _ := strings.Cut(g.kind, ":")
	switch kind {
	case kindPassword:
		c.Gen = a.passwordGen
	case kindAccount:
		u, ok := (*a.users.Load())[name]
		if !ok {
			return ""
		}
		c.Name, c.Gen = name, u.gen
	case kindInvite:
		c.Name, c.Gen = g.fixed, inviteID
	default:
		return ""
	}
	return a.key.mint(c)
}

// loadUsers (re)reads the users file of the accounts mode.
func (a *Auth) loadUsers() error {
	empty := map[string]userEntry{}
	if a.cfg.Mode != Accounts {
		a.users.Store(&empty)
		return nil
	}
	st, err := stampOf(a.cfg.UsersFile)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	u, err := readUsers(a.cfg.UsersFile)
	if err != nil {
		return err
	}
	m := make(map[string]userEntry, len(u.Users))
	for name, acct := range u.Users {
		h, _ := parseHash(acct.Hash) // checked by readUsers
		m[name] = userEntry{hash: h, gen: a.key.generation("account:"+name, acct.Hash)}
	}
	a.users.Store(&m)
	a.usersStamp = st
	return nil
}

// loadInvites (re)reads the invites file, for the device credentials of invited guests.
func (a *Auth) loadInvites() error {
	empty := map[string]Invite{}
	if a.cfg.InvitesFile == "" {
		a.invites.Store(&empty)
		return nil
	}
	st, err := stampOf(a.cfg.InvitesFile)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	f, err := readInvites(a.cfg.InvitesFile)
	if err != nil {
		return err
	}
	m := make(map[string]Invite, len(f.Invites))
	for _, inv := range f.Invites {
		m[inv.ID] = inv
	}
	a.invites.Store(&m)
	a.invStamp = st
	return nil
}

// rememberInvite adds an invite just used to the invites known, if the watcher has not read it yet, so that the
// device credential it gives works at once.
func (a *Auth) rememberInvite(inv Invite) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	old := *a.invites.Load()
	if _, ok := old[inv.ID]; ok {
		return
	}
	m := make(map[string]Invite, len(old)+1)
	for id, i := range old {
		m[id] = i
	}
	m[inv.ID] = inv
	a.invites.Store(&m)
}

// reloadEvery is how often the files are looked at for changes.
const reloadEvery = time.Second

// watch re-reads the users and invites files (and a JWKS) when they change, and forgets idle throttle records.
func (a *Auth) watch() {
	defer close(a.done)
	t := time.NewTicker(reloadEvery)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
		a.reload()
		if n%30 == 0 {
			a.throttle.sweep()
		}
	}
}

// reload re-reads what changed; a file that cannot be read is logged, and what was read before stays in force.
func (a *Auth) reload() {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if a.cfg.Mode == Accounts {
		if st, err := stampOf(a.cfg.UsersFile); err == nil && st != a.usersStamp {
			if err := a.loadUsers(); err != nil {
				a.log.Error("the users file could not be read again; the accounts read before stay in force", "err", err)
				a.usersStamp = st
			} else {
				a.log.Info("the users file changed: accounts reloaded", "accounts", len(*a.users.Load()))
			}
		}
	}
	if a.cfg.InvitesFile != "" {
		if st, err := stampOf(a.cfg.InvitesFile); err == nil && st != a.invStamp {
			if err := a.loadInvites(); err != nil {
				a.log.Error("the invites file could not be read again", "err", err)
				a.invStamp = st
			}
		}
	}
	if a.jwt != nil {
		if err := a.jwt.reload(a.now()); err != nil {
			a.log.Error("the JWKS could not be loaded again; the keys read before stay in force", "err", err)
		}
	}
}
