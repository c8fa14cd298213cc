package firstrun

import (
	"image"
	"image/color"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
)

// modules is a QR code read back from a rendering: dark[y][x], quiet zone included.
type modules [][]bool

// image draws the modules 8 pixels each, black on white, as a camera would see them.
func (m modules) image() image.Image {
	const px = 8
	img := image.NewGray(image.Rect(0, 0, len(m[0])*px, len(m)*px))
	for y := range img.Bounds().Dy() {
		for x := range img.Bounds().Dx() {
			c := color.Gray{Y: 255}
			if m[y/px][x/px] {
				c.Y = 0
			}
			img.SetGray(x, y, c)
		}
	}
	return img
}

// decode reads the QR code in m with a decoder written independently of the encoder (ZXing's, ported to Go).
func decode(t *testing.T, m modules) string {
	t.Helper()
	src := gozxing.NewLuminanceSourceFromImage(m.image())
	bmp, err := gozxing.NewBinaryBitmap(gozxing.NewHybridBinarizer(src))
	if err != nil {
		t.Fatal(err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true})
	if err != nil {
		t.Fatalf("the QR code does not decode: %v", err)
	}
	return res.GetText()
}

// fromSVG reads the modules back from SVG's output: the viewBox's side, and each "M x y h run v1 h-run z" run.
func fromSVG(t *testing.T, svg string) modules {
	t.Helper()
	side := regexp.MustCompile(`viewBox="0 0 (\d+) (\d+)"`).FindStringSubmatch(svg)
	if side == nil || side[1] != side[2] {
		t.Fatalf("no square viewBox in %.200q", svg)
	}
	n, _ := strconv.Atoi(side[1])
	m := make(modules, n)
	for i := range m {
		m[i] = make([]bool, n)
	}
	runs := regexp.MustCompile(`M(\d+) (\d+)h(\d+)v1h-(\d+)z`).FindAllStringSubmatch(svg, -1)
	if len(runs) == 0 {
		t.Fatalf("no dark modules in %.200q", svg)
	}
	for _, r := range runs {
		x, _ := strconv.Atoi(r[1])
		y, _ := strconv.Atoi(r[2])
		w, _ := strconv.Atoi(r[3])
		for i := range w {
			m[y][x+i] = true
		}
	}
	return m
}

// fromTerminal reads the modules back from Terminal's output: each character is two modules, one above the other.
func fromTerminal(t *testing.T, text string) modules {
	t.Helper()
	var m modules
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if !strings.HasPrefix(line, "\x1b[30;107m") || !strings.HasSuffix(line, "\x1b[0m") {
			t.Fatalf("a line not drawn black on white: %q", line)
		}
		line = strings.TrimSuffix(strings.TrimPrefix(line, "\x1b[30;107m"), "\x1b[0m")
		var top, bottom []bool
		for _, r := range line {
			switch r {
			case '█':
				top, bottom = append(top, true), append(bottom, true)
			case '▀':
				top, bottom = append(top, true), append(bottom, false)
			case '▄':
				top, bottom = append(top, false), append(bottom, true)
			case ' ':
				top, bottom = append(top, false), append(bottom, false)
			default:
				t.Fatalf("unexpected character %q in %q", r, line)
			}
		}
		m = append(m, top, bottom)
	}
	return m[:len(m[0])] // the last line's lower half is below the code (its side is odd)
}

func TestQRCodesDecode(t *testing.T) {
	for _, url := range []string{"https://192.168.1.20:9090/", "https://[fd00::2]:9090/", "https://mybox.local/"} {
		svg, err := SVG(url)
		if err != nil {
			t.Fatal(err)
		}
		if got := decode(t, fromSVG(t, string(svg))); got != url {
			t.Errorf("SVG of %s decodes to %q", url, got)
		}
		text, err := Terminal(url)
		if err != nil {
			t.Fatal(err)
		}
		m := fromTerminal(t, text)
		if got := decode(t, m); got != url {
			t.Errorf("terminal drawing of %s decodes to %q", url, got)
		}
		for _, row := range append(m[:quietZone], m[len(m)-quietZone:]...) {
			for _, dark := range row {
				if dark {
					t.Fatalf("terminal drawing of %s: no quiet zone", url)
				}
			}
		}
	}
}

