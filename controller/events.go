package controller

import (
	"context"

	"github.com/hassproject/hass/api"
)

var _ api.EventWaiter = (*Controller)(nil)

// WaitEvents implements api.EventWaiter: GET /v1/events?wait=N waits on the store's event
// log, which every controller reads, leading or not.
func (c *Controller) WaitEvents(ctx context.Context, afterSeq uint64) error {
	if err := c.st.WaitEvents(ctx, afterSeq); err != nil && ctx.Err() == nil {
		return api.Unavailable("event log: %v", err)
	}
	return ctx.Err()
}
