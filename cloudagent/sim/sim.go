// Package sim is caproxy's built-in CloudAgent simulator: an http.Handler
// that answers CloudAgent's AHT, token (at both of its paths), agent-details,
// reporting (fetchCDRDetails, fetchCdrByPagination, fetchCdrByUCID,
// summaryReport), dial (AgentManualDial, its legacy CAServices path,
// PhoneManualDial), call-control and agent-state APIs in production's
// answer shapes, and enforces CloudAgent's contract, documented and observed
// in production (exact messages, 50 AHT calls per account in any trailing
// minute, 2 reporting calls per minute with the apiKey header only and a
// JSON body on a GET, 60-minute tokens, 10 token generations per hour across
// both token paths, regeneration invalidating earlier tokens). It is the one
// fake of the upstream used by every test in the project, so tests catch
// the proxy breaking the rules, and it doubles as a load-testing target:
// its call records are generated from a seed, as many a day as asked.
//
// Time comes from an injectable clock so tests can step through windows and
// token lifetimes without sleeping. GET /sim/stats and POST /sim/reset expose
// and clear its counters.
package sim

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
)

// Paths the simulator serves besides cloudagent.PathAHT and
// cloudagent.PathGenerateToken.
const (
	// PathAgentDetails is cloudagent.PathAgentDetails, a CloudAgent
	// endpoint other than AHT, so tests can check that the proxy passes
	// such calls through with credentials.
	PathAgentDetails = cloudagent.PathAgentDetails
	PathStats        = "/sim/stats" // GET: Stats as JSON
	PathReset        = "/sim/reset" // POST: ResetStats
)

// Messages the simulator answers with where CloudAgent's wording is not
// documented.
const (
	MsgInvalidJSON      = "Invalid JSON body"
	MsgTokenGenLimit    = "Token generation limit exceeded"
	MsgUnavailable      = "Service Unavailable"
	MsgMethodNotAllowed = "Method Not Allowed"
	MsgNotFound         = "Not Found"
)

// AgentDetailsLimit is how many AgentDetails calls an account may make in any
// trailing Window (CloudAgent documents 10 per minute).
const AgentDetailsLimit = cloudagent.AgentDetailsLimit

// maxBodyBytes bounds request bodies; CloudAgent bodies are tiny.
const maxBodyBytes = 1 << 20

// Options configures a Server. Zero values mean CloudAgent's documented
// numbers, so Options{} is a faithful CloudAgent.
type Options struct {
	Accounts  []Account         // nil: DefaultAccounts()
	Agents    map[string]string // agentId -> agent name; nil: DefaultAgents()
	Campaigns map[string]string // campaignName -> CampaignID; nil: DefaultCampaigns()
	// Limit is how many AHT calls an account may have admitted in any
	// trailing Window; 0: 50; negative: no limit (load tests).
	Limit int
	// Window is the trailing (sliding, not fixed-minute) window of Limit and
	// AgentDetailsLimit; 0: 60s.
	Window time.Duration
	// TokenTTL is how long a generated token is accepted; 0: 60m.
	TokenTTL time.Duration
	// TokenGenerations is how many tokens an account may generate in any
	// trailing TokenGenWindow; 0: 10.
	TokenGenerations int
	// TokenGenWindow is the trailing window of TokenGenerations; 0: 1h.
	TokenGenWindow time.Duration
	// Latency is real (not injected) time added to every /ca_apis/ answer,
	// after the call has been decided; a request whose context ends first
	// gets no answer. No lock is held while waiting.
	Latency time.Duration
	// ErrorRate is the fraction of authenticated AHT calls answered 503 with
	// a CloudAgent error body, before the limit counts them.
	ErrorRate float64
	// Delay is the one-way network delay from caller to simulator: a call
	// to a CloudAgent path is decided (counted against its limit, its token
	// checked) Delay after the simulator received it, on the After clock. It
	// models what the proxy's budget margin exists for: CloudAgent counts a
	// call when it arrives, the proxy when it sends it. SetDelay changes it.
	Delay time.Duration
	// AuthFailureStatus is the HTTP status of an AHT call refused for its
	// credentials ("userName or apiKey is Invalid", a refused token); 0:
	// 200. DESIGN.md: production's errors come with real HTTP statuses
	// (401, 405, 429), so tests check the proxy under 401 as well.
	AuthFailureStatus int
	// Seed makes the generated call records (fetchCDRDetails and its
	// siblings) and summary rows: the same Seed, accounts, agents and
	// campaigns always give the same answers, byte for byte.
	Seed int64
	// CallsPerAgent is how many calls each agent makes a day in the
	// generated records; 0: DefaultCallsPerAgent; negative: none; at most
	// MaxCallsPerAgent. 50 agents × 100 calls make a day of megabytes.
	CallsPerAgent int
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// After waits on the clock of Now (a fake clock's After in tests); nil:
	// time.After. Only Delay uses it.
	After func(time.Duration) <-chan time.Time
}

