package hub

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/hub/client"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, PEM-encoded.
func selfSigned(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "walhub test"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certPath, keyPath
}

func TestRunServesTLSAndShutsDownOnCancel(t *testing.T) {
	f := newFixture(t, "zstd", nil)
	dir := t.TempDir()
	certPath, keyPath := selfSigned(t, dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg, err := config.Parse(fmt.Sprintf("repository = %q\n[hub]\nlisten = %q\ntls_cert = %q\ntls_key = %q\nread_tokens = [%q]\n",
		f.dir, addr, certPath, keyPath, readToken))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Config: cfg, Repo: f.repo, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()

	c, err := client.New(client.Options{URL: cfg.Hub.URL, Server: "main", Token: readToken, CAFile: certPath})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		buf.Reset()
		if _, err = c.FetchWAL(ctx, "00000002.history", &buf); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || !bytes.Equal(buf.Bytes(), f.history) {
		t.Fatalf("fetch over TLS from %s: %v", cfg.Hub.URL, err)
	}
	untrusting, _ := client.New(client.Options{URL: cfg.Hub.URL, Server: "main", Token: readToken})
	if _, err := untrusting.FetchWAL(ctx, "00000002.history", &buf); err == nil {
		t.Error("a client that does not trust the certificate was served")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
}
