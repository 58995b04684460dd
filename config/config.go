// Package config reads walhub's configuration file: one TOML file that people
// edit by hand. Unknown keys are errors, every bad value is reported with the
// key that holds it, and secrets come from the environment.
package config

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/walhub/walhub/replication"
)

// DefaultPath is where walhub looks for its configuration when --config is not given.
const DefaultPath = "/etc/walhub/walhub.toml"

// Config is the whole configuration.
type Config struct {
	// Repository is where the archive is: a local directory (that also holds
	// catalog.db and the working files), or "s3://bucket/prefix" for an
	// S3-compatible bucket configured by the [s3] section.
	Repository string `toml:"repository"`
	// WorkDir is the local working area: catalog.db, the segment being
	// received (.partial), locks and the receivers' state. It defaults to
	// Repository for a local repository, to /var/lib/walhub for a bucket.
	WorkDir string `toml:"work_dir"`
	// ReadOnly makes a hub that serves a repository another hub writes (a
	// bucket shared with a hub in another site): no [[server]] streams into
	// it, nothing is written to it, and the catalog in WorkDir is refreshed
	// from it every RefreshInterval (default 1m).
	ReadOnly        bool     `toml:"read_only"`
	RefreshInterval Duration `toml:"refresh_interval"`
	// S3 is the bucket when Repository is an s3:// URL.
	S3  S3  `toml:"s3"`
	Hub Hub `toml:"hub"`
	// Servers is one section per PostgreSQL server, [[server]] in the file.
	Servers []Server `toml:"server"`
	// Encryption, when the section is present, encrypts every object of the
	// repository at rest.
	Encryption *Encryption `toml:"encryption"`
}

// Encryption names the age keys of an encrypted repository. The values are
// key sources, "file:/path" (an age identity file) or "env:NAME"; the keys
// themselves are read by the storage/crypt package when the repository is
// opened, so no secret is ever held in (or printed with) a Config.
type Encryption struct {
	// Key encrypts every new object, and decrypts.
	Key string `toml:"key"`
	// PreviousKeys only decrypt: objects written before the last rotations.
	PreviousKeys []string `toml:"previous_keys"`
}

// DefaultWorkDir is the local working area of a repository in a bucket.
const DefaultWorkDir = "/var/lib/walhub"

// S3 configures the S3-compatible bucket of an s3:// repository.
type S3 struct {
	// Bucket and Prefix come from the repository URL s3://bucket/prefix.
	Bucket string `toml:"-"`
	Prefix string `toml:"-"`
	// Endpoint is the S3 API's URL, e.g. "https://s3.example:9000"; empty for AWS.
	Endpoint string `toml:"endpoint"`
	// Region; default us-east-1.
	Region string `toml:"region"`
	// ForcePathStyle addresses the bucket as endpoint/bucket (most
	// S3-compatible servers need it) rather than bucket.endpoint.
	ForcePathStyle bool `toml:"force_path_style"`
	// AccessKeyID and SecretAccessKey: a value, "env:NAME" or "file:PATH".
	// Default: the environment's AWS_ACCESS_KEY_ID
	// and AWS_SECRET_ACCESS_KEY.
	AccessKeyID     Secret `toml:"access_key_id"`
	SecretAccessKey Secret `toml:"secret_access_key"`
	// CAFile is a PEM file of CA certificates to trust besides the system's.
	CAFile string `toml:"ca_file"`
	// PartSizeMB is the size of one multipart upload part in MiB (5..5120,
	// default 16); an object of 10000 parts is the largest.
	PartSizeMB int `toml:"part_size_mb"`
	// UploadConcurrency is how many parts of one object are sent at once
	// (1..64, default 4). One upload holds up to (concurrency+1) parts in memory.
	UploadConcurrency int `toml:"upload_concurrency"`
	// MaxAttempts is how many times one request is tried before its
	// operation fails (1..100, default 6; a failed segment upload is
	// retried again later anyway, a backup fails).
	MaxAttempts int `toml:"max_attempts"`
	// StallTimeout abandons and retries a request whose body stops moving
	// for that long (1s..1h, default 30s): a silently dropped connection.
	StallTimeout Duration `toml:"stall_timeout"`
	// ResponseTimeout abandons and retries a request sent whole but not
	// answered within it (1s..1h, default 2m).
	ResponseTimeout Duration `toml:"response_timeout"`
}

