package e2e

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"

	"tandem/internal/certs"
	"tandem/internal/firstrun"
	"tandem/internal/server"
)

// startLANTandem starts tandem as -tls-self-signed does, on 127.0.0.1, with a certificate for it and the first-run
// page on its plain http address; srv.url is that plain http address.
func startLANTandem(t *testing.T) (*tandem, *certs.SelfSigned) {
	t.Helper()
	self, err := certs.LoadOrCreateSelfSigned(t.TempDir(), certs.Hosts{
		Names: []string{"localhost"}, IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	page := firstrun.New(self.Fingerprint())
	srv := startTandem(t, func(c *server.Config) {
		c.TLS = self.TLSConfig()
		c.FirstRun = page
	})
	_, port, _ := net.SplitHostPort(srv.addr)
	page.SetURLs([]string{"https://" + srv.addr + "/", "https://localhost:" + port + "/"})
	return srv, self
}

// decodeQR reads the QR code in a PNG (a screenshot of the page's code) with ZXing's decoder.
func decodeQR(t *testing.T, shot []byte) string {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatal(err)
	}
	bmp, err := gozxing.NewBinaryBitmap(gozxing.NewHybridBinarizer(gozxing.NewLuminanceSourceFromImage(img)))
	if err != nil {
		t.Fatal(err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		t.Fatalf("the QR code on the page does not decode: %v", err)
	}
	return res.GetText()
}

// elementShot returns a PNG of the element sel finds.
func (p *page) elementShot(sel string) []byte {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.Screenshot(sel))
	if err != nil {
		p.fatalf("screenshot of %s: %v", sel, err)
	}
	return buf
}

// fullShot saves a PNG of the whole page, beyond the viewport, beside the other screenshots.
func (p *page) fullShot(name string) {
	p.t.Helper()
	p.saveShot(name, chromedp.FullScreenshot(100))
}

// TestLANFirstRun (issue 14, item 9): the plain http address of a tandem with a self-signed certificate opens a
// page that explains the browser's warning, in English and in Simplified Chinese (from the browser's languages,
// and switchable): the fingerprint of the certificate the https address serves, a link to the https address the
// browser used, and a QR code of it that a camera reads; no serious or critical axe-core violation, in either
// theme, on a desktop and a phone. A browser that accepted the certificate follows the link into the web client.
func TestLANFirstRun(t *testing.T) {
	srv, self := startLANTandem(t)
	https := "https://" + srv.addr + "/"
	fingerprint := self.Fingerprint()
	ready := `document.body.dataset.ready === 'true'`

	check := func(p *page, title string) {
		t.Helper()
		p.waitFor("the first-run page", ready)
		if got := value[string](p, `document.querySelector('h1').textContent`); got != title {
			t.Errorf("%s: heading %q, want %q", p.label, got, title)
		}
		if got := value[string](p, `document.querySelector('#fingerprint').textContent`); got != fingerprint {
			t.Errorf("%s: fingerprint %q, want the certificate's %q", p.label, got, fingerprint)
		}
		if got := value[string](p, `document.querySelector('#open').href`); got != https {
			t.Errorf("%s: the button opens %q, want %q", p.label, got, https)
		}
		p.waitFor("the QR code drawn", `(() => { const q = document.querySelector('#qr'); return !q.hidden && q.complete && q.naturalWidth > 0; })()`)
		if got := decodeQR(t, p.elementShot("#qr")); got != https {
			t.Errorf("%s: the QR code reads %q, want %q", p.label, got, https)
		}
	}

	en := openPage(t, "desktop", srv.url+"/")
	check(en, "Open tandem securely")
	if got := value[string](en, `document.querySelector('#qr').alt`); got != "QR code of "+https {
		t.Errorf("the QR code's text alternative: %q", got)
	}
	en.assertAccessible(t, "first-run-desktop-en")
	en.fullShot("first-run-desktop-en-full")
	en.chooseLanguage("zh-Hans")
	check(en, "安全地打开 tandem")
	en.assertTranslated(t, "first run", "Chrome", "Edge", "Firefox", "Safari", "Mac", "iPhone", "iPad", "Android", "SHA", "Wi", "Fi", "http")
	en.assertAccessible(t, "first-run-desktop-zh")

	zh := openPage(t, "phone", srv.url+"/", withViewport(390, 844), asAnotherDevice(), withLanguages("zh-CN,zh;q=0.9"))
	check(zh, "安全地打开 tandem")
	zh.assertAccessible(t, "first-run-phone-zh")
	zh.fullShot("first-run-phone-zh-full")
	zh.chooseLanguage("en")
	check(zh, "Open tandem securely")
	zh.assertAccessible(t, "first-run-phone-en")
	if w := value[float64](zh, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("the page is %v px wide on a 390 px phone: it scrolls sideways", w)
	}

	// Anything else over plain http still goes to https (the web client is not served over plain http).
	if got := value[string](en, `fetch('/js/app.js', { redirect: 'manual' }).then((r) => r.type)`); got != "opaqueredirect" {
		t.Errorf("plain http /js/app.js: %q, want a redirect", got)
	}

	// A browser that accepted the certificate follows the link into the web client, at the https address.
	b := trustingBrowser(t, self.Certificate.Leaf)
	p := openPage(t, "trusting", srv.url+"/?invite=x", inBrowser(b))
	p.waitFor("the first-run page", ready)
	if got := value[string](p, `document.querySelector('#open').href`); got != https+"?invite=x" {
		t.Errorf("the button keeps the query: %q, want %q", got, https+"?invite=x")
	}
	p.click("#open")
	p.waitFor("the web client over https", fmt.Sprintf(`location.href.startsWith(%s) && document.body.dataset.view === 'login'`, jsString(https)))
	if strings.Contains(value[string](p, `document.title`), "securely") {
		t.Error("still the first-run page after following the link")
	}
}
