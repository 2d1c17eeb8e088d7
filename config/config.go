// Package config reads hass's config file (/etc/hass/hass.yaml by default): one YAML mapping
// per command (up, controller, agent), whose keys are that command's flag names without the
// dashes and whose values are what the flag would be given:
//
//	up:
//	  data-dir: /var/lib/hass
//	  protect-all: true
//	  resync: 30s
//	agent:
//	  etcd: [http://10.0.0.1:2379, http://10.0.0.2:2379]   # or one comma-separated string
//	  heartbeat: 10.0.1.5:7946
//
// A flag given on the command line wins over the file. Every problem is an *Error naming the
// file, the line and column, and the field (section.key): YAML that does not parse, an
// unknown section or key, a value of the wrong type, a value the flag refuses.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// DefaultPath is where the daemons look for their config file unless --config says otherwise.
const DefaultPath = "/etc/hass/hass.yaml"

// MaxSize bounds a config file: anything larger is not a config file.
const MaxSize = 1 << 20

// Error is one problem in a config file.
type Error struct {
	Path         string
	Line, Column int    // 1-based; 0 when the problem has no place (the file cannot be read)
	Field        string // section or section.key; "" for the whole file
	Msg          string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Path)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	if e.Field != "" {
		b.WriteString(": ")
		b.WriteString(e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found, in file order; its Error is one line per problem.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// err returns es as an error, nil when empty.
func (es Errors) err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// Value is one setting as the file gives it.
type Value struct {
	Key          string
	Line, Column int
	kind         string   // the YAML kind: string, int, float, bool, null, mapping, sequence, alias
	scalar       string   // a scalar's text
	items        []string // a sequence of scalars
	badItem      string   // a sequence item that is not a scalar: its kind
}

// Section is one command's settings.
type Section struct {
	Name         string
	Line, Column int
	Values       []Value
}

// File is a parsed config file.
type File struct {
	Path     string
	Sections []Section
}

// Section returns the named section (nil if the file has none).
func (f *File) Section(name string) *Section {
	for i := range f.Sections {
		if f.Sections[i].Name == name {
			return &f.Sections[i]
		}
	}
	return nil
}

// Load reads and parses path. A missing file is no error when it was not asked for
// explicitly (the default path): the result is an empty File.
func Load(path string, explicit bool, sections []string) (*File, error) {
	fh, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return &File{Path: path}, nil
	}
	if err != nil {
		return nil, &Error{Path: path, Msg: fmt.Sprintf("cannot read the config file: %v", unwrapPath(err))}
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, MaxSize+1))
	if err != nil {
		return nil, &Error{Path: path, Msg: fmt.Sprintf("cannot read the config file: %v", unwrapPath(err))}
	}
	if len(data) > MaxSize {
		return nil, &Error{Path: path, Msg: fmt.Sprintf("larger than %d KiB: not a config file", MaxSize>>10)}
	}
	return Parse(path, data, sections)
}

