package store

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hassproject/hass/pki"
)

func freeTCP(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// An embedded member serving over mutual TLS: a client with a certificate of the CA reads and
// writes; one without a certificate, or with one of another CA, is refused.
func TestMemberOverMutualTLS(t *testing.T) {
	pkiDir := t.TempDir()
	ca, _, err := pki.LoadOrCreateCA(pkiDir, "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := ca.Issue(pkiDir, "m1", nil, nil, time.Hour)
	agent, _ := ca.Issue(pkiDir, "agent1", nil, nil, time.Hour)
	otherDir := t.TempDir()
	oca, _, _ := pki.LoadOrCreateCA(otherDir, "other", time.Hour)
	intruder, _ := oca.Issue(otherDir, "intruder", nil, nil, time.Hour)

	peer, client := freeTCP(t), freeTCP(t)
	peerURL, clientURL := fmt.Sprintf("https://127.0.0.1:%d", peer), fmt.Sprintf("https://127.0.0.1:%d", client)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := OpenEmbeddedConfig(ctx, EmbeddedConfig{Dir: t.TempDir(), Member: &MemberConfig{Name: "m1", PeerURL: peerURL, ClientURL: clientURL,
		InitialCluster: "m1=" + peerURL, Token: "t", TLS: &TLSFiles{Cert: m1.Cert, Key: m1.Key, CA: pki.CAFiles(pkiDir).Cert}}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	good, err := ConnectTLS(ctx, []string{clientURL}, &TLSFiles{Cert: agent.Cert, Key: agent.Key, CA: pki.CAFiles(pkiDir).Cert}, nil)
	if err != nil {
		t.Fatalf("a client of the CA: %v", err)
	}
	defer good.Close()
	if _, err := good.AppendEvents(ctx, []Event{{At: time.Now(), Type: "host", Msg: "over TLS"}}); err != nil {
		t.Fatalf("write over TLS: %v", err)
	}

	short, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	if s, err := Connect(short, []string{clientURL}, nil); err == nil {
		s.Close()
		t.Error("a client without TLS got in")
	}
	short3, cancel3 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel3()
	if s, err := ConnectTLS(short3, []string{clientURL}, &TLSFiles{Cert: intruder.Cert, Key: intruder.Key, CA: pki.CAFiles(pkiDir).Cert}, nil); err == nil {
		s.Close()
		t.Error("a client with a certificate of another CA got in")
	}
	if err := (MemberConfig{Name: "m1", PeerURL: "http://127.0.0.1:1", ClientURL: "http://127.0.0.1:2", InitialCluster: "m1=http://127.0.0.1:1", Token: "t",
		TLS: &TLSFiles{Cert: m1.Cert, Key: m1.Key, CA: pki.CAFiles(pkiDir).Cert}}); memberConfig(etcdConfig(t.TempDir(), nil), err) == nil {
		t.Error("http URLs with TLS files were taken")
	}
	if _, err := ConnectTLS(ctx, []string{clientURL}, &TLSFiles{Cert: "/nonexistent", Key: agent.Key, CA: pki.CAFiles(pkiDir).Cert}, nil); err == nil {
		t.Error("a missing certificate file was taken")
	}
}
