package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"
)

// reloadCheckInterval is how often, at most, certificate files are checked for a change.
const reloadCheckInterval = time.Minute

// FromFiles returns a server configuration serving the PEM certificate (chain) and private key in certFile and
// keyFile. The files are loaded now, so that a bad pair is an error at start, and loaded again when they change
// (checked at most once a minute, on a TLS handshake), so that a renewal by another program (certbot, say) needs
// no restart. A changed pair that does not load is ignored and the previous one kept.
func FromFiles(certFile, keyFile string) (*tls.Config, error) {
	r := &fileReloader{certFile: certFile, keyFile: keyFile, now: time.Now}
	if err := r.load(); err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}, GetCertificate: r.getCertificate}, nil
}

type fileReloader struct {
	certFile, keyFile string
	now               func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     [2]time.Time // modification times of the loaded files
	lastCheck time.Time
}

func (r *fileReloader) stamps() ([2]time.Time, error) {
	var st [2]time.Time
	for i, name := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(name)
		if err != nil {
			return st, fmt.Errorf("certs: %w", err)
		}
		st[i] = fi.ModTime()
	}
	return st, nil
}

func (r *fileReloader) load() error {
	st, err := r.stamps()
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("certs: loading %s and %s: %w", r.certFile, r.keyFile, err)
	}
	r.mu.Lock()
	r.cert, r.stamp, r.lastCheck = &cert, st, r.now()
	r.mu.Unlock()
	return nil
}

func (r *fileReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	due := r.now().Sub(r.lastCheck) >= reloadCheckInterval
	if due {
		r.lastCheck = r.now()
	}
	old, oldStamp := r.cert, r.stamp
	r.mu.Unlock()
	if due {
		if st, err := r.stamps(); err == nil && st != oldStamp {
			if r.load() == nil {
				r.mu.Lock()
				old = r.cert
				r.mu.Unlock()
			}
		}
	}
	return old, nil
}

// CertificateHosts returns the DNS names (wildcards included, as "*.example.org") and IP addresses the first
// certificate of the PEM file certFile is for.
func CertificateHosts(certFile string) (Hosts, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return Hosts{}, fmt.Errorf("certs: %w", err)
	}
	var block *pem.Block
	for rest := data; ; {
		if block, rest = pem.Decode(rest); block == nil {
			return Hosts{}, fmt.Errorf("certs: no certificate in %s", certFile)
		}
		if block.Type == "CERTIFICATE" {
			break
		}
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return Hosts{}, fmt.Errorf("certs: %s: %w", certFile, err)
	}
	h := Hosts{Names: append([]string(nil), leaf.DNSNames...)}
	for _, ip := range leaf.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); ok {
			h.IPs = append(h.IPs, a.Unmap())
		}
	}
	return h, nil
}

// Strings returns the names and then the addresses.
func (h Hosts) Strings() []string {
	out := append([]string(nil), h.Names...)
	for _, ip := range h.IPs {
		out = append(out, ip.String())
	}
	return out
}
