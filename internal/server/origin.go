package server

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
)

// origin is a web origin, normalized: lower-case scheme and host, an IP address in its canonical form, the port
// always written out.
type origin struct {
	scheme, host string
	port         int
}

// parseOrigin reads an Origin header value (or a URL, whose path is ignored). It fails for "null" (a file:// or
// sandboxed page) and for anything that is not an http or https origin.
func parseOrigin(s string) (origin, error) {
	u, err := url.Parse(s)
	if err != nil {
		return origin{}, fmt.Errorf("origin %q: %w", s, err)
	}
	o := origin{scheme: strings.ToLower(u.Scheme), host: normalizeHost(u.Hostname())}
	switch {
	case o.scheme != "http" && o.scheme != "https":
		return origin{}, fmt.Errorf("origin %q: not an http or https URL", s)
	case o.host == "" || u.User != nil:
		return origin{}, fmt.Errorf("origin %q: no host", s)
	}
	if p := u.Port(); p != "" {
		if o.port, err = strconv.Atoi(p); err != nil || o.port <= 0 || o.port > 65535 {
			return origin{}, fmt.Errorf("origin %q: bad port", s)
		}
	} else {
		o.port = defaultPort(o.scheme)
	}
	return o, nil
}

func defaultPort(scheme string) int {
	if scheme == "https" {
		return 443
	}
	return 80
}

// normalizeHost lower-cases a host name and drops a final dot; an IP address is written in its canonical form.
func normalizeHost(h string) string {
	h = strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.Unmap().String()
	}
	return h
}

// originRule decides which pages may open the WebSocket (Config.AllowedOrigins).
type originRule struct {
	any     bool            // no AllowedOrigins: every page may
	allowed map[origin]bool // AllowedOrigins and PublicURL
	raw     map[string]bool // AllowedOrigins entries that are not origins ("null"), compared as they are
	hosts   []string        // Config.Hosts and the loopback names, normalized
	served  atomic.Pointer[served]
}

// served is where tandem's own page is: the scheme and the port Serve listens on.
type served struct {
	scheme string
	port   int
}

func newOriginRule(cfg Config) (*originRule, error) {
	r := &originRule{
		any:     len(cfg.AllowedOrigins) == 0,
		allowed: make(map[origin]bool),
		raw:     make(map[string]bool),
		hosts:   []string{"localhost", "127.0.0.1", "::1"},
	}
	for _, a := range cfg.AllowedOrigins {
		if o, err := parseOrigin(a); err == nil {
			r.allowed[o] = true
		} else {
			r.raw[strings.ToLower(strings.TrimSuffix(a, "/"))] = true
		}
	}
	if cfg.PublicURL != "" {
		o, err := parseOrigin(cfg.PublicURL)
		if err != nil {
			return nil, fmt.Errorf("the public URL: %w", err)
		}
		r.allowed[o] = true
	}
	for _, h := range cfg.Hosts {
		n := normalizeHost(h)
		if !validHost(n) {
			return nil, fmt.Errorf("host %q: not a host name (a wildcard only as the first label, *.example.org) or an IP address", h)
		}
		r.hosts = append(r.hosts, n)
	}
	return r, nil
}

// validHost reports whether a normalized host is an IP address, a host name, or a host name under "*.".
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	name, _ := strings.CutPrefix(h, "*.")
	if name == "" || strings.HasPrefix(name, ".") || strings.Contains(name, "..") {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// serve tells the rule where tandem's own page is served: the scheme, and the port it listens on.
func (r *originRule) serve(scheme string, port int) {
	r.served.Store(&served{scheme: scheme, port: port})
}

// allows reports whether a page of origin (an Origin header value) may open the WebSocket. A request without an
// Origin comes from a program, not a web page, and is allowed.
func (r *originRule) allows(o string) bool {
	if r.any || o == "" {
		return true
	}
	if r.raw[strings.ToLower(o)] {
		return true
	}
	po, err := parseOrigin(o)
	if err != nil {
		return false
	}
	if r.allowed[po] {
		return true
	}
	sv := r.served.Load()
	if sv == nil || po.scheme != sv.scheme || po.port != sv.port {
		return false
	}
	for _, h := range r.hosts {
		if h == po.host {
			return true
		}
		if rest, ok := strings.CutPrefix(h, "*."); ok {
			if label, parent, ok := strings.Cut(po.host, "."); ok && label != "" && parent == rest {
				return true
			}
		}
	}
	return false
}
