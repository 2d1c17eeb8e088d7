package notify

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/engine"
)

func sample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// envelope wraps a notification as oslo.messaging sends it.
func envelope(t testing.TB, inner []byte) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]string{"oslo.version": "2.0", "oslo.message": string(inner)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every one of Nova's own samples parses, bare and in its envelope, and means what hass
// must take it to mean.
func TestSamples(t *testing.T) {
	const uuid = "178b0921-8f85-4257-88b6-2e743b5a975c"
	want := map[string]struct {
		kind Kind
		op   engine.OpKind
		user bool
	}{
		"instance-create-end.json":                         {Created, 0, true},
		"instance-delete-start.json":                       {OpStarted, engine.OpDelete, true},
		"instance-delete-start_compute_down.json":          {OpStarted, engine.OpDelete, true},
		"instance-delete-end.json":                         {Deleted, engine.OpDelete, true},
		"instance-evacuate.json":                           {OpStarted, engine.OpMigrate, true},
		"instance-live_migration_abort-start.json":         {Nothing, engine.OpMigrate, true},
		"instance-live_migration_post-start.json":          {Nothing, engine.OpMigrate, true},
		"instance-live_migration_post-end.json":            {Nothing, engine.OpMigrate, true},
		"instance-live_migration_post_dest-start.json":     {Nothing, engine.OpMigrate, true},
		"instance-live_migration_post_dest-end.json":       {Moved, engine.OpMigrate, true},
		"instance-live_migration_pre-start.json":           {OpStarted, engine.OpMigrate, true},
		"instance-live_migration_pre-end.json":             {Nothing, engine.OpMigrate, true},
		"instance-live_migration_rollback-start.json":      {Nothing, engine.OpMigrate, true},
		"instance-live_migration_rollback-end.json":        {OpFailed, engine.OpMigrate, true},
		"instance-live_migration_rollback_dest-start.json": {Nothing, engine.OpMigrate, true},
		"instance-pause-start.json":                        {OpStarted, engine.OpSuspend, true},
		"instance-pause-end.json":                          {OpEnded, engine.OpSuspend, true},
		"instance-unpause-start.json":                      {OpStarted, engine.OpResume, true},
		"instance-unpause-end.json":                        {OpEnded, engine.OpResume, true},
		"instance-power_off-start.json":                    {OpStarted, engine.OpStop, true},
		"instance-power_off-end.json":                      {OpEnded, engine.OpStop, true},
		"instance-power_on-start.json":                     {OpStarted, engine.OpStart, true},
		"instance-power_on-end.json":                       {OpEnded, engine.OpStart, true},
		"instance-reboot-start.json":                       {OpStarted, engine.OpReboot, true},
		"instance-reboot-end.json":                         {OpEnded, engine.OpReboot, true},
		"instance-suspend-start.json":                      {OpStarted, engine.OpSuspend, true},
		"instance-suspend-end.json":                        {OpEnded, engine.OpSuspend, true},
		"instance-resume-start.json":                       {OpStarted, engine.OpResume, true},
		"instance-resume-end.json":                         {OpEnded, engine.OpResume, true},
		"instance-shutdown-start.json":                     {Nothing, 0, false},
		"instance-shutdown-end.json":                       {Nothing, 0, true},
		"instance-update.json":                             {Nothing, 0, false},
		"service-update.json":                              {ServiceUp, 0, false},
	}
	files, _ := filepath.Glob("testdata/*.json")
	if len(files) != len(want) {
		t.Fatalf("%d samples, %d expectations", len(files), len(want))
	}
	for _, f := range files {
		name := filepath.Base(f)
		w, ok := want[name]
		if !ok {
			t.Errorf("%s: no expectation", name)
			continue
		}
		raw := sample(t, name)
		bare, err := Parse(raw)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		wrapped, err := ParseEnvelope(envelope(t, raw))
		if err != nil || wrapped.EventType != bare.EventType {
			t.Errorf("%s in its envelope: %v", name, err)
		}
		m := Interpret(bare, Options{Self: "hass"})
		if m.Kind != w.kind || (w.kind != Nothing && m.Op != w.op) || (bare.Instance != nil && m.User != w.user) {
			t.Errorf("%s: %s op=%s user=%v (%s), want %s op=%s user=%v", name, m.Kind, m.Op, m.User, m.Why, w.kind, w.op, w.user)
		}
		if bare.Instance != nil && strings.HasPrefix(name, "instance-") && !strings.Contains(name, "update") && m.VM != uuid {
			t.Errorf("%s: vm %q", name, m.VM)
		}
		if m.Why == "" {
			t.Errorf("%s: no reason given", name)
		}
	}
}

// Nova's power-state sync stops a crashed instance with no user behind it; what hass asked of
// Nova itself is not a user's intent either.
func TestWhoAsked(t *testing.T) {
	n, err := Parse(sample(t, "instance-power_off-start.json"))
	if err != nil {
		t.Fatal(err)
	}
	n.Instance.Initiator = ""
	if m := Interpret(n, Options{Self: "hass"}); m.Kind != Nothing || !strings.Contains(m.Why, "power-state sync") {
		t.Errorf("power sync stop: %s (%s)", m.Kind, m.Why)
	}
	n, _ = Parse(sample(t, "instance-reboot-start.json"))
	n.Instance.Initiator = "hass"
	if m := Interpret(n, Options{Self: "hass"}); m.Kind != Nothing || m.User {
		t.Errorf("hass's own hard reboot: %s user=%v", m.Kind, m.User)
	}
	// A migration that landed is followed, whoever asked.
	n, _ = Parse(sample(t, "instance-live_migration_post_dest-end.json"))
	n.Instance.Initiator = "hass"
	if m := Interpret(n, Options{Self: "hass"}); m.Kind != Moved || m.Host != "host2" {
		t.Errorf("migration landed: %s host=%s", m.Kind, m.Host)
	}
	// A forced-down compute service.
	n, _ = Parse(sample(t, "service-update.json"))
	n.Service.ForcedDown = true
	if m := Interpret(n, Options{}); m.Kind != ServiceDown || m.Host != "host1" {
		t.Errorf("forced down: %s %s", m.Kind, m.Host)
	}
	// An error notification fails the operation.
	n, _ = Parse(sample(t, "instance-reboot-end.json"))
	n.EventType, n.Priority = "instance.reboot.error", "ERROR"
	if m := Interpret(n, Options{}); m.Kind != OpFailed || m.Op != engine.OpReboot {
		t.Errorf("reboot error: %s %s", m.Kind, m.Op)
	}
	// An unknown event type means nothing, and says so.
	n.EventType = "instance.frobnicate.end"
	if m := Interpret(n, Options{}); m.Kind != Nothing || !strings.Contains(m.Why, "does not know") {
		t.Errorf("unknown: %s (%s)", m.Kind, m.Why)
	}
}

func TestBadNotificationsNameTheField(t *testing.T) {
	good := string(sample(t, "instance-power_off-end.json"))
	for _, c := range []struct {
		mutate func(map[string]any)
		field  string
	}{
		{func(m map[string]any) { delete(m, "event_type") }, "event_type"},
		{func(m map[string]any) { delete(m, "publisher_id") }, "publisher_id"},
		{func(m map[string]any) { delete(m, "payload") }, "payload"},
		{func(m map[string]any) { m["timestamp"] = "yesterday" }, "timestamp"},
		{func(m map[string]any) { data(m)["uuid"] = "not-a-uuid" }, "payload.nova_object.data.uuid"},
		{func(m map[string]any) { delete(data(m), "uuid") }, "payload.nova_object.data.uuid"},
		{func(m map[string]any) { data(m)["state"] = 7 }, "payload.nova_object.data.state"},
		{func(m map[string]any) { delete(data(m), "power_state") }, "payload.nova_object.data.power_state"},
		{func(m map[string]any) { data(m)["metadata"] = "x" }, "payload.nova_object.data.metadata"},
		{func(m map[string]any) { m["payload"].(map[string]any)["nova_object.data"] = nil }, "payload.nova_object.data"},
	} {
		var m map[string]any
		if err := json.Unmarshal([]byte(good), &m); err != nil {
			t.Fatal(err)
		}
		c.mutate(m)
		b, _ := json.Marshal(m)
		_, err := Parse(b)
		if err == nil || !strings.HasPrefix(err.Error(), c.field) {
			t.Errorf("want an error naming %s, got %v", c.field, err)
		}
	}
	for in, field := range map[string]string{
		`{"oslo.version":"1.0","oslo.message":"{}"}`: "oslo.version",
		`{"oslo.version":"2.0","oslo.message":7}`:    "oslo.message",
		`{"oslo.version":"2.0","oslo.message":"{}"}`: "event_type",
		`not json`:              "message",
		`{"event_type":"x"} {}`: "message",
	} {
		if _, err := ParseEnvelope([]byte(in)); err == nil || !strings.HasPrefix(err.Error(), field) {
			t.Errorf("%s: want an error naming %s, got %v", in, field, err)
		}
	}
}

func data(m map[string]any) map[string]any {
	return m["payload"].(map[string]any)["nova_object.data"].(map[string]any)
}

func TestTimestamps(t *testing.T) {
	var m map[string]any
	_ = json.Unmarshal(sample(t, "instance-reboot-end.json"), &m)
	for _, ts := range []string{"2026-11-26 01:02:03.123456", "2026-11-26 01:02:03", "2026-11-26T01:02:03.123456Z"} {
		m["timestamp"] = ts
		b, _ := json.Marshal(m)
		n, err := Parse(b)
		if err != nil || n.Timestamp.Year() != 2026 || n.Timestamp.Location() != time.UTC {
			t.Errorf("%s: %v %v", ts, n.Timestamp, err)
		}
	}
}

// FuzzParseEnvelope: whatever arrives on the queue, parsing either fails with an error that
// names a field or yields a notification that Interpret explains; it never panics.
func FuzzParseEnvelope(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.json")
	for _, file := range files {
		raw := sample(f, filepath.Base(file))
		f.Add(raw)
		f.Add(envelope(f, raw))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := ParseEnvelope(body)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		if n.EventType == "" || n.Publisher == "" {
			t.Fatalf("parsed without event_type or publisher_id: %+v", n)
		}
		if n.Instance != nil && !uuidRE.MatchString(n.Instance.UUID) {
			t.Fatalf("instance uuid %q", n.Instance.UUID)
		}
		if m := Interpret(n, Options{Self: "hass"}); m.Why == "" {
			t.Fatalf("%s: meaning without a reason", n.EventType)
		}
	})
}
