package sim

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
)

// Messages of the agent, dial and call-control APIs. Those the docs word
// are quoted from the pages named at the paths in package cloudagent; the
// rest are the simulator's own.
const (
	// MsgLegacyBadCredentials answers the legacy manual dial's bad
	// api_key or username, with status "fail".
	MsgLegacyBadCredentials = "please provide proper user credentials"
	// MsgLegacyMissing answers a legacy manual dial without agentID,
	// campaignName or customerNumber, with status "Fail".
	MsgLegacyMissing = "All parameters are mandatory"
	// MsgBadAgentState answers a changeAgentState whose state is neither
	// Ready nor Pause.
	MsgBadAgentState = "The state should be either 'Ready' or 'Pause' state"
	// MsgPhoneDialMissing answers a PhoneManualDial without custNumber,
	// phoneName or did (simulator wording).
	MsgPhoneDialMissing = "custNumber, phoneName and did are mandatory"
	// MsgBadCallAction answers a CallControl_V4 call with an unknown action
	// or no ucid (simulator wording), with status "Error".
	MsgBadCallAction = "Please pass valid action and ucid"
)

// callActions are CallControl_V4's actions and the message each answers
// with (docs.ozonetel.com/reference/get_callcontrol-v4-php for HOLD to
// KICK_CALL, post_ca-apis-callcontrol-v4 for CONFERENCE).
var callActions = map[string]string{
	"CONFERENCE": "dialing",
	"HOLD":       "User hold is successful",
	"UNHOLD":     "Call is Un-hold successfully",
	"MUTE":       "call got mute successfully",
	"UNMUTE":     "unmute success",
	"KICK_CALL":  "call got disconnected",
}

// agentStates are the AgentState values getAgentLogins reports.
var agentStates = []string{"READY", "READY", "BUSY", "ACW", "PAUSED", "IDLE"}

// bodyCaller reads a /ca_apis/ call's JSON body into v (which must carry
// userName, returned by user) and authenticates it in the account's own
// mode. It returns the account, or nil and the refusal.
func (s *Server) bodyCaller(r *http.Request, v any, user func() string) (*account, answer) {
	body, err := readBody(r)
	if err != nil || json.Unmarshal(body, v) != nil {
		return nil, caError(MsgInvalidJSON)
	}
	if user() == "" {
		return nil, caError(cloudagent.MsgUserNameEmpty)
	}
	return s.authenticate(r, user(), s.now())
}

// serveGetAgentLogins answers cloudagent.PathGetAgentLogins: POST, the
// account's credentials, cloudagent.AgentLoginsLimit calls per account in
// any trailing Window, every agent with a state that changes every five
// minutes (deterministic for the seed).
func (s *Server) serveGetAgentLogins(r *http.Request) answer {
	s.stats.controlCalls.Add(1)
	var req struct {
		UserName string `json:"userName"`
	}
	acct, refusal := s.bodyCaller(r, &req, func() string { return req.UserName })
	if acct == nil {
		return refusal
	}
	now := s.now()
	acct.mu.Lock()
	admitted, _ := acct.logins.admit(now.UnixNano(), s.window, cloudagent.AgentLoginsLimit)
	acct.mu.Unlock()
	if !admitted {
		s.stats.limitViolations.Add(1)
		return caError(cloudagent.MsgLimitExceeded)
	}
	period := uint64(now.Unix() / 300)
	list := make([]cloudagent.AgentLogin, 0, len(s.calls.agents))
	for _, id := range s.calls.agents {
		h := fnv1a(req.UserName, id) ^ s.calls.seed ^ period*0x9e3779b97f4a7c15
		list = append(list, cloudagent.AgentLogin{
			AgentID:     id,
			AgentName:   s.agents[id],
			PhoneNumber: agentPhone(id),
			AgentState:  agentStates[h%uint64(len(agentStates))],
			SkillName:   cdrSkills[(h>>8)%uint64(len(cdrSkills))],
		})
	}
	return ok(mustMarshal(successBody[[]cloudagent.AgentLogin]{cloudagent.StatusSuccess, list}))
}

