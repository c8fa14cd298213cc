package turnserver

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLoadOrCreateSecret(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "data", "turn-secret")
	first, err := LoadOrCreateSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) < 40 {
		t.Errorf("secret %q is short", first)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode: %v, %v", fi.Mode(), err)
	}
	again, err := LoadOrCreateSecret(path)
	if err != nil || again != first {
		t.Errorf("second load: %q, %v; want %q", again, err, first)
	}
	if _, err := New(Config{Secret: first}); err != nil {
		t.Errorf("the created secret is not accepted: %v", err)
	}

	edited := filepath.Join(t.TempDir(), "turn-secret")
	if err := os.WriteFile(edited, []byte("  a secret written by hand\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := LoadOrCreateSecret(edited); err != nil || s != "a secret written by hand" {
		t.Errorf("hand-written secret: %q, %v", s, err)
	}
	short := filepath.Join(t.TempDir(), "turn-secret")
	if err := os.WriteFile(short, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateSecret(short); err == nil {
		t.Error("a short secret was accepted")
	}
}
