package netaddr

import (
	"net/netip"
	"testing"
)

func TestPeerPolicy(t *testing.T) {
	var def *PeerPolicy // nil is the default policy
	empty := NewPeerPolicy(false, nil, nil)
	withLoop := NewPeerPolicy(true, nil, nil)
	allowed := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	custom := NewPeerPolicy(false, allowed, []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16"), netip.MustParsePrefix("8.8.8.0/24")})
	allowed[0] = netip.MustParsePrefix("0.0.0.0/0") // the policy keeps its own copy
	tests := []struct {
		ip                    string
		def, withLoop, custom bool
	}{
		{"8.8.8.8", true, true, false},
		{"1.1.1.1", true, true, true},
		{"2606:4700::1111", true, true, true},
		{"127.0.0.1", false, true, false},
		{"127.8.9.10", false, true, false},
		{"::1", false, true, false},
		{"::ffff:127.0.0.1", false, true, false},
		{"::ffff:8.8.4.4", true, true, true},
		{"10.1.2.3", false, false, true},
		{"10.9.1.1", false, false, false},
		{"172.16.0.1", false, false, false},
		{"172.32.0.1", true, true, true},
		{"192.168.0.1", false, false, false},
		{"169.254.169.254", false, false, false},
		{"100.64.0.1", false, false, false},
		{"224.0.0.1", false, false, false},
		{"239.255.255.250", false, false, false},
		{"255.255.255.255", false, false, false},
		{"0.0.0.0", false, false, false},
		{"::", false, false, false},
		{"fd12:3456::1", false, false, false},
		{"fe80::1", false, false, false},
		{"fe80::1%eth0", false, false, false},
		{"ff02::1", false, false, false},
		{"64:ff9b::a00:1", false, false, false},
		{"2002:7f00:1::1", false, false, false},
		{"::7f00:1", false, false, false},       // IPv4-compatible 127.0.0.1
		{"::ffff:0:a00:1", false, false, false}, // IPv4-translated 10.0.0.1
		{"2001:2::1", false, false, false},      // benchmarking
		{"3fff::1", false, false, false},        // documentation
		{"2001:4860::8888", true, true, true},   // a global unicast address
		{"::ffff:192.168.1.1", false, false, false},
	}
	for _, tt := range tests {
		ip := netip.MustParseAddr(tt.ip)
		for _, c := range []struct {
			name string
			p    *PeerPolicy
			want bool
		}{{"nil", def, tt.def}, {"default", empty, tt.def}, {"loopback allowed", withLoop, tt.withLoop}, {"custom", custom, tt.custom}} {
			if got := c.p.Allows(ip); got != c.want {
				t.Errorf("%s: Allows(%s) = %v, want %v", c.name, tt.ip, got, c.want)
			}
		}
	}
	if def.Allows(netip.Addr{}) {
		t.Error("Allows(the zero Addr) = true")
	}
}
