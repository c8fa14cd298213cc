package auth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// writeFileAtomic replaces file with data: written to a temporary file beside it, synced, then renamed over it,
// so that a reader (the server reloading it) sees the old content or the new, never half of it.
func writeFileAtomic(file string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*")
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("auth: writing %s: %w", file, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("auth: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("auth: writing %s: %w", file, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("auth: writing %s: %w", file, err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	return nil
}

// withFileLock runs f while holding an exclusive lock on file+".lock", so that the commands that edit a file
// (tandem user, tandem invite) and the server (which counts invite uses) do not lose each other's changes.
func withFileLock(file string, f func() error) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	lf, err := os.OpenFile(file+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	defer lf.Close()
	if err := lockFile(lf); err != nil {
		return fmt.Errorf("auth: locking %s: %w", file, err)
	}
	defer unlockFile(lf)
	return f()
}

// stamp is what tells that a file changed: its size and modification time, or that it is missing.
type stamp struct {
	size    int64
	mod     time.Time
	missing bool
}

func stampOf(file string) (stamp, error) {
	fi, err := os.Stat(file)
	if errors.Is(err, os.ErrNotExist) {
		return stamp{missing: true}, nil
	}
	if err != nil {
		return stamp{}, err
	}
	return stamp{size: fi.Size(), mod: fi.ModTime()}, nil
}
