// Package web serves tandem's browser client: static HTML, CSS and JavaScript modules embedded in the binary, with
// no build step and nothing fetched from anywhere but the tandem server itself, so it works on a LAN with no internet.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed static
var staticFS embed.FS

// contentTypes maps the file extensions the client uses to their media types. It is explicit rather than taken
// from the system's mime tables, which differ between machines (a module script must be served as JavaScript).
var contentTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".js":          "text/javascript; charset=utf-8",
	".svg":         "image/svg+xml",
	".png":         "image/png",
	".ico":         "image/x-icon",
	".json":        "application/json",
	".webmanifest": "application/manifest+json",
	".txt":         "text/plain; charset=utf-8",
}

// contentSecurityPolicy keeps the page to its own origin: scripts, styles and images come from the tandem server,
// and the only connection is the WebSocket back to it. Media elements play MediaStreams, which need no source.
// No other page may frame it, unless the operator lists the sites that embed it (contentSecurityPolicyFor).
const contentSecurityPolicy = cspSources + "frame-ancestors 'none'"

const cspSources = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; " +
	"form-action 'self'; "

// contentSecurityPolicyFor is the policy of a page that the origins given (ParseEmbedOrigins) may frame.
func contentSecurityPolicyFor(embedders []string) string {
	if len(embedders) == 0 {
		return contentSecurityPolicy
	}
	return cspSources + "frame-ancestors " + strings.Join(embedders, " ")
}

// ParseEmbedOrigins reads the origins allowed to put the web client in a frame (-embed-origins): a comma-separated
// list of https origins (https://app.example.org, a port if not 443), or http ones on a loopback host (for
// development). Each is returned as a browser writes it (lower case, no default port, no trailing slash), which is
// how it goes into the Content-Security-Policy and how the page compares a message's origin with it. Paths,
// wildcards, user names and anything that is not an origin are refused with an error that says why.
func ParseEmbedOrigins(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		o, err := parseEmbedOrigin(f)
		if err != nil {
			return nil, fmt.Errorf("embed origin %q: %w", f, err)
		}
		if !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	return out, nil
}

func parseEmbedOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Opaque != "" || u.Host == "":
		return "", errors.New("not an origin: write it as https://app.example.org")
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return "", errors.New("an origin has no path, query, fragment or user: write it as https://app.example.org")
	case strings.Contains(u.Host, "*"):
		return "", errors.New("no wildcards: list each origin")
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname())
	ip, ipErr := netip.ParseAddr(host)
	loopback := host == "localhost" || (ipErr == nil && ip.IsLoopback())
	switch {
	case scheme != "https" && !(scheme == "http" && loopback):
		return "", errors.New("must be https (http only for a loopback host, for development)")
	case ipErr == nil && ip.Zone() != "":
		return "", errors.New("no zone in the address")
	case ipErr != nil && !validHostName(host):
		return "", errors.New("not a host name")
	}
	if ipErr == nil {
		host = ip.Unmap().String()
		if ip.Unmap().Is6() {
			host = "[" + host + "]"
		}
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		switch {
		case err != nil || n < 1 || n > 65535:
			return "", errors.New("bad port")
		case !(scheme == "https" && n == 443) && !(scheme == "http" && n == 80):
			host += ":" + strconv.Itoa(n)
		}
	}
	return scheme + "://" + host, nil
}