func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// Parse parses a config file's bytes; path names it in errors. The top level must be a
// mapping of the given sections (each at most once), each a mapping of keys (each at most
// once) to a scalar or a sequence of scalars. Whether a key is a flag, and its value right
// for it, is Apply's to say. An empty file (or one of comments only) has no sections.
func Parse(path string, data []byte, sections []string) (*File, error) {
	f := &File{Path: path}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return f, nil
		}
		return nil, yamlError(path, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &Error{Path: path, Line: extra.Line, Column: extra.Column, Msg: "a second YAML document: the file must hold one"}
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(path, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return f, nil
	}
	top := doc.Content[0]
	if top.Kind == yaml.ScalarNode && top.ShortTag() == "!!null" {
		return f, nil // comments only
	}
	var errs Errors
	if top.Kind != yaml.MappingNode {
		return nil, &Error{Path: path, Line: top.Line, Column: top.Column,
			Msg: fmt.Sprintf("want a mapping of sections (%s), got %s", strings.Join(sections, ", "), kindOf(top))}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		name := k.Value
		if k.Kind != yaml.ScalarNode {
			errs = append(errs, &Error{Path: path, Line: k.Line, Column: k.Column, Msg: fmt.Sprintf("a section's name must be a plain word, got %s", kindOf(k))})
			continue
		}
		if !slices.Contains(sections, name) {
			errs = append(errs, &Error{Path: path, Line: k.Line, Column: k.Column, Field: name,
				Msg: fmt.Sprintf("unknown section (want %s)", strings.Join(sections, ", "))})
			continue
		}
		if l, dup := seen[name]; dup {
			errs = append(errs, &Error{Path: path, Line: k.Line, Column: k.Column, Field: name, Msg: fmt.Sprintf("section given twice (first at line %d)", l)})
			continue
		}
		seen[name] = k.Line
		s := Section{Name: name, Line: k.Line, Column: k.Column}
		switch {
		case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null":
			// "agent:" with nothing under it: no settings
		case v.Kind != yaml.MappingNode:
			errs = append(errs, &Error{Path: path, Line: v.Line, Column: v.Column, Field: name,
				Msg: fmt.Sprintf("want a mapping of settings (flag: value), got %s", kindOf(v))})
			continue
		default:
			s.Values, errs = parseValues(path, name, v, errs)
		}
		f.Sections = append(f.Sections, s)
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return f, nil
}

func parseValues(path, section string, m *yaml.Node, errs Errors) ([]Value, Errors) {
	var out []Value
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!null" {
			errs = append(errs, &Error{Path: path, Line: k.Line, Column: k.Column, Field: section, Msg: fmt.Sprintf("a key must be a flag's name, got %s", kindOf(k))})
			continue
		}
		field := section + "." + k.Value
		if l, dup := seen[k.Value]; dup {
			errs = append(errs, &Error{Path: path, Line: k.Line, Column: k.Column, Field: field, Msg: fmt.Sprintf("given twice (first at line %d)", l)})
			continue
		}
		seen[k.Value] = k.Line
		val := Value{Key: k.Value, Line: v.Line, Column: v.Column, kind: kindOf(v)}
		switch v.Kind {
		case yaml.ScalarNode:
			val.scalar = v.Value
		case yaml.SequenceNode:
			for _, it := range v.Content {
				if it.Kind != yaml.ScalarNode || it.ShortTag() == "!!null" {
					val.badItem = kindOf(it)
					val.Line, val.Column = it.Line, it.Column
					break
				}
				val.items = append(val.items, it.Value)
			}
		}
		out = append(out, val)
	}
	return out, errs
}

// kindOf names a node's YAML kind as errors show it.
func kindOf(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias (*" + n.Value + ")"
	case yaml.DocumentNode:
		return "a document"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "nothing (null)"
		case "!!bool":
			return "true or false"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!str":
			return "a string"
		case "!!timestamp":
			return "a timestamp"
		}
		return "a " + n.ShortTag() + " value"
	}
	return "an unknown YAML node"
}

// yamlError turns yaml's error ("yaml: line 3: mapping values are not allowed in this
// context") into an *Error with the line.
func yamlError(path string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &Error{Path: path, Msg: "not valid YAML: " + msg}
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 && line > 0 {
		_, rest, _ := strings.Cut(msg, ":")
		e.Line, e.Column, e.Msg = line, 1, "not valid YAML:"+rest
	}
	return e
}

// Check validates a flag's value beyond what its type takes (a log level, a minimum).
type Check func(value string) error

// Apply sets fs's flags from the section's settings, except those given on the command line
// (Changed), which win. Each setting's key must be one of fs's flags (other than help and
// config) and its value of the flag's type, accepted by the flag and by checks[key], if any;
// a setting the command line overrides is checked for its key and type only (Check runs Apply
// on fresh flag sets, where nothing is overridden). lists names the string flags that take a
// list (joined with commas). It returns every problem found, as Errors.
func (f *File) Apply(section string, fs *pflag.FlagSet, lists []string, checks map[string]Check) error {
	s := f.Section(section)
	if s == nil {
		return nil
	}
	var errs Errors
	for _, v := range s.Values {
		field := section + "." + v.Key
		bad := func(format string, args ...any) {
			errs = append(errs, &Error{Path: f.Path, Line: v.Line, Column: v.Column, Field: field, Msg: fmt.Sprintf(format, args...)})
		}
		fl := fs.Lookup(v.Key)
		if fl == nil || v.Key == "help" || v.Key == "config" {
			bad("unknown setting (hass %s takes: %s)", section, strings.Join(Keys(fs), ", "))
			continue
		}
		text, ok := v.text(fl, slices.Contains(lists, v.Key))
		if !ok.ok {
			bad("%s", ok.why)
			continue
		}
		if fl.Changed {
			continue // the command line wins
		}
		if err := fl.Value.Set(text); err != nil {
			bad("%s", setError(fl, text, err))
			continue
		}
		if c := checks[v.Key]; c != nil {
			if err := c(text); err != nil {
				bad("%v", err)
				continue
			}
		}
		fl.Changed = true // as if given: later defaults do not override it
	}
	return errs.err()
}

