// Package config reads walhub's configuration file: one TOML file that people
// edit by hand. Unknown keys are errors, every bad value is reported with the
// key that holds it, and secrets come from the environment.
package config

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where walhub looks for its configuration when --config is not given.
const DefaultPath = "/etc/walhub/walhub.toml"

// Config is the whole configuration.
type Config struct {
	// Repository is the directory that holds catalog.db and every server's files.
	Repository string `toml:"repository"`
	// WorkDir is the local working area: the segment being received
	// (.partial), locks, the receiver's state and catalog.db. For a
	// repository on local disk it defaults to the repository directory.
	WorkDir string `toml:"work_dir"`
	Hub        Hub    `toml:"hub"`
	// Servers is one section per PostgreSQL server, [[server]] in the file.
	Servers []Server `toml:"server"`
}

// Hub configures the HTTP server inside `walhub serve`.
type Hub struct {
	// Listen is the address the hub listens on, host:port.
	Listen string `toml:"listen"`
	// URL is how clients (walfetch, restore on another host) reach the hub. Defaults from Listen.
	URL     string `toml:"url"`
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// ReadTokens may read WAL, backups and status; AdminTokens may also change state.
	// Values of the form "env:NAME" are read from the environment variable NAME.
	ReadTokens  []string `toml:"read_tokens"`
	AdminTokens []string `toml:"admin_tokens"`
	// MaxPeek caps the n of a peek request.
	MaxPeek int `toml:"max_peek"`
}

// Server is one PostgreSQL server that walhub streams from and backs up.
type Server struct {
	// Name identifies the server in the repository, the catalog and the API.
	Name string `toml:"name"`
	// Conninfo is a libpq connection string or URL. A password is best left out and
	// given through PGPASSWORD or a .pgpass file; "env:NAME" reads the whole string
	// from the environment.
	Conninfo string `toml:"conninfo"`
	// Slot is the physical replication slot; default "walhub_<name>".
	Slot string `toml:"slot"`
	// CreateSlot creates the slot when it is missing (default true).
	CreateSlot *bool `toml:"create_slot"`
	// Compression of stored WAL and backups: "zstd" (default) or "none".
	Compression string `toml:"compression"`
	// CompressionLevel for zstd: 1 (fastest) to 4 (best); default 1.
	CompressionLevel int `toml:"compression_level"`
	// Synchronous makes the receiver fsync every write and report at once, so the
	// hub can be a synchronous standby (listed in synchronous_standby_names).
	Synchronous bool `toml:"synchronous"`
	// ApplicationName is what the receiver reports to the server; default "walhub_<name>".
	ApplicationName string `toml:"application_name"`
	// StatusInterval is how often the receiver reports its position; default 10s.
	StatusInterval Duration `toml:"status_interval"`
	// SnapshotTimeout ends and fails a snapshot not stopped in time; default 4h.
	SnapshotTimeout Duration  `toml:"snapshot_timeout"`
	Backup          Backup    `toml:"backup"`
	Retention       Retention `toml:"retention"`
}

// Backup configures `walhub backup` for one server.
type Backup struct {
	// Checkpoint is "fast" (default) or "spread".
	Checkpoint string `toml:"checkpoint"`
	// MaxRate limits the server's sending rate in kB/s (32..1048576); 0 means no limit.
	MaxRate int `toml:"max_rate"`
	// Workers is how many cores compress the backup; 0 means all.
	Workers int `toml:"workers"`
	// WALTimeout is how long a backup waits for its WAL to reach the hub; default 5m.
	WALTimeout Duration `toml:"wal_timeout"`
}

// Retention is the policy of `walhub expire` for one server.
type Retention struct {
	// Redundancy keeps this many newest successful backups (0: not used).
	Redundancy int `toml:"redundancy"`
	// Window keeps every backup needed to recover to any point within it, e.g. "7d".
	Window Duration `toml:"window"`
	// MinRedundancy is never crossed, whatever the policy says; default 1.
	MinRedundancy int `toml:"min_redundancy"`
	// AutoExpire runs expire after each successful backup and hourly in the
	// daemon (default true; it does nothing without a policy).
	AutoExpire *bool `toml:"auto_expire"`
}

