package wire

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/engine"
)

var at = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func samples() []any {
	return []any{
		engine.Observe{Host: "h1", VM: "web1", Seq: 7, State: engine.DomShutoff, Reason: engine.ReasonFailed, At: at},
		engine.Signal{Host: "h1", VM: "web1", Seq: 8, Kind: engine.SigWatchdog, Watchdog: engine.WatchdogReset, At: at},
		engine.Snapshot{Host: "h1", Seq: 9, At: at, Domains: []engine.DomainStatus{{VM: "a", State: engine.DomRunning, Reason: engine.ReasonBooted}}},
		engine.Snapshot{Host: "h1", Seq: 10, At: at},
		engine.ActionResult{ID: 12, Host: "h1", Seq: 11, State: engine.DomRunning, Reason: engine.ReasonBooted},
		engine.ActionResult{ID: 13, Host: "h1", Err: "no connection", Unreached: true},
		Protect{Protect: engine.Protect{VM: "db", Host: "h1", MemMiB: 512, Policy: engine.DefaultPolicy(), Desired: engine.WantRunning},
			Observe: engine.Observe{Host: "h1", VM: "db", Seq: 14, State: engine.DomRunning, Reason: engine.ReasonBooted, At: at}},
		Called{Host: "h1", ID: 12, VM: "web1", At: at},
	}
}

// Every report survives the round trip exactly.
func TestRoundTrip(t *testing.T) {
	for _, in := range samples() {
		data, err := Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		out, err := Unmarshal(data, "h1")
		if err != nil {
			t.Fatalf("%T: %v\n%s", in, err, data)
		}
		if s, ok := in.(engine.Snapshot); ok && s.Domains == nil {
			s.Domains = out.(engine.Snapshot).Domains // [] and nil are the same list
			in = s
		}
		if !reflect.DeepEqual(in, out) {
			t.Errorf("round trip of %T:\n in %+v\nout %+v", in, in, out)
		}
	}
}

// Bad reports are refused with an error naming the field; nothing is guessed.
func TestBadReports(t *testing.T) {
	for _, c := range []struct{ doc, field string }{
		{`{"kind":"observe","host":"h1","seq":1,"vm":"a","state":"runing","reason":"booted"}`, "state"},
		{`{"kind":"observe","host":"h1","seq":1,"vm":"a","state":"running","reason":"x"}`, "reason"},
		{`{"kind":"observe","host":"h1","vm":"a","state":"running","reason":"booted"}`, "seq"},
		{`{"kind":"observe","host":"h1","seq":1,"vm":"","state":"running","reason":"booted"}`, "vm"},
		{`{"kind":"observe","host":"h2","seq":1,"vm":"a","state":"running","reason":"booted"}`, "host"},
		{`{"kind":"teleport","host":"h1"}`, "kind"},
		{`{"host":"h1"}`, "kind"},
		{`{"kind":"signal","host":"h1","seq":1,"vm":"a","signal":"boom"}`, "signal"},
		{`{"kind":"signal","host":"h1","seq":1,"vm":"a","signal":"watchdog","watchdog":99}`, "watchdog"},
		{`{"kind":"snapshot","host":"h1","seq":1}`, "domains"},
		{`{"kind":"snapshot","host":"h1","seq":1,"domains":[{"vm":"a","state":"x","reason":"booted"}]}`, "domains[0].state"},
		{`{"kind":"result","host":"h1"}`, "id"},
		{`{"kind":"protect","host":"h1","seq":1,"vm":"a","mem_mib":-1,"state":"running","reason":"booted"}`, "mem_mib"},
		{`{"kind":"called","host":"h1","id":1,"vm":"a"}`, "at"},
		{`{"kind":"observe","host":"h1","seq":"1"}`, "seq"},
	} {
		_, err := Unmarshal([]byte(c.doc), "h1")
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%s: err %v, want a field error on %q", c.doc, err, c.field)
		}
	}
	for _, doc := range []string{`not json`, `{"kind":"observe","extra":1}`, `{"kind":"called"} {}`} {
		if _, err := Unmarshal([]byte(doc), "h1"); err == nil {
			t.Errorf("%s: accepted", doc)
		}
	}
}

// No input makes the decoder panic, and what it accepts encodes back to an equal report.
func FuzzUnmarshal(f *testing.F) {
	for _, in := range samples() {
		data, _ := Marshal(in)
		f.Add(data)
	}
	f.Add([]byte(`{"kind":"snapshot","host":"h1","seq":1,"domains":[{"vm":"bad name!","state":"running","reason":"booted"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Unmarshal(data, "h1")
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		again, err := Marshal(v)
		if err != nil {
			t.Fatalf("accepted %s but cannot encode %T: %v", data, v, err)
		}
		w, err := Unmarshal(again, "h1")
		if err != nil || !reflect.DeepEqual(v, w) {
			t.Fatalf("not stable: %s -> %+v -> %s -> %+v (%v)", data, v, again, w, err)
		}
	})
}
