package certs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ACMEConfig configures certificates from an ACME certificate authority.
type ACMEConfig struct {
	// Domains are the host names to get certificates for; no other name is served. Required.
	Domains []string
	// CacheDir keeps the account key and the certificates across restarts. Required.
	CacheDir string
	// Email is the contact address given to the certificate authority, for expiry notices. Empty means none.
	Email string
	// DirectoryURL is the ACME directory of the certificate authority. Empty means Let's Encrypt's production
	// directory.
	DirectoryURL string
}

// ACME obtains and renews certificates automatically. The certificate authority must reach this machine on the
// domain, either on port 443 (the TLS-ALPN-01 challenge, answered by the TLS configuration itself) or on port 80
// (the HTTP-01 challenge, answered by HTTPHandler).
type ACME struct {
	manager *autocert.Manager
}

// NewACME validates cfg and returns an ACME. It contacts nobody until the first TLS handshake for a domain.
func NewACME(cfg ACMEConfig) (*ACME, error) {
	if len(cfg.Domains) == 0 {
		return nil, errors.New("certs: ACME needs at least one domain")
	}
	for _, d := range cfg.Domains {
		if d == "" || strings.ContainsAny(d, ":/ ") || !strings.Contains(d, ".") {
			return nil, fmt.Errorf("certs: %q is not a domain name", d)
		}
	}
	if cfg.CacheDir == "" {
		return nil, errors.New("certs: ACME needs a cache directory")
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      autocert.DirCache(cfg.CacheDir),
		HostPolicy: autocert.HostWhitelist(cfg.Domains...),
		Email:      cfg.Email,
	}
	if cfg.DirectoryURL != "" {
		m.Client = &acme.Client{DirectoryURL: cfg.DirectoryURL}
	}
	return &ACME{manager: m}, nil
}

// TLSConfig returns a server configuration that gets its certificates from the certificate authority. It offers
// HTTP/1.1 only (and the ACME TLS-ALPN-01 protocol): tandem's WebSockets need HTTP/1.1, and its few small files
// gain nothing from HTTP/2.
func (a *ACME) TLSConfig() *tls.Config {
	c := a.manager.TLSConfig()
	c.MinVersion = tls.VersionTLS12
	c.NextProtos = []string{"http/1.1", acme.ALPNProto}
	return c
}

// HTTPHandler returns the handler for port 80: it answers HTTP-01 challenges and passes every other request to
// fallback; a nil fallback redirects them to https.
func (a *ACME) HTTPHandler(fallback http.Handler) http.Handler {
	return a.manager.HTTPHandler(fallback)
}
