// Package vmname is hass's rule for VM names, the one the API, its client, the CLI and the
// store all check, so that a name one of them takes is taken by all.
//
// A VM's name is its libvirt domain name, and libvirt allows almost any character in one. It
// refuses only:
//
//   - an empty name: the domain XML parser reads <name> with virXPathString, which returns
//     NULL for an empty string, and reports VIR_ERR_NO_NAME ("missing name information");
//     src/conf/domain_conf.c, src/util/virxml.c;
//   - a name holding '/', for every driver that does not set VIR_DOMAIN_DEF_FEATURE_NAME_SLASH:
//     "name %s cannot contain '/'" in virDomainDefPostParseCheckFeatures,
//     src/conf/domain_postparse.c. The QEMU/KVM driver's parser config
//     (virQEMUDriverDomainDefParserConfig, src/qemu/qemu_domain.c) does not set it; only
//     vbox, vmx (VMware/ESX), openvz and xenapi do;
//   - a newline, when a domain is defined, in the define paths of many drivers (libxl, lxc,
//     bhyve, esx, vz, ...: virXMLCheckIllegalChars("name", def->name, "\n"));
//   - what XML 1.0 cannot carry at all: NUL and the other C0 control characters but tab,
//     newline and carriage return.
//
// It sets no length limit. hass takes that rule and is stricter in two ways only: it refuses
// every control character (tab, carriage return, DEL and the C1 controls U+0080-U+009F too,
// since a name is printed in tables, logs and terminals, where those break rows or act as
// escape sequences), and it refuses names longer than MaxLen characters. Spaces, '+', '%',
// '?', '#', '\\', quotes, dots (even "." and ".."), non-ASCII letters and emoji are all fine;
// the client path-escapes a name and the server unescapes it.
package vmname

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// MaxLen is the longest name hass takes, in characters (Unicode code points, as JSON Schema's
// maxLength counts them).
const MaxLen = 1024

// Pattern is the rule as a regular expression (ECMA 262 and RE2 alike), for the OpenAPI
// document; with a length of 1 to MaxLen characters it is exactly what Check accepts.
const Pattern = `^[^/\x00-\x1F\x7F-\x9F]+$`

// Rule says what a name must be, for error messages.
const Rule = "1 to 1024 characters, none of them '/' or a control character"

// Check returns nil if name is a valid VM name, or an error saying what is wrong with it, for
// a message such as `name "a/b" is not a valid VM name: it holds '/'...`.
func Check(name string) error {
	if name == "" {
		return errors.New("it is empty")
	}
	if !utf8.ValidString(name) {
		return errors.New("it is not valid UTF-8")
	}
	n := 0
	for _, r := range name {
		n++
		switch {
		case r == '/':
			return errors.New("it holds '/', which libvirt does not allow in a domain name")
		case IsControl(r):
			return fmt.Errorf("it holds the control character %U", r)
		}
	}
	if n > MaxLen {
		return fmt.Errorf("it is %d characters long, more than %d", n, MaxLen)
	}
	return nil
}

// Valid reports whether name is a valid VM name.
func Valid(name string) bool { return Check(name) == nil }

// IsControl reports whether r is a control character (Unicode category Cc: U+0000-U+001F,
// U+007F-U+009F).
func IsControl(r rune) bool { return r < 0x20 || (r >= 0x7f && r <= 0x9f) }
