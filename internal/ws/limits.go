package ws

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// The bounds on what strangers can make the server hold: connections in total and per client address, those
// among them that have not logged in, how long a connection may go without logging in, and the memory and time
// taken by messages that have not arrived whole. docs/limits.md describes them.

// CloseTryAgainLater is the close code of a connection dropped because the server is too busy (RFC 6455,
// section 7.4.1, as registered with IANA).
const CloseTryAgainLater = 1013

// maxRefusing bounds the connections whose request the epoll loops read only to answer it with a refusal (the
// server or the client's address is at a cap). Past it, such a connection is closed as soon as it is accepted.
const maxRefusing = 64

// DefaultMaxConns is the default of Config.MaxConns for an open-file limit of files: all of it but a share kept
// for everything else tandem opens (TURN relays, the echo peer, HTTP requests, its own files): a sixty-fourth of
// it, at least 64 descriptors.
func DefaultMaxConns(files int) int {
	return max(files-max(files/64, 64), 1)
}

// addrKey groups client addresses for the per-address caps: an IPv4 address, or the /64 an IPv6 address is in
// (a single customer commonly has a whole /64).
type addrKey [16]byte

// addrCount is what one client address holds.
type addrCount struct {
	key      addrKey
	conns    int // connections held, including those whose request is being read
	unlogged int // of which have not logged in
}

// Connection accounting (Conn.acct, guarded by Server.mu).
const (
	acctNone     = iota // not counted (not added yet, or removed)
	acctAdmitted        // counted in held and unlogged (until it logs in), and in its address's counts
	acctRefusing        // read only to be refused: counted in refusing
)

// refusal is why a new connection is turned away, as an HTTP status and a text for a person.
type refusal struct {
	status int
	text   string
}

var (
	refuseFull     = &refusal{http.StatusServiceUnavailable, "tandem has as many connections as it can take; try again later"}
	refuseUnlogged = &refusal{http.StatusServiceUnavailable, "too many connections are waiting to log in; try again later"}
	refuseAddr     = &refusal{http.StatusTooManyRequests, "too many connections from your address"}
	refuseAddrWait = &refusal{http.StatusTooManyRequests, "too many connections from your address have not logged in"}
	// refuseForwarded: a trusted proxy's header does not say who the client is (proxy.go).
	refuseForwarded = &refusal{http.StatusBadRequest, "the proxy's X-Forwarded-For (or Forwarded) header has no valid client address"}
)

// retry is the Retry-After of a refusal: 10 s for a busy server or address, none for a bad request.
func (r *refusal) retry() bool { return r.status != http.StatusBadRequest }

