package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem/client"
	"tandem/internal/redistest"
	"tandem/protocol"
)

// RequireProxiesEnv makes a missing haproxy or nginx a failure instead of a skip (as in CI).
const requireProxiesEnv = "TANDEM_REQUIRE_PROXIES"

// proxyCase is one of the load balancers docs/cluster.md shows, run with its file in deploy/.
type proxyCase struct {
	name, bin, file string
	// run rewrites the file for the test (the nodes' addresses, a loopback port, a certificate of the test) and
	// returns the command that runs the proxy in the foreground.
	run func(t *testing.T, conf string, dir string, port int, nodes []string, cert, key string) *exec.Cmd
}

// substitute replaces each old string of the file with its new one, and fails when one is missing (the
// example changed: the test must change with it, or it would test something else).
func substitute(t *testing.T, text string, pairs ...string) string {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(text, pairs[i]) {
			t.Fatalf("the example has no %q to replace", pairs[i])
		}
		text = strings.ReplaceAll(text, pairs[i], pairs[i+1])
	}
	return text
}

var proxyCases = []proxyCase{
	{name: "HAProxy", bin: "haproxy", file: "haproxy.cfg",
		run: func(t *testing.T, conf, dir string, port int, nodes []string, cert, key string) *exec.Cmd {
			pem := filepath.Join(dir, "proxy.pem") // HAProxy takes the certificate and its key in one file
			both := append(readFile(t, cert), readFile(t, key)...)
			if err := os.WriteFile(pem, both, 0o600); err != nil {
				t.Fatal(err)
			}
			conf = substitute(t, conf,
				"bind :443 ssl crt /etc/haproxy/call.example.com.pem", fmt.Sprintf("bind 127.0.0.1:%d ssl crt %s", port, pem),
				"10.0.0.11:9090", nodes[0], "10.0.0.12:9090", nodes[1], "10.0.0.13:9090", nodes[2])
			path := filepath.Join(dir, "haproxy.cfg")
			if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			return exec.Command("haproxy", "-db", "-f", path) // -db: in the foreground, not a daemon
		}},
	{name: "nginx", bin: "nginx", file: "nginx.conf",
		run: func(t *testing.T, conf, dir string, port int, nodes []string, cert, key string) *exec.Cmd {
			conf = substitute(t, conf,
				"listen 443 ssl;", fmt.Sprintf("listen 127.0.0.1:%d ssl;", port),
				"/etc/ssl/call.example.com.pem", cert, "/etc/ssl/call.example.com.key", key,
				"10.0.0.11:9090", nodes[0], "10.0.0.12:9090", nodes[1], "10.0.0.13:9090", nodes[2])
			site := filepath.Join(dir, "tandem.conf")
			if err := os.WriteFile(site, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			// The file goes in nginx's http block: a main configuration of the test's around it, everything in
			// the temporary directory, one process in the foreground.
			main := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[2]s;
}
`, dir, site)
			path := filepath.Join(dir, "nginx-main.conf")
			if err := os.WriteFile(path, []byte(main), 0o600); err != nil {
				t.Fatal(err)
			}
			return exec.Command("nginx", "-p", dir, "-e", "stderr", "-c", path)
		}},
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testCert writes a self-signed certificate for call.example.com and its key into dir, and returns their paths
// and a TLS configuration that trusts it.
func testCert(t *testing.T, dir string) (cert, key string, cfg *tls.Config) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "call.example.com"},
		DNSNames: []string{"call.example.com"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(parsed)
	return cert, key, &tls.Config{RootCAs: pool, ServerName: "call.example.com"}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// online reads tandem_users_online from a node's /metrics.
func (n *clusterNode) online(t *testing.T) int {
	t.Helper()
	resp, err := http.Get(n.http + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "tandem_users_online "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(f)
		}
	}
	t.Fatal("no tandem_users_online in /metrics")
	return 0
}

// TestBehindProxy runs the load balancer examples of docs/cluster.md, deploy/haproxy.cfg and deploy/nginx.conf,
// with the real HAProxy and nginx in front of three tandem processes on a real Redis, and checks what the
// document promises: WebSocket logins through the proxy (TLS ending there), users spread over the nodes with no
// sticky sessions, a call between users of two nodes; when a node is killed, its user reconnecting through the
// proxy to another node and resuming the call with its token; and a rolling restart (SIGTERM: a drain) of
// another node, whose users are closed with 1012 through the proxy and resume on the node that is left.
func TestBehindProxy(t *testing.T) {
	for _, pc := range proxyCases {
		t.Run(pc.name, func(t *testing.T) {
			if _, err := exec.LookPath(pc.bin); err != nil {
				if os.Getenv(requireProxiesEnv) == "1" {
					t.Fatalf("%s is not installed and %s=1: apt-get install -y haproxy nginx", pc.bin, requireProxiesEnv)
				}
				t.Skipf("%s is not installed: apt-get install -y haproxy nginx (%s=1 makes this a failure)", pc.bin, requireProxiesEnv)
			}
			testBehindProxy(t, pc)
		})
	}
}

func testBehindProxy(t *testing.T, pc proxyCase) {
	r := redistest.Start(t)
	nodes := []*clusterNode{startNode(t, r.URL(), "p0"), startNode(t, r.URL(), "p1"), startNode(t, r.URL(), "p2")}
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = strings.TrimPrefix(n.http, "http://")
	}
	dir := t.TempDir()
	cert, key, tlsConfig := testCert(t, dir)
	port := freePort(t)
	cmd := pc.run(t, string(readFile(t, filepath.Join("..", "..", "deploy", pc.file))), dir, port, addrs, cert, key)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", pc.bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s said: %s", pc.bin, out.String())
		}
	})
	url := fmt.Sprintf("wss://127.0.0.1:%d/", port)
	opts := &client.Options{HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}}}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// dial connects through the proxy, trying again while it starts (or while it has no node to send to).
	dial := func(within time.Duration) *client.Client {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			c, err := client.Dial(ctx, url, opts)
			if err == nil {
				t.Cleanup(func() { _ = c.CloseNow() })
				return c
			}
			select {
			case <-exited:
				t.Fatalf("%s exited: %s", pc.bin, out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("no WebSocket through %s after %v: %v", pc.bin, within, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	gone := map[int]bool{} // nodes stopped by the test
	counts := func() []int {
		c := make([]int, len(nodes))
		for i, n := range nodes {
			if !gone[i] {
				c[i] = n.online(t)
			}
		}
		return c
	}
	// login logs a new user in through the proxy and returns it, its token and the node it landed on.
	login := func(name string) (*client.Client, string, int) {
		t.Helper()
		before := counts()
		c := dial(15 * time.Second)
		m, err := c.Login(ctx, name, "")
		if err != nil {
			t.Fatalf("login %s through %s: %v", name, pc.bin, err)
		}
		after := counts()
		for i := range nodes {
			if after[i] == before[i]+1 {
				return c, m.Token, i
			}
		}
		t.Fatalf("login %s: no node has one more user (%v, then %v)", name, before, after)
		return nil, "", 0
	}

	// Users are spread over the nodes: no node is favoured, none is needed twice.
	alice, aliceToken, aliceNode := login("alice")
	bob, bobToken, bobNode := login("bob")
	carol, _, carolNode := login("carol")
	if aliceNode == bobNode || bobNode == carolNode || aliceNode == carolNode {
		t.Fatalf("three users on nodes %d, %d and %d: the least loaded node should take each", aliceNode, bobNode, carolNode)
	}
	_ = carol

	// A call across nodes, through the proxy.
	if err := alice.SendOffer(ctx, "bob", json.RawMessage(`{"type":"offer","sdp":"v=0"}`)); err != nil {
		t.Fatal(err)
	}
	next(t, ctx, alice, protocol.TypeRinging)
	if m := next(t, ctx, bob, protocol.TypeOffer); m.Name != "alice" {
		t.Fatalf("bob got %+v", m)
	}
	if err := bob.SendAnswer(ctx, "alice", json.RawMessage(`{"type":"answer","sdp":"v=0"}`)); err != nil {
		t.Fatal(err)
	}
	next(t, ctx, alice, protocol.TypeAnswer)
	for i := range 20 {
		_ = alice.SendCandidate(ctx, "bob", cand(i))
		_ = bob.SendCandidate(ctx, "alice", cand(100+i))
	}
	for i := range 20 {
		if m := next(t, ctx, bob, protocol.TypeCandidate); string(m.Candidate) != string(cand(i)) {
			t.Fatalf("bob: candidate %d arrived as %s", i, m.Candidate)
		}
		if m := next(t, ctx, alice, protocol.TypeCandidate); string(m.Candidate) != string(cand(100+i)) {
			t.Fatalf("alice: candidate %d arrived as %s", i, m.Candidate)
		}
	}

	// alice's node is killed: her connection drops; she reconnects through the proxy, which sends her to a node
	// that lives, and resumes with her token: her name and her call come along, and bob hears of nothing.
	if err := nodes[aliceNode].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	gone[aliceNode] = true
	if _, err := alice.Read(ctx); err == nil {
		t.Fatal("alice's connection to the killed node still reads")
	}
	// resume reconnects name through the proxy and logs in with its token until it has its name and its call
	// with peer again (the proxy may first try the node that went, or a node not ready yet).
	resume := func(name, token, peer string) *client.Client {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			c := dial(20 * time.Second)
			m, err := c.Login(ctx, name, token)
			switch {
			case err == nil:
				if m.Peer != peer {
					t.Fatalf("%s resumed without the call: %+v", name, m)
				}
				return c
			case time.Now().After(deadline):
				t.Fatalf("%s could not resume through %s: %v", name, pc.bin, err)
			case errors.Is(err, io.EOF), strings.Contains(err.Error(), protocol.CodeUnavailable):
			default:
				t.Logf("resume %s: %v; again", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// exchange checks that the call between a and b carries messages both ways.
	exchange := func(a, b *client.Client, an, bn string, n int) {
		t.Helper()
		_ = a.SendCandidate(ctx, bn, cand(n))
		if m := next(t, ctx, b, protocol.TypeCandidate); m.Name != an || string(m.Candidate) != string(cand(n)) {
			t.Fatalf("%s got %+v, want %s's candidate %d", bn, m, an, n)
		}
		_ = b.SendCandidate(ctx, an, cand(n+1))
		if m := next(t, ctx, a, protocol.TypeCandidate); m.Name != bn || string(m.Candidate) != string(cand(n+1)) {
			t.Fatalf("%s got %+v, want %s's candidate %d", an, m, bn, n+1)
		}
	}
	alice = resume("alice", aliceToken, "bob")
	exchange(alice, bob, "alice", "bob", 1000)

	// A rolling restart through the proxy: SIGTERM drains bob's node. Its users' connections are closed with
	// 1012 (through the proxy), they reconnect through it to the node that is left, and resume; the call goes
	// on, and neither hears of anything else.
	before := counts()
	aliceMoves := before[bobNode] == 2 // alice may have resumed on bob's node
	if err := nodes[bobNode].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	moved := func(c *client.Client, name string) {
		t.Helper()
		_, err := c.Read(ctx)
		if !errors.Is(err, &client.CloseError{Code: 1012}) {
			t.Fatalf("%s's connection to the draining node: %v, want closed with 1012", name, err)
		}
	}
	moved(bob, "bob")
	bob = resume("bob", bobToken, "alice")
	if aliceMoves {
		moved(alice, "alice")
		alice = resume("alice", aliceToken, "bob")
	}
	gone[bobNode] = true
	if got := counts()[carolNode]; got != 3 {
		t.Fatalf("the node that is left has %d users, want alice, bob and carol", got)
	}
	exchange(alice, bob, "alice", "bob", 2000)
	exchange(bob, alice, "bob", "alice", 3000)
}
