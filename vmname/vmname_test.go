package vmname

import (
	"regexp"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestCheck(t *testing.T) {
	good := []string{"v1", "a+b", "a b", " lead", "trail ", "café", "日本語", "🙂", "50%", "a?b#c", `a\b`,
		`"q"`, "'", ".", "..", "...", "-v1", "_x", "a=b;c", "a:b@c", "0f8fad5b-d9cb-469f-a165-70867728950e",
		strings.Repeat("a", MaxLen), strings.Repeat("é", MaxLen), "a\u00a0b", "a\u2028b"}
	bad := map[string]string{
		"":                            "empty",
		"a/b":                         "'/'",
		"/":                           "'/'",
		"a\x00b":                      "U+0000",
		"a\tb":                        "U+0009",
		"a\nb":                        "U+000A",
		"a\rb":                        "U+000D",
		"a\x1bb":                      "U+001B",
		"a\x7fb":                      "U+007F",
		"a\u0085b":                    "U+0085",
		"a\u009bb":                    "U+009B",
		"a\xffb":                      "UTF-8",
		strings.Repeat("a", MaxLen+1): "1025 characters",
		strings.Repeat("é", MaxLen+1): "1025 characters",
		strings.Repeat("🙂", MaxLen+1): "1025 characters",
	}
	re := regexp.MustCompile(Pattern)
	for _, s := range good {
		if err := Check(s); err != nil {
			t.Errorf("Check(%q) = %v, want nil", s, err)
		}
		if !re.MatchString(s) {
			t.Errorf("Pattern refuses %q", s)
		}
	}
	for s, want := range bad {
		err := Check(s)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%q) = %v, want an error holding %q", s, err, want)
		}
		// Pattern plus the length bounds is the same rule, for valid UTF-8.
		n := utf8.RuneCountInString(s)
		if utf8.ValidString(s) && re.MatchString(s) && n >= 1 && n <= MaxLen {
			t.Errorf("Pattern and length take %q, Check refuses it", s)
		}
	}
	// Every control character, and only those, is refused.
	for r := rune(0); r < 0x3000; r++ {
		s := "a" + string(r)
		if r == '/' || r == utf8.RuneError {
			continue
		}
		if Valid(s) == unicode.IsControl(r) {
			t.Errorf("%U: Valid = %v, unicode.IsControl = %v", r, Valid(s), unicode.IsControl(r))
		}
		if re.MatchString(s) != Valid(s) {
			t.Errorf("%U: Pattern and Check disagree", r)
		}
	}
}
