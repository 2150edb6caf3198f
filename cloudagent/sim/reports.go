package sim

import (
	"bytes"
	"encoding/json"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
)

// Messages the simulator answers the reporting API with where CloudAgent's
// wording is not known. (Its docs print the date errors as
// {"message":…,"status":"fail"} and cut off the one for a range over two
// days, docs.ozonetel.com/reference/get_ca-reports-fetchcdrdetails-1; the
// simulator keeps {"status":"false",…} with HTTP 400, which the proxy and
// clients treat as an error either way.)
const (
	MsgCDROneDay      = "fromDate and toDate must be on the same day"
	MsgCDRBadDate     = "fromDate and toDate must be yyyy-MM-dd HH:mm:ss"
	MsgCDRNoUCID      = "ucid should not be empty"
	MsgCDRBadPage     = "pageNo and pageSize should be Numeric only"
	MsgReportsLimited = "Too Many Requests"
)

// Paging of fetchCdrByPagination when pageNo or pageSize is left out: the
// defaults the legacy paginated API documents
// (docs.ozonetel.com/reference/get_caservices-cdr-cdrdump-pagination-php).
// MaxPageSize is what a public client caps pageSize at (an Ozonetel
// adapter in the code corpus, "pageSize (max 500)").
const (
	DefaultPageSize = 100
	MaxPageSize     = 500
)

// reportError is a reporting-API refusal: {"status":"false",…} with a real
// HTTP status, as CloudAgent answers there.
func reportError(code int, msg string) answer {
	return answer{code, cloudagent.TokenErrorBody(msg)}
}

// cdrDay checks a CDR request's dates as production does (one calendar
// day, "yyyy-MM-dd HH:mm:ss") and returns the day's records for the
// account within the range. A day past retention (CDRRetentionDays before
// now) answers no records, not an error: production answers an empty
// result there (DESIGN.md), which is what a backfill of the retained days
// must meet.
func (s *Server) cdrDay(req cloudagent.CDRRequest, now time.Time) ([]cloudagent.CDRRecord, *answer) {
	from, err1 := time.ParseInLocation(cloudagent.CDRTimeLayout, req.FromDate, now.Location())
	to, err2 := time.ParseInLocation(cloudagent.CDRTimeLayout, req.ToDate, now.Location())
	switch {
	case err1 != nil || err2 != nil:
		a := reportError(http.StatusBadRequest, MsgCDRBadDate)
		return nil, &a
	case from.YearDay() != to.YearDay() || from.Year() != to.Year() || to.Before(from):
		a := reportError(http.StatusBadRequest, MsgCDROneDay)
		return nil, &a
	case from.Before(now.AddDate(0, 0, -cloudagent.CDRRetentionDays)):
		return []cloudagent.CDRRecord{}, nil
	}
	day := time.Date(from.Year(), from.Month(), from.Day(), 0, 0, 0, 0, from.Location())
	return s.calls.day(req.UserName, day, from, to, now), nil
}

// serveReport answers PathFetchCDRDetails and PathFetchCdrByPagination as
// production does: GET only, a JSON body (query parameters are not read
// for the body's fields), the apiKey header only (a bearer token is
// refused), CDRLimit calls per account in any trailing Window counted
// before the dates are checked, one calendar day per call, and
// CDRRetentionDays of retention. The paged path reads pageNo and pageSize
// from the query and adds totalCount.
func (s *Server) serveReport(w http.ResponseWriter, r *http.Request, paged bool) answer {
	logOf, limit := func(a *account) *slidingLog { return &a.cdr }, cloudagent.CDRLimit
	if paged {
		logOf, limit = func(a *account) *slidingLog { return &a.cdrPaged }, cloudagent.CDRPaginationLimit
	}
	body, now, inWindow, refusal := s.admitReport(w, r, []string{http.MethodGet}, logOf, limit)
	if refusal != nil {
		return *refusal
	}
	s.stats.noteReportInWindow(int64(inWindow))
	var req cloudagent.CDRRequest
	json.Unmarshal(body, &req) // admitReport parsed it already
	recs, refusal := s.cdrDay(req, now)
	if refusal != nil {
		return *refusal
	}
	ans := cloudagent.CDRAnswer{Status: cloudagent.StatusSuccess, Message: cloudagent.MsgSuccess, Details: recs}
	if paged {
		pageNo, pageSize, ok := pageParams(r)
		if !ok {
			return reportError(http.StatusBadRequest, MsgCDRBadPage)
		}
		total := len(recs)
		lo := min(total, (pageNo-1)*pageSize)
		ans.Details = recs[lo:min(total, lo+pageSize)]
		ans.TotalCount = &total
	}
	return ok(appendCDRAnswer(make([]byte, 0, 64+1200*len(ans.Details)), &ans))
}

