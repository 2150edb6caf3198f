package sim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
)

// Messages the simulator answers the reporting API with where CloudAgent's
// wording is not known.
const (
	MsgCDROneDay      = "fromDate and toDate must be on the same day"
	MsgCDRBadDate     = "fromDate and toDate must be yyyy-MM-dd HH:mm:ss"
	MsgCDRRetention   = "data is kept for 15 days only"
	MsgReportsLimited = "Too Many Requests"
)

// reportAnswer is a reporting-API refusal: {"status":"false",…} with a real
// HTTP status, as CloudAgent answers there.
func reportError(code int, msg string) answer {
	return answer{code, cloudagent.TokenErrorBody(msg)}
}

// cdrRecord is one call record of a fetchCDRDetails answer.
type cdrRecord struct {
	CallID    string `json:"CallID"`
	AgentID   string `json:"AgentID"`
	StartTime string `json:"StartTime"`
}

// serveReport answers PathFetchCDRDetails and PathFetchCdrByPagination as
// production does: GET only, a JSON body (query parameters are not read
// for the body's fields), the apiKey header only (a bearer token is
// refused), CDRLimit calls per account in any trailing Window counted
// before the dates are checked, one calendar day per call, and
// CDRRetentionDays of retention.
func (s *Server) serveReport(w http.ResponseWriter, r *http.Request, paged bool) answer {
	logOf := func(a *account) *slidingLog { return &a.cdr }
	if paged {
		logOf = func(a *account) *slidingLog { return &a.cdrPaged }
	}
	req, now, inWindow, refusal := s.admitReport(w, r, []string{http.MethodGet}, logOf, cloudagent.CDRLimit)
	if refusal != nil {
		return *refusal
	}
	s.stats.noteReportInWindow(int64(inWindow))

	from, err1 := time.ParseInLocation(cloudagent.CDRTimeLayout, req.FromDate, now.Location())
	to, err2 := time.ParseInLocation(cloudagent.CDRTimeLayout, req.ToDate, now.Location())
	switch {
	case err1 != nil || err2 != nil:
		return reportError(http.StatusBadRequest, MsgCDRBadDate)
	case from.YearDay() != to.YearDay() || from.Year() != to.Year() || to.Before(from):
		return reportError(http.StatusBadRequest, MsgCDROneDay)
	case from.Before(now.AddDate(0, 0, -cloudagent.CDRRetentionDays)):
		return reportError(http.StatusBadRequest, MsgCDRRetention)
	}
	// Deterministic records for the day, so a cached answer can be compared.
	day := from.Format("2006-01-02")
	recs := make([]cdrRecord, 0, 3)
	for i := range 3 {
		recs = append(recs, cdrRecord{
			CallID:    req.UserName + "-" + day + "-" + strconv.Itoa(i),
			AgentID:   "agent" + strconv.Itoa(i),
			StartTime: day + " 10:0" + strconv.Itoa(i) + ":00",
		})
	}
	if paged {
		q := r.URL.Query()
		return ok(mustMarshal(struct {
			Status  string      `json:"status"`
			Page    string      `json:"page"`
			Message []cdrRecord `json:"message"`
		}{cloudagent.StatusSuccess, q.Get("page"), recs}))
	}
	return ok(mustMarshal(successBody[[]cdrRecord]{cloudagent.StatusSuccess, recs}))
}

// admitReport counts a reporting-API call and admits it as production
// does: one of methods (else 405), its body read and authenticated
// (reportCaller), then at most limit calls per account in any trailing
// Window on the account's log that logOf picks, counted before the body's
// fields are checked (a refusal is a limit violation). It returns the
// body, the time, and how many calls the window holds with this one, or
// the refusal.
func (s *Server) admitReport(w http.ResponseWriter, r *http.Request, methods []string, logOf func(*account) *slidingLog, limit int) (cloudagent.CDRRequest, time.Time, int, *answer) {
	s.stats.reportCalls.Add(1)
	if !slices.Contains(methods, r.Method) {
		w.Header().Set("Allow", strings.Join(methods, ", "))
		a := reportError(http.StatusMethodNotAllowed, MsgMethodNotAllowed)
		return cloudagent.CDRRequest{}, time.Time{}, 0, &a
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
func (s *Server) reportCaller(r *http.Request) (*account, cloudagent.CDRRequest, answer) {
	var req cloudagent.CDRRequest
	if r.Header.Get(cloudagent.HeaderAuthorization) != "" {
		s.stats.reportAuthFailed.Add(1)
		return nil, req, reportError(http.StatusUnauthorized, cloudagent.MsgMissingUserNameOrAPIKey)
	}
	body, err := readBody(r)
	if err != nil || len(bytes.TrimSpace(body)) == 0 || json.Unmarshal(body, &req) != nil {
		return nil, req, reportError(http.StatusBadRequest, cloudagent.MsgInvalidJSONPassValid)
	}
	apiKey := r.Header.Get(cloudagent.HeaderAPIKey)
	acct := s.accounts[req.UserName]
	if acct == nil || apiKey == "" || !equalSecret(apiKey, acct.APIKey) {
		s.stats.reportAuthFailed.Add(1)
		return nil, req, reportError(http.StatusUnauthorized, cloudagent.MsgMissingUserNameOrAPIKey)
	}
	return acct, req, answer{}
}

// Messages of the summary report, as its documentation words them (with
// {"status":"error",…}).
const (
	MsgSummaryBadDate  = "From and To Date should be in yyyy-mm-dd HH:mm:ss Format"
	MsgSummaryFromTo   = "From Date Should not be Greater than To Date"
	MsgSummaryTooLong  = "Difference Between From and To Date should not be Greater than 30 Days"
	summaryMaxRangeDay = 30
)

// summaryRow is one agent's line of a summaryReport answer.
type summaryRow struct {
	AgentName          string `json:"AgentName"`
	CallDate           string `json:"CallDate"`
	TotalLoginDuration string `json:"TotalLoginDuration"`
}

// serveSummaryReport answers cloudagent.PathSummaryReport: GET or POST, a
// JSON body, the reporting API's apiKey-only authentication, and
// cloudagent.SummaryReportLimit calls per account in any trailing Window.
func (s *Server) serveSummaryReport(w http.ResponseWriter, r *http.Request) answer {
	logOf := func(a *account) *slidingLog { return &a.summary }
	req, now, _, refusal := s.admitReport(w, r, []string{http.MethodGet, http.MethodPost}, logOf, cloudagent.SummaryReportLimit)
	if refusal != nil {
		return *refusal
	}
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
	rows := []summaryRow{{AgentName: "Agent 001", CallDate: from.Format("2006-01-02"), TotalLoginDuration: "01:00:00"}}
	return ok(mustMarshal(successBody[[]summaryRow]{cloudagent.StatusSuccess, rows}))
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
	return ok(mustMarshal(successBody[string]{cloudagent.StatusSuccess, "call placed to " + req.CustomerNumber}))
}
