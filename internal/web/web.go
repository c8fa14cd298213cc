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
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"sort"
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
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; " +
	"form-action 'self'; frame-ancestors 'none'"

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
func Handler() http.Handler {
	assets, err := load(staticFS, "static")
	if err != nil {
		// The files are compiled into the binary; failing to read them is a build defect, not a runtime condition.
		panic(fmt.Sprintf("web: reading embedded client: %v", err))
	}
	return &handler{assets: assets}
}

type handler struct {
	assets map[string]*asset // by URL path, "/" for the page
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
		hdr.Set("Content-Security-Policy", contentSecurityPolicy)
		hdr.Set("Permissions-Policy", "camera=(self), microphone=(self), display-capture=(self)")
		hdr.Set("X-Frame-Options", "DENY")
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
