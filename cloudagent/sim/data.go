package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
)

// Auth modes of an Account, as CloudAgent's admin setting names them.
const (
	AuthToken  = "token"  // TOKEN_AUTH: Authorization: Bearer <token from generateToken>
	AuthAPIKey = "apikey" // BASIC_AUTH: apiKey header plus userName in the body
)

// Account is a CloudAgent account the simulator knows.
type Account struct {
	UserName string `json:"userName"`
	APIKey   string `json:"apiKey"`
	// Auth is AuthToken or AuthAPIKey; empty means AuthToken.
	Auth string `json:"auth"`
}

// DefaultAccounts returns the built-in accounts: "demo" (token auth, key
// "demo-key"), "demo-basic" (apikey auth, key "demo-basic-key") and "demo2"
// (token auth, key "demo2-key") for tests that need a second token account.
func DefaultAccounts() []Account {
	return []Account{
		{UserName: "demo", APIKey: "demo-key", Auth: AuthToken},
		{UserName: "demo-basic", APIKey: "demo-basic-key", Auth: AuthAPIKey},
		{UserName: "demo2", APIKey: "demo2-key", Auth: AuthToken},
	}
}

// DefaultAgents returns the built-in agents: "agent001".."agent300" named
// "Agent 001".."Agent 300", plus "ravi" and "priya" with readable names.
func DefaultAgents() map[string]string {
	agents := make(map[string]string, 302)
	for i := 1; i <= 300; i++ {
		agents[fmt.Sprintf("agent%03d", i)] = fmt.Sprintf("Agent %03d", i)
	}
	agents["ravi"] = "Ravi Kumar"
	agents["priya"] = "Priya Sharma"
	return agents
}

// DefaultCampaigns returns the built-in campaigns: "campaign001".."campaign100"
// with CampaignIDs "10001".."10100", plus "Outbound_Sales" ("20001").
func DefaultCampaigns() map[string]string {
	campaigns := make(map[string]string, 101)
	for i := 1; i <= 100; i++ {
		campaigns[fmt.Sprintf("campaign%03d", i)] = fmt.Sprintf("%d", 10000+i)
	}
	campaigns["Outbound_Sales"] = "20001"
	return campaigns
}

// dataFile is the JSON shape LoadData reads.
type dataFile struct {
	Accounts  []Account         `json:"accounts"`
	Agents    map[string]string `json:"agents"`
	Campaigns map[string]string `json:"campaigns"`
}

// LoadData reads a JSON file that overrides the simulator's accounts, agents
// and campaigns, and returns Options with those fields set; a key left out of
// the file stays nil, so New uses its default. The other Options fields are
// zero for the caller to fill in. The file looks like:
//
//	{
//	  "accounts":  [{"userName": "acme", "apiKey": "acme-key", "auth": "token"}],
//	  "agents":    {"agent001": "Asha Rao"},
//	  "campaigns": {"Outbound_Sales": "20001"}
//	}
//
// Unknown keys, an account without userName or apiKey, a duplicate userName
// and an auth other than "token", "apikey" or empty are errors.
func LoadData(path string) (Options, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Options{}, fmt.Errorf("sim data: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var f dataFile
	if err := dec.Decode(&f); err != nil {
		return Options{}, fmt.Errorf("sim data %s: %w", path, err)
	}
	seen := make(map[string]bool, len(f.Accounts))
	for i, a := range f.Accounts {
		switch {
		case a.UserName == "":
			return Options{}, fmt.Errorf("sim data %s: account %d: userName is empty", path, i)
		case a.APIKey == "":
			return Options{}, fmt.Errorf("sim data %s: account %q: apiKey is empty", path, a.UserName)
		case a.Auth != "" && a.Auth != AuthToken && a.Auth != AuthAPIKey:
			return Options{}, fmt.Errorf("sim data %s: account %q: auth %q is not %q or %q", path, a.UserName, a.Auth, AuthToken, AuthAPIKey)
		case seen[a.UserName]:
			return Options{}, fmt.Errorf("sim data %s: account %q listed twice", path, a.UserName)
		}
		seen[a.UserName] = true
	}
	return Options{Accounts: f.Accounts, Agents: f.Agents, Campaigns: f.Campaigns}, nil
}
