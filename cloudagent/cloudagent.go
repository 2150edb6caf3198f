// Package cloudagent describes the part of CloudAgent's API that caproxy
// fronts: paths, request and response shapes, the exact error messages
// CloudAgent answers with, and the shape checks it applies to an AHT request.
//
// Both the proxy (to reject locally what CloudAgent would reject) and the
// simulator (to behave like CloudAgent) use it, so the two cannot drift apart.
package cloudagent

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// Paths served by CloudAgent that caproxy treats specially. Those beyond
// the documented AHT and token APIs come from public code that calls
// production CloudAgent, verified there with curl (DESIGN.md, "What
// production does beyond the docs").
const (
	PathAHT           = "/ca_apis/aht"
	PathGenerateToken = "/ca_apis/CAToken/generateToken"
	// PathReportsGenerateToken is the reporting API's token endpoint: the
	// same request and answer as PathGenerateToken, and a token minted at
	// either invalidates earlier ones from both.
	PathReportsGenerateToken = "/ca_reports/CAToken/generateToken"
	// ReportsPrefix starts every reporting API path. The reporting API
	// authenticates with the apiKey header only: a bearer token, even a
	// valid one, gets HTTP 401 MsgMissingUserNameOrAPIKey.
	ReportsPrefix = "/ca_reports/"
	// PathFetchCDRDetails is a GET carrying a JSON body (CDRRequest); the
	// same fields as query parameters get MsgInvalidJSONPassValid, a POST
	// gets 401 or 405. CDRLimit calls per account per minute; one calendar
	// day per call; CDRRetentionDays days kept.
	PathFetchCDRDetails = "/ca_reports/fetchCDRDetails"
	// PathFetchCdrByPagination is like PathFetchCDRDetails, with paging in
	// query parameters (pageNo, pageSize) beside the JSON body; the answer
	// adds totalCount. CDRPaginationLimit calls per account per minute
	// (docs.ozonetel.com/reference/get_ca-reports-fetchcdrbypagination).
	PathFetchCdrByPagination = "/ca_reports/fetchCdrByPagination"
	// PathFetchCdrByUCID is one call's CDR: a GET with a JSON body like
	// PathFetchCDRDetails' plus the mandatory "ucid", the same day and
	// retention rules, CDRByUCIDLimit calls per account per minute
	// (docs.ozonetel.com/reference/get_ca-reports-fetchcdrbyucid and
	// get_ca-reports-fetchcdrbyucid-1).
	PathFetchCdrByUCID = "/ca_reports/fetchCdrByUCID"
	// PathAgentManualDial places a call: a write, never cached or retried.
	// It answers {"ucid":"…","status":"queued successfully"}
	// (docs.ozonetel.com/reference/post_ca-apis-agentmanualdial-2).
	PathAgentManualDial = "/ca_apis/AgentManualDial"
	// PathPhoneManualDial places a call to an offline agent's phone: a
	// write. POST, JSON body (userName, custNumber, phoneName, did,
	// campaignName, uui, checkStatus); it answers
	// {"status":"queued","message":"<ucid>"}. No rate limit is published
	// (docs.ozonetel.com/reference/post_ca-apis-phonemanualdial-1).
	PathPhoneManualDial = "/ca_apis/PhoneManualDial"
	// PathCallControl holds, mutes, conferences or drops a call: a write.
	// POST, JSON body (userName, action, ucid, conferenceNumber, did,
	// agentPhoneName); it answers {"status":"Success","message":…,"ucid":…}.
	// No rate limit is published
	// (docs.ozonetel.com/reference/post_ca-apis-callcontrol-v4).
	PathCallControl = "/ca_apis/CallControl_V4"
	// PathGetAgentLogins lists logged-in agents and their states: POST, a
	// JSON body with userName, AgentLoginsLimit calls per account per
	// minute; it answers {"status":"success","message":[AgentLogin…]}
	// (docs.ozonetel.com/reference/post_ca-apis-getagentlogins and
	// post_ca-apis-getagentlogins-1).
	PathGetAgentLogins = "/ca_apis/getAgentLogins"
	// PathChangeAgentState sets an offline agent Ready or Pause: a write.
	// POST, JSON body (userName, agentId, state, phoneName, pauseReason).
	// No rate limit is published
	// (docs.ozonetel.com/reference/post_ca-apis-changeagentstate-1).
	PathChangeAgentState = "/ca_apis/changeAgentState"
	// AgentStatusPrefix starts GET /ca_apis/v2/agents/{id}/status, one
	// agent's live status. It is not in the public documentation; public
	// client code calls it with the apiKey header and a bearer token (an
	// OzonetelService.getAgentStatus seen in the code corpus, 2026), so its
	// answer shape and limit are unknown: it stays pass-through.
	AgentStatusPrefix = "/ca_apis/v2/agents/"
	// LegacyPrefix starts the legacy CAServices API, which takes its
	// credentials in the query string (api_key, username), not in headers.
	LegacyPrefix = "/CAServices/"
	// PathLegacyAgentManualDial is the legacy manual dial, still called by
	// public clients as POST with an empty body and
	// ?api_key=…&username=…&agentID=…&campaignName=…&customerNumber=…&format=json.
	// It answers {"status":"queued successfully","ucid":"…"}, and
	// {"status":"fail","message":"please provide proper user credentials"}
	// for bad credentials; no rate limit is published
	// (docs.ozonetel.com/reference/get_caservices-agentmanualdial-php-2).
	PathLegacyAgentManualDial = "/CAServices/AgentManualDial.php"
	// PathAgentDetails returns an agent's details: POST, a JSON body with
	// userName and agentId, AgentDetailsLimit calls per account per
	// minute (docs.ozonetel.com/reference/post_ca-apis-agentdetails).
	PathAgentDetails = "/ca_apis/AgentDetails"
	// PathSummaryReport is the reporting API's agent state summary: GET or
	// POST with a JSON body (fromDate, toDate, userName), the apiKey header
	// as on every reporting path, SummaryReportLimit calls per account per
	// minute (docs.ozonetel.com/reference/post_ca-reports-summaryreport-1;
	// public code calls it with POST and the apiKey header).
	PathSummaryReport = "/ca_reports/summaryReport"
)

