package ui

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandlerServesTheEmbeddedPage(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("GET /ui/", Handler("/ui/"))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, c := range []struct {
		path, ctype, contains string
		status                int
	}{
		{"/ui/", "text/html", `<script src="app.js"`, 200},
		{"/ui/app.js", "javascript", "Authorization", 200},
		{"/ui/style.css", "text/css", "table", 200},
		{"/ui/nope.js", "", "", 404},
	} {
		r, err := http.Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != c.status {
			t.Errorf("%s: %d, want %d", c.path, r.StatusCode, c.status)
			continue
		}
		if c.status != 200 {
			continue
		}
		if ct := r.Header.Get("Content-Type"); !strings.Contains(ct, c.ctype) {
			t.Errorf("%s: content type %q, want %s", c.path, ct, c.ctype)
		}
		if !strings.Contains(string(body), c.contains) {
			t.Errorf("%s: body lacks %q", c.path, c.contains)
		}
		if r.Header.Get("Content-Security-Policy") == "" || r.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: no CSP or framing protection: %v", c.path, r.Header)
		}
	}
}

// The page never puts what the API returns into the page as HTML.
func TestScriptWritesTextOnly(t *testing.T) {
	b, err := assets.ReadFile("assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		if strings.Contains(string(b), bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
}
