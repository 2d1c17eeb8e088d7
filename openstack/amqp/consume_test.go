package amqp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// broker starts the tests' own RabbitMQ (scripts/rabbitmq.sh: Debian's rabbitmq-server on
// loopback) for this test, stopped when it ends.
type broker struct {
	t          *testing.T
	dir        string
	port, dist int // AMQP's port, Erlang distribution's
}

func startBroker(t *testing.T) *broker {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("HASS_REQUIRE_RABBITMQ") != "" {
			t.Fatal("needs root to run RabbitMQ, and HASS_REQUIRE_RABBITMQ is set")
		}
		t.Skip("needs root to run the tests' RabbitMQ (HASS_REQUIRE_RABBITMQ=1 makes this a failure)")
	}
	b := &broker{t: t, dir: t.TempDir(), port: freePort(t), dist: freePort(t)}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *broker) script(cmd string) {
	b.t.Helper()
	out, err := exec.Command("bash", "../../scripts/rabbitmq.sh", cmd, b.dir, fmt.Sprint(b.port), fmt.Sprint(b.dist)).CombinedOutput()
	if err != nil {
		b.t.Fatalf("rabbitmq.sh %s: %v\n%s", cmd, err, out)
	}
}

func (b *broker) start() { b.script("start") }
func (b *broker) stop()  { b.script("stop") }
func (b *broker) url() string {
	return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", b.port)
}

// publish sends body to Nova's exchange with the routing key, as nova-compute does.
func (b *broker) publish(key string, body []byte) {
	b.t.Helper()
	conn, err := amqp091.Dial(b.url())
	if err != nil {
		b.t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		b.t.Fatal(err)
	}
	if err := ch.ExchangeDeclare("nova", "topic", false, false, false, false, nil); err != nil {
		b.t.Fatal(err)
	}
	if err := ch.PublishWithContext(context.Background(), "nova", key, false, false,
		amqp091.Publishing{ContentType: "application/json", Body: body}); err != nil {
		b.t.Fatal(err)
	}
}

func sampleEnvelope(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "notify", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{"oslo.version": "2.0", "oslo.message": string(raw)})
	return b
}

type safeLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeLog) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *safeLog) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// Against a real RabbitMQ: notifications arrive in order on both topics, one hass cannot read
// is logged and skipped, and the consumer comes back after the broker restarts, the
// notifications sent meanwhile waiting in hass's durable queue.
func TestConsumeFromRabbitMQ(t *testing.T) {
	b := startBroker(t)
	log := &safeLog{}
	got := make(chan Delivery, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{URL: b.url(), Logger: slog.New(slog.NewTextHandler(log, nil)), MaxBackoff: time.Second},
			func(d Delivery) bool { got <- d; return true })
	}()
	defer func() { cancel(); <-done }()
	waitLog := func(what string, times ...int) {
		t.Helper()
		n := 1
		if len(times) > 0 {
			n = times[0]
		}
		deadline := time.Now().Add(30 * time.Second)
		for strings.Count(log.String(), what) < n {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log:\n%s", what, log.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitLog("consuming")
	next := func() Delivery {
		t.Helper()
		select {
		case d := <-got:
			return d
		case <-time.After(30 * time.Second):
			t.Fatalf("no notification; log:\n%s", log.String())
		}
		return Delivery{}
	}

	b.publish("versioned_notifications.info", sampleEnvelope(t, "instance-power_off-start.json"))
	b.publish("versioned_notifications.info", []byte(`{"oslo.version":"2.0","oslo.message":"{\"event_type\":\"instance.reboot.end\"}"}`))
	b.publish("versioned_notifications.error", sampleEnvelope(t, "instance-power_off-end.json"))
	b.publish("other.topic", sampleEnvelope(t, "instance-reboot-end.json")) // not bound: never seen
	if d := next(); d.Notification.EventType != "instance.power_off.start" || d.RoutingKey != "versioned_notifications.info" {
		t.Errorf("first: %s on %s", d.Notification.EventType, d.RoutingKey)
	}
	if d := next(); d.Notification.EventType != "instance.power_off.end" || d.RoutingKey != "versioned_notifications.error" {
		t.Errorf("second: %s on %s", d.Notification.EventType, d.RoutingKey)
	}
	waitLog("publisher_id") // the unreadable one, named by its field
	select {
	case d := <-got:
		t.Errorf("unexpected %s on %s", d.Notification.EventType, d.RoutingKey)
	case <-time.After(500 * time.Millisecond):
	}

	// The broker goes away and comes back; hass consumes again.
	b.stop()
	waitLog("not reachable")
	b.start()
	waitLog("consuming", 2) // bound again to Nova's exchange (not durable: it went with the broker)
	b.publish("versioned_notifications.info", sampleEnvelope(t, "instance-reboot-start.json"))
	if d := next(); d.Notification.EventType != "instance.reboot.start" {
		t.Errorf("after the restart: %s", d.Notification.EventType)
	}
}

func TestBadURL(t *testing.T) {
	if err := Run(context.Background(), Config{URL: "http://nope"}, func(Delivery) bool { return true }); err == nil || !strings.Contains(err.Error(), "url") {
		t.Fatalf("bad url: %v", err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
