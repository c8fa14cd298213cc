package protocol

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ValidateName applies the name rule of docs/protocol.md: trimmed of white space, then 1 to MaxNameLength code
// points of valid UTF-8 with no control (Cc) or formatting (Cf) characters. It returns the trimmed name, or an
// error whose text can be shown to the user.
func ValidateName(raw []byte) (string, error) {
	if !utf8.Valid(raw) {
		return "", errors.New("a name must be valid UTF-8 text")
	}
	name := strings.TrimSpace(string(raw))
	if name == "" {
		return "", errors.New("a name must not be empty")
	}
	if n := utf8.RuneCountInString(name); n > MaxNameLength {
		return "", errors.New("a name must be at most 64 characters long")
	}
	for _, r := range name {
		if unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) {
			return "", errors.New("a name must not contain control or invisible formatting characters")
		}
	}
	return name, nil
}