// Server is a simulated CloudAgent. It is an http.Handler, safe for
// concurrent use; create it with New.
type Server struct {
	now            func() time.Time
	limit          int
	window         int64 // nanoseconds
	tokenTTL       time.Duration
	tokenGens      int
	tokenGenWindow int64 // nanoseconds
	latency        time.Duration
	// authFailureStatus: see Options.AuthFailureStatus.
	authFailureStatus int
	after             func(time.Duration) <-chan time.Time
	oneWayDelay       atomic.Int64 // nanoseconds; see Options.Delay
	// errorRate holds the math.Float64bits of the share of AHT calls
	// answered 503; SetErrorRate changes it while serving.
	errorRate atomic.Uint64
	// refuseTokens: see SetRefuseTokens (refuse.go).
	refuseTokens atomic.Bool

	// accounts, agents and campaigns are read-only after New.
	accounts  map[string]*account
	agents    map[string]string
	campaigns map[string]string
	// agentDetails is the fixed answer of PathAgentDetails.
	agentDetails []byte
	// calls generates the CDRs; read-only after New.
	calls *callGen
	// dials numbers the UCIDs of placed calls.
	dials atomic.Uint64

	stats counters
}

// account is the simulator's state for one CloudAgent account.
type account struct {
	Account
	tokenMode bool

	// mu protects the windows and token fields below.
	mu         sync.Mutex
	aht        slidingLog // admitted AHT calls
	arrivals   slidingLog // every AHT call that passed authentication
	other      slidingLog // admitted AgentDetails calls
	gens       slidingLog // successful token generations
	cdr        slidingLog // admitted fetchCDRDetails calls
	cdrPaged   slidingLog // admitted fetchCdrByPagination calls
	cdrUCID    slidingLog // admitted fetchCdrByUCID calls
	logins     slidingLog // admitted getAgentLogins calls
	summary    slidingLog // admitted summaryReport calls
	token      string     // current token; "" before the first generation
	tokenIssue time.Time  // when token was generated
	retired    map[string]struct{}

	stats accountCounters
}

