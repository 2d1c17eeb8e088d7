package api

// The OpenAPI document and the server must agree exactly: every request the document calls
// valid is served, every request it calls invalid is refused (400 naming the field, or 404 for
// a path that is not a route), and every answer is what the document says it is. These tests
// check that with the document itself, as a generated client or schemathesis would read it:
// a small JSON Schema validator (the keywords of OpenAPI 3.0.3, with the integers of its JSON
// Schema draft: no fraction, no exponent) judges each request, and TestOpenAPIAgreesWithServer
// sends, for every operation and every constraint of its parameters and body, requests that
// break it and requests that keep it. A constraint the document gains, loses or changes
// without the server (or the other way round) fails the test; so does a schema keyword the
// validator does not know, or a constraint no request exercised both ways.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hassproject/hass/auth"
)

// ---- the document ----

type oas struct {
	root     map[string]any
	problems []string // disagreements inside the document itself
}

func loadOAS(t testing.TB) *oas {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(openapiJSON))
	dec.UseNumber()
	var root map[string]any
	if err := dec.Decode(&root); err != nil {
		t.Fatal(err)
	}
	return &oas{root: root}
}

// ref resolves a local reference such as "#/components/schemas/Policy".
func (d *oas) ref(r string) map[string]any {
	var cur any = d.root
	for _, p := range strings.Split(strings.TrimPrefix(r, "#/"), "/") {
		cur = cur.(map[string]any)[p]
	}
	return cur.(map[string]any)
}

// deref follows $ref (also through parameters and request bodies) and returns the object and
// its location.
func (d *oas) deref(s map[string]any, loc string) (map[string]any, string) {
	for {
		r, ok := s["$ref"].(string)
		if !ok {
			return s, loc
		}
		s, loc = d.ref(r), r
	}
}

// operation is one method of one path of the document.
type operation struct {
	method, path, id string
	params           []param
	body             map[string]any // the application/json schema of the request body, or nil
	bodyLoc          string
	bodyRequired     bool
	responses        map[string]any
	raw              map[string]any // the operation object as the document has it
}

type param struct {
	name, in string
	required bool
	schema   map[string]any
	loc      string
}

