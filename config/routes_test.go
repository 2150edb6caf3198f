package config

import (
	"reflect"
	"strconv"
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

// TestRouteBudgetAboveCloudAgent checks that a route budget above
// CloudAgent's documented limit for its path fails with one clear line,
// whether by count or by rate (a shorter window), and passes with
// limit.above_cloudagent_limits.
func TestRouteBudgetAboveCloudAgent(t *testing.T) {
	route := func(path string, budget int, window string) string {
		s := "routes:\n  - {name: r, path: " + path + ", budget: " + strconv.Itoa(budget)
		if window != "" {
			s += ", window: " + window
		}
		return s + "}\n"
	}
	for _, c := range []struct {
		cfg  string
		want string // "" when accepted
	}{
		{route("/ca_apis/AgentDetails", 100, ""),
			"routes[0].budget 100 per 1m0s on /ca_apis/AgentDetails is above CloudAgent's limit of 10 per 1m0s; if your account's limit was raised, also set limit.above_cloudagent_limits: true"},
		{route("/ca_apis/AgentDetails", 11, "1m"), "routes[0].budget 11 per 1m0s"},
		{route("/ca_apis/AgentDetails", 10, "30s"), "routes[0].budget 10 per 30s"},
		{route("/ca_apis/agentdetails", 20, ""), "routes[0].budget 20"},
		{route("/ca_reports/summaryReport", 6, ""), "limit of 5 per 1m0s"},
		{route("/ca_reports/fetchCDRDetails", 3, ""), "limit of 2 per 1m0s"},
		{route("/ca_reports/fetchCDRDetails", 2, "59s"), "limit of 2 per 1m0s"},
		{route("/ca_apis/AgentDetails", 10, ""), ""},
		{route("/ca_apis/AgentDetails", 5, "30s"), ""},
		{route("/ca_apis/AgentDetails", 10, "2m"), ""},
		{route("/ca_reports/fetchCDRDetails", 2, "1m"), ""},
		{route("/ca_apis/SomethingUndocumented", 1000, "1s"), ""},
		{"limit: {above_cloudagent_limits: true}\n" + route("/ca_apis/AgentDetails", 100, ""), ""},
	} {
		_, err := Parse([]byte(acct+c.cfg), env(nil))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: refused: %v", c.cfg, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q: err = %v, want it to say %q", c.cfg, err, c.want)
		case c.want != "" && strings.Count(strings.TrimSpace(err.Error()), "\n") != 0:
			t.Errorf("%q: err spans lines: %q", c.cfg, err)
		}
	}
}