// New returns a Server configured by opts, with zero fields defaulted. It
// panics on an account whose Auth is not "token", "apikey" or empty, a
// programming error (LoadData reports it as an error instead).
func New(opts Options) *Server {
	s := &Server{
		now:               opts.Now,
		limit:             opts.Limit,
		authFailureStatus: opts.AuthFailureStatus,
		window:            int64(opts.Window),
		tokenTTL:          opts.TokenTTL,
		tokenGens:         opts.TokenGenerations,
		tokenGenWindow:    int64(opts.TokenGenWindow),
		latency:           opts.Latency,
		after:             opts.After,
	}
	s.SetErrorRate(opts.ErrorRate)
	if s.now == nil {
		s.now = time.Now
	}
	if s.after == nil {
		s.after = time.After
	}
	s.oneWayDelay.Store(int64(opts.Delay))
	if s.limit == 0 {
		s.limit = 50
	}
	if s.window <= 0 {
		s.window = int64(60 * time.Second)
	}
	if s.tokenTTL <= 0 {
		s.tokenTTL = 60 * time.Minute
	}
	if s.tokenGens <= 0 {
		s.tokenGens = 10
	}
	if s.tokenGenWindow <= 0 {
		s.tokenGenWindow = int64(time.Hour)
	}

	accounts := opts.Accounts
	if accounts == nil {
		accounts = DefaultAccounts()
	}
	s.accounts = make(map[string]*account, len(accounts))
	for _, a := range accounts {
		switch a.Auth {
		case "", AuthToken, AuthAPIKey:
		default:
			panic("sim: account " + strconv.Quote(a.UserName) + ": unknown auth mode " + strconv.Quote(a.Auth))
		}
		s.accounts[a.UserName] = &account{
			Account:   a,
			tokenMode: a.Auth != AuthAPIKey,
			retired:   make(map[string]struct{}),
		}
	}
	// Copy the maps so a caller mutating theirs cannot race with requests.
	s.agents = copyMap(opts.Agents, DefaultAgents)
	s.campaigns = copyMap(opts.Campaigns, DefaultCampaigns)

	ids := make([]string, 0, len(s.agents))
	for id := range s.agents {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	type agentDetail struct {
		AgentID   string `json:"AgentId"`
		AgentName string `json:"AgentName"`
	}
	details := make([]agentDetail, 0, 5)
	for _, id := range ids[:min(5, len(ids))] {
		details = append(details, agentDetail{id, s.agents[id]})
	}
	s.agentDetails = mustMarshal(successBody[[]agentDetail]{cloudagent.StatusSuccess, details})

	camps := make([]string, 0, len(s.campaigns))
	for c := range s.campaigns {
		camps = append(camps, c)
	}
	slices.Sort(camps)
	perDay := opts.CallsPerAgent
	switch {
	case perDay == 0:
		perDay = DefaultCallsPerAgent
	case perDay < 0:
		perDay = 0
	case perDay > MaxCallsPerAgent:
		perDay = MaxCallsPerAgent
	}
	s.calls = &callGen{seed: uint64(opts.Seed), perDay: perDay, agents: ids, names: s.agents, camps: camps, campIDs: s.campaigns}
	return s
}

// newUCID returns the UCID of a call placed now: 17 digits like a CDR's.
func (s *Server) newUCID() string { return callID(s.now(), s.dials.Add(1)) }

func copyMap(m map[string]string, def func() map[string]string) map[string]string {
	if m == nil {
		return def()
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// successBody is CloudAgent's success envelope with a typed message.
type successBody[M any] struct {
	Status  string `json:"status"`
	Message M      `json:"message"`
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("sim: " + err.Error()) // only fixed, marshalable types reach here
	}
	return b
}

// answer is a decided response, written after the configured latency.
type answer struct {
	code int
	body []byte
}

func ok(body []byte) answer          { return answer{http.StatusOK, body} }
func caError(msg string) answer      { return answer{http.StatusOK, cloudagent.ErrorBody(msg)} }
func caTokenError(msg string) answer { return answer{http.StatusOK, cloudagent.TokenErrorBody(msg)} }
func statusError(code int, msg string) answer {
	return answer{code, cloudagent.ErrorBody(msg)}
}

// SetDelay sets the one-way delay of calls received from now on (see
// Options.Delay); safe to call concurrently with requests.
func (s *Server) SetDelay(d time.Duration) { s.oneWayDelay.Store(int64(d)) }

// SetErrorRate changes the share of AHT calls answered 503 (Options.ErrorRate)
// while serving, so a test can fail an upstream that answered before.
func (s *Server) SetErrorRate(rate float64) { s.errorRate.Store(math.Float64bits(rate)) }

// ServeHTTP answers CloudAgent's paths and the simulator's /sim/ paths.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	upstream := strings.HasPrefix(r.URL.Path, "/ca_apis/") || strings.HasPrefix(r.URL.Path, cloudagent.ReportsPrefix) ||
		strings.HasPrefix(r.URL.Path, cloudagent.LegacyPrefix)
	if upstream && !s.arrive(r.Context()) {
		return // the caller gave up before the call arrived
	}
	var a answer
	p := servletPath(r.URL.Path)
	serve, postOnly := postAPIs[p]
	switch {
	case postOnly:
		if allow(w, r, http.MethodPost, &a) {
			a = serve(s, r)
		}
	default:
		a = s.serveOther(w, r, p)
	}
	if upstream && !s.delay(r.Context()) {
		return // the client has gone; nobody to answer
	}
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(a.body))}
	w.WriteHeader(a.code)
	w.Write(a.body)
}

