package web

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
)

func get(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestServesPageAndAssets(t *testing.T) {
	t.Parallel()
	h := Handler()
	tests := []struct {
		path        string
		contentType string
		contains    string
	}{
		{"/", "text/html; charset=utf-8", `<script type="module" src="/js/app.js">`},
		{"/js/app.js", "text/javascript; charset=utf-8", "import { Signaling"},
		{"/js/signaling.js", "text/javascript; charset=utf-8", "export class Signaling"},
		{"/css/app.css", "text/css; charset=utf-8", ":root"},
		{"/favicon.svg", "image/svg+xml", "<svg"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp := get(t, h, http.MethodGet, tt.path, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Type"); got != tt.contentType {
				t.Errorf("Content-Type %q, want %q", got, tt.contentType)
			}
			if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control %q, want no-cache", got)
			}
			if resp.Header.Get("ETag") == "" {
				t.Error("no ETag")
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q", got)
			}
			if b := body(t, resp); !strings.Contains(b, tt.contains) {
				t.Errorf("body does not contain %q", tt.contains)
			}
		})
	}
}

func TestPageHeaders(t *testing.T) {
	t.Parallel()
	resp := get(t, Handler(), http.MethodGet, "/", nil)
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "connect-src 'self' ws: wss:", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if got := resp.Header.Get("Permissions-Policy"); !strings.Contains(got, "camera=(self)") {
		t.Errorf("Permissions-Policy %q", got)
	}
}

func TestConditionalGet(t *testing.T) {
	t.Parallel()
	h := Handler()
	first := get(t, h, http.MethodGet, "/js/app.js", nil)
	etag := first.Header.Get("ETag")
	again := get(t, h, http.MethodGet, "/js/app.js", map[string]string{"If-None-Match": etag})
	if again.StatusCode != http.StatusNotModified {
		t.Fatalf("status %d with If-None-Match, want 304", again.StatusCode)
	}
	if b := body(t, again); b != "" {
		t.Errorf("304 with a body of %d bytes", len(b))
	}
}

