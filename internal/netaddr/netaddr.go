// Package netaddr knows about IP addresses for the rest of tandem: this machine's own (for the certificate that
// names them and for the TURN server that listens on them), and the policy that decides which addresses tandem
// may send packets to when a client names them (TURN peers, the echo test peer's ICE candidates).
package netaddr

import (
	"fmt"
	"net"
	"net/netip"
)

// Local returns the unicast addresses of the network interfaces that are up, link-local ones left out, loopback
// included. IPv4-mapped addresses are returned as IPv4.
func Local() ([]netip.Addr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	var ips []netip.Addr
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP)
			if ip = ip.Unmap(); ok && !ip.IsLinkLocalUnicast() && !ip.IsMulticast() && !ip.IsUnspecified() {
				ips = append(ips, ip)
			}
		}
	}
	return ips, nil
}