func (d *oas) operations() []operation {
	var ops []operation
	paths := d.root["paths"].(map[string]any)
	for _, p := range slices.Sorted(mapKeys(paths)) {
		item := paths[p].(map[string]any)
		var common []any
		if ps, ok := item["parameters"].([]any); ok {
			common = ps
		}
		for _, m := range slices.Sorted(mapKeys(item)) {
			if m == "parameters" {
				continue
			}
			o := item[m].(map[string]any)
			op := operation{method: strings.ToUpper(m), path: p, id: o["operationId"].(string), responses: o["responses"].(map[string]any), raw: o}
			ps := slices.Clone(common)
			if more, ok := o["parameters"].([]any); ok {
				ps = append(ps, more...)
			}
			for i, x := range ps {
				pr, loc := d.deref(x.(map[string]any), fmt.Sprintf("#/paths/%s/%s/parameters/%d", p, m, i))
				req, _ := pr["required"].(bool)
				op.params = append(op.params, param{name: pr["name"].(string), in: pr["in"].(string), required: req,
					schema: pr["schema"].(map[string]any), loc: loc + "/schema"})
			}
			if rb, ok := o["requestBody"].(map[string]any); ok {
				rb, loc := d.deref(rb, "#/paths/"+p+"/"+m+"/requestBody")
				op.bodyRequired, _ = rb["required"].(bool)
				op.body = rb["content"].(map[string]any)["application/json"].(map[string]any)["schema"].(map[string]any)
				op.bodyLoc = loc + "/content/application~1json/schema"
			}
			ops = append(ops, op)
		}
	}
	return ops
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// ---- the validator ----

// violation is one constraint a request breaks: the schema (loc) and keyword, and the input
// it is about, dotted as the server's error.field names it ("" for the whole body).
type violation struct{ loc, kw, path string }

// check is one constraint a value was checked against.
type check struct{ loc, kw string }

// validator judges values; it records every constraint it checked, for coverage.
type validator struct {
	d       *oas
	checked []check
}

// schemaKeywords are the keywords the validator knows; the others describe and do not
// constrain. A keyword outside both lists fails TestOpenAPIKeywordsKnown.
var schemaKeywords = map[string]bool{"$ref": true, "type": true, "enum": true, "pattern": true, "minLength": true,
	"maxLength": true, "minimum": true, "maximum": true, "required": true, "properties": true,
	"additionalProperties": true, "items": true, "oneOf": true, "discriminator": true, "nullable": true, "x-duration": true}

var describingKeywords = map[string]bool{"description": true, "example": true, "format": true, "default": true, "title": true}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var regexps = map[string]*regexp.Regexp{}

func compiled(p string) *regexp.Regexp {
	if re, ok := regexps[p]; ok {
		return re
	}
	re := regexp.MustCompile(p)
	regexps[p] = re
	return re
}

func rat(n json.Number) *big.Rat {
	r, ok := new(big.Rat).SetString(n.String())
	if !ok {
		panic("bad number " + n)
	}
	return r
}

// isInteger is OpenAPI 3.0.3's integer (JSON Schema Wright draft 00): a JSON number without a
// fraction or exponent part.
func isInteger(n json.Number) bool { return !strings.ContainsAny(n.String(), ".eE") }

func (v *validator) validate(x any, s map[string]any, loc, path string) []violation {
	if r, ok := s["$ref"].(string); ok {
		return v.validate(x, v.d.ref(r), r, path)
	}
	var out []violation
	add := func(kw string) { out = append(out, violation{loc, kw, path}) }
	ok := func(kw string) { v.checked = append(v.checked, check{loc, kw}) }
	if x == nil {
		if s["nullable"] != true {
			add("nullable")
		}
		return out
	}
	ok("nullable")
	if typ, has := s["type"].(string); has {
		if !hasType(x, typ) {
			add("type")
			return out
		}
		ok("type")
	}
	if enum, has := s["enum"].([]any); has {
		if !slices.ContainsFunc(enum, func(e any) bool { return sameJSON(e, x) }) {
			add("enum")
		} else {
			ok("enum")
		}
	}
	switch x := x.(type) {
	case string:
		n := utf8.RuneCountInString(x)
		if m, has := s["minLength"].(json.Number); has {
			if i, _ := m.Int64(); int64(n) < i {
				add("minLength")
			} else {
				ok("minLength")
			}
		}
		if m, has := s["maxLength"].(json.Number); has {
			if i, _ := m.Int64(); int64(n) > i {
				add("maxLength")
			} else {
				ok("maxLength")
			}
		}
		if p, has := s["pattern"].(string); has {
			if !compiled(p).MatchString(x) {
				add("pattern")
			} else {
				ok("pattern")
			}
		}
		if b, has := s["x-duration"].(map[string]any); has {
			d, err := time.ParseDuration(x)
			lo, _ := time.ParseDuration(b["exclusiveMinimum"].(string))
			hi, _ := time.ParseDuration(b["maximum"].(string))
			if err != nil || d <= lo || d > hi {
				add("x-duration")
			} else {
				ok("x-duration")
			}
		}
	case json.Number:
		if m, has := s["minimum"].(json.Number); has {
			if rat(x).Cmp(rat(m)) < 0 {
				add("minimum")
			} else {
				ok("minimum")
			}
		}
		if m, has := s["maximum"].(json.Number); has {
			if rat(x).Cmp(rat(m)) > 0 {
				add("maximum")
			} else {
				ok("maximum")
			}
		}
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		if req, has := s["required"].([]any); has {
			for _, r := range req {
				if _, present := x[r.(string)]; !present {
					out = append(out, violation{loc, "required", join(path, r.(string))})
				} else {
					ok("required")
				}
			}
		}
		for _, k := range slices.Sorted(mapKeys(x)) {
			if ps, has := props[k]; has {
				out = append(out, v.validate(x[k], ps.(map[string]any), loc+"/properties/"+k, join(path, k))...)
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					out = append(out, violation{loc, "additionalProperties", join(path, k)})
				}
			case map[string]any:
				out = append(out, v.validate(x[k], ap, loc+"/additionalProperties", join(path, k))...)
			}
		}
		if ap, has := s["additionalProperties"].(bool); has && !ap && !slices.ContainsFunc(out, func(o violation) bool {
			return o.loc == loc && o.kw == "additionalProperties"
		}) {
			ok("additionalProperties")
		}
	case []any:
		if items, has := s["items"].(map[string]any); has {
			for i, e := range x {
				out = append(out, v.validate(e, items, loc+"/items", fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	}
	if one, has := s["oneOf"].([]any); has {
		matched := 0
		for i, alt := range one {
			sub := &validator{d: v.d}
			if len(sub.validate(x, alt.(map[string]any), fmt.Sprintf("%s/oneOf/%d", loc, i), path)) == 0 {
				matched++
			}
		}
		disc, hasDisc := s["discriminator"].(map[string]any)
		if !hasDisc {
			if matched != 1 {
				add("oneOf")
			} else {
				ok("oneOf")
			}
			return out
		}
		// The discriminator picks the variant; its violations are the request's.
		prop := disc["propertyName"].(string)
		mapping := disc["mapping"].(map[string]any)
		var sel []violation
		obj, isObj := x.(map[string]any)
		switch {
		case !isObj:
			sel = []violation{{loc, "type", path}}
		case obj[prop] == nil:
			if _, present := obj[prop]; present {
				sel = []violation{{loc, "nullable", join(path, prop)}}
			} else {
				sel = []violation{{loc, "required", join(path, prop)}}
			}
		default:
			name, isStr := obj[prop].(string)
			target, known := mapping[name].(string)
			if !isStr || !known {
				sel = []violation{{loc, "discriminator", join(path, prop)}}
			} else {
				ok("discriminator")
				sel = v.validate(x, v.d.ref(target), target, path)
			}
		}
		if len(sel) > 0 && sel[0].loc == loc && isObj {
			// No variant chosen: keys no variant knows are at fault too.
			for _, k := range slices.Sorted(mapKeys(obj)) {
				if !slices.ContainsFunc(one, func(alt any) bool {
					a, _ := v.d.deref(alt.(map[string]any), "")
					_, has := a["properties"].(map[string]any)[k]
					return has
				}) {
					sel = append(sel, violation{loc, "additionalProperties", join(path, k)})
				}
			}
		}
		if (len(sel) == 0) != (matched == 1) {
			v.d.problems = append(v.d.problems, fmt.Sprintf("%s: the discriminator and oneOf disagree on %v", loc, x))
		}
		out = append(out, sel...)
	}
	return out
}

func hasType(x any, typ string) bool {
	switch x := x.(type) {
	case string:
		return typ == "string" && utf8.ValidString(x)
	case json.Number:
		return typ == "number" || (typ == "integer" && isInteger(x))
	case bool:
		return typ == "boolean"
	case map[string]any:
		return typ == "object"
	case []any:
		return typ == "array"
	}
	return false
}

func sameJSON(a, b any) bool {
	if an, ok := a.(json.Number); ok {
		bn, ok := b.(json.Number)
		return ok && rat(an).Cmp(rat(bn)) == 0
	}
	return jsonEqual(a, b)
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// decodeJSON decodes one JSON value as a validator sees it (numbers kept as written).
func decodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after the value")
	}
	return x, nil
}

// queryValue is a query parameter's text as a value of its schema's type (style form).
func queryValue(text string, s map[string]any) any {
	switch s["type"] {
	case "integer", "number":
		if regexp.MustCompile(`^-?[0-9]+$`).MatchString(text) {
			return json.Number(text)
		}
		return text // not a number: a type violation
	}
	return text
}

// dupKeys returns the dotted path of the first key given twice in one object, or "". JSON
// Schema validators decode objects into maps and cannot see it; RFC 8259 leaves it to the
// receiver, and the document says the server refuses it.
func dupKeys(data []byte) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		obj  bool
		path string
		seen map[string]bool
		key  string
	}
	var stack []*frame
	wantKey := false
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if k, isStr := tok.(string); isStr && wantKey {
			if top.seen[k] {
				return join(top.path, k)
			}
			top.seen[k], top.key, wantKey = true, k, false
			continue
		}
		path := ""
		if top != nil {
			path = top.path
			if top.obj {
				path = join(top.path, top.key)
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{obj: true, path: path, seen: map[string]bool{}})
			wantKey = true
			continue
		case json.Delim('['):
			stack = append(stack, &frame{path: path})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		wantKey = len(stack) > 0 && stack[len(stack)-1].obj
	}
}

// judge says what the document makes of a request: the violations it holds (none: it must be
// served). decided is false for requests the document says nothing about (HEAD, which
// net/http answers wherever GET is, and an empty method).
func (v *validator) judge(ops []operation, method, escPath, rawQuery string, body []byte) (vs []violation, decided bool) {
	route := []violation{{"route", "route", ""}}
	if escPath == "" || escPath[0] != '/' || cleanPath(escPath) != escPath {
		return route, true
	}
	segs := strings.Split(escPath, "/")
	var op *operation
	var name string
	matched := false
	for i := range ops {
		tsegs := strings.Split(ops[i].path, "/")
		if len(tsegs) != len(segs) {
			continue
		}
		n, ok := "", true
		for j, ts := range tsegs {
			seg, err := url.PathUnescape(segs[j])
			if err != nil {
				seg = segs[j]
			}
			switch { // as ServeMux matches: segment by segment, unescaped
			case ts == "{name}" && seg != "" && seg != "/":
				n = seg
			case ts != seg:
				ok = false
			}
		}
		if !ok {
			continue
		}
		matched = true
		if ops[i].method == method {
			op, name = &ops[i], n
		}
	}
	switch {
	case method == "HEAD" || method == "":
		return nil, false
	case !matched || op == nil:
		return route, true
	}
	for _, p := range op.params {
		switch p.in {
		case "path":
			vs = append(vs, v.validate(name, p.schema, p.loc, p.name)...)
		}
	}
	if hasQuery := slices.ContainsFunc(op.params, func(p param) bool { return p.in == "query" }); hasQuery {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return append(vs, violation{"described", "malformed query", "query"}), true
		}
		for _, k := range slices.Sorted(mapKeys(q)) {
			i := slices.IndexFunc(op.params, func(p param) bool { return p.in == "query" && p.name == k })
			switch {
			case i < 0:
				vs = append(vs, violation{"described", "unknown query parameter", "query"})
			case len(q[k]) > 1:
				vs = append(vs, violation{op.params[i].loc, "type", k}) // a scalar given twice
			default:
				vs = append(vs, v.validate(queryValue(q[k][0], op.params[i].schema), op.params[i].schema, op.params[i].loc, k)...)
			}
		}
	}
	if op.body == nil {
		return vs, true
	}
	switch {
	case isBlank(body):
		if op.bodyRequired {
			vs = append(vs, violation{op.bodyLoc, "requestBody.required", "body"})
		}
	case len(body) > MaxBodyBytes:
		vs = append(vs, violation{"described", "body size", "body"})
	case !utf8.Valid(body):
		vs = append(vs, violation{"described", "UTF-8", "body"})
	default:
		x, err := decodeJSON(body)
		if err != nil {
			return append(vs, violation{"described", "JSON", "body"}), true
		}
		if p := dupKeys(body); p != "" {
			vs = append(vs, violation{"described", "duplicate key", p})
		}
		vs = append(vs, v.validate(x, op.body, op.bodyLoc, "")...)
	}
	return vs, true
}