// validHostName reports whether h (lower case) is a DNS name: labels of letters, digits and hyphens.
func validHostName(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// asset is one file of the client, prepared once: its bytes, a gzip-compressed copy when that is smaller, and a
// strong validator for conditional requests.
type asset struct {
	name        string
	contentType string
	body        []byte
	gzipped     []byte // nil when compression does not pay
	etag        string
}

// Handler returns an http.Handler that serves the web client: the page at "/" and its assets under their paths.
// Every response may be cached but must be revalidated (Cache-Control: no-cache with a strong ETag), so a browser
// picks up a new tandem version at once and otherwise gets a cheap 304. Text assets are served gzip-compressed to
// clients that accept it. Only GET and HEAD are allowed; an unknown path gets a 404.
func Handler() http.Handler { return EmbeddableHandler(nil) }

// EmbeddableHandler is Handler for a page that the origins given (as ParseEmbedOrigins returns them) may put in a
// frame: its Content-Security-Policy lists them in frame-ancestors (and it sends no X-Frame-Options, which cannot
// name them). With none, nothing may frame it.
func EmbeddableHandler(embedders []string) http.Handler {
	assets, err := load(staticFS, "static")
	if err != nil {
		// The files are compiled into the binary; failing to read them is a build defect, not a runtime condition.
		panic(fmt.Sprintf("web: reading embedded client: %v", err))
	}
	return &handler{assets: assets, csp: contentSecurityPolicyFor(embedders), embeddable: len(embedders) > 0}
}

type handler struct {
	assets     map[string]*asset // by URL path, "/" for the page
	csp        string
	embeddable bool
}

func load(fsys fs.FS, root string) (map[string]*asset, error) {
	assets := make(map[string]*asset)
	err := fs.WalkDir(fsys, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		urlPath := strings.TrimPrefix(p, root)
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return fmt.Errorf("%s: no content type for %q files", p, path.Ext(p))
		}
		a := newAsset(path.Base(p), ct, body)
		if path.Base(urlPath) == "index.html" {
			urlPath = strings.TrimSuffix(urlPath, "index.html") // the page lives at "/", not "/index.html"
		}
		assets[urlPath] = a
		return nil
	})
	if err != nil {
		return nil, err
	}
	index, err := languageIndex(fsys, root)
	if err != nil {
		return nil, err
	}
	assets[languageIndexPath] = newAsset(path.Base(languageIndexPath), contentTypes[".json"], index)
	return assets, nil
}

// languageIndexPath is where the client learns which languages it can speak: a JSON array of the tags of the files
// in js/lang (["en","zh-Hans"]), made from the embedded files, so that adding a language is adding its file.
const languageIndexPath = "/js/lang/index.json"

func languageIndex(fsys fs.FS, root string) ([]byte, error) {
	entries, err := fs.ReadDir(fsys, root+"/js/lang")
	if err != nil {
		return nil, fmt.Errorf("listing the client's languages: %w", err)
	}
	tags := make([]string, 0, len(entries))
	for _, e := range entries {
		if tag, ok := strings.CutSuffix(e.Name(), ".js"); ok && !e.IsDir() {
			tags = append(tags, tag)
		}
	}
	sort.Strings(tags)
	return json.Marshal(tags)
}

func newAsset(name, contentType string, body []byte) *asset {
	sum := sha256.Sum256(body)
	a := &asset{
		name:        name,
		contentType: contentType,
		body:        body,
		etag:        `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`,
	}
	if compressible(contentType) {
		a.gzipped = compress(body)
	}
	return a
}

func compressible(contentType string) bool {
	return strings.HasPrefix(contentType, "text/") || strings.Contains(contentType, "json") ||
		strings.Contains(contentType, "svg")
}

// compress returns body gzip-compressed, or nil when that saves too little to be worth a Vary'd response.
func compress(body []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(body)
	_ = zw.Close()
	if buf.Len() >= len(body)*9/10 {
		return nil
	}
	return buf.Bytes()
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a, ok := h.assets[r.URL.Path]
	if dir, isIndex := strings.CutSuffix(r.URL.Path, "index.html"); !ok && isIndex && h.assets[dir] != nil {
		http.Redirect(w, r, dir, http.StatusMovedPermanently)
		return
	}
	hdr := w.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	if !ok {
		http.Error(w, "404 page not found", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hdr.Set("Content-Type", a.contentType)
	hdr.Set("Cache-Control", "no-cache")
	if strings.HasPrefix(a.contentType, "text/html") {
		hdr.Set("Content-Security-Policy", h.csp)
		hdr.Set("Permissions-Policy", "camera=(self), microphone=(self), display-capture=(self)")
		if !h.embeddable {
			hdr.Set("X-Frame-Options", "DENY")
		}
	}
	body, etag := a.body, a.etag
	if a.gzipped != nil {
		hdr.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r) {
			body = a.gzipped
			etag = strings.TrimSuffix(a.etag, `"`) + `-gz"`
			hdr.Set("Content-Encoding", "gzip")
		}
	}
	hdr.Set("ETag", etag)
	// ServeContent answers If-None-Match with 304, handles HEAD and ranges, and sets Content-Length.
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(body))
}

// acceptsGzip reports whether the request's Accept-Encoding allows gzip (and does not refuse it with q=0).
func acceptsGzip(r *http.Request) bool {
	for _, field := range r.Header.Values("Accept-Encoding") {
		for _, part := range strings.Split(field, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			q := strings.ReplaceAll(params, " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}