// response is the whole HTTP answer of a refusal, for a handshake the epoll loop read.
func (r *refusal) response() []byte {
	body := r.text + "\n"
	retry := ""
	if r.retry() {
		retry = "Retry-After: 10\r\n"
	}
	return []byte("HTTP/1.1 " + strconv.Itoa(r.status) + " " + http.StatusText(r.status) + "\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		retry + "Connection: close\r\n\r\n" + body)
}

// write answers an HTTP request (Upgrade) with the refusal.
func (r *refusal) write(w http.ResponseWriter) {
	if r.retry() {
		w.Header().Set("Retry-After", "10")
	}
	http.Error(w, r.text, r.status)
}

// limited reports whether ip is held to the per-address caps, and its key.
func (s *Server) limited(ip netip.Addr) (addrKey, bool) {
	ip = ip.Unmap()
	if !ip.IsValid() || (ip.IsLoopback() && !s.cfg.LimitLoopback) || s.trustedProxy(ip) {
		return addrKey{}, false
	}
	k := addrKey(ip.As16())
	if ip.Is6() {
		clear(k[8:])
	}
	return k, true
}

// admitLocked counts c, a new connection from ip, unless a cap is reached: then it returns the refusal. s.mu is
// held.
func (s *Server) admitLocked(c *Conn, ip netip.Addr) *refusal {
	key, limited := s.limited(ip)
	var a *addrCount
	if limited {
		a = s.addrs[key]
	}
	switch {
	case s.held >= s.cfg.MaxConns:
		return refuseFull
	case s.unlogged >= s.cfg.MaxUnlogged:
		return refuseUnlogged
	case a != nil && s.cfg.MaxConnsPerAddr > 0 && a.conns >= s.cfg.MaxConnsPerAddr:
		return refuseAddr
	case a != nil && s.cfg.MaxUnloggedPerAddr > 0 && a.unlogged >= s.cfg.MaxUnloggedPerAddr:
		return refuseAddrWait
	}
	if limited && a == nil {
		a = &addrCount{key: key}
		s.addrs[key] = a
	}
	s.held++
	s.unlogged++
	if a != nil {
		a.conns++
		a.unlogged++
	}
	c.addr, c.acct, c.ip = a, acctAdmitted, ip.Unmap()
	return nil
}

// RemoteIP returns the client's IP address: the TCP peer's, or, when that is a trusted proxy
// (Config.TrustedProxies), the client's address the proxy forwarded; the zero Addr when it is not known.
func (c *Conn) RemoteIP() netip.Addr { return c.ip }

// uncountLocked takes c out of the counts; s.mu is held.
func (s *Server) uncountLocked(c *Conn) {
	switch c.acct {
	case acctAdmitted:
		s.held--
		if !c.loggedIn {
			s.unlogged--
		}
		if a := c.addr; a != nil {
			a.conns--
			if !c.loggedIn {
				a.unlogged--
			}
			if a.conns == 0 {
				delete(s.addrs, a.key)
			}
		}
	case acctRefusing:
		s.refusing--
	}
	c.acct, c.addr = acctNone, nil
}

// LoggedIn marks the connection as logged in: it is no longer held to Config.LoginTimeout nor counted among the
// connections that have not logged in.
func (c *Conn) LoggedIn() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loggedIn || c.state == stateClosed {
		return
	}
	c.loggedIn = true
	s := c.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.acct == acctAdmitted {
		s.unlogged--
		if c.addr != nil {
			c.addr.unlogged--
		}
	}
}

// account brings the server's total of bytes held for unfinished frames, messages and requests up to date with
// c's buffers, and reports false, having freed them, when c's growing them would take the total over
// Config.TotalPartial. It runs on c's reader.
func (c *Conn) account() bool {
	d := cap(c.in) + cap(c.frag) - c.held
	if d == 0 {
		return true
	}
	s := c.srv
	if d > 0 && s.partial.Load()+int64(d) > int64(s.cfg.TotalPartial) {
		c.in, c.frag, c.fragOp, c.fragSize = nil, nil, 0, 0
		s.partial.Add(-int64(c.held))
		c.held = 0
		s.partialDrops.Add(1)
		return false
	}
	s.partial.Add(int64(d))
	c.held += d
	return true
}

// Partial returns how many bytes are held for frames, messages and handshakes that have not arrived whole.
func (s *Server) Partial() int64 { return s.partial.Load() }

// PartialDrops returns how many connections were closed because the bytes held for unfinished messages of all
// connections together reached Config.TotalPartial.
func (s *Server) PartialDrops() uint64 { return s.partialDrops.Load() }

// Refused returns how many connections were turned away at a cap (answered with an HTTP error, or closed as they
// were accepted when even the refusals were too many).
func (s *Server) Refused() uint64 { return s.refused.Load() }

// LoginTimeouts returns how many connections were closed for not logging in within Config.LoginTimeout.
func (s *Server) LoginTimeouts() uint64 { return s.loginTimeouts.Load() }

// seconds writes d as a person reads it in a close reason: "60s", "1.5s", "2m0s".
func seconds(d time.Duration) string {
	if d%time.Second == 0 && d < 10*time.Minute {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}
