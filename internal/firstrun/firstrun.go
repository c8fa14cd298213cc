// Package firstrun is the page a person meets when they open tandem's plain http address on a LAN, where tandem
// serves HTTPS with a self-signed certificate (-tls-self-signed): instead of a redirect that leads straight into
// the browser's "not private" warning, it explains that warning, shows the certificate's fingerprint to compare,
// links to the https address and shows it as a QR code for a phone on the same network. It also draws that QR
// code for the terminal tandem was started in.
package firstrun

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
)

// Paths the page is served at over plain HTTP.
const (
	pagePath   = "/"                 // the page itself (the web client's first-run.html)
	assetPath  = "/first-run.html"   // where the web client has it
	infoPath   = "/first-run.json"   // what the page shows: the fingerprint and the https addresses
	qrPath     = "/first-run-qr.svg" // the QR code of the https address
	cssPath    = "/css/firstrun.css"
	scriptPath = "/js/firstrun.js"
)

// Page is the first-run page of a server with a self-signed certificate.
type Page struct {
	fingerprint string
	urls        atomic.Pointer[[]string]

	mu  sync.Mutex
	qrs map[string][]byte // the SVG QR code of each of urls, drawn once
}

// New returns the page for the certificate whose SHA-256 fingerprint is given (certs.SelfSigned.Fingerprint).
func New(fingerprint string) *Page {
	return &Page{fingerprint: fingerprint}
}

// SetURLs gives the https addresses tandem listens on, LAN addresses first (as the start banner lists them). The
// page links to the one the browser used, when it is one of them, else to the first.
func (p *Page) SetURLs(urls []string) {
	urls = append([]string(nil), urls...)
	p.urls.Store(&urls)
}

func (p *Page) addresses() []string {
	if u := p.urls.Load(); u != nil {
		return *u
	}
	return nil
}

// LAN returns the first https address that is not this machine's own (localhost, a loopback address), or "".
func (p *Page) LAN() string {
	for _, u := range p.addresses() {
		if !isLocal(urlHost(u)) {
			return u
		}
	}
	return ""
}

// Info is what the page shows, as /first-run.json serves it.
type Info struct {
	// Fingerprint is the certificate's SHA-256 fingerprint, upper-case hex pairs separated by colons.
	Fingerprint string `json:"fingerprint"`
	// URL is the https address to open: the host the browser used for the plain http address, when tandem
	// listens on it, else the first LAN address. Empty when tandem knows none.
	URL string `json:"url,omitempty"`
	// QR is the address in the QR code: URL, unless that is this machine's own (localhost, a loopback address),
	// which a phone cannot open; then the first LAN address.
	QR string `json:"qr,omitempty"`
	// URLs are all the https addresses tandem listens on.
	URLs []string `json:"urls"`
}

// Info returns what the page shows to a browser that asked for host (a Host header, with or without a port).
func (p *Page) Info(host string) Info {
	urls := p.addresses()
	info := Info{Fingerprint: p.fingerprint, URLs: urls}
	if info.URLs == nil {
		info.URLs = []string{}
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	lan := ""
	for _, u := range urls {
		uh := urlHost(u)
		if lan == "" && !isLocal(uh) {
			lan = u
		}
		// The host the browser used; or, for this machine's own (127.0.0.1, say), its own https address.
		if info.URL == "" && host != "" && (uh == host || isLocal(host) && isLocal(uh)) {
			info.URL = u
		}
	}
	if info.URL == "" {
		info.URL = lan
		if info.URL == "" && len(urls) > 0 {
			info.URL = urls[0]
		}
	}
	info.QR = info.URL
	if isLocal(urlHost(info.URL)) && lan != "" {
		info.QR = lan
	}
	return info
}

// urlHost is the host of an https address, lower case, without brackets or port.
func urlHost(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return strings.ToLower(pu.Hostname())
}

// isLocal reports whether host names this machine only: localhost or a loopback address.
func isLocal(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// Handler serves requests that came over plain HTTP: the page at "/", what it shows at /first-run.json, the QR
// code at /first-run-qr.svg, and the few files of the web client it needs, taken from web (its stylesheet and
// script, the language files, the icon). Anything else, a WebSocket handshake included, goes to other (a
// redirect to https).
func (p *Page) Handler(web, other http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			other.ServeHTTP(w, r)
			return
		}
		switch path := r.URL.Path; {
		case path == pagePath && !isUpgrade(r):
			r2 := r.Clone(r.Context())
			r2.URL.Path, r2.URL.RawPath = assetPath, ""
			web.ServeHTTP(w, r2)
		case path == infoPath:
			p.serveInfo(w, r)
		case path == qrPath:
			p.serveQR(w, r)
		case path == cssPath, path == scriptPath, path == "/js/i18n.js", path == "/favicon.svg",
			strings.HasPrefix(path, "/js/lang/"):
			web.ServeHTTP(w, r)
		default:
			other.ServeHTTP(w, r)
		}
	})
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" || strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

func (p *Page) serveInfo(w http.ResponseWriter, r *http.Request) {
	body, err := json.Marshal(p.Info(r.Host))
	if err != nil {
		http.Error(w, "500 internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(body)
}

// qrOf returns the SVG QR code of u, one of the page's addresses (so that what is kept is bounded by them).
func (p *Page) qrOf(u string) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if svg, ok := p.qrs[u]; ok {
		return svg, nil
	}
	svg, err := SVG(u)
	if err != nil {
		return nil, err
	}
	if p.qrs == nil {
		p.qrs = make(map[string][]byte)
	}
	p.qrs[u] = svg
	return svg, nil
}

func (p *Page) serveQR(w http.ResponseWriter, r *http.Request) {
	info := p.Info(r.Host)
	if info.QR == "" {
		http.Error(w, "404 no https address known yet", http.StatusNotFound)
		return
	}
	svg, err := p.qrOf(info.QR)
	if err != nil {
		http.Error(w, "500 internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "image/svg+xml")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'")
	_, _ = w.Write(svg)
}
