// Package notify reads Nova's versioned notifications (the oslo.messaging envelope on the
// "nova" exchange, routing keys versioned_notifications.info and .error) and says what each
// one means for hass: a user's operation starting, ending or failing, an instance created or
// deleted, an instance that moved, a compute service forced down. It is pure: no AMQP, no
// clock.
//
// Parsing is strict where hass relies on a field and lenient elsewhere: Nova adds payload
// fields release after release (the samples in testdata are Nova's own), so unknown fields are
// ignored, but every field hass reads must be present with its type, and an error names it
// ("payload.nova_object.data.uuid: ..."). An unknown event type is not an error: Interpret
// says it means nothing (and why), so that the caller logs it and changes nothing.
package notify

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Notification is one versioned notification, as far as hass reads it.
type Notification struct {
	EventType string    // e.g. instance.power_off.end
	Publisher string    // e.g. nova-compute:compute1
	Priority  string    // INFO or ERROR
	Timestamp time.Time // zero when the message carries none
	// PayloadName is the payload's nova_object.name (InstanceActionPayload, ...).
	PayloadName string
	Instance    *Instance // instance.* notifications
	Service     *Service  // service.update
}

// Instance is what hass reads of an instance payload.
type Instance struct {
	UUID        string
	Name        string // display_name
	Host        string // the compute host ("" while not scheduled yet)
	Node        string
	State       string // vm_state: active, stopped, paused, suspended, deleted, error, building, ...
	TaskState   string // "" when none
	PowerState  string // running, shutdown, paused, crashed, suspended, pending, nostate
	Initiator   string // action_initiator_user: "" when Nova itself acted (its power-state sync)
	Metadata    map[string]string
	FaultReason string // fault.exception_message, when the payload carries a fault
}

// Service is what hass reads of a service.update payload.
type Service struct {
	UUID       string
	Host       string
	Binary     string
	Disabled   bool
	ForcedDown bool
}

// FieldError names a field of a notification that hass cannot read.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// ParseEnvelope reads a message as it arrives from RabbitMQ: the oslo.messaging envelope
// {"oslo.version": "2.0", "oslo.message": "<notification JSON>"}, or a bare notification.
func ParseEnvelope(body []byte) (Notification, error) {
	var env map[string]json.RawMessage
	if err := strictDecode(body, &env); err != nil {
		return Notification{}, fmt.Errorf("message: %w", err)
	}
	raw, ok := env["oslo.message"]
	if !ok {
		return Parse(body)
	}
	var v string
	if err := json.Unmarshal(env["oslo.version"], &v); err != nil || v != "2.0" {
		return Notification{}, fieldErr("oslo.version", "want \"2.0\", got %s", string(env["oslo.version"]))
	}
	var inner string
	if err := json.Unmarshal(raw, &inner); err != nil {
		return Notification{}, fieldErr("oslo.message", "want a string holding the notification's JSON")
	}
	return Parse([]byte(inner))
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// Parse reads one notification (the JSON inside the envelope).
func Parse(data []byte) (Notification, error) {
	var m struct {
		EventType *string          `json:"event_type"`
		Publisher *string          `json:"publisher_id"`
		Priority  *string          `json:"priority"`
		Timestamp *string          `json:"timestamp"`
		Payload   *json.RawMessage `json:"payload"`
	}
	if err := strictDecode(data, &m); err != nil {
		return Notification{}, err
	}
	var n Notification
	switch {
	case m.EventType == nil || *m.EventType == "":
		return n, fieldErr("event_type", "missing")
	case m.Publisher == nil || *m.Publisher == "":
		return n, fieldErr("publisher_id", "missing")
	case m.Payload == nil:
		return n, fieldErr("payload", "missing")
	}
	n.EventType, n.Publisher = *m.EventType, *m.Publisher
	if m.Priority != nil {
		n.Priority = *m.Priority
	}
	if m.Timestamp != nil && *m.Timestamp != "" {
		t, err := parseTime(*m.Timestamp)
		if err != nil {
			return n, fieldErr("timestamp", "%q: not a time", *m.Timestamp)
		}
		n.Timestamp = t
	}
	var p struct {
		Name *string          `json:"nova_object.name"`
		Data *json.RawMessage `json:"nova_object.data"`
	}
	if err := json.Unmarshal(*m.Payload, &p); err != nil {
		return n, fieldErr("payload", "not an object")
	}
	if p.Name == nil || *p.Name == "" {
		return n, fieldErr("payload.nova_object.name", "missing")
	}
	if p.Data == nil {
		return n, fieldErr("payload.nova_object.data", "missing")
	}
	n.PayloadName = *p.Name
	const data0 = "payload.nova_object.data."
	switch {
	case strings.HasPrefix(n.EventType, "instance."):
		in, err := parseInstance(*p.Data)
		if err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				return n, fieldErr(data0+fe.Field, "%s", fe.Msg)
			}
			return n, fieldErr("payload.nova_object.data", "%v", err)
		}
		n.Instance = in
	case n.EventType == "service.update":
		sv, err := parseService(*p.Data)
		if err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				return n, fieldErr(data0+fe.Field, "%s", fe.Msg)
			}
			return n, fieldErr("payload.nova_object.data", "%v", err)
		}
		n.Service = sv
	}
	return n, nil
}

