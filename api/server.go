package api

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path"
	"reflect"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hassproject/hass/auth"
)

//go:embed openapi.json
var openapiJSON []byte

// OpenAPI returns the OpenAPI 3 document served at GET /openapi.json.
func OpenAPI() []byte { return bytes.Clone(openapiJSON) }

// BodyReadTimeout bounds how long the server waits for a request's body, from the moment its
// handler starts: a client that sends the headers and then stalls (or trickles) gets a 400 and
// a closed connection, instead of holding a connection and a goroutine forever.
const BodyReadTimeout = 10 * time.Second

type server struct {
	svc         Service
	log         *slog.Logger
	mux         *http.ServeMux
	bodyTimeout time.Duration
	authn       Authenticator // nil: no authentication (tests of the handlers alone)
	audit       Auditor       // nil: no audit trail
}

type route struct {
	method, pattern string
	h               http.HandlerFunc
	role            auth.Role // the weakest role allowed; "" for the open routes
}

// NewServer returns the HTTP handler for the API, serving svc. Every input is validated before
// svc is called; every answer, errors included, is JSON. Each request is logged at debug
// level on logger (nil: no logging).
func NewServer(svc Service, logger *slog.Logger, opts ...Option) http.Handler {
	s := newServer(svc, logger, BodyReadTimeout)
	for _, o := range opts {
		o(s)
	}
	return s
}

// Option configures the server.
type Option func(*server)

// WithMetrics serves h at GET /metrics (Prometheus's text format, outside the JSON API), so
// that what guards the API guards it too.
func WithMetrics(h http.Handler) Option {
	return func(s *server) {
		s.mux.Handle("GET /metrics", s.guard(auth.Viewer, h.ServeHTTP))
		s.mux.HandleFunc("/metrics", s.methodNotAllowed("GET, HEAD"))
	}
}

// WithUI serves the web status page h under /ui/ (GET); /ui redirects there. The page reads
// this same API with the user's token, so what guards the API guards its data.
func WithUI(h http.Handler) Option {
	return func(s *server) {
		s.mux.Handle("GET /ui/", h)
		s.mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
		})
	}
}

func newServer(svc Service, logger *slog.Logger, bodyTimeout time.Duration) *server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &server{svc: svc, log: logger, mux: http.NewServeMux(), bodyTimeout: bodyTimeout}
	routes := []route{
		{"GET", "/v1/vms", s.listVMs, auth.Viewer},
		{"GET", "/v1/vms/{name}", s.getVM, auth.Viewer},
		{"PUT", "/v1/vms/{name}/protection", s.protect, auth.Operator},
		{"DELETE", "/v1/vms/{name}/protection", s.unprotect, auth.Operator},
		{"POST", "/v1/vms/{name}/operations", s.operate, auth.Operator},
		{"GET", "/v1/events", s.events, auth.Viewer},
		{"GET", "/v1/status", s.status, auth.Viewer},
		{"GET", "/v1/hosts", s.hosts, auth.Viewer},
		{"GET", "/openapi.json", s.openapi, ""},
		{"GET", "/healthz", s.healthz, ""},
	}
	routes = append(routes, s.hostRoutes()...)
	routes = append(routes, s.tokenRoutes()...)
	allow := map[string][]string{}
	var patterns []string
	for _, rt := range routes {
		h := rt.h
		if rt.role != "" {
			h = s.guard(rt.role, h)
		}
		s.mux.HandleFunc(rt.method+" "+rt.pattern, h)
		if _, ok := allow[rt.pattern]; !ok {
			patterns = append(patterns, rt.pattern)
		}
		allow[rt.pattern] = append(allow[rt.pattern], rt.method)
		if rt.method == "GET" {
			allow[rt.pattern] = append(allow[rt.pattern], "HEAD")
		}
	}
	// The same paths without a method catch every other method: 405 with Allow.
	for _, p := range patterns {
		s.mux.HandleFunc(p, s.methodNotAllowed(strings.Join(allow[p], ", ")))
	}
	s.mux.HandleFunc("/", s.notFound)
	return s
}

// statusWriter remembers the status written, for the log and for panic recovery.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *server) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &statusWriter{ResponseWriter: rw}
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("api: panic serving request", "method", r.Method, "path", r.URL.Path,
				"panic", v, "stack", string(debug.Stack()))
			if w.status == 0 {
				writeError(w, Internal("internal error: %v", v))
			}
		}
		s.log.LogAttrs(r.Context(), slog.LevelDebug, "api request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.String("query", r.URL.RawQuery), slog.Int("status", w.status),
			slog.Duration("took", time.Since(start)), slog.String("remote", r.RemoteAddr))
	}()
	// A request with a body must deliver it in time, whether its handler reads it (a timeout is
	// a 400) or not (net/http then drains it after the answer, and gives up at the deadline).
	// Requests without one are left alone: their connection is being watched for the client
	// going away, and a deadline there would cancel the request's context.
	if r.ContentLength != 0 {
		// Not supported by every ResponseWriter (httptest.ResponseRecorder): nothing to bound.
		_ = http.NewResponseController(rw).SetReadDeadline(time.Now().Add(s.bodyTimeout))
	}
	// No token, no answer but 401: not even whether a route exists.
	r, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	// ServeMux would redirect unclean paths with a non-JSON body; refuse them instead. The
	// path is judged as sent, escaped, as ServeMux routes it: a VM named ".." is sent as
	// %2E%2E, a clean segment.
	if p := r.URL.EscapedPath(); p == "" || p[0] != '/' || cleanPath(p) != p {
		s.notFound(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func cleanPath(p string) string {
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

func (s *server) notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, NotFound("no such route: %s %s (see GET /openapi.json)", r.Method, quotePath(r.URL.Path)))
}

func (s *server) methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, &Error{Code: CodeMethodNotAllowed,
			Message: fmt.Sprintf("method %s is not allowed on %s (allow: %s)", quote(r.Method), quotePath(r.URL.Path), allow)})
	}
}

