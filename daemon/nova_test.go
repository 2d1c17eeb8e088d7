package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/hassproject/hass/api"
)

// Nova's notifications on a real RabbitMQ, taken in by a running controller: a user's stop
// through Nova is an operation from OpenStack (the VM stays stopped), Nova's own power sync
// is not an intent, a new instance with HA_Enabled=True is protected, a deleted one forgotten.
func TestNovaNotificationsAsIntent(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("HASS_REQUIRE_RABBITMQ") != "" {
			t.Fatal("needs root to run RabbitMQ, and HASS_REQUIRE_RABBITMQ is set")
		}
		t.Skip("needs root to run the tests' RabbitMQ")
	}
	port, dist := freeTCPPort(t), freeTCPPort(t)
	rdir := t.TempDir()
	broker := func(cmd string) {
		if out, err := exec.Command("bash", "../scripts/rabbitmq.sh", cmd, rdir, fmt.Sprint(port), fmt.Sprint(dist)).CombinedOutput(); err != nil {
			t.Fatalf("rabbitmq.sh %s: %v\n%s", cmd, err, out)
		}
	}
	broker("start")
	t.Cleanup(func() { broker("stop") })
	url := fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", port)

	drv := newFakeDriver()
	drv.add("web1", true)
	drv.add("web2", true)
	r := start(t, drv, t.TempDir(), func(c *Config) { c.Nova = &Nova{URL: url, Self: "hass"} })
	ctx := context.Background()
	if _, err := r.cli.Protect(ctx, "web1", api.ProtectRequest{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the controller consuming Nova's notifications", func() (bool, string) {
		return strings.Contains(r.log.String(), "nova notifications: consuming"), ""
	})

	publish := func(sample, uuid, initiator string, metadata map[string]string) {
		t.Helper()
		raw, err := os.ReadFile(filepath.Join("..", "openstack", "notify", "testdata", sample))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		d := m["payload"].(map[string]any)["nova_object.data"].(map[string]any)
		d["uuid"], d["action_initiator_user"] = uuid, initiator
		if initiator == "" {
			d["action_initiator_user"] = nil
		}
		if metadata != nil {
			d["metadata"] = metadata
		}
		inner, _ := json.Marshal(m)
		body, _ := json.Marshal(map[string]string{"oslo.version": "2.0", "oslo.message": string(inner)})
		conn, err := amqp091.Dial(url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.PublishWithContext(ctx, "nova", "versioned_notifications.info", false, false, amqp091.Publishing{Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	vm := func(name string) (api.VM, bool) {
		v, err := r.cli.VM(ctx, name)
		return v, err == nil
	}

	// Nova's power sync stopping web1 (no initiator): not an intent.
	publish("instance-power_off-start.json", fakeUUID("web1"), "", nil)
	eventually(t, 30*time.Second, "the power sync's notification taken in", func() (bool, string) {
		return strings.Contains(r.log.String(), "power-state sync"), ""
	})
	if v, _ := vm("web1"); v.Desired != "running" || v.Operation != nil {
		t.Errorf("Nova's power sync was taken for a user's stop: %+v", v)
	}
	// A user stops web1 through Nova: an operation from OpenStack; Nova stops the domain.
	publish("instance-power_off-start.json", fakeUUID("web1"), "alice", nil)
	eventually(t, 30*time.Second, "web1's stop from OpenStack", func() (bool, string) {
		v, ok := vm("web1")
		return ok && v.Desired == "stopped" && v.Operation != nil && v.Operation.Source == "openstack", fmt.Sprintf("%+v", v)
	})
	if err := drv.Destroy(ctx, "web1"); err != nil { // what nova-compute does
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "web1 stopped, as the user asked", func() (bool, string) {
		v, ok := vm("web1")
		return ok && v.Observed == "shutoff" && v.State == "healthy", fmt.Sprintf("%+v", v)
	})
	time.Sleep(2 * time.Second)
	if n := drv.callsOf("start web1"); n != 0 {
		t.Errorf("hass started web1 %d times after a user's stop through Nova", n)
	}

	// A new instance asking for HA: protected.
	publish("instance-create-end.json", fakeUUID("web2"), "alice", map[string]string{"HA_Enabled": "True"})
	eventually(t, 30*time.Second, "web2 protected", func() (bool, string) { _, ok := vm("web2"); return ok, "" })

	// web1 deleted through Nova: forgotten.
	publish("instance-delete-end.json", fakeUUID("web1"), "alice", nil)
	eventually(t, 30*time.Second, "web1 forgotten", func() (bool, string) { _, ok := vm("web1"); return !ok, "" })
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
