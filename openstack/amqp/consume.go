// Package amqp follows Nova's versioned notifications on RabbitMQ: hass's own queue, bound to
// Nova's exchange ("nova", a topic exchange) with the routing keys versioned_notifications.info
// and versioned_notifications.error, consumed with acknowledgements, reconnecting with a
// backoff when the broker goes away. Each message is read by package notify and handed on in
// the order it arrived; one that cannot be read is logged (naming the field) and dropped, and
// changes nothing.
package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/hassproject/hass/openstack/notify"
)

// Config says where the notifications are.
type Config struct {
	URL      string   // amqp://user:password@host:5672/vhost
	Exchange string   // default "nova"
	Queue    string   // hass's own queue; default "hass-notifications" (never Nova's own)
	Topics   []string // default versioned_notifications.info and .error
	Logger   *slog.Logger
	// Backoff bounds the wait between reconnects (default 200 ms doubling to 5 s).
	MinBackoff, MaxBackoff time.Duration
}

func (c *Config) defaults() {
	if c.Exchange == "" {
		c.Exchange = "nova"
	}
	if c.Queue == "" {
		c.Queue = "hass-notifications"
	}
	if len(c.Topics) == 0 {
		c.Topics = []string{"versioned_notifications.info", "versioned_notifications.error"}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 200 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
}

// Delivery is one notification as it arrived.
type Delivery struct {
	Notification notify.Notification
	RoutingKey   string
	Received     time.Time
}

// Run consumes until ctx ends, calling handle for each notification in order; a message is
// acknowledged once handle returns true. When it returns false (it cannot take it now: this
// controller no longer leads), the message goes back to the queue and the connection is
// dropped, to be made again while ctx lasts. It returns nil when ctx ends; a bad URL is an error at
// once. A broker that cannot be reached, or goes away, is retried with a backoff, logged.
func Run(ctx context.Context, cfg Config, handle func(Delivery) bool) error {
	cfg.defaults()
	if _, err := amqp091.ParseURI(cfg.URL); err != nil {
		return fmt.Errorf("amqp: url: %w", err)
	}
	backoff := cfg.MinBackoff
	for ctx.Err() == nil {
		start := time.Now()
		err := consume(ctx, cfg, handle)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 10*time.Second {
			backoff = cfg.MinBackoff // it ran a while: start again quickly
		}
		cfg.Logger.Warn("nova notifications: the broker is not reachable; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, cfg.MaxBackoff)
	}
	return nil
}

// consume runs one connection until it fails or ctx ends.
func consume(ctx context.Context, cfg Config, handle func(Delivery) bool) error {
	conn, err := amqp091.DialConfig(cfg.URL, amqp091.Config{Heartbeat: 5 * time.Second, Dial: amqp091.DefaultDial(5 * time.Second)})
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open a channel: %w", err)
	}
	// Nova's exchange: declared as oslo.messaging declares it (a topic exchange, not
	// durable) when Nova has not yet; an exchange Nova made is taken as it is.
	if err := ch.ExchangeDeclarePassive(cfg.Exchange, "topic", false, false, false, false, nil); err != nil {
		ch, err = conn.Channel() // a failed passive declare closes the channel
		if err != nil {
			return fmt.Errorf("open a channel: %w", err)
		}
		if err := ch.ExchangeDeclare(cfg.Exchange, "topic", false, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %s: %w", cfg.Exchange, err)
		}
	}
	// hass's own durable queue: notifications sent while hass restarts wait in it.
	if _, err := ch.QueueDeclare(cfg.Queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %s: %w", cfg.Queue, err)
	}
	for _, t := range cfg.Topics {
		if err := ch.QueueBind(cfg.Queue, t, cfg.Exchange, false, nil); err != nil {
			return fmt.Errorf("bind %s to %s/%s: %w", cfg.Queue, cfg.Exchange, t, err)
		}
	}
	if err := ch.Qos(64, 0, false); err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	msgs, err := ch.ConsumeWithContext(ctx, cfg.Queue, "hass", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", cfg.Queue, err)
	}
	cfg.Logger.Info("nova notifications: consuming", "exchange", cfg.Exchange, "queue", cfg.Queue, "topics", cfg.Topics)
	closed := conn.NotifyClose(make(chan *amqp091.Error, 1))
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-closed:
			if e == nil {
				return errors.New("connection closed")
			}
			return fmt.Errorf("connection closed: %w", e)
		case m, ok := <-msgs:
			if !ok {
				return errors.New("the broker ended the consumer")
			}
			n, err := notify.ParseEnvelope(m.Body)
			if err != nil {
				cfg.Logger.Warn("nova notifications: a message hass cannot read is dropped; it changes nothing",
					"routing_key", m.RoutingKey, "err", err)
			} else if !handle(Delivery{Notification: n, RoutingKey: m.RoutingKey, Received: time.Now()}) {
				_ = m.Nack(false, true)
				return errors.New("the handler could not take a notification: it went back to the queue")
			}
			if err := m.Ack(false); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
		}
	}
}