// Documented limits of CloudAgent's other APIs, per account per minute
// (the pages named beside PathAgentDetails, PathSummaryReport,
// PathGetAgentLogins, PathFetchCdrByPagination and PathFetchCdrByUCID).
// PhoneManualDial, CallControl_V4, changeAgentState, AgentManualDial, the
// v2 agent status and the legacy CAServices paths publish none.
const (
	AgentDetailsLimit  = 10
	SummaryReportLimit = 5
	AgentLoginsLimit   = 5
	CDRPaginationLimit = 2
	CDRByUCIDLimit     = 2
)

// TokenPaths are every path CloudAgent serves generateToken at, in
// CloudAgent's casing.
var TokenPaths = []string{PathGenerateToken, PathReportsGenerateToken}

// IsTokenPath reports whether path is one of TokenPaths.
func IsTokenPath(path string) bool {
	return path == PathGenerateToken || path == PathReportsGenerateToken
}

// Limits and formats of the reporting API (DESIGN.md, as above).
const (
	// CDRLimit is how many fetchCDRDetails calls an account may make per
	// minute (AHT allows 50).
	CDRLimit = 2
	// CDRRetentionDays is how many days of call records CloudAgent keeps.
	CDRRetentionDays = 15
	// CDRTimeLayout is the layout of CDRRequest's dates.
	CDRTimeLayout = "2006-01-02 15:04:05"
)

// CDRRequest is the JSON body of GET PathFetchCDRDetails (and of
// PathFetchCdrByPagination): a range within one calendar day.
type CDRRequest struct {
	FromDate string `json:"fromDate"`
	ToDate   string `json:"toDate"`
	UserName string `json:"userName"`
}

