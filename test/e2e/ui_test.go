package e2e

// The web status page (/ui) in a real headless Chromium (Debian's package), driven over the
// DevTools protocol: the page loads with a token and shows hosts and VMs, shows a crash and
// its recovery within seconds of it happening, and shows nothing of the cluster without a
// token.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// browser is a headless Chromium with one page, driven over the DevTools protocol.
type browser struct {
	t    *testing.T
	cmd  *exec.Cmd
	ws   *websocket.Conn
	next atomic.Int64
}

func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("HASS_REQUIRE_CHROMIUM") != "" {
		t.Fatal("chromium is not installed and HASS_REQUIRE_CHROMIUM is set (scripts/test.sh installs Debian's chromium)")
	}
	t.Skip("chromium is not installed (scripts/test.sh installs it; HASS_REQUIRE_CHROMIUM=1 makes this a failure)")
	return ""
}

func startBrowser(t *testing.T) *browser {
	t.Helper()
	bin := chromiumPath(t)
	dir := t.TempDir()
	// The flags Chromium needs here: root (no sandbox), no GPU, and none of its own traffic to
	// the internet (which this machine refuses).
	cmd := exec.Command(bin, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
		"--user-data-dir="+dir, "--remote-debugging-port=0", "about:blank")
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b := &browser{t: t, cmd: cmd}
	t.Cleanup(func() {
		if b.ws != nil {
			b.ws.Close()
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("chromium's output:\n%s", log.String())
		}
	})
	var port int
	waitFor(t, 60*time.Second, "chromium's DevTools port", func() (bool, string) {
		f, err := os.Open(filepath.Join(dir, "DevToolsActivePort"))
		if err != nil {
			return false, err.Error()
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		if sc.Scan() {
			port, _ = strconv.Atoi(strings.TrimSpace(sc.Text()))
		}
		return port > 0, ""
	})
	req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("http://127.0.0.1:%d/json/new?about:blank", port), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("open a page: %v", err)
	}
	defer resp.Body.Close()
	var target struct {
		WebSocketDebuggerURL string `json:"webSocketDebuggerUrl"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&target); err != nil || target.WebSocketDebuggerURL == "" {
		t.Fatalf("open a page: %v %+v", err, target)
	}
	ws, err := websocket.Dial(target.WebSocketDebuggerURL, "", fmt.Sprintf("http://127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("connect to the page: %v", err)
	}
	b.ws = ws
	return b
}

// call sends one DevTools command and returns its result, skipping the events in between.
func (b *browser) call(method string, params any) json.RawMessage {
	b.t.Helper()
	id := b.next.Add(1)
	if err := websocket.JSON.Send(b.ws, map[string]any{"id": id, "method": method, "params": params}); err != nil {
		b.t.Fatalf("%s: %v", method, err)
	}
	_ = b.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		var m struct {
			ID     int64           `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := websocket.JSON.Receive(b.ws, &m); err != nil {
			b.t.Fatalf("%s: %v", method, err)
		}
		if m.ID != id {
			continue
		}
		if m.Error != nil {
			b.t.Fatalf("%s: %s", method, m.Error.Message)
		}
		return m.Result
	}
}

func (b *browser) navigate(url string) { b.call("Page.navigate", map[string]any{"url": url}) }

// eval evaluates a JavaScript expression in the page and returns its value as a string.
func (b *browser) eval(expr string) string {
	b.t.Helper()
	var r struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
	}
	raw := b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true})
	if err := json.Unmarshal(raw, &r); err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	if r.Result.Value == nil {
		return ""
	}
	return fmt.Sprint(r.Result.Value)
}

func TestWebStatusPage(t *testing.T) {
	d := startHass(t, "")
	name := guest(t)
	d.hass("vm", "protect", name)
	b := startBrowser(t)
	base := "http://" + d.addr + "/ui/"

	// Without a token: refused, and nothing of the cluster on the page.
	b.navigate(base)
	waitFor(t, 30*time.Second, "the page refusing without a token", func() (bool, string) {
		return b.eval("document.body.dataset.state") == "refused", b.eval("document.body.dataset.state")
	})
	if n := b.eval("document.querySelectorAll('#vms tbody tr, #hosts tbody tr').length"); n != "0" {
		t.Errorf("%s rows of hosts and VMs shown without a token", n)
	}
	if msg := b.eval("document.getElementById('error').textContent"); !strings.Contains(msg, "token") {
		t.Errorf("the refusal says %q", msg)
	}

	// A token the API does not know: the API refuses it (401), the page shows the refusal.
	b.navigate(base + "#token=hass_nobody.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	waitFor(t, 30*time.Second, "the page showing the API's refusal", func() (bool, string) {
		msg := b.eval("document.getElementById('error').textContent")
		return b.eval("document.body.dataset.state") == "refused" && strings.Contains(msg, "401"), msg
	})
	if n := b.eval("document.querySelectorAll('#vms tbody tr, #hosts tbody tr, #events tbody tr').length"); n != "0" {
		t.Errorf("%s rows shown with a refused token", n)
	}

	// With a viewer token: the host and the VM, healthy.
	b.navigate(base + "#token=" + uiToken(t, d))
	waitFor(t, 30*time.Second, "the page showing the VM healthy", func() (bool, string) {
		st := b.eval(fmt.Sprintf("(document.querySelector('#vms tr[data-vm=%q]')||{dataset:{}}).dataset.state", name))
		return st == "healthy", st + " " + b.eval("document.getElementById('error').textContent")
	})
	if h := b.eval("document.querySelector('#hosts tr[data-host=\"e2e-host\"]') !== null"); h != "true" {
		t.Errorf("the host is not shown")
	}

	// A crash and its recovery, on the open page within seconds.
	pid, killed := killQemu(t, name)
	waitRunning(t, name, pid, recoverWithin)
	waitFor(t, 10*time.Second, "the page showing the crash and its recovery", func() (bool, string) {
		det := b.eval(fmt.Sprintf("document.querySelectorAll('#events tr[data-type=detect][data-vm=%q]').length", name))
		rec := b.eval(fmt.Sprintf("document.querySelectorAll('#events tr[data-type=recovered][data-vm=%q][data-kind=\"vm-crash\"]').length", name))
		return det == "1" && rec == "1", "detect " + det + ", recovered " + rec
	})
	t.Logf("measured: kill -9 -> the recovery shown on the open page %s after the kill", time.Since(killed).Round(100*time.Millisecond))
	if n := b.eval("document.getElementById('chart').dataset.recoveries"); n != "1" {
		t.Errorf("the chart counts %s recoveries in the last hour, want 1", n)
	}
	if txt := b.eval(fmt.Sprintf("document.querySelector('#events tr[data-type=recovered][data-vm=%q]').textContent", name)); !strings.Contains(txt, " s") && !strings.Contains(txt, " ms") {
		t.Errorf("the recovered row shows no times: %q", txt)
	}
}

// uiToken makes a viewer token for the page.
func uiToken(t *testing.T, d *daemon) string {
	t.Helper()
	for _, l := range strings.Split(d.hass("token", "create", "ui-viewer", "--role", "viewer"), "\n") {
		if strings.HasPrefix(l, "hass_") {
			return strings.TrimSpace(l)
		}
	}
	t.Fatal("hass token create printed no token")
	return ""
}
