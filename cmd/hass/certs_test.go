package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCertsInit(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := run([]string{"certs", "init", "--dir", dir, "--hosts", "h1,h2", "--ip", "10.1.2.3"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, f := range []string{"ca.crt", "ca.key", "h1.crt", "h1.key", "h2.crt", "h2.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	out.Reset()
	if code := run([]string{"certs", "init", "--dir", dir, "--hosts", "h1"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "kept") || !strings.Contains(out.String(), "using the CA") {
		t.Errorf("second run: exit %d: %s", code, out.String())
	}
	for _, bad := range [][]string{
		{"certs", "init", "--dir", dir},
		{"certs", "init", "--dir", dir, "--hosts", "h1", "--ip", "nope"},
		{"certs", "init", "--dir", dir, "--hosts", "bad host"},
		{"certs", "init", "--dir", dir, "--hosts", "h1", "--days", "0"},
	} {
		errb.Reset()
		if code := run(bad, &out, &errb); code != 2 || errb.Len() == 0 {
			t.Errorf("%v: exit %d, %q", bad, code, errb.String())
		}
	}
}