type verdict struct {
	ok  bool
	why string
}

// text is the value as the flag's Set takes it, or why its YAML type is wrong for the flag.
func (v Value) text(fl *pflag.Flag, list bool) (string, verdict) {
	typ := fl.Value.Type()
	want := map[string]string{
		"bool": "true or false", "int": "an integer", "int64": "an integer", "uint64": "an integer",
		"int32": "an integer", "uint": "an integer", "float64": "a number", "duration": "a duration such as 500ms, 30s or 2m",
		"string": "a string",
	}[typ]
	if want == "" {
		want = "a " + typ
	}
	if list && typ == "string" {
		want = "a string or a list of strings"
	}
	wrong := func() (string, verdict) {
		return "", verdict{why: fmt.Sprintf("want %s, got %s", want, v.kind)}
	}
	switch v.kind {
	case "a list":
		if !list || typ != "string" {
			return wrong()
		}
		if v.badItem != "" {
			return "", verdict{why: fmt.Sprintf("want a list of strings, got %s in it", v.badItem)}
		}
		for _, it := range v.items {
			if strings.Contains(it, ",") {
				return "", verdict{why: fmt.Sprintf("list item %q holds a comma: give one item per entry", it)}
			}
		}
		return strings.Join(v.items, ","), verdict{ok: true}
	case "a mapping", "nothing (null)", "a document", "an unknown YAML node":
		return wrong()
	}
	if strings.HasPrefix(v.kind, "an alias") {
		return "", verdict{why: "aliases are not supported: write the value"}
	}
	switch typ {
	case "bool":
		if v.kind != "true or false" {
			return wrong()
		}
	case "int", "int64", "uint64", "int32", "uint":
		if v.kind != "an integer" && !(v.kind == "a number" && digits(v.scalar)) { // too large for YAML's int: Set says so
			return wrong()
		}
	case "float64":
		if v.kind != "an integer" && v.kind != "a number" {
			return wrong()
		}
	case "duration":
		if v.kind != "a string" {
			if v.kind == "an integer" || v.kind == "a number" {
				return "", verdict{why: fmt.Sprintf("want %s, got the number %s: give its unit", want, v.scalar)}
			}
			return wrong()
		}
	case "string":
		if v.kind == "true or false" {
			return "", verdict{why: fmt.Sprintf("want a string, got %s: quote it (%q) if it is meant", v.scalar, v.scalar)}
		}
	}
	return v.scalar, verdict{ok: true}
}

func digits(s string) bool {
	s = strings.TrimPrefix(s, "-")
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// setError is a flag's refusal in words: pflag's own messages repeat the flag and value.
func setError(fl *pflag.Flag, text string, err error) string {
	msg := err.Error()
	if inner := errors.Unwrap(err); inner != nil {
		msg = inner.Error()
	}
	msg = strings.TrimPrefix(msg, "strconv.ParseInt: ")
	msg = strings.TrimPrefix(msg, "strconv.ParseUint: ")
	msg = strings.TrimPrefix(msg, "time: ")
	return fmt.Sprintf("%q is not a valid %s: %s", text, fl.Value.Type(), msg)
}

// Keys lists the settings a flag set takes, sorted: its flags but help and config.
func Keys(fs *pflag.FlagSet) []string {
	var out []string
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Name != "help" && fl.Name != "config" {
			out = append(out, fl.Name)
		}
	})
	slices.Sort(out)
	return out
}