// serveOther answers the paths that are not POST-only APIs.
func (s *Server) serveOther(w http.ResponseWriter, r *http.Request, p string) (a answer) {
	switch p {
	case cloudagent.PathFetchCDRDetails:
		a = s.serveReport(w, r, false)
	case cloudagent.PathFetchCdrByPagination:
		a = s.serveReport(w, r, true)
	case cloudagent.PathFetchCdrByUCID:
		a = s.serveCdrByUCID(w, r)
	case cloudagent.PathSummaryReport:
		a = s.serveSummaryReport(w, r)
	case cloudagent.PathLegacyAgentManualDial:
		if r.Method != http.MethodGet && !allow(w, r, http.MethodPost, &a) {
			break
		}
		a = s.serveLegacyManualDial(r)
	case PathStats:
		if !allow(w, r, http.MethodGet, &a) {
			break
		}
		a = ok(mustMarshal(s.Stats()))
	case PathReset:
		if !allow(w, r, http.MethodPost, &a) {
			break
		}
		s.ResetStats()
		a = ok(mustMarshal(successBody[string]{cloudagent.StatusSuccess, "stats reset"}))
	default:
		if id, found := agentStatusID(p); found {
			if allow(w, r, http.MethodGet, &a) {
				a = s.serveAgentStatus(r, id)
			}
			break
		}
		a = statusError(http.StatusNotFound, MsgNotFound)
	}
	return a
}

var jsonContentType = []string{"application/json"}

// postAPIs are the APIs CloudAgent serves on POST only, by path.
var postAPIs = map[string]func(*Server, *http.Request) answer{
	cloudagent.PathAHT: (*Server).serveAHT,
	// Both token paths share one account state: a token from either
	// invalidates earlier ones, and both count toward the hourly limit.
	cloudagent.PathGenerateToken:        (*Server).serveGenerateToken,
	cloudagent.PathReportsGenerateToken: (*Server).serveGenerateToken,
	PathAgentDetails:                    (*Server).serveAgentDetails,
	cloudagent.PathAgentManualDial:      (*Server).serveManualDial,
	cloudagent.PathPhoneManualDial:      (*Server).servePhoneManualDial,
	cloudagent.PathCallControl:          (*Server).serveCallControl,
	cloudagent.PathGetAgentLogins:       (*Server).serveGetAgentLogins,
	cloudagent.PathChangeAgentState:     (*Server).serveChangeAgentState,
}

// servletPath is the path as a servlet container resolves it before
// dispatch, so every spelling that reaches an endpoint in production reaches
// it here too (a proxy cannot pass /ca_apis/aht/ around AHT's limit): path
// parameters (";…") dropped from each segment, then duplicate slashes, dot
// segments and a trailing slash cleaned. The path is already percent-decoded.
func servletPath(p string) string {
	if strings.IndexByte(p, ';') >= 0 {
		segs := strings.Split(p, "/")
		for i, s := range segs {
			segs[i], _, _ = strings.Cut(s, ";")
		}
		p = strings.Join(segs, "/")
	}
	return path.Clean("/" + p)
}

// allow reports whether r uses method; if not it sets *a to a 405 answer.
func allow(w http.ResponseWriter, r *http.Request, method string, a *answer) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	*a = statusError(http.StatusMethodNotAllowed, MsgMethodNotAllowed)
	return false
}

