package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRoutes(t *testing.T) {
	cfg, err := Parse([]byte(acct+`routes:
  - name: agent_details
    path: /ca_apis/AgentDetails
    methods: [POST]
    auth: apikey
    budget: 10
    window: 1m
    cache_ttl: 30s
  - name: legacy_state
    path: /CAServices/AgentState/*
    auth: query
    write: true
`), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	wantRoutes := []Route{{Name: "agent_details", Path: "/ca_apis/AgentDetails", Methods: []string{"POST"},
		Auth: "apikey", Budget: 10, Window: time.Minute, CacheTTL: 30 * time.Second},
		{Name: "legacy_state", Path: "/CAServices/AgentState/*", Auth: "query", Write: true}}
	if !reflect.DeepEqual(cfg.Routes, wantRoutes) {
		t.Fatalf("routes = %+v", cfg.Routes)
	}

	for bad, msg := range map[string]string{
		"routes:\n  - {name: x, path: /a, ttl: 1s}\n":                    `unknown key "ttl" in routes[0]`,
		"routes:\n  - {name: x, path: a}\n":                              "routes[0].path must start with /",
		"routes:\n  - {name: x, path: /a, auth: bearer}\n":               "routes[0].auth",
		"routes:\n  - {name: x, path: /a, budget: -1}\n":                 "routes[0].budget",
		"routes:\n  - {name: x, path: /a, write: true, cache_ttl: 1s}\n": "a write route cannot be cached",
		"routes:\n  - {name: x, path: /a}\n  - {name: x, path: /b}\n":    "repeats routes[0]",
		"unknown_paths: drop\n":                                          "unknown_paths",
	} {
		_, err := Parse([]byte(acct+bad), env(nil))
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: err = %v, want %q", bad, err, msg)
		}
	}
}
