package benchmark

import (
	"context"
	"flag"
	"testing"
	"time"
)

// TestEtcdMix: a short run of the controller driving a small fleet through etcd, in three
// processes: crashes are restarted, the lost host's VMs are ordered started elsewhere, the
// agents' reports and renewals go through the store, and every process's CPU is measured.
func TestEtcdMix(t *testing.T) {
	s := EtcdShape{Hosts: 6, VMs: 60, Window: 12 * time.Second, CrashesPerSec: 2, OpsPerSec: 2, LoseHostAfter: time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := EtcdMix(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range st.Rows() {
		t.Logf("%s: %s", r.Name, r.Value)
	}
	switch {
	case st.Crashes < 5 || st.Restarted < st.Crashes/2:
		t.Errorf("%d of %d crashes restarted", st.Restarted, st.Crashes)
	case st.CrashP50 <= 0 || st.CrashP99 < st.CrashP50:
		t.Errorf("crash latency p50 %s, p99 %s", st.CrashP50, st.CrashP99)
	case st.LostVMs != s.VMs/s.Hosts || st.Evacuated != st.LostVMs:
		t.Errorf("%d of the lost host's %d VMs ordered started elsewhere, want all %d", st.Evacuated, st.LostVMs, s.VMs/s.Hosts)
	case st.Reports == 0 || st.Renewals < int64(s.Hosts)*5:
		t.Errorf("%d reports, %d renewals", st.Reports, st.Renewals)
	case st.EtcdCPU <= 0 || st.AgentsCPU <= 0 || st.ControllerCPU <= 0 || st.HeapPerVM <= 0:
		t.Errorf("CPU %s / %s / %s, heap per VM %.0f B", st.EtcdCPU, st.AgentsCPU, st.ControllerCPU, st.HeapPerVM)
	case st.Ops == 0:
		t.Errorf("no user operation")
	}
}

var etcdLarge = flag.Bool("etcd.large", false, "BenchmarkEtcdMix: 1,000 hosts and 50,000 VMs (LargeEtcd) instead of 20 and 1,000")

// BenchmarkEtcdMix measures the controller driving simulated agents through a real etcd:
// 20 hosts and 1,000 VMs, or with -etcd.large 1,000 hosts and 50,000 VMs.
func BenchmarkEtcdMix(b *testing.B) {
	s := SmallEtcd
	if *etcdLarge {
		s = LargeEtcd
	}
	for range b.N {
		st, err := EtcdMix(context.Background(), s)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range st.Rows() {
			b.Logf("%s: %s", r.Name, r.Value)
		}
		b.ReportMetric(float64(st.Reports)/s.Window.Seconds(), "reports/s")
		b.ReportMetric(float64(st.CrashP50.Microseconds())/1000, "crash-p50-ms")
		b.ReportMetric(float64(st.CrashP99.Microseconds())/1000, "crash-p99-ms")
		b.ReportMetric(st.HeapPerVM, "heap-B/VM")
	}
}
