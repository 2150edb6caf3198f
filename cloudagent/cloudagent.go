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
	// query parameters beside the JSON body.
	PathFetchCdrByPagination = "/ca_reports/fetchCdrByPagination"
	// PathAgentManualDial places a call: a write, never cached or retried.
	PathAgentManualDial = "/ca_apis/AgentManualDial"
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
// (the pages named beside PathAgentDetails and PathSummaryReport).
const (
	AgentDetailsLimit  = 10
	SummaryReportLimit = 5
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