// Duration is a time.Duration that also accepts a number of days ("7d").
type Duration struct{ time.Duration }

// UnmarshalText parses "90s", "5m", "12h" or "7d".
func (d *Duration) UnmarshalText(b []byte) error {
	s := string(b)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(days, "%d", &n); err != nil || n < 0 || fmt.Sprint(n) != days {
			return fmt.Errorf("invalid duration %q: want e.g. 7d, 12h, 30m", s)
		}
		d.Duration = time.Duration(n) * 24 * time.Hour
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: want e.g. 7d, 12h, 30m", s)
	}
	if v < 0 {
		return fmt.Errorf("invalid duration %q: negative", s)
	}
	d.Duration = v
	return nil
}

// MarshalText formats the duration for TOML.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config file %s does not exist (give another with --config)", path)
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(string(data))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse parses and validates a configuration held in a string, and fills in defaults.
func Parse(text string) (*Config, error) {
	var cfg Config
	md, err := toml.Decode(text, &cfg)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return nil, fmt.Errorf("line %d: %s", perr.Position.Line, perr.Message)
		}
		return nil, err
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
	}
	if err := cfg.resolve(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

var serverNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// resolve fills defaults, reads env: secrets and checks every value.
func (c *Config) resolve() error {
	if c.Repository == "" {
		return errors.New("repository: required (the directory that holds the catalog and the files)")
	}
	if !strings.HasPrefix(c.Repository, "/") {
		return fmt.Errorf("repository: %q must be an absolute path", c.Repository)
	}
	if c.WorkDir == "" {
		c.WorkDir = c.Repository
	}
	if !strings.HasPrefix(c.WorkDir, "/") {
		return fmt.Errorf("work_dir: %q must be an absolute path", c.WorkDir)
	}
	if c.Hub.Listen == "" {
		c.Hub.Listen = "127.0.0.1:7480"
	}
	if c.Hub.MaxPeek == 0 {
		c.Hub.MaxPeek = 64
	}
	if c.Hub.MaxPeek < 0 || c.Hub.MaxPeek > 1024 {
		return fmt.Errorf("hub.max_peek: %d is out of range 1..1024", c.Hub.MaxPeek)
	}
	if (c.Hub.TLSCert == "") != (c.Hub.TLSKey == "") {
		return errors.New("hub.tls_cert and hub.tls_key: give both or neither")
	}
	if c.Hub.URL == "" {
		scheme := "http"
		if c.Hub.TLSCert != "" {
			scheme = "https"
		}
		c.Hub.URL = scheme + "://" + c.Hub.Listen
	}
	var err error
	if c.Hub.ReadTokens, err = resolveSecrets("hub.read_tokens", c.Hub.ReadTokens); err != nil {
		return err
	}
	if c.Hub.AdminTokens, err = resolveSecrets("hub.admin_tokens", c.Hub.AdminTokens); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i := range c.Servers {
		s := &c.Servers[i]
		key := fmt.Sprintf("server[%d]", i)
		if s.Name != "" {
			key = fmt.Sprintf("server %q", s.Name)
		}
		if err := s.resolve(key); err != nil {
			return err
		}
		if seen[s.Name] {
			return fmt.Errorf("%s: name: declared twice", key)
		}
		seen[s.Name] = true
	}
	return nil
}

func (s *Server) resolve(key string) error {
	if !serverNameRE.MatchString(s.Name) {
		return fmt.Errorf("%s: name: %q must be 1-63 of a-z 0-9 _ - starting with a letter or digit", key, s.Name)
	}
	v, err := resolveSecret(key+".conninfo", s.Conninfo)
	if err != nil {
		return err
	}
	s.Conninfo = v
	if s.Conninfo == "" {
		return fmt.Errorf("%s: conninfo: required", key)
	}
	if s.Slot == "" {
		s.Slot = "walhub_" + strings.ReplaceAll(s.Name, "-", "_")
	}
	if !slotNameRE.MatchString(s.Slot) {
		return fmt.Errorf("%s: slot: %q must be 1-63 of a-z 0-9 _", key, s.Slot)
	}
	if s.CreateSlot == nil {
		t := true
		s.CreateSlot = &t
	}
	switch s.Compression {
	case "":
		s.Compression = "zstd"
	case "zstd", "none":
	default:
		return fmt.Errorf("%s: compression: %q is not one of zstd, none", key, s.Compression)
	}
	if s.CompressionLevel == 0 {
		s.CompressionLevel = 1
	}
	if s.CompressionLevel < 1 || s.CompressionLevel > 4 {
		return fmt.Errorf("%s: compression_level: %d is out of range 1..4", key, s.CompressionLevel)
	}
	if s.ApplicationName == "" {
		s.ApplicationName = "walhub_" + s.Name
	}
	if s.StatusInterval.Duration == 0 {
		s.StatusInterval.Duration = 10 * time.Second
	}
	if s.SnapshotTimeout.Duration == 0 {
		s.SnapshotTimeout.Duration = 4 * time.Hour
	}
	switch s.Backup.Checkpoint {
	case "":
		s.Backup.Checkpoint = "fast"
	case "fast", "spread":
	default:
		return fmt.Errorf("%s: backup.checkpoint: %q is not one of fast, spread", key, s.Backup.Checkpoint)
	}
	if s.Backup.MaxRate != 0 && (s.Backup.MaxRate < 32 || s.Backup.MaxRate > 1048576) {
		return fmt.Errorf("%s: backup.max_rate: %d kB/s is out of range 32..1048576", key, s.Backup.MaxRate)
	}
	if s.Backup.Workers < 0 {
		return fmt.Errorf("%s: backup.workers: %d is negative", key, s.Backup.Workers)
	}
	if s.Backup.WALTimeout.Duration == 0 {
		s.Backup.WALTimeout.Duration = 5 * time.Minute
	}
	if s.Retention.Redundancy < 0 {
		return fmt.Errorf("%s: retention.redundancy: %d is negative", key, s.Retention.Redundancy)
	}
	if s.Retention.MinRedundancy == 0 {
		s.Retention.MinRedundancy = 1
	}
	if s.Retention.AutoExpire == nil {
		t := true
		s.Retention.AutoExpire = &t
	}
	if s.Retention.MinRedundancy < 0 {
		return fmt.Errorf("%s: retention.min_redundancy: %d is negative", key, s.Retention.MinRedundancy)
	}
	return nil
}

func resolveSecrets(key string, vals []string) ([]string, error) {
	out := make([]string, 0, len(vals))
	for i, v := range vals {
		r, err := resolveSecret(fmt.Sprintf("%s[%d]", key, i), v)
		if err != nil {
			return nil, err
		}
		if r == "" {
			return nil, fmt.Errorf("%s[%d]: empty token", key, i)
		}
		out = append(out, r)
	}
	return out, nil
}

// resolveSecret turns "env:NAME" into the value of the environment variable NAME.
func resolveSecret(key, v string) (string, error) {
	name, ok := strings.CutPrefix(v, "env:")
	if !ok {
		return v, nil
	}
	val, set := os.LookupEnv(name)
	if !set {
		return "", fmt.Errorf("%s: environment variable %s is not set", key, name)
	}
	return val, nil
}

// Server returns the section of the server called name.
func (c *Config) Server(name string) (*Server, error) {
	for i := range c.Servers {
		if c.Servers[i].Name == name {
			return &c.Servers[i], nil
		}
	}
	names := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		names[i] = s.Name
	}
	return nil, fmt.Errorf("no server %q in the configuration (configured: %s)", name, strings.Join(names, ", "))
}

// Select returns the servers a command names: one by name, or all for "all" or "".
func (c *Config) Select(name string) ([]*Server, error) {
	if name == "" || name == "all" {
		if len(c.Servers) == 0 {
			return nil, errors.New("no [[server]] section in the configuration")
		}
		out := make([]*Server, len(c.Servers))
		for i := range c.Servers {
			out[i] = &c.Servers[i]
		}
		return out, nil
	}
	s, err := c.Server(name)
	if err != nil {
		return nil, err
	}
	return []*Server{s}, nil
}