// CDRAnswer is a successful answer of PathFetchCDRDetails,
// PathFetchCdrByPagination and PathFetchCdrByUCID:
// {"status":"success","message":"success","details":[…]}, plus totalCount
// on PathFetchCdrByPagination (the whole day's count, not the page's). A
// day with no calls, and a day past retention, answer "details":[], not an
// error. The envelope and fields are those of a February 2026 production
// answer committed by a public client (DESIGN.md, "Production answer
// shapes"); the docs' sample (docs.ozonetel.com/reference/
// get_ca-reports-fetchcdrdetails) shows the same "details" list.
type CDRAnswer struct {
	Status  string      `json:"status"`
	Message string      `json:"message"`
	Details []CDRRecord `json:"details"`
	// TotalCount is set on PathFetchCdrByPagination only. Public clients
	// read it as a number; the legacy paginated API documented it as a
	// string ("1703"), so its JSON type in production is not confirmed.
	TotalCount *int `json:"totalCount,omitempty"`
}

// CDRRecord is one call of a CDRAnswer. Every value is a string: CallDate
// "YYYY-MM-DD"; StartTime, EndTime, PickupTime and the WrapUp times
// "HH:MM:SS"; durations "HH:MM:SS"; CallID and UCID 17-digit numbers as
// strings ("3", the call's Unix second, six more digits, as in the docs'
// sample 31733467784618213); CallAudio a recording URL or ""; Status
// "Answered" or "Unanswered"; unset fields "". These are the 46 fields of
// the February 2026 answer (DESIGN.md). A 47th, DialCount, is documented by
// one other public client but absent from that answer, so it is left out:
// a client that needs it fails here as it may in production.
type CDRRecord struct {
	AgentDialStatus     string `json:"AgentDialStatus"`
	AgentID             string `json:"AgentID"`
	AgentName           string `json:"AgentName"`
	CallAudio           string `json:"CallAudio"`
	CallDate            string `json:"CallDate"`
	CallFlow            string `json:"CallFlow"`
	CallID              string `json:"CallID"`
	CallerConfAudioFile string `json:"CallerConfAudioFile"`
	CallerID            string `json:"CallerID"`
	CampaignName        string `json:"CampaignName"`
	Comments            string `json:"Comments"`
	ConferenceDuration  string `json:"ConferenceDuration"`
	CustomerDialStatus  string `json:"CustomerDialStatus"`
	CustomerRingTime    string `json:"CustomerRingTime"`
	DID                 string `json:"DID"`
	DialOutName         string `json:"DialOutName"`
	DialStatus          string `json:"DialStatus"`
	DialedNumber        string `json:"DialedNumber"`
	Disposition         string `json:"Disposition"`
	Duration            string `json:"Duration"`
	DynamicDID          string `json:"DynamicDID"`
	E164                string `json:"E164"`
	EndTime             string `json:"EndTime"`
	Event               string `json:"Event"`
	HandlingTime        string `json:"HandlingTime"`
	HangupBy            string `json:"HangupBy"`
	HoldDuration        string `json:"HoldDuration"`
	Location            string `json:"Location"`
	PickupTime          string `json:"PickupTime"`
	QueueTime           string `json:"QueueTime"`
	Rating              string `json:"Rating"`
	RatingComments      string `json:"RatingComments"`
	Skill               string `json:"Skill"`
	StartTime           string `json:"StartTime"`
	Status              string `json:"Status"`
	TalkTime            string `json:"TalkTime"`
	TimeToAnswer        string `json:"TimeToAnswer"`
	TransferType        string `json:"TransferType"`
	TransferredTo       string `json:"TransferredTo"`
	Type                string `json:"Type"`
	UCID                string `json:"UCID"`
	UUI                 string `json:"UUI"`
	VideoRecordingURL   string `json:"VideoRecordingURL"`
	WrapUpEndTime       string `json:"WrapUpEndTime"`
	WrapUpStartTime     string `json:"WrapUpStartTime"`
	WrapupDuration      string `json:"WrapupDuration"`
}

// CDRByUCIDRequest is the JSON body of GET PathFetchCdrByUCID.
type CDRByUCIDRequest struct {
	CDRRequest
	UCID string `json:"ucid"`
}

// Values of a CDRRecord's Status.
const (
	CallAnswered   = "Answered"
	CallUnanswered = "Unanswered"
)

// SummaryAnswer is a successful PathSummaryReport answer:
// {"status":"success","message":"success","details":[row…]} as public
// clients read it (DESIGN.md). The docs
// (docs.ozonetel.com/reference/post_ca-reports-summaryreport-1) print the
// row under "message" instead; the clients' committed answers win.
type SummaryAnswer struct {
	Status  string       `json:"status"`
	Message string       `json:"message"`
	Details []SummaryRow `json:"details"`
}

