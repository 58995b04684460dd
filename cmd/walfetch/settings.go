package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/walhub/walhub/walfetch"
)

// DefaultConfigPath is read when it exists and no other file is named.
const DefaultConfigPath = "/etc/walhub/walfetch.toml"

// fileSettings is the config file's shape: durations as text.
type fileSettings struct {
	walfetch.Settings
	Timeout   string `toml:"timeout"`
	PITRRetry string `toml:"pitr_retry"`
	IdleExit  string `toml:"idle_exit"`
}

func defaults() walfetch.Settings { return walfetch.DefaultSettings() }

// defaultTexts is how --help shows the defaults d, by option name; the
// settings without a default (url, server, token, ...) are absent.
func defaultTexts(d walfetch.Settings) map[string]string {
	onOff := map[bool]string{true: "on", false: "off"}
	dur := func(d time.Duration) string { // 10m, not 10m0s
		s := d.String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		return s
	}
	return map[string]string{
		"spool": d.Spool, "prefetch": strconv.Itoa(d.Prefetch), "parallel": strconv.Itoa(d.Parallel),
		"spool-max-mb": strconv.FormatInt(d.SpoolMax, 10), "timeout": dur(d.Timeout),
		"pitr-retry": dur(d.PITRRetry), "partial": onOff[d.Partial], "idle-exit": dur(d.IdleExit),
	}
}

// option describes one setting once, for flags, environment and file.
type option struct {
	name, env, help string
	set             func(s *walfetch.Settings, v string) error
}

func durationSetter(p func(*walfetch.Settings) *time.Duration) func(*walfetch.Settings, string) error {
	return func(s *walfetch.Settings, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("invalid duration %q (e.g. 30s, 10m)", v)
		}
		*p(s) = d
		return nil
	}
}

func intSetter(p func(*walfetch.Settings) *int, lo, hi int) func(*walfetch.Settings, string) error {
	return func(s *walfetch.Settings, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return fmt.Errorf("%q is not a number from %d to %d", v, lo, hi)
		}
		*p(s) = n
		return nil
	}
}

var options = []option{
	{"url", "WALFETCH_URL", "hub URL, e.g. https://walhub.example:7480", func(s *walfetch.Settings, v string) error { s.URL = v; return nil }},
	{"server", "WALFETCH_SERVER", "server name in the hub", func(s *walfetch.Settings, v string) error { s.Server = v; return nil }},
	{"token", "WALFETCH_TOKEN", "read token (prefer token_file or the environment: a token on the command line shows in ps and pg_settings)", func(s *walfetch.Settings, v string) error { s.Token = v; return nil }},
	{"token-file", "WALFETCH_TOKEN_FILE", "file holding the read token", func(s *walfetch.Settings, v string) error { s.TokenFile = v; return nil }},
	{"ca-file", "WALFETCH_CA_FILE", "PEM certificate authorities to trust for https", func(s *walfetch.Settings, v string) error { s.CAFile = v; return nil }},
	{"spool", "WALFETCH_SPOOL", "prefetch spool directory, relative to the data directory; must be on the file system of pg_wal", func(s *walfetch.Settings, v string) error { s.Spool = v; return nil }},
	{"prefetch", "WALFETCH_PREFETCH", "segments to keep downloaded ahead of recovery, for 16 MiB segments (smaller segments get more, the same bytes ahead, up to spool-max-mb); 0 turns prefetching off", intSetter(func(s *walfetch.Settings) *int { return &s.Prefetch }, 0, 1024)},
	{"parallel", "WALFETCH_PARALLEL", "parallel downloads of the prefetcher, for 16 MiB segments (smaller segments get more, the same bytes in flight, up to the window)", intSetter(func(s *walfetch.Settings) *int { return &s.Parallel }, 1, 64)},
	{"spool-max-mb", "WALFETCH_SPOOL_MAX_MB", "most MiB the spool may hold", func(s *walfetch.Settings, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not a positive number of MiB", v)
		}
		s.SpoolMax = n
		return nil
	}},
	{"timeout", "WALFETCH_TIMEOUT", "how long one request may wait for the hub", durationSetter(func(s *walfetch.Settings) *time.Duration { return &s.Timeout })},
	{"pitr-retry", "WALFETCH_PITR_RETRY", "point-in-time recovery only: how long to retry an unreachable hub before stopping recovery", durationSetter(func(s *walfetch.Settings) *time.Duration { return &s.PITRRetry })},
	{"partial", "WALFETCH_PARTIAL", "point-in-time recovery only: when the hub lacks the newest segment, use the part it received (.partial): on or off", func(s *walfetch.Settings, v string) error {
		switch strings.ToLower(v) {
		case "on", "true", "1", "yes":
			s.Partial = true
		case "off", "false", "0", "no":
			s.Partial = false
		default:
			return fmt.Errorf("%q is not on or off", v)
		}
		return nil
	}},
	{"idle-exit", "WALFETCH_IDLE_EXIT", "the prefetcher exits after this long without a request", durationSetter(func(s *walfetch.Settings) *time.Duration { return &s.IdleExit })},
}