// arrive waits the one-way delay on the simulator's clock, or until ctx
// ends (reported as false: the call never arrived). With no delay a call
// that reached the handler has arrived, whether or not its caller still waits.
func (s *Server) arrive(ctx context.Context) bool {
	d := time.Duration(s.oneWayDelay.Load())
	if d <= 0 {
		return true
	}
	select {
	case <-s.after(d):
		return true
	case <-ctx.Done():
		return false
	}
}

// delay waits the configured latency, or until ctx ends (reported as false).
func (s *Server) delay(ctx context.Context) bool {
	if s.latency <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(s.latency)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func readBody(r *http.Request) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r.Body, maxBodyBytes))
}

func (s *Server) serveAHT(r *http.Request) answer {
	s.stats.ahtCalls.Add(1)
	body, err := readBody(r)
	var req cloudagent.AHTRequest
	if err != nil || json.Unmarshal(body, &req) != nil {
		return caError(MsgInvalidJSON)
	}
	if req.UserName == "" {
		return caError(cloudagent.MsgUserNameEmpty)
	}
	now := s.now()
	acct, refusal := s.authenticate(r, req.UserName, now)
	if acct == nil {
		s.stats.ahtAuthFailed.Add(1)
		if s.authFailureStatus != 0 {
			refusal.code = s.authFailureStatus
		}
		return refusal
	}
	if rate := math.Float64frombits(s.errorRate.Load()); rate > 0 && mrand.Float64() < rate {
		s.stats.ahtInjectedErrors.Add(1)
		return statusError(http.StatusServiceUnavailable, MsgUnavailable)
	}
	if s.limit > 0 {
		acct.mu.Lock()
		admitted, inWindow := acct.aht.admit(now.UnixNano(), s.window, s.limit)
		_, arrived := acct.arrivals.admit(now.UnixNano(), s.window, math.MaxInt)
		acct.mu.Unlock()
		raise(&s.stats.maxArrivalsInWindow, int64(arrived))
		if !admitted {
			s.stats.ahtLimited.Add(1)
			s.stats.limitViolations.Add(1)
			acct.stats.ahtLimited.Add(1)
			return caError(cloudagent.MsgLimitExceeded)
		}
		s.stats.noteInWindow(int64(inWindow))
	}
	s.stats.ahtAdmitted.Add(1)
	acct.stats.ahtAdmitted.Add(1)

	// CloudAgent checks the shape only after counting the call, which is why
	// the proxy rejects malformed requests locally.
	if msg := req.Validate(); msg != "" {
		return caError(msg)
	}
	if req.AgentID != "" {
		name, found := s.agents[req.AgentID]
		if !found {
			return caError(cloudagent.MsgInvalidAgent)
		}
		return ok(mustMarshal(successBody[cloudagent.AgentAHT]{cloudagent.StatusSuccess, cloudagent.AgentAHT{
			AgentID:   req.AgentID,
			AgentName: name,
			AHT:       ahtFor("agent", req.AgentID, now),
		}}))
	}
	id, found := s.campaigns[req.CampaignName]
	if !found {
		return caError(cloudagent.MsgInvalidCampaign)
	}
	return ok(mustMarshal(successBody[cloudagent.CampaignAHT]{cloudagent.StatusSuccess, cloudagent.CampaignAHT{
		CampaignID:   id,
		CampaignName: req.CampaignName,
		AHT:          ahtFor("campaign", req.CampaignName, now),
	}}))
}

// authenticate checks r's credentials for userName the way CloudAgent does
// on its data APIs. It returns the account, or nil and the refusal.
func (s *Server) authenticate(r *http.Request, userName string, now time.Time) (*account, answer) {
	apiKey := r.Header.Get(cloudagent.HeaderAPIKey)
	authz := r.Header.Get(cloudagent.HeaderAuthorization)
	acct := s.accounts[userName]
	switch {
	case acct == nil && apiKey == "" && authz == "":
		return nil, caError(cloudagent.MsgAPIKeyEmpty)
	case acct == nil:
		return nil, caError(cloudagent.MsgInvalidCredentials)
	case !acct.tokenMode && apiKey == "":
		return nil, caError(cloudagent.MsgAPIKeyEmpty)
	case !acct.tokenMode && !equalSecret(apiKey, acct.APIKey):
		return nil, caError(cloudagent.MsgInvalidCredentials)
	case !acct.tokenMode:
		return acct, answer{}
	}
	token, found := strings.CutPrefix(authz, "Bearer ")
	if !found || token == "" {
		return nil, caTokenError(cloudagent.MsgTokenInvalid)
	}
	acct.mu.Lock()
	msg := acct.checkToken(token, now, s.tokenTTL)
	acct.mu.Unlock()
	if msg == "" && s.refuseTokens.Load() {
		msg = cloudagent.MsgTokenInvalid
	}
	if msg != "" {
		return nil, caTokenError(msg)
	}
	return acct, answer{}
}

