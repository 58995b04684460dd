package hub

import (
	"encoding/json"
	"fmt"
	"regexp"
)

// hostPath matches an absolute path of the hub's host inside a message or a
// JSON document: a '/' at the start or after a separator, and not the "//" of
// a URL. The separator is kept; the path becomes <path>. LSNs ("0/3000148")
// do not match: their '/' follows a digit.
var hostPath = regexp.MustCompile(`(^|[\s"'(=:,\[])/[^/\s"'(),:\\\]][^\s"'(),:\\\]]*`)

// withoutHostPaths keeps the hub host's file system layout (the repository,
// unix sockets, temporary files, named in driver and system errors) out of
// what the HTTP API returns. The hub's log keeps the whole message.
func withoutHostPaths(s string) string {
	return hostPath.ReplaceAllString(s, "${1}<path>")
}

// jsonWithoutHostPaths marshals v with every host path in its strings replaced.
func jsonWithoutHostPaths(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal: %w", err)
	}
	// The pattern never matches a quote or a backslash, so the result is
	// still valid JSON with the same structure.
	return hostPath.ReplaceAll(data, []byte("${1}<path>")), nil
}
