package store

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestDecodeProbe(t *testing.T) {
	good := `{"heartbeat":true,"heartbeat_interval":"2s","probe":"tcp","port":22,"address":"10.0.0.2","recheck":"3s"}`
	g, err := decodeProbe([]byte(good))
	if err != nil || !g.Heartbeat || g.Port != 22 || time.Duration(g.Recheck) != 3*time.Second {
		t.Fatalf("decode %s: %+v, %v", good, g, err)
	}
	for in, field := range map[string]string{
		`{"probe":"udp"}`:            "probe",
		`{"port":70000}`:             "port",
		`{"address":"nope"}`:         "address",
		`{"heartbeat_misses":-1}`:    "heartbeat_misses",
		`{"recheck":"-1s"}`:          "recheck",
		`{"unknown":1}`:              "unknown",
		`{"heartbeat":"yes"}`:        "heartbeat",
		`{"probe_interval":"often"}`: "often",
		`[1,2]`:                      "array",
		`{"heartbeat":true} {}`:      "trailing",
	} {
		if _, err := decodeProbe([]byte(in)); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("decode %s: %v, want an error naming %q", in, err, field)
		}
	}
}

// FuzzDecodeProbe: a stored guest policy either decodes into one that validates and
// survives a round trip, or is refused; it never panics.
func FuzzDecodeProbe(f *testing.F) {
	f.Add([]byte(`{"heartbeat":true,"heartbeat_interval":"2s","probe":"tcp","port":22,"address":"10.0.0.2","recheck":"3s"}`))
	f.Add([]byte(`{"probe":"icmp","probe_misses":3}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := decodeProbe(data)
		if err != nil {
			return
		}
		if err := g.Validate(); err != nil {
			t.Fatalf("decoded %+v does not validate: %v", g, err)
		}
		out, err := json.Marshal(g)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeProbe(out)
		if err != nil || back != g {
			t.Fatalf("round trip of %s: %+v, %v", out, back, err)
		}
	})
}
