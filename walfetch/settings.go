package walfetch

import "time"

// DefaultSettings are walfetch's settings where neither a flag, the
// environment nor its config file says otherwise.
func DefaultSettings() Settings {
	return Settings{Spool: "pg_wal/walfetch-spool", Prefetch: 16, Parallel: 4, SpoolMax: 1024,
		Timeout: 30 * time.Second, PITRRetry: 10 * time.Minute, IdleExit: time.Minute, Partial: true}
}

// Settings is everything walfetch is told (cmd/walfetch resolves them from
// flags, environment and its config file). The prefetcher process receives
// them as JSON, so every field has a json tag.
type Settings struct {
	URL       string        `toml:"url" json:"url"`
	Server    string        `toml:"server" json:"server"`
	Token     string        `toml:"token" json:"token"`
	TokenFile string        `toml:"token_file" json:"token_file"`
	CAFile    string        `toml:"ca_file" json:"ca_file"`
	Spool     string        `toml:"spool" json:"spool"`
	Prefetch  int           `toml:"prefetch" json:"prefetch"`
	Parallel  int           `toml:"parallel" json:"parallel"`
	SpoolMax  int64         `toml:"spool_max_mb" json:"spool_max_mb"`
	Timeout   time.Duration `toml:"-" json:"timeout"`
	PITRRetry time.Duration `toml:"-" json:"pitr_retry"`
	IdleExit  time.Duration `toml:"-" json:"idle_exit"`
	// Partial lets point-in-time recovery use the hub's .partial of the
	// newest segment when the complete segment does not exist.
	Partial bool `toml:"partial" json:"partial"`
}