// checkToken returns "" if token is a's current, unexpired token, else the
// token error CloudAgent answers with. The caller holds a.mu.
func (a *account) checkToken(token string, now time.Time, ttl time.Duration) string {
	if token == a.token {
		if now.Before(a.tokenIssue.Add(ttl)) {
			return ""
		}
		return cloudagent.MsgTokenExpired
	}
	if _, replaced := a.retired[token]; replaced {
		return cloudagent.MsgTokenExpired
	}
	return cloudagent.MsgTokenInvalid
}

func equalSecret(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (s *Server) serveGenerateToken(r *http.Request) answer {
	body, err := readBody(r)
	var req cloudagent.TokenRequest
	if err != nil || json.Unmarshal(body, &req) != nil {
		s.stats.tokenRejected.Add(1)
		return caTokenError(MsgInvalidJSON)
	}
	acct := s.accounts[req.UserName]
	apiKey := r.Header.Get(cloudagent.HeaderAPIKey)
	if acct == nil || apiKey == "" || !equalSecret(apiKey, acct.APIKey) {
		s.stats.tokenRejected.Add(1)
		return caTokenError(cloudagent.MsgTokenInvalidCredentials)
	}
	var raw [16]byte
	rand.Read(raw[:]) // never fails (crypto/rand)
	token := hex.EncodeToString(raw[:])
	now := s.now()

	acct.mu.Lock()
	admitted, _ := acct.gens.admit(now.UnixNano(), s.tokenGenWindow, s.tokenGens)
	if admitted {
		// A new token invalidates every earlier one; remembering them lets
		// the simulator answer "Token Expired" rather than "Invalid Token".
		if acct.token != "" {
			acct.retired[acct.token] = struct{}{}
		}
		acct.token, acct.tokenIssue = token, now
	}
	acct.mu.Unlock()
	if !admitted {
		s.stats.tokenRejected.Add(1)
		s.stats.limitViolations.Add(1)
		return caTokenError(MsgTokenGenLimit)
	}
	s.stats.tokenGenerations.Add(1)
	acct.stats.tokenGenerations.Add(1)
	return ok(mustMarshal(cloudagent.TokenResponse{Token: token}))
}

func (s *Server) serveAgentDetails(r *http.Request) answer {
	s.stats.otherCalls.Add(1)
	body, err := readBody(r)
	if err != nil {
		return caError(MsgInvalidJSON)
	}
	var req struct {
		UserName string `json:"userName"`
	}
	if len(bytes.TrimSpace(body)) > 0 && json.Unmarshal(body, &req) != nil {
		return caError(MsgInvalidJSON)
	}
	if req.UserName == "" {
		req.UserName = r.URL.Query().Get("userName")
	}
	if req.UserName == "" {
		return caError(cloudagent.MsgUserNameEmpty)
	}
	now := s.now()
	acct, refusal := s.authenticate(r, req.UserName, now)
	if acct == nil {
		return refusal
	}
	acct.stats.otherCalls.Add(1)
	acct.mu.Lock()
	admitted, _ := acct.other.admit(now.UnixNano(), s.window, AgentDetailsLimit)
	acct.mu.Unlock()
	if !admitted {
		s.stats.limitViolations.Add(1)
		return caError(cloudagent.MsgLimitExceeded)
	}
	return ok(s.agentDetails)
}
