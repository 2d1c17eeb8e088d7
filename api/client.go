package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultTimeout bounds each request of a Client made without an http.Client.
const DefaultTimeout = 30 * time.Second

// maxAnswer bounds how much of an answer the client reads.
const maxAnswer = 64 << 20

// Client talks to the hass daemon's API. It implements Service, so code written against
// Service works in-process and remotely alike. Its errors are *Error when the daemon answered
// with an error (the server's code and message, unchanged), *UnreachableError when it could
// not be reached, or the context's error.
type Client struct {
	base    string // the URL paths are appended to
	display string // the address as given, for messages
	hc      *http.Client
	err     error // a bad address, returned by every call
	token   string
}

var _ Service = (*Client)(nil)

// UnreachableError says the daemon could not be reached (nothing listens, refused, timed out).
type UnreachableError struct {
	URL string // the address as given to NewClient
	Err error
}

func (e *UnreachableError) Error() string {
	if errors.Is(e.Err, fs.ErrPermission) {
		return fmt.Sprintf("cannot reach the hass daemon at %s: %v (only root and the members of the socket's group, "+
			"hass by default, may use it)", e.URL, e.Err)
	}
	return fmt.Sprintf("cannot reach the hass daemon at %s: %v (is `hass up` running?)", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// NewClient returns a client for the daemon at baseURL: "http://host:port" (or "host:port"),
// "https://...", or "unix:///path/to.sock" for a unix socket. hc may be nil (a client with
// DefaultTimeout); for a unix socket its Transport is replaced by one that dials the socket
// (a clone of hc.Transport when that is an *http.Transport). A bad baseURL is reported by
// every call.
func NewClient(baseURL string, hc *http.Client) *Client {
	c := &Client{display: baseURL}
	if hc == nil {
		hc = &http.Client{Timeout: DefaultTimeout}
	}
	c.hc = hc
	if rest, ok := strings.CutPrefix(baseURL, "unix:"); ok {
		sock := strings.TrimPrefix(rest, "//")
		if sock == "" {
			c.err = fmt.Errorf("hass daemon address %q: no socket path (want unix:///path/to.sock)", baseURL)
			return c
		}
		var tr *http.Transport
		if t, ok := hc.Transport.(*http.Transport); ok && t != nil {
			tr = t.Clone()
		} else {
			tr = http.DefaultTransport.(*http.Transport).Clone()
		}
		tr.Proxy = nil
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}
		uc := *hc
		uc.Transport = tr
		c.hc = &uc
		c.base = "http://hass"
		return c
	}
	if !strings.Contains(baseURL, "://") {
		baseURL = "http://" + baseURL
	}
	u, err := url.Parse(baseURL)
	switch {
	case err != nil:
		c.err = fmt.Errorf("hass daemon address %q: %v", c.display, err)
	case u.Scheme != "http" && u.Scheme != "https":
		c.err = fmt.Errorf("hass daemon address %q: scheme %q: want http, https or unix", c.display, u.Scheme)
	case u.Host == "":
		c.err = fmt.Errorf("hass daemon address %q: no host", c.display)
	}
	c.base = strings.TrimSuffix(baseURL, "/")
	return c
}

// VMs lists the protected VMs.
func (c *Client) VMs(ctx context.Context) ([]VM, error) {
	var out vmList
	if err := c.do(ctx, http.MethodGet, "/v1/vms", nil, &out); err != nil {
		return nil, err
	}
	return out.VMs, nil
}

// VM returns one protected VM.
func (c *Client) VM(ctx context.Context, name string) (VM, error) {
	var out VM
	p, err := vmPath(name, "")
	if err == nil {
		err = c.do(ctx, http.MethodGet, p, nil, &out)
	}
	return out, err
}

// Protect protects the VM (or changes its policy) and returns it.
func (c *Client) Protect(ctx context.Context, name string, req ProtectRequest) (VM, error) {
	var out VM
	p, err := vmPath(name, "/protection")
	if err == nil {
		err = c.do(ctx, http.MethodPut, p, req, &out)
	}
	return out, err
}

// Unprotect stops protecting the VM; the VM itself is left alone.
func (c *Client) Unprotect(ctx context.Context, name string) error {
	p, err := vmPath(name, "/protection")
	if err == nil {
		err = c.do(ctx, http.MethodDelete, p, nil, &Unprotected{})
	}
	return err
}

// Operate asks for an operation on the VM and returns it as accepted (it runs on).
func (c *Client) Operate(ctx context.Context, name string, req OperationRequest) (Operation, error) {
	var out Operation
	p, err := vmPath(name, "/operations")
	if err == nil {
		err = c.do(ctx, http.MethodPost, p, req, &out)
	}
	return out, err
}

// Events returns up to limit events with a seq above afterSeq; limit <= 0 means the server's
// default (DefaultEventLimit).
func (c *Client) Events(ctx context.Context, afterSeq uint64, limit int) ([]Event, error) {
	q := url.Values{}
	if afterSeq > 0 {
		q.Set("after", strconv.FormatUint(afterSeq, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	p := "/v1/events"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var out eventList
	if err := c.do(ctx, http.MethodGet, p, nil, &out); err != nil {
		return nil, err
	}
	return out.Events, nil
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var out Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &out)
	return out, err
}

// Hosts lists the cluster's hosts (GET /v1/hosts).
func (c *Client) Hosts(ctx context.Context) ([]Host, error) {
	var out hostList
	err := c.do(ctx, http.MethodGet, "/v1/hosts", nil, &out)
	return out.Hosts, err
}

// Health checks that the daemon answers (GET /healthz).
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, &Health{})
}

// vmPath is the path of the VM's resource: the name checked as the server checks it (so a bad
// name fails the same way, without a round trip) and path-escaped.
func vmPath(name, suffix string) (string, error) {
	if err := checkVMName("name", name); err != nil {
		return "", err
	}
	return "/v1/vms/" + escapeSegment(name) + suffix, nil
}

// escapeSegment escapes s as one path segment. url.PathEscape leaves dots alone, so "." and
// ".." are escaped by hand: sent as is they would be path navigation, not a name.
func escapeSegment(s string) string {
	switch s {
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	return url.PathEscape(s)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	if c.err != nil {
		return c.err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encoding the request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s %s: %w", method, path, context.Cause(ctx))
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return &UnreachableError{URL: c.display, Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("reading the answer of the hass daemon at %s to %s %s: %w", c.display, method, path, err)
	}
	if resp.StatusCode >= 300 {
		return c.answerError(resp, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("the hass daemon at %s sent an unreadable answer to %s %s: %v", c.display, method, path, err)
		}
	}
	return nil
}

// answerError decodes the server's error; an answer without one (a proxy, another server on
// that port) becomes an *Error from its status.
func (c *Client) answerError(resp *http.Response, data []byte) error {
	var eb errorBody
	if json.Unmarshal(data, &eb) == nil && eb.Error != nil && eb.Error.Code != "" {
		return eb.Error
	}
	snippet := strings.TrimSpace(string(data))
	if len(snippet) > 200 {
		snippet = snippet[:200] + "..."
	}
	msg := fmt.Sprintf("the hass daemon at %s answered %s", c.display, resp.Status)
	if snippet != "" {
		msg += ": " + snippet
	}
	return &Error{Code: codeOf(resp.StatusCode), Message: msg}
}
