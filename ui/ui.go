// Package ui is hass's web status page: hosts and their state, protected VMs and theirs,
// recent detections and recoveries with their times, alerts, and a chart of recoveries over
// time. It is a static page (HTML, CSS, JavaScript embedded in the binary: nothing is fetched
// from the internet) that reads the JSON API with the same bearer token as every other client,
// kept in the browser's session storage; without a token, or with one the API refuses, it
// shows the API's refusal and no data.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed assets
var assets embed.FS

// Handler serves the page under prefix (e.g. "/ui/"): prefix itself is the page, the rest
// are its assets. Every answer forbids framing and caching, and names its content type.
func Handler(prefix string) http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	return http.StripPrefix(strings.TrimSuffix(prefix, "/"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
		h.Set("Referrer-Policy", "no-referrer")
		if r.URL.Path == "" || r.URL.Path == "/" {
			r.URL.Path = "/"
		}
		files.ServeHTTP(w, r)
	}))
}