// ---- requests ----

// jv is a JSON value being built: a leaf (raw JSON text) or an object with ordered keys, so
// that a body can hold a key twice.
type jv struct {
	raw string
	obj []kv
}

type kv struct {
	k string
	v *jv
}

func leaf(raw string) *jv { return &jv{raw: raw} }

func (v *jv) clone() *jv {
	if v.obj == nil {
		return leaf(v.raw)
	}
	c := &jv{obj: make([]kv, len(v.obj))}
	for i, e := range v.obj {
		c.obj[i] = kv{e.k, e.v.clone()}
	}
	return c
}

func (v *jv) String() string {
	if v.obj == nil {
		return v.raw
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, e := range v.obj {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(e.k)
		b.Write(k)
		b.WriteByte(':')
		b.WriteString(e.v.String())
	}
	b.WriteByte('}')
	return b.String()
}

// at returns the object at path (keys from the top).
func (v *jv) at(path []string) *jv {
	for _, k := range path {
		i := slices.IndexFunc(v.obj, func(e kv) bool { return e.k == k })
		v = v.obj[i].v
	}
	return v
}

func (v *jv) set(k string, val *jv) {
	if i := slices.IndexFunc(v.obj, func(e kv) bool { return e.k == k }); i >= 0 {
		v.obj[i].v = val
		return
	}
	v.obj = append(v.obj, kv{k, val})
}

func (v *jv) del(k string) {
	v.obj = slices.DeleteFunc(v.obj, func(e kv) bool { return e.k == k })
}

func jsonString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// stringPool is text every string input is tried with: names libvirt takes and refuses,
// durations Go takes and refuses, host names, operations, and the empty string.
var stringPool = []string{"", "a", "v1", "h2", "db", "x", "A", "a+b", "a b", " a", "a ", "café", "日本語", "🙂", "50%",
	".", "..", "-v1", "_x", "a/b", "/", "a\tb", "a\nb", "a\x00b", "a\x7fb", "a\u0085b", "a\u00a0b", "a?b#c", `a\b`, `"q"`,
	"h2.example.com", "H_2:3", "-h", "h 2", "h/2", "10m", "1h30m", "1.5h", ".5h", "1.h", "+10m", "-5m", "0", "+0", "-0",
	"0s", "0.0h", "1ns", "0.1ns", "10µs", "10μs", "10us", "720h", "721h", "720h1ns", "719h59m60s", "10x", "10", "m", "s",
	".s", "1e3s", "10 m", " 10m", "10m ", "9999999999999999999h", "honour", "honor", "restart", "Honour", "ignore", "start",
	"stop", "reboot", "migrate", "Migrate", "resume", "explode"}

// numberPool is JSON numbers every numeric input is tried with.
var numberPool = []string{"0", "-0", "1", "-1", "3", "1.5", "1e2", "1E2", "1.0", "-1.5", "1000", "1001", "2147483647",
	"2147483648", "-2147483648", "-2147483649", "9223372036854775807", "9223372036854775808", "1e999",
	"18446744073709551615", "18446744073709551616"}

// otherTypes are values of every JSON type.
var otherTypes = []string{`"x"`, `1`, `1.5`, `true`, `false`, `null`, `{}`, `[]`, `[1]`, `{"a":1}`}

// candidates are the values a schema's input is tried with, as JSON text: the pools, and
// values at and beyond each of its bounds.
func (d *oas) candidates(s map[string]any) []string {
	s, _ = d.deref(s, "")
	seen := map[string]bool{}
	var out []string
	add := func(raw string) {
		if !seen[raw] {
			seen[raw] = true
			out = append(out, raw)
		}
	}
	for _, x := range otherTypes {
		add(x)
	}
	for _, x := range stringPool {
		add(jsonString(x))
	}
	for _, x := range numberPool {
		add(x)
	}
	for _, k := range []string{"example", "default"} {
		if x, ok := s[k]; ok {
			b, _ := json.Marshal(x)
			add(string(b))
		}
	}
	if enum, ok := s["enum"].([]any); ok {
		for _, e := range enum {
			if str, ok := e.(string); ok {
				add(jsonString(str))
				add(jsonString(strings.ToUpper(str)))
				add(jsonString(str + " "))
			}
		}
	}
	for _, k := range []string{"minLength", "maxLength"} {
		if n, ok := s[k].(json.Number); ok {
			i, _ := n.Int64()
			for _, l := range []int64{i - 1, i, i + 1} {
				if l >= 0 {
					add(jsonString(strings.Repeat("a", int(l))))
					add(jsonString(strings.Repeat("é", int(l))))
				}
			}
		}
	}
	for _, k := range []string{"minimum", "maximum"} {
		if n, ok := s[k].(json.Number); ok {
			b, _ := new(big.Int).SetString(n.String(), 10)
			for _, delta := range []int64{-1, 0, 1} {
				add(new(big.Int).Add(b, big.NewInt(delta)).String())
			}
		}
	}
	if b, ok := s["x-duration"].(map[string]any); ok {
		for _, k := range []string{"exclusiveMinimum", "maximum"} {
			d := b[k].(string)
			add(jsonString(d))
			add(jsonString(d + "1ns"))
			add(jsonString("+" + d))
		}
	}
	return out
}

// sample is a valid value of schema s, every optional property given (full) or none (!full),
// or nil when the document gives no way to build one.
func (d *oas) sample(s map[string]any, full bool, v *validator) *jv {
	s, loc := d.deref(s, "")
	if props, ok := s["properties"].(map[string]any); ok {
		o := &jv{obj: []kv{}}
		req, _ := s["required"].([]any)
		for _, k := range slices.Sorted(mapKeys(props)) {
			if !full && !slices.Contains(req, any(k)) {
				continue
			}
			sub := d.sample(props[k].(map[string]any), full, v)
			if sub == nil {
				return nil
			}
			o.obj = append(o.obj, kv{k, sub})
		}
		return o
	}
	for _, raw := range d.candidates(s) {
		x, _ := decodeJSON([]byte(raw))
		if len((&validator{d: d}).validate(x, s, loc, "")) == 0 {
			return leaf(raw)
		}
	}
	return nil
}

// variants are the object schemas a body schema may be: its oneOf, or itself.
func (d *oas) variants(s map[string]any) []map[string]any {
	s, _ = d.deref(s, "")
	one, ok := s["oneOf"].([]any)
	if !ok {
		return []map[string]any{s}
	}
	var out []map[string]any
	for _, alt := range one {
		a, _ := d.deref(alt.(map[string]any), "")
		out = append(out, a)
	}
	return out
}

// bodies are the request bodies tried for a body schema: the valid ones first, then each
// object of each with every property set to every candidate and left out, an unknown key, a
// key differing only by case, and a key given twice.
func (d *oas) bodies(s map[string]any, v *validator) []string {
	var out []string
	for _, vs := range d.variants(s) {
		for _, full := range []bool{false, true} {
			base := d.sample(vs, full, v)
			if base == nil {
				panic("no sample for a body")
			}
			out = append(out, base.String())
			var walk func(obj *jv, schema map[string]any, path []string)
			walk = func(obj *jv, schema map[string]any, path []string) {
				schema, _ = d.deref(schema, "")
				props, _ := schema["properties"].(map[string]any)
				mutate := func(f func(o *jv)) {
					c := base.clone()
					f(c.at(path))
					out = append(out, c.String())
				}
				for _, k := range slices.Sorted(mapKeys(props)) {
					for _, raw := range d.candidates(props[k].(map[string]any)) {
						mutate(func(o *jv) { o.set(k, leaf(raw)) })
					}
					mutate(func(o *jv) { o.del(k) })
					if i := slices.IndexFunc(obj.obj, func(e kv) bool { return e.k == k }); i >= 0 {
						val := obj.obj[i].v
						mutate(func(o *jv) { o.obj = append(o.obj, kv{k, val.clone()}) })                  // twice
						mutate(func(o *jv) { o.del(k); o.set(strings.ToUpper(k[:1])+k[1:], val.clone()) }) // case
						mutate(func(o *jv) { o.del(k); o.set(strings.ToUpper(k), val.clone()) })           // case
						if val.obj != nil {
							walk(val, props[k].(map[string]any), append(slices.Clone(path), k))
						}
					}
				}
				mutate(func(o *jv) { o.set("zz_unknown", leaf("1")) })
			}
			walk(base, vs, nil)
		}
	}
	// The whole body: blank, not JSON, not an object.
	out = append(out, "", " \n\t\r ", "{", "}", "{}}", "{} {}", "{}x", "\u00a0", "\xff", "{\"op\":\"st\xffop\"}")
	out = append(out, otherTypes...)
	return out
}

// queryTexts are the texts a query parameter is tried with.
func (d *oas) queryTexts(s map[string]any) []string {
	out := []string{"", "x", "0", "-0", "1", "-1", "007", "+1", " 1", "1 ", "1.5", "1e2", "1.0", "0x10", "1000", "1001",
		"18446744073709551615", "18446744073709551616", "99999999999999999999999"}
	// A string parameter's enum values and example keep its constraints.
	enum, _ := s["enum"].([]any)
	for _, e := range enum {
		if v, ok := e.(string); ok {
			out = append(out, v, v+"x", strings.ToUpper(v))
		}
	}
	if n, ok := s["maxLength"].(json.Number); ok {
		if m, err := n.Int64(); err == nil {
			out = append(out, strings.Repeat("é", int(m)), strings.Repeat("é", int(m)+1))
		}
	}
	if ex, ok := s["example"].(string); ok {
		out = append(out, ex, ex+" ", strings.Replace(ex, "T", " ", 1), strings.Replace(ex, "-03-", "-13-", 1))
	}
	for _, k := range []string{"minimum", "maximum", "default"} {
		if n, ok := s[k].(json.Number); ok {
			b, _ := new(big.Int).SetString(n.String(), 10)
			for _, delta := range []int64{-1, 0, 1} {
				out = append(out, new(big.Int).Add(b, big.NewInt(delta)).String())
			}
		}
	}
	return out
}

// nameTexts are the VM names tried in paths.
func nameTexts() []string {
	out := slices.Clone(stringPool)
	out = append(out, "\xff", "a\u009bb", strings.Repeat("a", 1024), strings.Repeat("é", 1024), strings.Repeat("a", 1025),
		strings.Repeat("é", 1025), strings.Repeat("🙂", 1025), "a%2Fb", "%", "%zz", "a;b", "a=b&c")
	return out
}

// ---- the test ----

func TestOpenAPIKeywordsKnown(t *testing.T) {
	d := loadOAS(t)
	var walk func(s map[string]any, loc string)
	walk = func(s map[string]any, loc string) {
		for k, x := range s {
			switch {
			case schemaKeywords[k]:
			case describingKeywords[k]:
				continue
			default:
				t.Errorf("%s: schema keyword %q: the validator does not know it (teach it, or the test cannot judge the document)", loc, k)
				continue
			}
			switch k {
			case "properties":
				for p, ps := range x.(map[string]any) {
					walk(ps.(map[string]any), loc+"/properties/"+p)
				}
			case "items":
				walk(x.(map[string]any), loc+"/items")
			case "additionalProperties":
				if m, ok := x.(map[string]any); ok {
					walk(m, loc+"/additionalProperties")
				}
			case "oneOf":
				for i, alt := range x.([]any) {
					walk(alt.(map[string]any), fmt.Sprintf("%s/oneOf/%d", loc, i))
				}
			case "type":
				if !slices.Contains([]string{"string", "integer", "number", "boolean", "object", "array"}, x.(string)) {
					t.Errorf("%s: type %v", loc, x)
				}
			case "nullable":
				if x != false {
					t.Errorf("%s: nullable %v: the server refuses null everywhere", loc, x)
				}
			}
		}
	}
	comps := d.root["components"].(map[string]any)
	for name, s := range comps["schemas"].(map[string]any) {
		walk(s.(map[string]any), "#/components/schemas/"+name)
	}
	for _, op := range d.operations() {
		for _, p := range op.params {
			walk(p.schema, p.loc)
		}
		if op.body != nil {
			walk(op.body, op.bodyLoc)
		}
	}
}

// exchange is one request sent to the server and what came of it.
type exchange struct {
	method, target string
	body           []byte
	status         int
	answer         []byte
	err            *Error
	called         bool
}

// adminToken is sent with every request send makes (the conformance walk runs as admin;
// TestOpenAPIAuthEveryOperation tries the other roles and none).
var adminToken string

func send(t *testing.T, h http.Handler, f *fakeService, method, target string, body []byte) exchange {
	t.Helper()
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	if body == nil {
		req = httptest.NewRequest(method, target, nil)
	}
	if adminToken != "" {
		req.Header.Set("Authorization", "Bearer "+adminToken)
	}
	n := len(f.Calls())
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	x := exchange{method: method, target: target, body: body, status: rec.Code, answer: rec.Body.Bytes(), called: len(f.Calls()) > n}
	if rec.Code >= 400 {
		var eb errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == nil {
			t.Fatalf("%s %s: %d without an error body: %q", method, target, rec.Code, rec.Body)
		}
		x.err = eb.Error
	}
	return x
}

func TestOpenAPIAgreesWithServer(t *testing.T) {
	d := loadOAS(t)
	v := &validator{d: d}
	ops := d.operations()
	f := newFake()
	a, byRole := newFakeAuth(t)
	h := NewServer(f, nil, WithAuth(a))
	adminToken = byRole[auth.Admin]

	type key struct{ loc, kw string }
	broken, kept := map[key]int{}, map[key]int{}
	constraints := map[key]bool{}
	total := 0

	try := func(op operation, name, rawQuery string, body []byte) {
		t.Helper()
		target := op.path
		if strings.Contains(target, "{name}") {
			target = strings.Replace(target, "{name}", escapeSegment(name), 1)
		}
		if rawQuery != "" {
			target += "?" + rawQuery
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		v.checked = v.checked[:0]
		vs, decided := v.judge(ops, op.method, u.EscapedPath(), u.RawQuery, body)
		if !decided {
			t.Fatalf("%s %s: undecided", op.method, target)
		}
		x := send(t, h, f, op.method, target, body)
		total++
		served := x.called || x.status < 300
		desc := fmt.Sprintf("%s %s %q", op.method, target, body)
		if len(desc) > 300 {
			desc = desc[:300] + "..."
		}
		if served != (len(vs) == 0) {
			t.Errorf("%s: the document says %v, the server answered %d %s", desc, vs, x.status, x.answer)
			return
		}
		if served {
			for _, c := range v.checked {
				kept[key{c.loc, c.kw}]++
			}
			checkAnswer(t, d, op, x)
			return
		}
		// Refused: 400 naming the field, or 404 when the name is no path segment at all.
		if x.status == 404 && (name == "" || name == "/") {
			// No route has an empty segment (nor, in ServeMux, one that is an escaped '/'):
			// the name's own constraints refuse it first.
			for _, p := range op.params {
				if p.in == "path" {
					for _, e := range (&validator{d: d}).validate(name, p.schema, p.loc, p.name) {
						broken[key{e.loc, e.kw}]++
					}
				}
			}
			return
		}
		if x.status != 400 || x.err.Code != CodeBadRequest {
			t.Errorf("%s: refused with %d %s, want 400", desc, x.status, x.answer)
			return
		}
		checkAnswer(t, d, op, x)
		fields := map[string]bool{}
		for _, e := range vs {
			fields[e.path] = true
		}
		if len(fields) == 1 {
			want := vs[0].path
			if want == "" {
				want = "body"
			}
			if x.err.Field != want && vs[0].kw != "requestBody.required" {
				t.Errorf("%s: the document faults %s (%v), the server's error names %q: %s", desc, want, vs, x.err.Field, x.err.Message)
			}
			for _, e := range vs {
				broken[key{e.loc, e.kw}]++
			}
		}
	}

	for _, op := range ops {
		for _, p := range op.params {
			for _, c := range constraintsOf(d, p.schema, p.loc, false) {
				constraints[key{c.loc, c.kw}] = true
			}
		}
		if op.body != nil {
			for _, c := range constraintsOf(d, op.body, op.bodyLoc, true) {
				constraints[key{c.loc, c.kw}] = true
			}
			constraints[key{op.bodyLoc, "requestBody.required"}] = op.bodyRequired
		}

		var base []byte
		if op.body != nil {
			base = []byte(d.sample(d.variants(op.body)[0], false, v).String())
		}
		hasName := strings.Contains(op.path, "{name}")
		// The parameters.
		if hasName {
			for _, n := range nameTexts() {
				try(op, n, "", base)
			}
		}
		for _, p := range op.params {
			if p.in != "query" {
				continue
			}
			for _, txt := range d.queryTexts(p.schema) {
				try(op, "v1", url.Values{p.name: {txt}}.Encode(), base)
			}
			try(op, "v1", p.name+"=1&"+p.name+"=2", base)
			try(op, "v1", p.name+"=1&zz_unknown=1", base)
			try(op, "v1", p.name+"=%zz", base)
		}
		// The body.
		if op.body != nil {
			for _, b := range d.bodies(op.body, v) {
				try(op, "v1", "", []byte(b))
			}
			if !op.bodyRequired {
				try(op, "v1", "", nil)
			}
		} else {
			try(op, "v1", "", nil)
		}
	}
	for _, p := range d.problems {
		t.Error(p)
	}
	// Every constraint was broken by a request the server refused for it alone, and kept by a
	// request it served.
	for _, k := range slices.SortedFunc(mapKeys2(constraints), func(a, b key) int { return strings.Compare(a.loc+a.kw, b.loc+b.kw) }) {
		if k.kw == "requestBody.required" {
			if constraints[k] && broken[k] == 0 {
				t.Errorf("%s: no request without a body was refused", k.loc)
			}
			continue
		}
		if broken[k] == 0 {
			t.Errorf("%s %s: no request broke it alone", k.loc, k.kw)
		}
		if kept[k] == 0 {
			t.Errorf("%s %s: no request kept it", k.loc, k.kw)
		}
	}
	t.Logf("%d requests, %d constraints", total, len(constraints))
}

func mapKeys2[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// constraintsOf lists the constraints of an input's schema, as the validator names them. A
// parameter (inBody false) is never null. A variant of a discriminated oneOf is chosen by its
// discriminator, so its type, its required discriminator and that property's enum cannot be
// broken once chosen: those are the union's (its discriminator) and are left out.
func constraintsOf(d *oas, s map[string]any, loc string, inBody bool) []check {
	var out []check
	seen := map[string]bool{}
	var walk func(s map[string]any, loc, disc string)
	walk = func(s map[string]any, loc, disc string) {
		s, loc = d.deref(s, loc)
		if seen[loc] {
			return
		}
		seen[loc] = true
		if inBody && disc == "" {
			out = append(out, check{loc, "nullable"})
		}
		for _, kw := range []string{"type", "enum", "pattern", "minLength", "maxLength", "minimum", "maximum", "x-duration", "required", "discriminator"} {
			if _, ok := s[kw]; !ok {
				continue
			}
			if req, _ := s["required"].([]any); disc != "" && (kw == "type" || kw == "required" && len(req) == 1 && req[0] == disc) {
				continue
			}
			out = append(out, check{loc, kw})
		}
		if s["additionalProperties"] == false {
			out = append(out, check{loc, "additionalProperties"})
		}
		if props, ok := s["properties"].(map[string]any); ok {
			for k, ps := range props {
				if k != disc {
					walk(ps.(map[string]any), loc+"/properties/"+k, "")
				}
			}
		}
		if one, ok := s["oneOf"].([]any); ok {
			dp := ""
			if dd, ok := s["discriminator"].(map[string]any); ok {
				dp = dd["propertyName"].(string)
			}
			for i, alt := range one {
				walk(alt.(map[string]any), fmt.Sprintf("%s/oneOf/%d", loc, i), dp)
			}
		}
	}
	walk(s, loc, "")
	return out
}

// checkAnswer checks an answer against the document: its status is one the operation lists,
// and its body matches the schema given for it.
func checkAnswer(t *testing.T, d *oas, op operation, x exchange) {
	t.Helper()
	r, ok := op.responses[fmt.Sprint(x.status)].(map[string]any)
	if !ok {
		t.Errorf("%s %s: status %d is not among the responses of %s", x.method, x.target, x.status, op.id)
		return
	}
	r, loc := d.deref(r, "")
	content, ok := r["content"].(map[string]any)
	if !ok {
		return
	}
	s := content["application/json"].(map[string]any)["schema"].(map[string]any)
	got, err := decodeJSON(x.answer)
	if err != nil {
		t.Errorf("%s %s: answer is not JSON: %v", x.method, x.target, err)
		return
	}
	if vs := (&validator{d: d}).validate(got, s, loc, ""); len(vs) > 0 {
		t.Errorf("%s %s: %d answer breaks the document: %v\n%s", x.method, x.target, x.status, vs, x.answer)
	}
}

// TestOpenAPIValidatorSelfCheck: the validator judges a few known requests right, so that the
// agreement above means something.
func TestOpenAPIValidatorSelfCheck(t *testing.T) {
	d := loadOAS(t)
	v := &validator{d: d}
	ops := d.operations()
	for _, tc := range []struct {
		method, path, query, body string
		want                      []string // the fields at fault; nil: valid
	}{
		{"POST", "/v1/vms/v1/operations", "", `{"op":"reboot"}`, nil},
		{"POST", "/v1/vms/v1/operations", "", `{"op":"migrate","target":"h2"}`, nil},
		{"POST", "/v1/vms/v1/operations", "", `{"op":"reboot","target":"h2"}`, []string{"target"}},
		{"POST", "/v1/vms/v1/operations", "", `{"op":"migrate","target":""}`, []string{"target"}},
		{"POST", "/v1/vms/v1/operations", "", `{"op":"explode"}`, []string{"op"}},
		{"POST", "/v1/vms/v1/operations", "", `{}`, []string{"op"}},
		{"POST", "/v1/vms/v1/operations", "", ``, []string{"body"}},
		{"POST", "/v1/vms/a+b/operations", "", `{"op":"stop","op":"stop"}`, []string{"op"}},
		{"PUT", "/v1/vms/a%20b/protection", "", ``, nil},
		{"PUT", "/v1/vms/v1/protection", "", `{"policy":{"window":"10x"}}`, []string{"policy.window"}},
		{"PUT", "/v1/vms/v1/protection", "", `{"policy":{"window":"721h"}}`, []string{"policy.window"}},
		{"PUT", "/v1/vms/v1/protection", "", `{"policy":{"window":"1h30m","priority":-5}}`, nil},
		{"PUT", "/v1/vms/v1/protection", "", `{"policy":{"max_restarts":1.0}}`, []string{"policy.max_restarts"}},
		{"PUT", "/v1/vms/v1/protection", "", `{"policy":null}`, []string{"policy"}},
		{"GET", "/v1/vms/a%2Fb", "", ``, []string{"name"}},
		{"GET", "/v1/events", "after=1&limit=1000", ``, nil},
		{"GET", "/v1/events", "limit=1001", ``, []string{"limit"}},
		{"GET", "/v1/events", "x=1", ``, []string{"query"}},
		{"GET", "/v1//vms", "", ``, []string{""}},
		{"PATCH", "/v1/vms/v1", "", ``, []string{""}},
	} {
		vs, decided := v.judge(ops, tc.method, tc.path, tc.query, []byte(tc.body))
		var got []string
		for _, e := range vs {
			if !slices.Contains(got, e.path) {
				got = append(got, e.path)
			}
		}
		sort.Strings(got)
		if !decided || !slices.Equal(got, tc.want) {
			t.Errorf("%s %s?%s %s: %v (%v), want faults at %q", tc.method, tc.path, tc.query, tc.body, vs, decided, tc.want)
		}
	}
	if len(d.problems) > 0 {
		t.Error(d.problems)
	}
}
