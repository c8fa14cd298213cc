package netaddr

import (
	"net/netip"
	"slices"
	"testing"
)

func TestLocalHasLoopback(t *testing.T) {
	ips, err := Local()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ips, netip.MustParseAddr("127.0.0.1")) {
		t.Fatalf("Local() = %v, without 127.0.0.1 (lo is up on every machine that runs the tests)", ips)
	}
	for _, ip := range ips {
		if ip.IsLinkLocalUnicast() || ip.Is4In6() || ip.IsUnspecified() {
			t.Errorf("Local() returned %v", ip)
		}
	}
}