func quotePath(p string) string {
	if len(p) > 128 {
		p = p[:128] + "..."
	}
	return strconv.QuoteToGraphic(p)
}

// ---- handlers ----

func (s *server) listVMs(w http.ResponseWriter, r *http.Request) {
	vms, err := s.svc.VMs(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if vms == nil {
		vms = []VM{}
	}
	writeJSON(w, http.StatusOK, vmList{VMs: vms})
}

func (s *server) getVM(w http.ResponseWriter, r *http.Request) {
	name, ok := pathName(w, r)
	if !ok {
		return
	}
	vm, err := s.svc.VM(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

func (s *server) protect(w http.ResponseWriter, r *http.Request) {
	name, ok := pathName(w, r)
	if !ok {
		return
	}
	var req ProtectRequest
	body, err := s.readBody(w, r)
	if err == nil && !isBlank(body) {
		err = decodeStrict(body, &req, protectFields)
	}
	if err == nil {
		err = req.Policy.Validate()
	}
	if err != nil {
		writeError(w, err)
		return
	}
	vm, err := s.svc.Protect(r.Context(), name, req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

func (s *server) unprotect(w http.ResponseWriter, r *http.Request) {
	name, ok := pathName(w, r)
	if !ok {
		return
	}
	if err := s.svc.Unprotect(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, Unprotected{Name: name})
}

func (s *server) operate(w http.ResponseWriter, r *http.Request) {
	name, ok := pathName(w, r)
	if !ok {
		return
	}
	var req OperationRequest
	body, err := s.readBody(w, r)
	if err == nil && !isBlank(body) {
		err = decodeStrict(body, &req, operationFields)
	}
	if err == nil {
		err = req.Validate()
	}
	if err != nil {
		writeError(w, err)
		return
	}
	op, err := s.svc.Operate(r.Context(), name, req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, op)
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.svc.Status(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if st.StoreMembers == nil {
		st.StoreMembers = []string{}
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *server) hosts(w http.ResponseWriter, r *http.Request) {
	hs, err := s.svc.Hosts(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if hs == nil {
		hs = []Host{}
	}
	writeJSON(w, http.StatusOK, hostList{Hosts: hs})
}

func (s *server) openapi(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(openapiJSON)
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Health{Status: "ok"})
}

// ---- input ----

func pathName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if err := checkVMName("name", name); err != nil {
		writeError(w, err)
		return "", false
	}
	return name, true
}

var queryIntRE = regexp.MustCompile(`^-?[0-9]+$`)

// queryInt parses an integer query parameter as the OpenAPI document's type integer means it:
// decimal digits, an optional minus sign, no plus sign, no spaces, no fraction or exponent.
// Its range is checked by the caller ("-0" and "007" are integers in range).
func queryInt(s string) (*big.Int, bool) {
	if !queryIntRE.MatchString(s) {
		return nil, false
	}
	return new(big.Int).SetString(s, 10)
}

func (s *server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, BadRequest("body", "request body is larger than %d KiB", MaxBodyBytes>>10)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, BadRequest("body", "the request body did not arrive within %s", s.bodyTimeout)
		}
		return nil, BadRequest("body", "cannot read request body: %v", err)
	}
	return b, nil
}

// isBlank reports whether body holds nothing but JSON whitespace: an empty body. (Not
// bytes.TrimSpace: U+00A0 or U+0085 alone is not an empty body but invalid JSON.)
func isBlank(body []byte) bool { return len(bytes.Trim(body, " \t\r\n")) == 0 }

// knownFields lists, for each JSON object a body may hold (by dotted path, "" for the top),
// the fields it takes; unknown-field errors use it to name the field and what is allowed.
type knownFields map[string][]string

var protectFields = knownFields{
	"":             {"policy"},
	"policy":       jsonFields(reflect.TypeFor[Policy]()),
	"policy.guest": jsonFields(reflect.TypeFor[GuestPolicy]()),
}

var operationFields = knownFields{"": jsonFields(reflect.TypeFor[OperationRequest]())}

func jsonFields(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// decodeStrict decodes one JSON object into v. Beyond encoding/json it refuses what the
// OpenAPI document refuses: a body that is not UTF-8, trailing data, a key that is not
// exactly (case included) one of the object's fields, a key given twice, and null (no field
// is nullable). Its errors are bad_request *Errors that name the field.
func decodeStrict(data []byte, v any, known knownFields) error {
	if !utf8.Valid(data) {
		return BadRequest("body", "the request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return BadRequest("body", "unexpected data after the JSON object")
	}
	empty, err := checkKeys(raw, known)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return jsonError(err)
	}
	// Every string a request may give has a pattern or an enum that "" does not meet; leaving
	// a field out is how to get its default.
	if len(empty) > 0 {
		field := empty[0]
		msg := "an empty string is not allowed (leave the field out to get its default)"
		switch field {
		case "op":
			msg = "op is required (want one of " + strings.Join(Ops, ", ") + ")"
		case "target":
			msg = "an empty string is not allowed (leave target out and hass picks a host)"
		}
		return BadRequest(field, "%s", msg)
	}
	return nil
}

func jsonError(err error) error {
	if e, ok := errors.AsType[*json.SyntaxError](err); ok {
		return BadRequest("body", "invalid JSON at byte %d: %s", e.Offset, strings.TrimPrefix(e.Error(), "json: "))
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return BadRequest("body", "truncated JSON")
	}
	if e, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		field := e.Field
		if field == "" {
			field = "body"
		}
		if n, ok := strings.CutPrefix(e.Value, "number "); ok && describeType(e.Type) == "an integer" {
			return BadRequest(field, "%s is not an integer in range", n)
		}
		return BadRequest(field, "want %s, got %s", describeType(e.Type), e.Value)
	}
	return BadRequest("body", "%s", strings.TrimPrefix(err.Error(), "json: "))
}

// checkKeys walks the (syntactically valid) JSON value data and refuses, naming the field:
// a key given twice in one object, a key that is not one of the fields known for its object
// (compared exactly: encoding/json would take "OP" for "op"), and null anywhere. It returns the
// fields given as "", in order.
func checkKeys(data []byte, known knownFields) (empty []string, err error) {
	type frame struct {
		object bool
		path   string          // dotted path of this object or array ("" for the top)
		seen   map[string]bool // keys so far, in an object
		key    string          // the key whose value comes next, in an object
	}
	join := func(path, key string) string {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var stack []*frame
	wantKey := false
	for {
		tok, err := dec.Token()
		if err != nil {
			return empty, nil // io.EOF; data was checked by the caller, so nothing else
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if wantKey {
			if key, ok := tok.(string); ok {
				field := join(top.path, key)
				if top.seen[key] {
					return nil, BadRequest(field, "key %s is given twice (each key may appear once)", quote(key))
				}
				top.seen[key] = true
				if fields, ok := known[top.path]; ok && !slices.Contains(fields, key) {
					return nil, BadRequest(field, "unknown field (want one of %s)", strings.Join(fields, ", "))
				}
				top.key, wantKey = key, false
				continue
			}
		}
		// A value, or the end of an object or array.
		path := ""
		if top != nil {
			path = top.path
			if top.object {
				path = join(top.path, top.key)
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, path: path, seen: map[string]bool{}})
			wantKey = true
			continue
		case json.Delim('['):
			stack = append(stack, &frame{path: path})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		case nil:
			if path == "" {
				return nil, BadRequest("body", "want a JSON object, got null")
			}
			return nil, BadRequest(path, "null is not allowed (leave the field out to get its default)")
		case "":
			if top != nil && top.object {
				empty = append(empty, path)
			}
		}
		wantKey = len(stack) > 0 && stack[len(stack)-1].object
	}
}

func describeType(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.String:
		return "a string"
	case reflect.Struct, reflect.Map:
		return "a JSON object"
	case reflect.Pointer:
		return describeType(t.Elem())
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "a JSON array"
	}
	return t.String()
}

// ---- output ----

// fail writes an error the service returned.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	e, ok := errors.AsType[*Error](err)
	if !ok || e == nil {
		e = Internal("%v", err)
	}
	switch status := statusOf(e.Code); {
	case status >= 500 && e.Code != CodeUnavailable:
		s.log.Error("api: service error", "method", r.Method, "path", r.URL.Path, "err", err)
	case status >= 500:
		s.log.Warn("api: service unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, e)
}

// WriteError answers with err in the API's error format (an *Error, else an internal
// error), for handlers in front of the server (a follower's forwarding).
func WriteError(w http.ResponseWriter, err error) { writeError(w, err) }

func writeError(w http.ResponseWriter, err error) {
	e, ok := errors.AsType[*Error](err)
	if !ok || e == nil {
		e = Internal("%v", err)
	}
	writeJSON(w, statusOf(e.Code), errorBody{Error: e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := marshalJSON(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = marshalJSON(errorBody{Error: Internal("cannot encode the answer: %v", err)})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(b)
}

// marshalJSON is json.Marshal with a newline, and without HTML escaping: a VM named "a<b>"
// is "a<b>" in the answer, not "a\u003cb\u003e" (the answer is never HTML: nosniff).
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
