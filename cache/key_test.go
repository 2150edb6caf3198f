package cache

import (
	"strings"
	"testing"
)

func TestKeyFor(t *testing.T) {
	if got, want := KeyFor("demo", KindAgent, "agent1"), "4:demo|agent|agent1"; got != want {
		t.Fatalf("KeyFor = %q, want %q", got, want)
	}
	if got, want := PrefixFor("demo"), "4:demo|"; got != want {
		t.Fatalf("PrefixFor = %q, want %q", got, want)
	}
}

// TestRequestKeyCanonical checks that bodies asking the same question map
// to one key, whatever their order, spacing, escapes or extra fields.
func TestRequestKeyCanonical(t *testing.T) {
	for _, group := range [][]string{
		{
			`{"userName":"demo","agentId":"agent1"}`,
			`{"agentId":"agent1","userName":"demo"}`,
			" {\n  \"agentId\" : \"agent1\" ,\n  \"userName\" : \"demo\"\n} ",
			`{"userName":"demo","agentId":"\u0061gent1","extra":{"agentId":"other"}}`,
		},
		{
			`{"userName":"demo","campaignName":"Sales"}`,
			`{"campaignName":"Sales","userName":"demo","agentId":""}`,
			`{"campaignName":"Sal\u0065s","userName":"demo","x":[1,"}"]}`,
		},
	} {
		want := ""
		for i, body := range group {
			r, err := ParseRequest([]byte(body))
			if err != nil {
				t.Fatalf("ParseRequest(%q): %v", body, err)
			}
			if msg := r.Validate(); msg != "" {
				t.Fatalf("%q: %s", body, msg)
			}
			key := RequestKey("demo", r)
			if i == 0 {
				want = key
			} else if key != want {
				t.Errorf("RequestKey(%q) = %q, want %q as for %q", body, key, want, group[0])
			}
		}
	}
}

// TestKeysDistinct checks that different questions never share a key,
// including parts built to look like separators and length prefixes.
func TestKeysDistinct(t *testing.T) {
	type q struct{ account, kind, id string }
	qs := []q{
		{"demo", KindAgent, "a1"},
		{"demo2", KindAgent, "a1"},
		{"demo", KindCampaign, "a1"},
		{"demo", KindAgent, "a1|"},
		{"demo|agent", KindAgent, "a1"},
		{"demo", KindAgent, "agent|a1"},
		{"4:demo", KindAgent, "a1"},
		{"", KindAgent, "4:demo|agent|a1"},
		{"", KindAgent, ""},
		{"", KindCampaign, ""},
		{"1:d", KindAgent, "x"},
		{"1", KindAgent, "d|agent|x"},
		{"d|agent", KindAgent, "x"},
		{"d", KindAgent, "agent|x"},
		{"demo", KindCampaign, "agent|a1"},
		{"demo:", KindAgent, "a1"},
		{"de", KindAgent, "mo|agent|a1"},
		{"\x00", KindAgent, "a"},
		{"dem\u00f6", KindAgent, "a1"},
	}
	seen := map[string]q{}
	for _, x := range qs {
		k := KeyFor(x.account, x.kind, x.id)
		if prev, ok := seen[k]; ok {
			t.Errorf("%+v and %+v share key %q", prev, x, k)
		}
		seen[k] = x
		if !strings.HasPrefix(k, PrefixFor(x.account)) {
			t.Errorf("key %q lacks its account prefix %q", k, PrefixFor(x.account))
		}
		for _, y := range qs {
			if y.account != x.account && strings.HasPrefix(k, PrefixFor(y.account)) {
				t.Errorf("key %q of account %q has account %q's prefix", k, x.account, y.account)
			}
		}
	}
}

func TestRequestKeyKinds(t *testing.T) {
	agent := RequestKey("demo", req{UserName: "demo", AgentID: "x"})
	campaign := RequestKey("demo", req{UserName: "demo", CampaignName: "x"})
	if agent != KeyFor("demo", KindAgent, "x") || campaign != KeyFor("demo", KindCampaign, "x") {
		t.Fatalf("RequestKey kinds: agent %q, campaign %q", agent, campaign)
	}
	if agent == campaign {
		t.Fatal("agent and campaign with the same id share a key")
	}
	if RequestKey("other", req{UserName: "other", AgentID: "x"}) == agent {
		t.Fatal("accounts share a key")
	}
}

func BenchmarkKeyFor(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = KeyFor("demo_account", KindAgent, "agent_00042")
	}
}