// pageParams reads pageNo and pageSize (1-based, positive; pageSize at
// most MaxPageSize), defaulting each when absent.
func pageParams(r *http.Request) (pageNo, pageSize int, ok bool) {
	q := r.URL.Query()
	pageNo, pageSize = 1, DefaultPageSize
	for _, p := range []struct {
		name string
		v    *int
	}{{"pageNo", &pageNo}, {"pageSize", &pageSize}} {
		raw := q.Get(p.name)
		if raw == "" {
			continue
		}
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 {
			return 0, 0, false
		}
		*p.v = n
	}
	return pageNo, min(pageSize, MaxPageSize), true
}

// serveCdrByUCID answers cloudagent.PathFetchCdrByUCID: the reporting
// API's rules (GET, JSON body, apiKey only, CDRByUCIDLimit a minute, one
// day, retention) and the one call whose UCID the body names, or none.
func (s *Server) serveCdrByUCID(w http.ResponseWriter, r *http.Request) answer {
	logOf := func(a *account) *slidingLog { return &a.cdrUCID }
	body, now, inWindow, refusal := s.admitReport(w, r, []string{http.MethodGet}, logOf, cloudagent.CDRByUCIDLimit)
	if refusal != nil {
		return *refusal
	}
	s.stats.noteReportInWindow(int64(inWindow))
	var req cloudagent.CDRByUCIDRequest
	json.Unmarshal(body, &req) // admitReport parsed it already
	if req.UCID == "" {
		return reportError(http.StatusBadRequest, MsgCDRNoUCID)
	}
	recs, refusal := s.cdrDay(req.CDRRequest, now)
	if refusal != nil {
		return *refusal
	}
	found := []cloudagent.CDRRecord{}
	for _, rec := range recs {
		if rec.UCID == req.UCID {
			found = append(found, rec)
			break
		}
	}
	return ok(mustMarshal(cloudagent.CDRAnswer{Status: cloudagent.StatusSuccess, Message: cloudagent.MsgSuccess, Details: found}))
}

// admitReport counts a reporting-API call and admits it as production
// does: one of methods (else 405), its body read and authenticated
// (reportCaller), then at most limit calls per account in any trailing
// Window on the account's log that logOf picks, counted before the body's
// fields are checked (a refusal is a limit violation). It returns the
// body (a JSON object), the time, and how many calls the window holds with
// this one, or the refusal.
func (s *Server) admitReport(w http.ResponseWriter, r *http.Request, methods []string, logOf func(*account) *slidingLog, limit int) ([]byte, time.Time, int, *answer) {
	s.stats.reportCalls.Add(1)
	if !slices.Contains(methods, r.Method) {
		w.Header().Set("Allow", strings.Join(methods, ", "))
		a := reportError(http.StatusMethodNotAllowed, MsgMethodNotAllowed)
		return nil, time.Time{}, 0, &a
	}
	acct, req, refusal := s.reportCaller(r)
	if acct == nil {
		return req, time.Time{}, 0, &refusal
	}
	now := s.now()
	acct.mu.Lock()
	admitted, inWindow := logOf(acct).admit(now.UnixNano(), s.window, limit)
	acct.mu.Unlock()
	if !admitted {
		s.stats.reportLimited.Add(1)
		s.stats.limitViolations.Add(1)
		acct.stats.reportLimited.Add(1)
		a := reportError(http.StatusTooManyRequests, MsgReportsLimited)
		return req, now, inWindow, &a
	}
	s.stats.reportAdmitted.Add(1)
	acct.stats.reportAdmitted.Add(1)
	return req, now, inWindow, nil
}

// reportCaller reads a reporting-API call's JSON body and authenticates it
// as production does: the apiKey header only (a bearer token, even a valid
// one, is refused). It returns the account and the body, or the refusal.
func (s *Server) reportCaller(r *http.Request) (*account, []byte, answer) {
	var req cloudagent.CDRRequest
	if r.Header.Get(cloudagent.HeaderAuthorization) != "" {
		s.stats.reportAuthFailed.Add(1)
		return nil, nil, reportError(http.StatusUnauthorized, cloudagent.MsgMissingUserNameOrAPIKey)
	}
	body, err := readBody(r)
	if err != nil || len(bytes.TrimSpace(body)) == 0 || json.Unmarshal(body, &req) != nil {
		return nil, nil, reportError(http.StatusBadRequest, cloudagent.MsgInvalidJSONPassValid)
	}
	apiKey := r.Header.Get(cloudagent.HeaderAPIKey)
	acct := s.accounts[req.UserName]
	if acct == nil || apiKey == "" || !equalSecret(apiKey, acct.APIKey) {
		s.stats.reportAuthFailed.Add(1)
		return nil, nil, reportError(http.StatusUnauthorized, cloudagent.MsgMissingUserNameOrAPIKey)
	}
	return acct, body, answer{}
}

// Messages of the summary report, as its documentation words them (with
// {"status":"error",…}).
const (
	MsgSummaryBadDate  = "From and To Date should be in yyyy-mm-dd HH:mm:ss Format"
	MsgSummaryFromTo   = "From Date Should not be Greater than To Date"
	MsgSummaryTooLong  = "Difference Between From and To Date should not be Greater than 30 Days"
	summaryMaxRangeDay = 30
)