func TestGzip(t *testing.T) {
	t.Parallel()
	h := Handler()
	plain := body(t, get(t, h, http.MethodGet, "/js/app.js", nil))
	resp := get(t, h, http.MethodGet, "/js/app.js", map[string]string{"Accept-Encoding": "br, gzip;q=0.8"})
	if got := resp.Header.Get("Content-Encoding"); got != "gzip" {
		t.Fatalf("Content-Encoding %q, want gzip", got)
	}
	if got := resp.Header.Get("Vary"); got != "Accept-Encoding" {
		t.Errorf("Vary %q", got)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if string(unzipped) != plain {
		t.Error("gzip body differs from the plain one")
	}
	refused := get(t, h, http.MethodGet, "/js/app.js", map[string]string{"Accept-Encoding": "gzip;q=0"})
	if got := refused.Header.Get("Content-Encoding"); got != "" {
		t.Errorf("Content-Encoding %q although gzip was refused", got)
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	t.Parallel()
	h := Handler()
	for _, p := range []string{"/nope", "/js/", "/static/index.html", "/../web.go"} {
		if resp := get(t, h, http.MethodGet, p, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, resp.StatusCode)
		}
	}
	if resp := get(t, h, http.MethodPost, "/", nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: status %d, want 405", resp.StatusCode)
	}
	head := get(t, h, http.MethodHead, "/", nil)
	if head.StatusCode != http.StatusOK || body(t, head) != "" {
		t.Errorf("HEAD /: status %d", head.StatusCode)
	}
	if resp := get(t, h, http.MethodGet, "/index.html", nil); resp.StatusCode != http.StatusMovedPermanently {
		t.Errorf("GET /index.html: status %d, want a redirect to /", resp.StatusCode)
	}
}

// TestSelfContained checks that the client loads nothing from other hosts: it must work on a LAN with no internet.
func TestSelfContained(t *testing.T) {
	t.Parallel()
	assets, err := load(staticFS, "static")
	if err != nil {
		t.Fatal(err)
	}
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import\s+url\(\s*["']?(https?:)?//|from\s+["'](https?:)?//`)
	for p, a := range assets {
		if m := external.Find(a.body); m != nil {
			t.Errorf("%s refers to another host: %q", p, m)
		}
	}
}

// TestReferencedAssetsExist checks that every local script, stylesheet and icon the page names is served.
func TestReferencedAssetsExist(t *testing.T) {
	t.Parallel()
	h := Handler()
	page := body(t, get(t, h, http.MethodGet, "/", nil))
	refs := regexp.MustCompile(`(?:src|href)="(/[^"#]*)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 3 {
		t.Fatalf("only %d local references in the page", len(refs))
	}
	imports := regexp.MustCompile(`from '\./([a-z]+\.js)'`)
	for _, r := range refs {
		resp := get(t, h, http.MethodGet, r[1], nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d", r[1], resp.StatusCode)
		}
		b := []byte(body(t, resp))
		for _, m := range imports.FindAllSubmatch(b, -1) {
			if resp := get(t, h, http.MethodGet, "/js/"+string(m[1]), nil); resp.StatusCode != http.StatusOK {
				t.Errorf("%s imports %s: status %d", r[1], m[1], resp.StatusCode)
			}
		}
	}
}

// TestLanguageIndex: the client learns its languages from /js/lang/index.json, made from the files in
// static/js/lang, so that adding a language is adding its file.
func TestLanguageIndex(t *testing.T) {
	t.Parallel()
	resp := get(t, Handler(), http.MethodGet, "/js/lang/index.json", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type %q", got)
	}
	if b := body(t, resp); b != `["en","zh-Hans"]` {
		t.Errorf("languages %s, want [\"en\",\"zh-Hans\"]", b)
	}
	for _, lang := range []string{"en", "zh-Hans"} {
		if resp := get(t, Handler(), http.MethodGet, "/js/lang/"+lang+".js", nil); resp.StatusCode != http.StatusOK {
			t.Errorf("/js/lang/%s.js: status %d", lang, resp.StatusCode)
		}
	}
}

// TestLanguageIndexFromFiles: a language file added to the folder is listed, sorted; other files are not.
func TestLanguageIndexFromFiles(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"static/index.html":        {Data: []byte("<!doctype html>")},
		"static/js/lang/en.js":     {Data: []byte("export default {};")},
		"static/js/lang/fr.js":     {Data: []byte("export default {};")},
		"static/js/lang/de.js":     {Data: []byte("export default {};")},
		"static/js/lang/notes.txt": {Data: []byte("not a language")},
	}
	assets, err := load(fsys, "static")
	if err != nil {
		t.Fatal(err)
	}
	a := assets["/js/lang/index.json"]
	if a == nil {
		t.Fatal("no /js/lang/index.json")
	}
	if got := string(a.body); got != `["de","en","fr"]` {
		t.Errorf("languages %s, want [\"de\",\"en\",\"fr\"]", got)
	}
}

// The page may be framed only by the origins the operator lists (-embed-origins): by default by none, with
// X-Frame-Options as well for old browsers; with a list, frame-ancestors names exactly those origins.
func TestFrameAncestors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		embedders []string
		frame     string
		xfo       string
	}{
		{nil, "frame-ancestors 'none'", "DENY"},
		{[]string{"https://app.example.org"}, "frame-ancestors https://app.example.org", ""},
		{[]string{"https://app.example.org", "http://127.0.0.1:8081"}, "frame-ancestors https://app.example.org http://127.0.0.1:8081", ""},
	} {
		resp := get(t, EmbeddableHandler(tt.embedders), http.MethodGet, "/", nil)
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.HasSuffix(csp, "; "+tt.frame) || strings.Count(csp, "frame-ancestors") != 1 || !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("%v: Content-Security-Policy %q, want it to end with %q", tt.embedders, csp, tt.frame)
		}
		if got := resp.Header.Get("X-Frame-Options"); got != tt.xfo {
			t.Errorf("%v: X-Frame-Options %q, want %q", tt.embedders, got, tt.xfo)
		}
		// Only the page carries the policy; its scripts are not documents.
		if js := get(t, EmbeddableHandler(tt.embedders), http.MethodGet, "/js/app.js", nil); js.Header.Get("Content-Security-Policy") != "" {
			t.Errorf("a script with a Content-Security-Policy")
		}
	}
}

func TestParseEmbedOrigins(t *testing.T) {
	t.Parallel()
	got, err := ParseEmbedOrigins(" HTTPS://App.Example.org:443/ , https://app.example.org,https://b.example:8443, http://localhost:8080, http://[::1]:9000, http://127.0.0.1 ,")
	if err != nil {
		t.Fatal(err)
	}
	want := "https://app.example.org https://b.example:8443 http://localhost:8080 http://[::1]:9000 http://127.0.0.1"
	if strings.Join(got, " ") != want {
		t.Errorf("got %q, want %q", strings.Join(got, " "), want)
	}
	if got, err := ParseEmbedOrigins(""); err != nil || got != nil {
		t.Errorf("empty: %v, %v", got, err)
	}
	for bad, why := range map[string]string{
		"http://app.example.org":        "must be https",
		"https://app.example.org/embed": "no path",
		"https://*.example.org":         "no wildcards",
		"app.example.org":               "not an origin",
		"https://user@app.example.org":  "no path, query, fragment or user",
		"https://app.example.org?x=1":   "no path, query",
		"https://app.example.org:99999": "bad port",
		"https://app;script-src *":      "not",
		"https://exa mple.org":          "not",
		"null":                          "not an origin",
	} {
		_, err := ParseEmbedOrigins("https://ok.example.org," + bad)
		if err == nil || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), bad) {
			t.Errorf("%q: %v, want an error naming it and saying %q", bad, err, why)
		}
	}
}
