package store

import (
	"context"
	"strings"
	"testing"
	"time"
)

// Cluster and host configuration round-trips through Record; the BMC password is kept apart
// (LoadConfig never returns it), and removing a host removes all that hass held of it.
func TestConfigRecords(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	pw := "s3cret"
	cl := Cluster{Name: "c1", TolerateHostFailures: 1, Created: time.Now().UTC()}
	hc := HostConfig{Name: "h1", Cluster: "c1", MemMiB: 2048, Reserved: true, BMC: &BMCConfig{Addr: "10.0.0.1", User: "admin"}}
	if _, err := s.Record(ctx, Batch{Config: []ConfigChange{{PutCluster: &cl}, {PutHost: &hc, BMCPassword: &pw}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutHost(ctx, Host{Name: "h1", MemMiB: 4096}); err != nil {
		t.Fatal(err)
	}
	cfg, err := s.LoadConfig(ctx)
	if err != nil || len(cfg.Clusters) != 1 || len(cfg.Hosts) != 1 || len(cfg.Bad) != 0 {
		t.Fatalf("LoadConfig = %+v, %v", cfg, err)
	}
	if got := cfg.Hosts[0]; got.Cluster != "c1" || !got.Reserved || got.BMC == nil || got.BMC.Addr != "10.0.0.1" {
		t.Errorf("host config read back as %+v", got)
	}
	if got, err := s.BMCPassword(ctx, "h1"); err != nil || got != pw {
		t.Errorf("BMCPassword = %q, %v", got, err)
	}
	// Bad records are named and left out.
	if _, err := s.cli.Put(ctx, hostCfgPrefix+"h2", `{"name":"h2","cluster":"c1","mem_mib":-1,"added":"2026-01-01T00:00:00Z"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.Put(ctx, clusterCfgPrefix+"c2", `{"name":"c3","tolerate_host_failures":0,"created":"2026-01-01T00:00:00Z"}`); err != nil {
		t.Fatal(err)
	}
	cfg, err = s.LoadConfig(ctx)
	if err != nil || len(cfg.Bad) != 2 {
		t.Fatalf("bad records: %+v, %v", cfg.Bad, err)
	}
	for _, b := range cfg.Bad {
		if !strings.Contains(b.Err.Error(), b.Key) {
			t.Errorf("the error does not name the key: %v", b.Err)
		}
	}
	// An invalid change writes nothing.
	bad := HostConfig{Name: "h3", Cluster: "c1", BMC: &BMCConfig{Addr: "10.0.0.3"}}
	if _, err := s.Record(ctx, Batch{Config: []ConfigChange{{PutHost: &bad}}}); err == nil || !strings.Contains(err.Error(), "bmc.user") {
		t.Errorf("a BMC without a user: %v", err)
	}
	// Removing the host removes its configuration, password and agent record.
	if _, err := s.Record(ctx, Batch{Config: []ConfigChange{{DeleteHost: "h1"}}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.BMCPassword(ctx, "h1"); got != "" {
		t.Error("the password outlived its host")
	}
	if _, ok, _ := s.Host(ctx, "h1"); ok {
		t.Error("the agent's record outlived its host")
	}
}
