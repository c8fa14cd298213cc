package certs

import (
	"net"
	"net/http"
	"strconv"
	"strings"
)

// RedirectHandler redirects every request to the same host and path over https on httpsPort (443 or 0: the
// default port). It is for a plain-HTTP listener beside the HTTPS one (port 80, say). The redirect is temporary
// (307), so that a browser does not remember it after the operator changes the setup.
func RedirectHandler(httpsPort int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" || !validRedirectHost(host) {
			http.Error(w, "this server speaks https only", http.StatusBadRequest)
			return
		}
		if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
			host = "[" + host + "]"
		}
		if httpsPort != 0 && httpsPort != 443 {
			host += ":" + strconv.Itoa(httpsPort)
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	})
}

// validRedirectHost reports whether a Host header can be put in a redirect URL as it is.
func validRedirectHost(host string) bool {
	return !strings.ContainsAny(host, "/\\@?#% \t\r\n")
}
