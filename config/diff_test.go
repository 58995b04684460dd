package config

import (
	"reflect"
	"testing"
)

func TestDiffNamesChangedKeysNotValues(t *testing.T) {
	old := `repository = "/r"
[hub]
read_tokens = ["a"]
[[server]]
name = "main"
conninfo = "host=x"
[server.retention]
redundancy = 2
[[server]]
name = "gone"
conninfo = "host=y"
`
	new := `repository = "/r"
[hub]
read_tokens = ["b"]
max_peek = 10
[[server]]
name = "main"
conninfo = "host=x password=p"
[server.retention]
redundancy = 3
window = "7d"
[[server]]
name = "added"
conninfo = "host=z"
`
	o, err := Parse(old)
	if err != nil {
		t.Fatal(err)
	}
	n, err := Parse(new)
	if err != nil {
		t.Fatal(err)
	}
	got := Diff(o, n)
	want := Changes{
		Hub:     []string{"read_tokens", "max_peek"},
		Added:   []string{"added"},
		Removed: []string{"gone"},
		Changed: map[string][]string{"main": {"conninfo", "retention.redundancy", "retention.window"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Diff = %+v\nwant %+v", got, want)
	}
	if got := Diff(o, o); !got.Empty() {
		t.Errorf("Diff of a configuration with itself = %+v", got)
	}
	if !ReceiverKeys(got.Changed["main"]) {
		t.Error("a conninfo change does not restart the receiver")
	}
	if ReceiverKeys([]string{"retention.window", "backup.max_rate", "snapshot_timeout"}) {
		t.Error("retention, backup and snapshot settings restart the receiver")
	}
}

func TestDiffRefreshInterval(t *testing.T) {
	parse := func(interval string) *Config {
		c, err := Parse("repository = \"/r\"\nread_only = true\nrefresh_interval = \"" + interval + "\"\n")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		old, new string
		changed  bool
	}{{"1m", "1m", false}, {"1m", "5m", true}} {
		got := Diff(parse(tc.old), parse(tc.new))
		if got.RefreshInterval != tc.changed || got.Empty() == tc.changed {
			t.Errorf("Diff from refresh_interval %s to %s = %+v (empty %v), want RefreshInterval %v", tc.old, tc.new, got, got.Empty(), tc.changed)
		}
	}
}
