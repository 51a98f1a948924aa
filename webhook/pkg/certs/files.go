package certs

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// FileSource watches tls.crt and tls.key in a directory, as mounted from a
// Secret written by cert-manager or by the user, and installs every new
// pair into a Holder. It polls rather than using inotify because a Secret
// volume is updated by swapping a symlink, which inotify on the files
// themselves misses.
type FileSource struct {
	Dir      string
	Holder   *Holder
	Interval time.Duration
	Logger   *slog.Logger

	lastCert, lastKey []byte
}

// Files read from Dir.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// Load reads the pair once; a half-written pair is reported and the
// current certificate kept.
func (s *FileSource) Load() error {
	certPEM, err := os.ReadFile(filepath.Join(s.Dir, CertFile))
	if err != nil {
		return fmt.Errorf("read serving certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(s.Dir, KeyFile))
	if err != nil {
		return fmt.Errorf("read serving key: %w", err)
	}
	if bytes.Equal(certPEM, s.lastCert) && bytes.Equal(keyPEM, s.lastKey) {
		return nil
	}
	changed, err := s.Holder.Set(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", s.Dir, err)
	}
	s.lastCert, s.lastKey = certPEM, keyPEM
	if changed && s.Logger != nil {
		leaf := s.Holder.Leaf()
		s.Logger.Info("serving certificate loaded", "dir", s.Dir, "notAfter", leaf.NotAfter, "serial", leaf.SerialNumber.String())
	}
	return nil
}

// Run reloads the pair every Interval until ctx ends.
func (s *FileSource) Run(ctx context.Context) {
	interval := s.Interval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Load(); err != nil && s.Logger != nil {
				s.Logger.Warn("serving certificate not reloaded; keeping the current one", "err", err)
			}
		}
	}
}
