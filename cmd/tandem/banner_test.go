package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"

	"tandem/internal/certs"
	"tandem/internal/firstrun"
)

func TestListenURLs(t *testing.T) {
	hosts := certs.Hosts{
		Names: []string{"localhost", "mybox", "mybox.local"},
		IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("172.17.0.1"),
			netip.MustParseAddr("192.168.1.20"), netip.IPv6Loopback(), netip.MustParseAddr("fd00::2")},
	}
	virtual := map[netip.Addr]bool{netip.MustParseAddr("172.17.0.1"): true} // docker0
	for _, tc := range []struct {
		addr *net.TCPAddr
		want []string
	}{
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 9443}, []string{"https://192.168.1.20:9443/", "https://172.17.0.1:9443/",
			"https://[fd00::2]:9443/", "https://mybox:9443/", "https://mybox.local:9443/", "https://localhost:9443/"}},
		{&net.TCPAddr{IP: net.IPv4zero.To4(), Port: 443}, []string{"https://192.168.1.20/", "https://172.17.0.1/",
			"https://mybox/", "https://mybox.local/", "https://localhost/"}},
		{&net.TCPAddr{IP: net.ParseIP("192.168.1.20"), Port: 9443}, []string{"https://192.168.1.20:9443/"}},
		{&net.TCPAddr{IP: net.ParseIP("fd00::2"), Port: 9443}, []string{"https://[fd00::2]:9443/"}},
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9443}, []string{"https://127.0.0.1:9443/", "https://localhost:9443/"}},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 9443}, []string{"https://[::1]:9443/", "https://localhost:9443/"}},
	} {
		if got := listenURLs(hosts, tc.addr, virtual); !slices.Equal(got, tc.want) {
			t.Errorf("listening on %s: %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// bannerURLs are the https addresses the LAN banner lists.
func bannerURLs(out string) []string {
	var urls []string
	for _, line := range strings.Split(out, "\n") {
		if u, ok := strings.CutPrefix(line, "  https://"); ok {
			urls = append(urls, "https://"+u)
		}
	}
	return urls
}

// TestLANBannerListsListenedAddresses: tandem on one loopback address lists that address (and localhost), not the
// machine's other addresses the certificate also covers, and draws no QR code, as there is no address a phone
// could open; each address it lists answers. The -http-redirect listener serves the first-run page, which links
// to the https address.
func TestLANBannerListsListenedAddresses(t *testing.T) {
	env := map[string]string{"TANDEM_TLS_SELF_SIGNED": "true", "TANDEM_DATA_DIR": t.TempDir(), "TANDEM_QR": "on"}
	args := []string{"-addr", "127.0.0.1:0", "-turn-addr", "off", "-log-level", "error", "-http-redirect", "127.0.0.1:0"}
	out := startRun(t, args, env, "explains the certificate warning")
	m := regexp.MustCompile(`https://127\.0\.0\.1:(\d+)/`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no 127.0.0.1 address in:\n%s", out)
	}
	want := []string{"https://127.0.0.1:" + m[1] + "/", "https://localhost:" + m[1] + "/"}
	if got := bannerURLs(out); !slices.Equal(got, want) {
		t.Errorf("the banner lists %q, want only the address tandem listens on, %q:\n%s", got, want, out)
	}
	if strings.Contains(out, "scan this") || strings.Contains(out, "▀") {
		t.Errorf("a QR code of a loopback address:\n%s", out)
	}
	c, err := net.Dial("tcp", "127.0.0.1:"+m[1])
	if err != nil {
		t.Fatalf("the listed address does not answer: %v", err)
	}
	c.Close()

	plain := regexp.MustCompile(`plain HTTP on (127\.0\.0\.1:\d+) answers with a page`).FindStringSubmatch(out)
	if plain == nil {
		t.Fatalf("no plain HTTP listener in:\n%s", out)
	}
	resp, err := http.Get("http://" + plain[1] + "/first-run.json")
	if err != nil {
		t.Fatal(err)
	}
	var info firstrun.Info
	err = json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	fp := regexp.MustCompile(`fingerprint ([0-9A-F:]+)`).FindStringSubmatch(out)
	if err != nil || info.URL != want[0] || fp == nil || info.Fingerprint != fp[1] {
		t.Errorf("-http-redirect's first-run page: %+v, %v; want a link to %s and the fingerprint printed, %v", info, err, want[0], fp)
	}
}

// TestLANBannerOnEveryAddress: tandem on the wildcard address lists the machine's interface addresses that are up
// (as the system lists them, link-local ones left out), its names and localhost; with -qr on, the QR code is of
// the first LAN address listed. Only the loopback address is connected to.
func TestLANBannerOnEveryAddress(t *testing.T) {
	env := map[string]string{"TANDEM_TLS_SELF_SIGNED": "true", "TANDEM_DATA_DIR": t.TempDir(), "TANDEM_QR": "on"}
	out := startRun(t, []string{"-addr", ":0", "-turn-addr", "off", "-log-level", "error"}, env, "fingerprint")
	m := regexp.MustCompile(`https://localhost:(\d+)/`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no localhost address in:\n%s", out)
	}
	urls := bannerURLs(out)
	var listed []netip.Addr
	for _, u := range urls {
		host := strings.TrimSuffix(strings.TrimPrefix(u, "https://"), "/")
		h, p, err := net.SplitHostPort(host)
		if err != nil || p != m[1] {
			t.Errorf("%s: not on port %s", u, m[1])
			continue
		}
		if ip, err := netip.ParseAddr(h); err == nil {
			listed = append(listed, ip)
		}
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var want []netip.Addr
	for _, ifc := range ifaces {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ip, _ := netip.AddrFromSlice(a.(*net.IPNet).IP)
			ip = ip.Unmap()
			if ifc.Flags&net.FlagUp != 0 && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() && !ip.IsMulticast() {
				want = append(want, ip)
			}
		}
	}
	slices.SortFunc(listed, netip.Addr.Compare)
	slices.SortFunc(want, netip.Addr.Compare)
	if !slices.Equal(listed, want) {
		t.Errorf("the banner lists the addresses %v, the machine's interfaces have %v:\n%s", listed, want, out)
	}
	if len(want) > 0 {
		if !strings.Contains(out, "scan this to open "+urls[0]+"\n") || !strings.Contains(out, "▀") {
			t.Errorf("no QR code of the first LAN address %s:\n%s", urls[0], out)
		}
	}
	c, err := net.Dial("tcp", "127.0.0.1:"+m[1])
	if err != nil {
		t.Fatalf("localhost does not answer: %v", err)
	}
	c.Close()
}
