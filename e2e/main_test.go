package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"
)

const (
	// isolatedEnv marks the copy of the test binary that runs inside the loopback-only network namespace.
	isolatedEnv = "TANDEM_E2E_ISOLATED"
	// requireEnv, set to 1 (CI does), turns a missing browser or namespace into a failure instead of a skip.
	requireEnv = "TANDEM_REQUIRE_BROWSER"
	// chromiumEnv may name the browser binary; otherwise the usual names are looked up on PATH.
	chromiumEnv = "TANDEM_CHROMIUM"
	// artifactsEnv names a directory for screenshots; without it they go to a test's temporary directory.
	artifactsEnv = "TANDEM_ARTIFACTS"

	installHint = "install it with: apt-get update && apt-get install -y chromium"
)

var (
	// skipReason, when not empty, says why the browser tests cannot run here.
	skipReason string
	chromium   string

	browserOnce   sync.Once
	browserCtx    context.Context
	browserStop   func()
	browserErr    error
	browserOutput syncBuffer
)

// TestMain runs the tests inside a new network namespace whose only interface is loopback, so that no packet of a
// test call can leave 127.0.0.1: the binary runs itself again with CLONE_NEWNET, and that copy brings lo up and
// runs the tests. Without Chromium, or without the privilege to make a namespace, every test skips and says why
// (or fails, when TANDEM_REQUIRE_BROWSER=1).
func TestMain(m *testing.M) {
	if os.Getenv(isolatedEnv) == "1" {
		os.Exit(runTests(m))
	}
	if _, err := findChromium(); err != nil {
		skipReason = err.Error()
		os.Exit(m.Run())
	}
	code, err := runIsolated()
	if err != nil {
		skipReason = fmt.Sprintf("cannot create a loopback-only network namespace for the browser (%v): "+
			"run the tests as root or with CAP_SYS_ADMIN", err)
		os.Exit(m.Run())
	}
	os.Exit(code)
}

// runTests runs in the namespace.
func runTests(m *testing.M) int {
	if err := loopbackUp(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: bringing up loopback in the test namespace: %v\n", err)
		return 1
	}
	if err := onlyLoopback(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: the test namespace is not loopback-only: %v\n", err)
		return 1
	}
	path, err := findChromium()
	if err != nil {
		skipReason = err.Error()
	}
	chromium = path
	code := m.Run()
	if browserStop != nil {
		browserStop()
	}
	if code == 0 {
		// Everything a test started must be gone: servers, pages, their goroutines.
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: goroutines leaked: %v\n", err)
			return 1
		}
	}
	return code
}

func findChromium() (string, error) {
	if p := os.Getenv(chromiumEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", chromiumEnv, p, err)
		}
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("Chromium is not installed; " + installHint)
}

// requireBrowser skips the test (or fails it, when TANDEM_REQUIRE_BROWSER=1) when browser tests cannot run here.
func requireBrowser(t *testing.T) {
	t.Helper()
	if skipReason == "" {
		return
	}
	if os.Getenv(requireEnv) == "1" {
		t.Fatalf("%s=1 but the browser tests cannot run: %s", requireEnv, skipReason)
	}
	t.Skip(skipReason)
}

// browser returns the context of the one headless Chromium all tests share (each page is a tab of it). It is
// started by the first test that needs it and stopped after the last one.
func browser(t *testing.T) context.Context {
	t.Helper()
	requireBrowser(t)
	browserOnce.Do(startBrowser)
	if browserErr != nil {
		t.Fatalf("starting %s: %v\n%s", chromium, browserErr, browserOutput.String())
	}
	return browserCtx
}

func startBrowser() {
	tmp, err := os.MkdirTemp("", "tandem-e2e-browser-")
	if err != nil {
		browserErr = err
		return
	}
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), browserOptions(tmp, &browserOutput)...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	browserStop = func() {
		cancel()
		allocCancel()
		_ = os.RemoveAll(tmp)
	}
	// The first action starts the browser, which lives as long as ctx (so ctx must have no deadline).
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		browserErr = err
		return
	}
	browserCtx = ctx
}

// browserOptions are the command line of a test browser whose profile and temporary files go in tmp and whose
// output goes to out.
func browserOptions(tmp string, out *syncBuffer) []chromedp.ExecAllocatorOption {
	return []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(filepath.Join(tmp, "profile")),
		chromedp.Env("TMPDIR=" + tmp), // else every start leaves a folder in /tmp
		chromedp.CombinedOutput(out),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Headless, // also --mute-audio
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 800),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		// Without it Chromium gathers no loopback candidates, and a call on 127.0.0.1 hangs in "new".
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("password-store", "basic"),
	}
}

// netInterfaces lists the names of the network interfaces this process can see.
func netInterfaces() ([]string, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ifaces))
	for _, i := range ifaces {
		names = append(names, i.Name)
	}
	return names, nil
}

// syncBuffer collects the browser's output, to show when it fails to start.
type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) < 1<<20 {
		b.buf = append(b.buf, p...)
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