func parseInstance(raw json.RawMessage) (*Instance, error) {
	var d map[string]json.RawMessage
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, errors.New("not an object")
	}
	in := &Instance{}
	var err error
	if in.UUID, err = str(d, "uuid", true); err != nil {
		return nil, err
	}
	if !uuidRE.MatchString(in.UUID) {
		return nil, fieldErr("uuid", "%q: not a uuid", in.UUID)
	}
	in.UUID = strings.ToLower(in.UUID)
	for _, f := range []struct {
		name string
		dst  *string
		req  bool
	}{{"state", &in.State, true}, {"power_state", &in.PowerState, true}, {"task_state", &in.TaskState, false},
		{"host", &in.Host, false}, {"node", &in.Node, false}, {"display_name", &in.Name, false}, {"action_initiator_user", &in.Initiator, false}} {
		if *f.dst, err = str(d, f.name, f.req); err != nil {
			return nil, err
		}
	}
	if raw, ok := d["metadata"]; ok && string(raw) != "null" {
		var md map[string]any
		if err := json.Unmarshal(raw, &md); err != nil {
			return nil, fieldErr("metadata", "not an object")
		}
		in.Metadata = map[string]string{}
		for k, v := range md {
			in.Metadata[k] = fmt.Sprint(v)
		}
	}
	if raw, ok := d["fault"]; ok && string(raw) != "null" {
		var f struct {
			Data struct {
				Message string `json:"exception_message"`
			} `json:"nova_object.data"`
		}
		if err := json.Unmarshal(raw, &f); err != nil {
			return nil, fieldErr("fault", "not an object")
		}
		in.FaultReason = f.Data.Message
	}
	return in, nil
}

func parseService(raw json.RawMessage) (*Service, error) {
	var d map[string]json.RawMessage
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, errors.New("not an object")
	}
	s := &Service{}
	var err error
	if s.Host, err = str(d, "host", true); err != nil {
		return nil, err
	}
	if s.Binary, err = str(d, "binary", true); err != nil {
		return nil, err
	}
	if s.UUID, err = str(d, "uuid", false); err != nil {
		return nil, err
	}
	if s.Disabled, err = boolean(d, "disabled"); err != nil {
		return nil, err
	}
	if s.ForcedDown, err = boolean(d, "forced_down"); err != nil {
		return nil, err
	}
	return s, nil
}

// str reads a string field; null reads as "" unless required.
func str(d map[string]json.RawMessage, name string, required bool) (string, error) {
	raw, ok := d[name]
	if !ok || string(raw) == "null" {
		if required {
			return "", fieldErr(name, "missing")
		}
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fieldErr(name, "want a string, got %s", short(raw))
	}
	if required && s == "" {
		return "", fieldErr(name, "empty")
	}
	return s, nil
}

func boolean(d map[string]json.RawMessage, name string) (bool, error) {
	raw, ok := d[name]
	if !ok {
		return false, fieldErr(name, "missing")
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		return false, fieldErr(name, "want true or false, got %s", short(raw))
	}
	return b, nil
}

func short(raw json.RawMessage) string {
	if len(raw) > 40 {
		return string(raw[:40]) + "..."
	}
	return string(raw)
}

// parseTime reads the timestamps oslo.messaging writes ("2026-11-26 01:02:03.123456", UTC)
// and RFC 3339 ones.
func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02 15:04:05.999999", "2006-01-02 15:04:05", time.RFC3339Nano} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("unknown time format")
}

// strictDecode decodes one JSON value, refusing trailing data and duplicate keys at the top.
func strictDecode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("invalid JSON at byte %d: %w", se.Offset, err)
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fieldErr(te.Field, "want %s, got %s", te.Type, te.Value)
		}
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}
