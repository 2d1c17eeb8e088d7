package daemon

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	hassapi "github.com/hassproject/hass/api"
	"github.com/hassproject/hass/controller"
)

// forwardedHeader marks a request a follower forwarded, so that it is never forwarded twice.
const forwardedHeader = "X-Hass-Forwarded-By"

// followerProxy serves the API where this controller leads, and forwards each request to
// the leading controller's published API where it does not (when that is a TCP address a
// follower can reach): operators may talk to any controller. A request it cannot forward is
// answered by api (503, naming the leader). /healthz and /metrics are this process's own.
func followerProxy(ctl *controller.Controller, name string, t *APITLS, api http.Handler, log *slog.Logger) http.Handler {
	scheme := "http"
	var tr http.RoundTripper
	if t != nil {
		// Controllers serve TLS alike: the leader is checked against the CA, and this
		// follower shows its own certificate.
		scheme = "https"
		if rt, err := t.transport(); err != nil {
			log.Error("api: cannot forward to the leader over TLS", "err", err)
		} else {
			tr = rt
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ctl.IsLeading() || r.Header.Get(forwardedHeader) != "" || r.URL.Path == "/healthz" || r.URL.Path == "/metrics" ||
			r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, "/ui/") {
			api.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		addr, err := ctl.LeaderAPI(ctx)
		cancel()
		if err != nil || addr == "" || strings.Contains(addr, "://") {
			api.ServeHTTP(w, r) // unix sockets and unknown leaders are not forwarded
			return
		}
		target := &url.URL{Scheme: scheme, Host: addr}
		p := httputil.NewSingleHostReverseProxy(target)
		p.Transport = tr
		p.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
			log.Warn("api: cannot forward to the leading controller", "leader", addr, "err", err)
			hassapi.WriteError(w, hassapi.Unavailable("this controller (%s) does not lead, and the leading one at %s did not answer (%v): check with hass status whether it took", name, addr, err))
		}
		r.Header.Set(forwardedHeader, name)
		p.ServeHTTP(w, r)
	})
}