// Secret is a credential: it is never printed, whatever the verb, and is
// redacted when marshalled, so a configuration can be logged.
type Secret string

// Format implements fmt.Formatter.
func (Secret) Format(f fmt.State, verb rune) { io.WriteString(f, "[redacted]") }

// MarshalText implements encoding.TextMarshaler.
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Hub configures the HTTP server inside `walhub serve`.
type Hub struct {
	// Listen is the address the hub listens on, host:port.
	Listen string `toml:"listen"`
	// URL is how clients (walfetch, restore on another host) reach the hub. Defaults from Listen.
	URL     string `toml:"url"`
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// ReadTokens may read WAL, backups and status; AdminTokens may also change state.
	// Values of the form "env:NAME" are read from the environment variable NAME,
	// "file:PATH" from the file PATH.
	ReadTokens  []string `toml:"read_tokens"`
	AdminTokens []string `toml:"admin_tokens"`
	// MetricsTokens, when set, are required (or a read or admin token) by
	// GET /metrics, which otherwise answers anyone who can reach the hub.
	MetricsTokens []string `toml:"metrics_tokens"`
	// MaxPeek caps the n of a peek request.
	MaxPeek int `toml:"max_peek"`
	// MaxClientConnections caps the connections open at once from one client
	// address (default 64); raise it when clients reach the hub through a proxy.
	MaxClientConnections int `toml:"max_client_connections"`
}

// Server is one PostgreSQL server that walhub streams from and backs up.
type Server struct {
	// Name identifies the server in the repository, the catalog and the API.
	Name string `toml:"name"`
	// Conninfo is a libpq connection string or URL. A password is best left out and
	// given through PGPASSWORD or a .pgpass file; "env:NAME" reads the whole string
	// from the environment, "file:PATH" from a file.
	Conninfo string `toml:"conninfo"`
	// Slot is the physical replication slot; default "walhub_<name>".
	Slot string `toml:"slot"`
	// CreateSlot creates the slot when it is missing (default true).
	CreateSlot *bool `toml:"create_slot"`
	// Compression of stored WAL and backups: "zstd" (default) or "none".
	Compression string `toml:"compression"`
	// CompressionLevel for zstd: 1 (fastest) to 4 (best); default 1. See
	// ZstdLevel.
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
	// Workers is how many cores compress the backup; 0 means all (the hub's),
	// or, when the server compresses, none besides the walsender's own.
	Workers int `toml:"workers"`
	// CompressOn is where a zstd backup is compressed: "server", PostgreSQL
	// itself before sending (BASE_BACKUP COMPRESSION): a fraction of the
	// bytes on the network and the hub's cores free, for the database
	// server's CPU (one core, the walsender's, unless Workers says more);
	// "hub", all of the hub's cores on what the server sends uncompressed;
	// or "auto" (default): the server, except with a MaxRate (PostgreSQL
	// would throttle the compressed bytes, not the data it reads) or when the
	// server's build has no zstd: then the hub. "server" needs compression =
	// "zstd".
	CompressOn string `toml:"compress_on"`
	// WALTimeout is how long a backup waits for its WAL to reach the hub; default 5m.
	WALTimeout Duration `toml:"wal_timeout"`
}

