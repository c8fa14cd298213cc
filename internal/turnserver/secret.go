package turnserver

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// LoadOrCreateSecret returns the shared secret kept in the file at path, creating the file (readable by its owner
// only, its directory too) with a new random secret of 32 bytes, base64-encoded, if there is none. Surrounding
// white space in the file is ignored, so that an operator may write the secret with an editor.
func LoadOrCreateSecret(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		secret := strings.TrimSpace(string(data))
		if len(secret) < MinSecretLength {
			return "", fmt.Errorf("turnserver: the secret in %s is shorter than %d bytes", path, MinSecretLength)
		}
		return secret, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("turnserver: reading the secret: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("turnserver: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("turnserver: %w", err)
	}
	secret := base64.RawURLEncoding.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadOrCreateSecret(path) // created meanwhile by another process
	}
	if err != nil {
		return "", fmt.Errorf("turnserver: creating the secret: %w", err)
	}
	_, err = f.WriteString(secret + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return "", fmt.Errorf("turnserver: writing the secret: %w", err)
	}
	return secret, nil
}