func TestInfoPicksTheAddressTheBrowserUsed(t *testing.T) {
	p := New("AB:CD")
	urls := []string{"https://192.168.1.20:9443/", "https://[fd00::2]:9443/", "https://mybox.local:9443/", "https://localhost:9443/"}
	p.SetURLs(urls)
	for _, tc := range []struct{ host, url, qr string }{
		{"192.168.1.20:9443", urls[0], urls[0]},
		{"[fd00::2]:9443", urls[1], urls[1]},
		{"MyBox.local:80", urls[2], urls[2]},    // another port: -http-redirect's listener
		{"127.0.0.1:9443", urls[3], urls[0]},    // this machine: its own address, and a LAN one for the phone
		{"evil.example:9443", urls[0], urls[0]}, // not an address tandem listens on
		{"", urls[0], urls[0]},
	} {
		got := p.Info(tc.host)
		if got.URL != tc.url || got.QR != tc.qr || got.Fingerprint != "AB:CD" || len(got.URLs) != len(urls) {
			t.Errorf("Info(%q) = %+v, want url %s, qr %s", tc.host, got, tc.url, tc.qr)
		}
	}
	if p.LAN() != urls[0] {
		t.Errorf("LAN() = %q", p.LAN())
	}
	local := New("AB:CD")
	local.SetURLs([]string{"https://127.0.0.1:9443/", "https://localhost:9443/"})
	if got := local.Info("127.0.0.1:9443"); got.URL != "https://127.0.0.1:9443/" || local.LAN() != "" {
		t.Errorf("loopback only: %+v, LAN %q", got, local.LAN())
	}
}

// TestHandlerRoutes: the page and its data over plain HTTP, the web client's files the page needs from web, and
// everything else, WebSocket handshakes included, to other.
func TestHandlerRoutes(t *testing.T) {
	p := New("AB:CD")
	p.SetURLs([]string{"https://192.168.1.20:9443/"})
	web := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("web " + r.URL.Path)) })
	other := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("other " + r.URL.Path)) })
	h := p.Handler(web, other)
	for _, tc := range []struct {
		method, path string
		upgrade      bool
		want         string
	}{
		{"GET", "/", false, "web /first-run.html"},
		{"GET", "/?invite=x", false, "web /first-run.html"},
		{"HEAD", "/", false, "web /first-run.html"},
		{"GET", "/", true, "other /"},
		{"POST", "/", false, "other /"},
		{"GET", "/js/firstrun.js", false, "web /js/firstrun.js"},
		{"GET", "/js/lang/zh-Hans.js", false, "web /js/lang/zh-Hans.js"},
		{"GET", "/js/app.js", false, "other /js/app.js"},
		{"GET", "/metrics", false, "other /metrics"},
		{"GET", "/first-run.json", false, `{"fingerprint":"AB:CD","url":"https://192.168.1.20:9443/","qr":"https://192.168.1.20:9443/","urls":["https://192.168.1.20:9443/"]}`},
	} {
		r := httptest.NewRequest(tc.method, "http://192.168.1.20:9443"+tc.path, nil)
		if tc.upgrade {
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if got := w.Body.String(); got != tc.want {
			t.Errorf("%s %s (upgrade %v): %q, want %q", tc.method, tc.path, tc.upgrade, got, tc.want)
		}
	}
	r := httptest.NewRequest("GET", "http://192.168.1.20:9443/first-run-qr.svg", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if ct := w.Header().Get("Content-Type"); ct != "image/svg+xml" {
		t.Fatalf("QR: Content-Type %q", ct)
	}
	if got := decode(t, fromSVG(t, w.Body.String())); got != "https://192.168.1.20:9443/" {
		t.Errorf("the served QR code decodes to %q", got)
	}
}
