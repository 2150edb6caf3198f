package config

import (
	"os"
	"path/filepath"
	"testing"
)

// TestStateDir checks state.dir's default and its way off: beside the
// config file when unset (or set to nothing), "" for none, and none for a
// config parsed from bytes (there is no file to be beside).
func TestStateDir(t *testing.T) {
	dir := t.TempDir()
	const base = "accounts: [{user_name: demo, api_key: k}]\n"
	for _, tt := range []struct {
		name, yaml, want string
	}{
		{"unset", base, dir},
		{"no value", base + "state:\n  dir:\n", dir},
		{"empty string: off", base + "state:\n  dir: \"\"\n", ""},
		{"set", base + "state: {dir: /var/lib/caproxy}\n", "/var/lib/caproxy"},
	} {
		path := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if cfg.State.Dir != tt.want {
			t.Errorf("%s: state.dir = %q, want %q", tt.name, cfg.State.Dir, tt.want)
		}
	}
	cfg, err := Parse([]byte(base), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.State.Dir != "" {
		t.Errorf("Parse: state.dir = %q, want none", cfg.State.Dir)
	}
}
