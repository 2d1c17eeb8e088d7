package daemon

import (
	"context"
	"log/slog"
	"time"

	"github.com/hassproject/hass/controller"
	"github.com/hassproject/hass/openstack/amqp"
)

// Nova says where Nova's versioned notifications are (RabbitMQ), for hass under OpenStack.
type Nova struct {
	// Cloud names the cloud in clouds.yaml (CloudsFile, or the usual places) whose Nova hass
	// operates and recovers instances through; "" follows notifications only.
	Cloud      string
	CloudsFile string
	// Aggregate protects every instance on a host of this host aggregate.
	Aggregate string
	URL       string // amqp://user:password@host:5672/ ("": no notifications)
	Queue     string // hass's own queue (default hass-notifications)
	// Self is the OpenStack user hass acts as: what Nova does at its request is not a user's
	// intent.
	Self string
}

// consumeNova follows Nova's notifications while this controller leads (one consumer on the
// queue at a time: a follower's would take messages the leader must see).
func consumeNova(ctx context.Context, ctl *controller.Controller, n Nova, log *slog.Logger) {
	for ctx.Err() == nil {
		if !ctl.IsLeading() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			defer cancel()
			for lctx.Err() == nil && ctl.IsLeading() {
				select {
				case <-lctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			}
		}()
		err := amqp.Run(lctx, amqp.Config{URL: n.URL, Queue: n.Queue, Logger: log}, func(d amqp.Delivery) bool {
			return ctl.NovaNotification(lctx, d.Notification, n.Self)
		})
		cancel()
		if err != nil {
			log.Error("nova notifications: not followed", "err", err)
			return
		}
	}
}
