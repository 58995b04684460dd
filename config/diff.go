package config

import (
	"reflect"
	"slices"
	"strings"
)

// Changes is what differs between two configurations, named by key (never by
// value: tokens and conninfos are secrets), as a reload applies it.
type Changes struct {
	// Repository is set when the repository path differs.
	Repository bool
	// RefreshInterval is set when a read-only hub's refresh_interval differs.
	RefreshInterval bool
	// Hub holds the [hub] keys that differ, e.g. "read_tokens", "listen".
	Hub []string
	// Added and Removed are the names of servers only in the new, only in the
	// old configuration.
	Added, Removed []string
	// Changed maps each server in both to the keys of its section that differ,
	// e.g. "conninfo", "retention.window".
	Changed map[string][]string
}

// Empty reports whether the two configurations are the same.
func (c Changes) Empty() bool {
	return !c.Repository && !c.RefreshInterval && len(c.Hub) == 0 && len(c.Added) == 0 && len(c.Removed) == 0 && len(c.Changed) == 0
}

// Diff compares two loaded configurations (defaults filled in).
func Diff(old, new *Config) Changes {
	c := Changes{Repository: old.Repository != new.Repository, RefreshInterval: old.RefreshInterval != new.RefreshInterval,
		Changed: map[string][]string{}}
	c.Hub = diffKeys("", reflect.ValueOf(old.Hub), reflect.ValueOf(new.Hub))
	for i := range new.Servers {
		n := &new.Servers[i]
		o, err := old.Server(n.Name)
		if err != nil {
			c.Added = append(c.Added, n.Name)
			continue
		}
		if keys := diffKeys("", reflect.ValueOf(*o), reflect.ValueOf(*n)); len(keys) > 0 {
			c.Changed[n.Name] = keys
		}
	}
	for i := range old.Servers {
		if _, err := new.Server(old.Servers[i].Name); err != nil {
			c.Removed = append(c.Removed, old.Servers[i].Name)
		}
	}
	if len(c.Changed) == 0 {
		c.Changed = nil
	}
	return c
}

// diffKeys lists the TOML keys of two values of the same struct type that
// differ, descending into nested sections ("backup.max_rate").
func diffKeys(prefix string, o, n reflect.Value) []string {
	var keys []string
	t := o.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if key == "" || key == "-" {
			continue
		}
		ov, nv := o.Field(i), n.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[Duration]() {
			keys = append(keys, diffKeys(prefix+key+".", ov, nv)...)
			continue
		}
		if !reflect.DeepEqual(ov.Interface(), nv.Interface()) {
			keys = append(keys, prefix+key)
		}
	}
	return keys
}

// ReceiverKeys reports whether any of keys (as Diff names them) is a setting
// of the WAL receiver, so that applying it means reconnecting that receiver;
// backup, retention and snapshot settings are read when they are used.
func ReceiverKeys(keys []string) bool {
	return slices.ContainsFunc(keys, func(k string) bool {
		return !strings.HasPrefix(k, "backup.") && !strings.HasPrefix(k, "retention.") && k != "snapshot_timeout"
	})
}