// CheckCompressOn says what is wrong with where, a value of
// backup.compress_on (or walhub backup --compress-on), for a server whose
// compression setting is compression; nil when nothing is.
func CheckCompressOn(where, compression string) error {
	switch where {
	case "auto", "hub":
		return nil
	case "server":
		if compression != "zstd" {
			return fmt.Errorf("\"server\" needs compression = \"zstd\", not %q", compression)
		}
		return nil
	}
	return fmt.Errorf("%q is not one of auto, hub, server", where)
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
	if err := cfg.resolve(md.IsDefined("s3")); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// IsS3 tells whether the repository is in a bucket.
func (c *Config) IsS3() bool { return strings.HasPrefix(c.Repository, "s3://") }

var serverNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// resolve fills defaults, reads env: secrets and checks every value.
func (c *Config) resolve(s3Section bool) error {
	if c.Repository == "" {
		return errors.New("repository: required (the directory that holds the catalog and the files, or s3://bucket/prefix)")
	}
	if c.IsS3() {
		if err := c.resolveS3(); err != nil {
			return err
		}
	} else {
		if !strings.HasPrefix(c.Repository, "/") {
			return fmt.Errorf("repository: %q must be an absolute path or s3://bucket/prefix", c.Repository)
		}
		if s3Section {
			return fmt.Errorf("s3: the section is for a repository in a bucket, but repository is the directory %s", c.Repository)
		}
		if c.WorkDir == "" {
			c.WorkDir = c.Repository
		}
		if !strings.HasPrefix(c.WorkDir, "/") {
			return fmt.Errorf("work_dir: %q must be an absolute path", c.WorkDir)
		}
	}
	if c.ReadOnly {
		if len(c.Servers) > 0 {
			return fmt.Errorf("read_only: a read-only hub streams from no server and backs none up: remove the [[server]] sections (%s, ...)", c.Servers[0].Name)
		}
		if c.RefreshInterval.Duration == 0 {
			c.RefreshInterval.Duration = time.Minute
		}
	} else if c.RefreshInterval.Duration != 0 {
		return errors.New("refresh_interval: only for a read_only hub")
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
	if c.Hub.MaxClientConnections == 0 {
		c.Hub.MaxClientConnections = 64
	}
	if c.Hub.MaxClientConnections < 1 || c.Hub.MaxClientConnections > 65536 {
		return fmt.Errorf("hub.max_client_connections: %d is out of range 1..65536", c.Hub.MaxClientConnections)
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
	if c.Hub.MetricsTokens, err = resolveSecrets("hub.metrics_tokens", c.Hub.MetricsTokens); err != nil {
		return err
	}
	if c.Encryption != nil {
		if err := c.Encryption.check(); err != nil {
			return err
		}
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

var bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// resolveS3 parses repository = "s3://bucket/prefix" and checks the [s3] section.
func (c *Config) resolveS3() error {
	u, err := url.Parse(c.Repository)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("repository: %q is not of the form s3://bucket/prefix", c.Repository)
	}
	s := &c.S3
	s.Bucket = u.Host
	if !bucketRE.MatchString(s.Bucket) || strings.Contains(s.Bucket, "..") {
		return fmt.Errorf("repository: bucket %q: 3-63 of a-z 0-9 . - starting and ending with a letter or digit", s.Bucket)
	}
	s.Prefix = strings.Trim(u.Path, "/")
	if s.Prefix != "" {
		for _, seg := range strings.Split(s.Prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return fmt.Errorf("repository: prefix %q: empty, . and .. segments are not allowed", s.Prefix)
			}
		}
	}
	if c.WorkDir == "" {
		c.WorkDir = DefaultWorkDir
	}
	if !strings.HasPrefix(c.WorkDir, "/") {
		return fmt.Errorf("work_dir: %q must be an absolute path", c.WorkDir)
	}
	if s.Endpoint != "" {
		e, err := url.Parse(s.Endpoint)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" || e.User != nil {
			return fmt.Errorf("s3.endpoint: %q is not an http:// or https:// URL", s.Endpoint)
		}
	}
	if s.Region == "" {
		s.Region = "us-east-1"
	}
	if s.AccessKeyID, err = resolveCredential("s3.access_key_id", s.AccessKeyID, "AWS_ACCESS_KEY_ID"); err != nil {
		return err
	}
	if s.SecretAccessKey, err = resolveCredential("s3.secret_access_key", s.SecretAccessKey, "AWS_SECRET_ACCESS_KEY"); err != nil {
		return err
	}
	if s.CAFile != "" {
		if _, err := os.Stat(s.CAFile); err != nil {
			return fmt.Errorf("s3.ca_file: %w", err)
		}
	}
	if s.PartSizeMB == 0 {
		s.PartSizeMB = 16
	}
	if s.PartSizeMB < 5 || s.PartSizeMB > 5120 {
		return fmt.Errorf("s3.part_size_mb: %d is out of range 5..5120", s.PartSizeMB)
	}
	if s.UploadConcurrency == 0 {
		s.UploadConcurrency = 4
	}
	if s.UploadConcurrency < 1 || s.UploadConcurrency > 64 {
		return fmt.Errorf("s3.upload_concurrency: %d is out of range 1..64", s.UploadConcurrency)
	}
	if s.MaxAttempts == 0 {
		s.MaxAttempts = 6
	}
	if s.MaxAttempts < 1 || s.MaxAttempts > 100 {
		return fmt.Errorf("s3.max_attempts: %d is out of range 1..100", s.MaxAttempts)
	}
	for _, d := range []struct {
		key string
		v   *Duration
		def time.Duration
	}{{"s3.stall_timeout", &s.StallTimeout, 30 * time.Second}, {"s3.response_timeout", &s.ResponseTimeout, 2 * time.Minute}} {
		if d.v.Duration == 0 {
			d.v.Duration = d.def
		}
		if d.v.Duration < time.Second || d.v.Duration > time.Hour {
			return fmt.Errorf("%s: %s is out of range 1s..1h", d.key, d.v.Duration)
		}
	}
	return nil
}

// resolveCredential reads an S3 credential like any secret ("env:NAME",
// "file:PATH" or a value), or when empty from the environment variable def.
// Errors name the key and where the value was looked for, never the value.
func resolveCredential(key string, v Secret, def string) (Secret, error) {
	raw := string(v)
	if raw == "" {
		raw = "env:" + def
		if os.Getenv(def) == "" {
			return "", fmt.Errorf("%s: required (or set the environment variable %s)", key, def)
		}
	}
	val, err := resolveSecret(key, raw)
	if err != nil {
		return "", err
	}
	if val == "" {
		return "", fmt.Errorf("%s: empty", key)
	}
	return Secret(val), nil
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
	// A mistyped keyword would otherwise surface only at the first connection.
	if err := replication.CheckConninfo(s.Conninfo); err != nil {
		return fmt.Errorf("%s: conninfo: %w", key, err)
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
	if err := CheckCompressionLevel(s.CompressionLevel); err != nil {
		return fmt.Errorf("%s: compression_level: %w", key, err)
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
	if s.Backup.CompressOn == "" {
		s.Backup.CompressOn = "auto"
	}
	if err := CheckCompressOn(s.Backup.CompressOn, s.Compression); err != nil {
		return fmt.Errorf("%s: backup.compress_on: %w", key, err)
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

func (e *Encryption) check() error {
	if e.Key == "" {
		return errors.New("encryption.key: required (file:/path to an age key, or env:NAME)")
	}
	if err := checkKeySource("encryption.key", e.Key); err != nil {
		return err
	}
	for i, src := range e.PreviousKeys {
		if err := checkKeySource(fmt.Sprintf("encryption.previous_keys[%d]", i), src); err != nil {
			return err
		}
	}
	return nil
}

// checkKeySource checks the form of a key source without reading it, and
// without quoting it: a key pasted in by mistake must not be printed.
func checkKeySource(key, src string) error {
	if path, ok := strings.CutPrefix(src, "file:"); ok {
		if !strings.HasPrefix(path, "/") {
			return fmt.Errorf("%s: file: needs an absolute path", key)
		}
		return nil
	}
	if name, ok := strings.CutPrefix(src, "env:"); ok && name != "" {
		return nil
	}
	return fmt.Errorf("%s: want file:/path or env:NAME (never the key itself)", key)
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

// resolveSecret turns "env:NAME" into the value of the environment variable
// NAME, and "file:PATH" into the contents of the file PATH without its
// trailing newline (a file is read again on every reload of the daemon; the
// environment is not).
func resolveSecret(key, v string) (string, error) {
	if path, ok := strings.CutPrefix(v, "file:"); ok {
		data, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", key, err)
		}
		return strings.TrimRight(string(data), "\r\n"), nil
	}
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

// CheckCompressionLevel says whether n is a compression_level (1..4).
func CheckCompressionLevel(n int) error {
	if n < 1 || n > 4 {
		return fmt.Errorf("%d is out of range 1..4", n)
	}
	return nil
}

// ZstdLevel is the zstd level that compression_level n (1..4) stands for:
// 1, 3, 7 and 11, the levels klauspost/compress's four speeds (fastest,
// default, better, best) match. It is what PostgreSQL is asked for when it
// compresses a backup, and what the hub's WAL encoder (libzstd) runs at.
func ZstdLevel(n int) int { return [...]int{1, 1, 3, 7, 11}[min(max(n, 1), 4)] }