// SummaryRow is one agent's day in a SummaryAnswer; times "HH:MM:SS"
// (fields as in the docs page named at SummaryAnswer).
type SummaryRow struct {
	AgentIncrID        string `json:"AgentIncrID"`
	AgentName          string `json:"AgentName"`
	AgentUniqueID      string `json:"AgentUniqueID"`
	CallDate           string `json:"CallDate"`
	ModeType           string `json:"ModeType"`
	TotalBusyTime      string `json:"TotalBusyTime"`
	TotalDialTime      string `json:"TotalDialTime"`
	TotalIdleTime      string `json:"TotalIdleTime"`
	TotalLoginDuration string `json:"TotalLoginDuration"`
	TotalPauseTime     string `json:"TotalPauseTime"`
	TotalWrapupTime    string `json:"TotalWrapupTime"`
}

// ManualDialAnswer is a successful AgentManualDial answer, on
// PathAgentManualDial and PathLegacyAgentManualDial:
// {"ucid":"…","status":"queued successfully"}; clients check the status
// and read ucid (the docs pages named at those paths).
type ManualDialAnswer struct {
	UCID   string `json:"ucid"`
	Status string `json:"status"`
}

// AgentLogin is one agent in a PathGetAgentLogins answer's message list
// (the docs pages named at PathGetAgentLogins).
type AgentLogin struct {
	AgentID     string `json:"AgentId"`
	AgentName   string `json:"AgentName"`
	PhoneNumber string `json:"PhoneNumber"`
	AgentState  string `json:"AgentState"`
	SkillName   string `json:"SkillName"`
}

// Statuses of the dial APIs' success answers (pages named at the paths).
const (
	StatusQueuedSuccessfully = "queued successfully" // AgentManualDial, both paths
	StatusQueued             = "queued"              // PhoneManualDial
)

// MsgSuccess is the "message" of a reporting API success answer.
const MsgSuccess = "success"

// Headers CloudAgent reads.
const (
	HeaderAPIKey        = "apiKey"
	HeaderAuthorization = "Authorization"
)

// Status values of a response's "status" field.
const (
	StatusSuccess = "success"
	StatusError   = "error"
	// StatusFalse is what the token API (and token checks) answer with.
	StatusFalse = "false"
)

// Messages of the AHT API, exactly as CloudAgent words them.
const (
	MsgUserNameEmpty      = "userName should not be empty"
	MsgAPIKeyEmpty        = "apiKey should not be empty"
	MsgBothGiven          = "Both agentId and campaignName cannot be passed at a time"
	MsgBothEmpty          = "Both agentId and campaignName cannot be empty"
	MsgInvalidCredentials = "userName or apiKey is Invalid"
	MsgInvalidAgent       = "agentId is Invalid"
	MsgInvalidCampaign    = "campaignName is Invalid"
	MsgLimitExceeded      = "max limit exceeded"
)

// IsLimitExceeded reports whether msg is CloudAgent's refusal for its rate
// limit. Its documentation words it "max limit exceeded" (AHT) and "Max
// limit exceeded" (AgentDetails), so case is not significant.
func IsLimitExceeded(msg string) bool { return strings.EqualFold(msg, MsgLimitExceeded) }

// Messages of the token API and of token checks on other APIs.
const (
	MsgTokenInvalidCredentials = "Invalid userName or apiKey"
	MsgTokenExpired            = "Token Expired"
	MsgTokenInvalid            = "Invalid Token"
)

// Messages of the reporting API, exactly as CloudAgent words them; it
// answers them with {"status":"false",…} and a real HTTP status.
const (
	// MsgMissingUserNameOrAPIKey is its generic authentication failure
	// (HTTP 401), also the answer to a valid bearer token.
	MsgMissingUserNameOrAPIKey = "Missing userName or apiKey"
	// MsgInvalidJSONPassValid answers a request without a JSON body, such
	// as the body's fields sent as query parameters.
	MsgInvalidJSONPassValid = "Invalid Json Pass Valid Json"
)