// agentPhone is agent id's (simulated) phone number.
func agentPhone(id string) string {
	const digits = "0123456789"
	h := fnv1a("phone", id)
	b := []byte{'9'}
	for range 9 {
		b = append(b, digits[h%10])
		h /= 10
	}
	return string(b)
}

// serveChangeAgentState answers cloudagent.PathChangeAgentState: a known
// agent set Ready or Pause. The success message is the legacy API's
// (docs.ozonetel.com/reference/get_caservices-agentstate-statechange-php):
// a JSON document inside the message string.
func (s *Server) serveChangeAgentState(r *http.Request) answer {
	s.stats.controlCalls.Add(1)
	var req struct {
		UserName string `json:"userName"`
		AgentID  string `json:"agentId"`
		State    string `json:"state"`
	}
	acct, refusal := s.bodyCaller(r, &req, func() string { return req.UserName })
	if acct == nil {
		return refusal
	}
	var status, resp string
	switch req.State {
	case "Ready":
		status, resp = "READY", "Success:tbAgentReady~INBOUND"
	case "Pause":
		status, resp = "PAUSED", "Success:tbAgentPause~INBOUND"
	default:
		return caError(MsgBadAgentState)
	}
	if s.agents[req.AgentID] == "" {
		return caError(cloudagent.MsgInvalidAgent)
	}
	inner := mustMarshal(struct {
		Type        string `json:"type"`
		UTID        string `json:"utid"`
		Resp        string `json:"resp"`
		AgentStatus string `json:"agentStatus"`
		AgentID     string `json:"agentId"`
		User        string `json:"user"`
	}{"response", "22", resp, status, req.AgentID, req.UserName})
	return ok(mustMarshal(successBody[string]{cloudagent.StatusSuccess, string(inner)}))
}

// serveCallControl answers cloudagent.PathCallControl: a known action on
// a call, {"status":"Success","message":…,"ucid":…}.
func (s *Server) serveCallControl(r *http.Request) answer {
	s.stats.controlCalls.Add(1)
	var req struct {
		UserName string `json:"userName"`
		Action   string `json:"action"`
		UCID     string `json:"ucid"`
	}
	acct, refusal := s.bodyCaller(r, &req, func() string { return req.UserName })
	if acct == nil {
		return refusal
	}
	msg, known := callActions[strings.ToUpper(req.Action)]
	if !known || req.UCID == "" {
		return ok(mustMarshal(struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		}{"Error", MsgBadCallAction}))
	}
	return ok(mustMarshal(struct {
		Status  string `json:"status"`
		Message string `json:"message"`
		UCID    string `json:"ucid"`
	}{"Success", msg, req.UCID}))
}

// servePhoneManualDial answers cloudagent.PathPhoneManualDial: a placed
// call, {"status":"queued","message":"<ucid>"}; counted as a manual dial.
func (s *Server) servePhoneManualDial(r *http.Request) answer {
	var req struct {
		UserName   string `json:"userName"`
		CustNumber string `json:"custNumber"`
		PhoneName  string `json:"phoneName"`
		DID        string `json:"did"`
	}
	acct, refusal := s.bodyCaller(r, &req, func() string { return req.UserName })
	if acct == nil {
		return refusal
	}
	if req.CustNumber == "" || req.PhoneName == "" || req.DID == "" {
		return caError(MsgPhoneDialMissing)
	}
	s.stats.manualDials.Add(1)
	acct.stats.manualDials.Add(1)
	return ok(mustMarshal(successBody[string]{cloudagent.StatusQueued, s.newUCID()}))
}

// agentStatusID returns the {id} of /ca_apis/v2/agents/{id}/status.
func agentStatusID(p string) (string, bool) {
	rest, found := strings.CutPrefix(p, cloudagent.AgentStatusPrefix)
	if !found {
		return "", false
	}
	id, found := strings.CutSuffix(rest, "/status")
	if !found || id == "" || strings.Contains(id, "/") {
		return "", false
	}
	return id, true
}

