package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"tandem/internal/certs"
	"tandem/internal/firstrun"
)

// The values of -qr: whether the start banner draws the QR code of the LAN https address.
const (
	qrAuto = "auto" // when standard output is a terminal
	qrOn   = "on"
	qrOff  = "off"
)

// showQR reports whether the start banner, written to w, draws the QR code (-qr).
func (o *netOptions) showQR(w io.Writer) bool {
	switch o.qr {
	case qrOn:
		return true
	case qrOff:
		return false
	}
	f, ok := w.(*os.File)
	return ok && isTerminal(f)
}

// listenURLs are the https addresses on port of hosts (the machine's names and addresses, as the self-signed
// certificate has them) that tandem really listens on at addr: every one for a wildcard address (0.0.0.0 or [::],
// which Go binds for both IPv4 and IPv6; only the IPv4 ones for a socket bound to IPv4 only), else the one
// address. Addresses of virtual interfaces (containers, VM bridges) go after the others of their family, so that
// the first LAN address is one a phone on the same network can reach.
func listenURLs(hosts certs.Hosts, addr net.Addr, virtual map[netip.Addr]bool) []string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return nil
	}
	ip, ok := netip.AddrFromSlice(tcp.IP)
	if !ok {
		return nil
	}
	if ip = ip.Unmap(); !ip.IsUnspecified() {
		if !ip.IsLoopback() {
			return certs.Hosts{IPs: []netip.Addr{ip}}.URLs(tcp.Port)
		}
		// Hosts.URLs leaves loopback addresses to localhost: name both.
		host, suffix := ip.String(), ""
		if ip.Is6() {
			host = "[" + host + "]"
		}
		if tcp.Port != 443 {
			suffix = ":" + strconv.Itoa(tcp.Port)
		}
		return []string{"https://" + host + suffix + "/", "https://localhost" + suffix + "/"}
	}
	out := certs.Hosts{Names: slices.Clone(hosts.Names)}
	for _, a := range hosts.IPs {
		if ip.Is4() && !a.Is4() {
			continue
		}
		out.IPs = append(out.IPs, a)
	}
	slices.SortStableFunc(out.IPs, func(a, b netip.Addr) int {
		switch {
		case virtual[a] == virtual[b]:
			return 0
		case virtual[a]:
			return 1
		}
		return -1
	})
	return out.URLs(tcp.Port)
}

// virtualPrefixes name the interfaces of containers and virtual machines: a phone on the LAN cannot reach their
// addresses, so the banner lists them last.
var virtualPrefixes = []string{"docker", "br-", "veth", "virbr", "vnet", "lxc", "lxdbr", "cni", "flannel", "podman", "vmnet", "vboxnet", "zt", "tailscale"}

// virtualAddrs returns the addresses of this machine's virtual interfaces.
func virtualAddrs() map[netip.Addr]bool {
	out := make(map[netip.Addr]bool)
	ifaces, err := net.Interfaces()
	if err != nil {
		return out
	}
	for _, ifc := range ifaces {
		if !slices.ContainsFunc(virtualPrefixes, func(p string) bool { return strings.HasPrefix(ifc.Name, p) }) {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					out[ip.Unmap()] = true
				}
			}
		}
	}
	return out
}

// printSelfSigned is the banner of the LAN mode: the https addresses tandem listens on, the certificate's
// fingerprint, and, with qr, the QR code of the first LAN address for a phone's camera.
func (n *network) printSelfSigned(w io.Writer, qr bool) {
	fmt.Fprintln(w, "tandem: open one of these on your devices (the certificate is self-signed: accept the browser's warning once)")
	for _, u := range n.urls {
		fmt.Fprintln(w, "  "+u)
	}
	fmt.Fprintln(w, "tandem: certificate SHA-256 fingerprint "+n.self.Fingerprint())
	if !qr {
		return
	}
	lan := n.firstRun.LAN()
	if lan == "" {
		return // no address a phone could open
	}
	code, err := firstrun.Terminal(lan)
	if err != nil {
		n.log.Warn("could not draw the QR code", "err", err)
		return
	}
	fmt.Fprintln(w, "tandem: on a phone on the same network, scan this to open "+lan)
	fmt.Fprint(w, code)
}