// AHTRequest is the JSON body of POST /ca_apis/aht. Unknown fields are
// ignored, as CloudAgent ignores them.
type AHTRequest struct {
	UserName     string `json:"userName"`
	AgentID      string `json:"agentId,omitempty"`
	CampaignName string `json:"campaignName,omitempty"`
}

// Validate applies CloudAgent's shape checks, in CloudAgent's order, and
// returns the message CloudAgent would answer with, or "" if the request is
// well formed. It does not check that the account, agent or campaign exist.
func (r *AHTRequest) Validate() string {
	switch {
	case r.UserName == "":
		return MsgUserNameEmpty
	case r.AgentID != "" && r.CampaignName != "":
		return MsgBothGiven
	case r.AgentID == "" && r.CampaignName == "":
		return MsgBothEmpty
	}
	return ""
}

// Response is CloudAgent's reply envelope. Message is a string for errors and
// an object for AHT answers.
type Response struct {
	Status  string          `json:"status"`
	Message json.RawMessage `json:"message"`
}

// CampaignAHT is the message of a successful campaign AHT answer.
type CampaignAHT struct {
	CampaignID   string `json:"CampaignID"`
	CampaignName string `json:"CampaignName"`
	AHT          string `json:"AHT"`
}

// AgentAHT is the message of a successful agent AHT answer.
type AgentAHT struct {
	AgentID   string `json:"AgentID"`
	AgentName string `json:"AgentName"`
	AHT       string `json:"AHT"`
}

// TokenRequest is the JSON body of POST /ca_apis/CAToken/generateToken.
type TokenRequest struct {
	UserName string `json:"userName"`
}

// TokenResponse is a successful answer of the token API.
type TokenResponse struct {
	Token string `json:"token"`
}

// TokenError is how the token API, and token checks on other APIs, answer a
// failure: {"status":"false","message":"…","data":null}.
type TokenError struct {
	Status  string          `json:"status"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// ErrorBody returns CloudAgent's error body {"status":"error","message":msg}.
func ErrorBody(msg string) []byte {
	return appendEnvelope(make([]byte, 0, len(msg)+32), StatusError, msg, false)
}

// TokenErrorBody returns the token API's error body
// {"status":"false","message":msg,"data":null}.
func TokenErrorBody(msg string) []byte {
	return appendEnvelope(make([]byte, 0, len(msg)+48), StatusFalse, msg, true)
}

func appendEnvelope(b []byte, status, msg string, data bool) []byte {
	b = append(b, `{"status":`...)
	b = strconv.AppendQuote(b, status)
	b = append(b, `,"message":`...)
	m, _ := json.Marshal(msg) // a string always marshals
	b = append(b, m...)
	if data {
		b = append(b, `,"data":null`...)
	}
	return append(b, '}')
}

// WriteError writes CloudAgent's error body with the given HTTP status.
func WriteError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorBody(msg))
}

// WriteTokenError writes the token API's error body with the given HTTP status.
func WriteTokenError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, TokenErrorBody(msg))
}

func writeJSON(w http.ResponseWriter, code int, body []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(code)
	w.Write(body)
}

var jsonContentType = []string{"application/json"}

// ErrorMessage returns the message of an error answer (status "error" or
// "false" with a string message) and whether body is one.
func ErrorMessage(body []byte) (string, bool) {
	var r struct {
		Status  string          `json:"status"`
		Message json.RawMessage `json:"message"`
	}
	if json.Unmarshal(body, &r) != nil || (r.Status != StatusError && r.Status != StatusFalse) {
		return "", false
	}
	var msg string
	if json.Unmarshal(r.Message, &msg) != nil {
		return "", false
	}
	return msg, true
}

// IsSuccess reports whether body is a successful AHT answer.
func IsSuccess(body []byte) bool {
	var r struct {
		Status string `json:"status"`
	}
	return json.Unmarshal(body, &r) == nil && r.Status == StatusSuccess
}

// IsTokenProblem reports whether msg says the bearer token is expired or not
// (or no longer) valid, so a fresh token may succeed.
func IsTokenProblem(msg string) bool {
	return msg == MsgTokenExpired || msg == MsgTokenInvalid
}