// serveAgentStatus answers GET /ca_apis/v2/agents/{id}/status. Neither the
// answer's shape nor how it names the account is documented; the
// simulator takes the account from a userName query parameter, else from
// the credentials themselves (an apiKey-mode account's key, a token-mode
// account's current token), and answers like AgentDetails
// (docs.ozonetel.com/reference/post_ca-apis-agentdetails-1) with one
// object.
func (s *Server) serveAgentStatus(r *http.Request, id string) answer {
	s.stats.controlCalls.Add(1)
	now := s.now()
	user := r.URL.Query().Get("userName")
	if user == "" {
		user = s.accountOf(r, now)
	}
	acct, refusal := s.authenticate(r, user, now)
	if acct == nil {
		return refusal
	}
	name := s.agents[id]
	if name == "" {
		return caError(cloudagent.MsgInvalidAgent)
	}
	h := fnv1a(user, id) ^ s.calls.seed ^ uint64(now.Unix()/300)*0x9e3779b97f4a7c15
	return ok(mustMarshal(successBody[any]{cloudagent.StatusSuccess, struct {
		AgentID     string `json:"AgentId"`
		AgentName   string `json:"AgentName"`
		State       string `json:"State"`
		Since       string `json:"Since"`
		Mode        string `json:"Mode"`
		PhoneNumber string `json:"PhoneNumber"`
	}{id, name, agentStates[h%uint64(len(agentStates))], formatHMS(int64(h>>16) % 1800), "Manual", agentPhone(id)}}))
}

// accountOf names the account whose credentials r carries, or "".
func (s *Server) accountOf(r *http.Request, now time.Time) string {
	apiKey := r.Header.Get(cloudagent.HeaderAPIKey)
	token, _ := strings.CutPrefix(r.Header.Get(cloudagent.HeaderAuthorization), "Bearer ")
	for name, a := range s.accounts {
		if !a.tokenMode {
			if apiKey != "" && equalSecret(apiKey, a.APIKey) {
				return name
			}
			continue
		}
		a.mu.Lock()
		mine := token != "" && a.checkToken(token, now, s.tokenTTL) != cloudagent.MsgTokenInvalid
		a.mu.Unlock()
		if mine {
			return name
		}
	}
	return ""
}

// serveLegacyManualDial answers cloudagent.PathLegacyAgentManualDial as
// the legacy API does: credentials in the query string (api_key or
// apiKey, username or userName; any account's apiKey, whatever its auth
// mode), the other parameters there too, the body ignored. It answers
// {"status":"queued successfully","ucid":…}, or
// {"status":"fail",…} for credentials and {"status":"Fail",…} for missing
// parameters, with HTTP 200 as the docs show no other.
func (s *Server) serveLegacyManualDial(r *http.Request) answer {
	q := r.URL.Query()
	first := func(names ...string) string {
		for _, n := range names {
			if v := q.Get(n); v != "" {
				return v
			}
		}
		return ""
	}
	key, user := first("api_key", "apiKey"), first("username", "userName")
	acct := s.accounts[user]
	if acct == nil || key == "" || !equalSecret(key, acct.APIKey) {
		return ok(mustMarshal(struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		}{"fail", MsgLegacyBadCredentials}))
	}
	if q.Get("agentID") == "" || q.Get("campaignName") == "" || q.Get("customerNumber") == "" {
		return ok(mustMarshal(struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		}{"Fail", MsgLegacyMissing}))
	}
	s.stats.manualDials.Add(1)
	acct.stats.manualDials.Add(1)
	return ok(mustMarshal(struct {
		Status string `json:"status"`
		UCID   string `json:"ucid"`
	}{cloudagent.StatusQueuedSuccessfully, s.newUCID()}))
}