// loadSettings resolves settings from args (flags), the environment and the
// config file, and returns the positional arguments.
func loadSettings(args []string, stderr io.Writer) (walfetch.Settings, []string, error) {
	fs := flag.NewFlagSet("walfetch", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	flagVals := map[string]*string{}
	for _, o := range options {
		flagVals[o.name] = fs.String(o.name, "", o.help)
	}
	configPath := fs.String("config", "", "config file")
	help := fs.Bool("help", false, "show help")
	fs.BoolVar(help, "h", false, "show help")
	if err := fs.Parse(args); err != nil {
		return walfetch.Settings{}, nil, err
	}
	if *help {
		return walfetch.Settings{}, nil, flag.ErrHelp
	}
	s := defaults()
	path, explicit := *configPath, *configPath != ""
	if !explicit {
		if path, explicit = os.LookupEnv("WALFETCH_CONFIG"); !explicit {
			path = DefaultConfigPath
		}
	}
	if err := readFile(&s, path, explicit); err != nil {
		return walfetch.Settings{}, nil, err
	}
	for _, o := range options {
		if v, ok := os.LookupEnv(o.env); ok && v != "" {
			if err := o.set(&s, v); err != nil {
				return walfetch.Settings{}, nil, fmt.Errorf("%s: %w", o.env, err)
			}
		}
	}
	explicitFlags := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicitFlags[f.Name] = true })
	for _, o := range options {
		if explicitFlags[o.name] {
			if err := o.set(&s, *flagVals[o.name]); err != nil {
				return walfetch.Settings{}, nil, fmt.Errorf("--%s: %w", o.name, err)
			}
		}
	}
	if s.Token == "" && s.TokenFile != "" {
		b, err := walfetch.ReadSmallFile(s.TokenFile)
		if err != nil {
			return walfetch.Settings{}, nil, fmt.Errorf("token file: %w", err)
		}
		s.Token = strings.TrimSpace(string(b))
	}
	if s.URL == "" || s.Server == "" {
		return walfetch.Settings{}, nil, errors.New("the hub URL and the server name are required (--url and --server, WALFETCH_URL and WALFETCH_SERVER, or url and server in " + DefaultConfigPath + ")")
	}
	return s, fs.Args(), nil
}

// readFile reads the TOML config file; a missing default file is fine.
func readFile(s *walfetch.Settings, path string, explicit bool) error {
	data, err := walfetch.ReadSmallFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	fsett := fileSettings{Settings: *s}
	md, err := toml.Decode(string(data), &fsett)
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return fmt.Errorf("config file %s: unknown key %s", path, und[0])
	}
	*s = fsett.Settings
	for _, d := range []struct {
		key string
		v   string
		p   *time.Duration
	}{{"timeout", fsett.Timeout, &s.Timeout}, {"pitr_retry", fsett.PITRRetry, &s.PITRRetry}, {"idle_exit", fsett.IdleExit, &s.IdleExit}} {
		if d.v == "" {
			continue
		}
		v, err := time.ParseDuration(d.v)
		if err != nil || v < 0 {
			return fmt.Errorf("config file %s: %s: invalid duration %q", path, d.key, d.v)
		}
		*d.p = v
	}
	if s.Prefetch < 0 || s.Parallel < 0 || s.SpoolMax < 0 {
		return fmt.Errorf("config file %s: prefetch, parallel and spool_max_mb must not be negative", path)
	}
	if s.Parallel == 0 {
		s.Parallel = 1
	}
	return nil
}