// summaryRequest is the JSON body of a summaryReport call: the dates and
// an optional comma-separated agentId filter (docs page named at
// cloudagent.PathSummaryReport).
type summaryRequest struct {
	cloudagent.CDRRequest
	AgentID string `json:"agentId"`
}

// summaryModes are the ModeType values of generated summary rows.
var summaryModes = []string{"Inbound", "Manual", "Progressive", "Blended"}

// serveSummaryReport answers cloudagent.PathSummaryReport: GET or POST, a
// JSON body, the apiKey-only authentication, the documented date checks and
// cloudagent.SummaryReportLimit calls per account in any trailing Window.
// It answers one row per agent (those agentId names, else all) per day of
// the range up to now, deterministic for the seed.
func (s *Server) serveSummaryReport(w http.ResponseWriter, r *http.Request) answer {
	logOf := func(a *account) *slidingLog { return &a.summary }
	body, now, _, refusal := s.admitReport(w, r, []string{http.MethodGet, http.MethodPost}, logOf, cloudagent.SummaryReportLimit)
	if refusal != nil {
		return *refusal
	}
	var req summaryRequest
	json.Unmarshal(body, &req) // admitReport parsed it already
	from, err1 := time.ParseInLocation(cloudagent.CDRTimeLayout, req.FromDate, now.Location())
	to, err2 := time.ParseInLocation(cloudagent.CDRTimeLayout, req.ToDate, now.Location())
	switch {
	case err1 != nil || err2 != nil:
		return caError(MsgSummaryBadDate)
	case from.After(to):
		return caError(MsgSummaryFromTo)
	case to.Sub(from) > summaryMaxRangeDay*24*time.Hour:
		return caError(MsgSummaryTooLong)
	}
	agents := s.calls.agents
	if req.AgentID != "" {
		agents = nil
		for _, id := range strings.Split(req.AgentID, ",") {
			if id = strings.TrimSpace(id); s.agents[id] != "" {
				agents = append(agents, id)
			}
		}
		if len(agents) == 0 {
			return caError(cloudagent.MsgInvalidAgent)
		}
	}
	rows := []cloudagent.SummaryRow{}
	for day := time.Date(from.Year(), from.Month(), from.Day(), 0, 0, 0, 0, from.Location()); !day.After(to) && !day.After(now); day = day.AddDate(0, 0, 1) {
		for _, id := range agents {
			rows = append(rows, s.summaryRow(req.UserName, id, day))
		}
	}
	return ok(mustMarshal(cloudagent.SummaryAnswer{Status: cloudagent.StatusSuccess, Message: cloudagent.MsgSuccess, Details: rows}))
}

// summaryRow generates agent id's day for user: a login of 6 to 10 hours
// split into busy, dial, wrap-up, pause and idle time.
func (s *Server) summaryRow(user, id string, day time.Time) cloudagent.SummaryRow {
	dayKey := day.Format("2006-01-02")
	rng := mrand.New(mrand.NewPCG(s.calls.seed^fnv1a(user, dayKey), fnv1a("summary", id)))
	login := 6*3600 + rng.Int64N(4*3600)
	busy := login * (30 + rng.Int64N(30)) / 100
	dial := login * rng.Int64N(10) / 100
	wrap := login * rng.Int64N(10) / 100
	pause := login * rng.Int64N(10) / 100
	idle := login - busy - dial - wrap - pause
	return cloudagent.SummaryRow{
		AgentIncrID:        strconv.FormatUint(10000+fnv1a("agent", id)%90000, 10),
		AgentName:          s.agents[id],
		AgentUniqueID:      id,
		CallDate:           dayKey,
		ModeType:           summaryModes[rng.IntN(len(summaryModes))],
		TotalBusyTime:      formatHMS(busy),
		TotalDialTime:      formatHMS(dial),
		TotalIdleTime:      formatHMS(idle),
		TotalLoginDuration: formatHMS(login),
		TotalPauseTime:     formatHMS(pause),
		TotalWrapupTime:    formatHMS(wrap),
	}
}

// ManualDialRequest is the body of POST cloudagent.PathAgentManualDial as
// the simulator reads it.
type ManualDialRequest struct {
	UserName       string `json:"userName"`
	AgentID        string `json:"agentID"`
	CustomerNumber string `json:"customerNumber"`
	CampaignName   string `json:"campaignName"`
}

// serveManualDial places a (simulated) call: a write, counted per call, so
// a test sees a retried or coalesced dial.
func (s *Server) serveManualDial(r *http.Request) answer {
	body, err := readBody(r)
	var req ManualDialRequest
	if err != nil || json.Unmarshal(body, &req) != nil {
		return caError(MsgInvalidJSON)
	}
	if req.UserName == "" {
		return caError(cloudagent.MsgUserNameEmpty)
	}
	acct, refusal := s.authenticate(r, req.UserName, s.now())
	if acct == nil {
		return refusal
	}
	s.stats.manualDials.Add(1)
	acct.stats.manualDials.Add(1)
	return ok(mustMarshal(cloudagent.ManualDialAnswer{UCID: s.newUCID(), Status: cloudagent.StatusQueuedSuccessfully}))
}
