package cloudagent

import (
	"testing"
	"time"
)

func TestDocumentedLimit(t *testing.T) {
	for _, c := range []struct {
		path  string
		calls int
		ok    bool
	}{
		{PathAHT, AHTLimit, true},
		{PathAgentDetails, AgentDetailsLimit, true},
		{"/CA_APIS/agentdetails/", AgentDetailsLimit, true},
		{PathSummaryReport, SummaryReportLimit, true},
		{PathFetchCDRDetails, CDRLimit, true},
		{PathFetchCdrByPagination, CDRPaginationLimit, true},
		{PathFetchCdrByUCID, CDRByUCIDLimit, true},
		{PathGetAgentLogins, AgentLoginsLimit, true},
		{PathAgentManualDial, 0, false},
		{"/ca_apis/unknown", 0, false},
	} {
		calls, window, ok := DocumentedLimit(c.path)
		if calls != c.calls || ok != c.ok || (ok && window != time.Minute) {
			t.Errorf("DocumentedLimit(%q) = %d, %v, %v; want %d, 1m, %v", c.path, calls, window, ok, c.calls, c.ok)
		}
	}
}

func TestExceedsLimit(t *testing.T) {
	for _, c := range []struct {
		calls  int
		window time.Duration
		want   bool
	}{
		{10, time.Minute, false},
		{11, time.Minute, true},
		{10, 0, false},
		{11, 0, true},
		{10, 59 * time.Second, true},
		{5, 30 * time.Second, false},
		{6, 30 * time.Second, true},
		{10, 2 * time.Minute, false},
		{11, 2 * time.Minute, true}, // 11 at once in one minute
	} {
		if got := ExceedsLimit(c.calls, c.window, 10, time.Minute); got != c.want {
			t.Errorf("ExceedsLimit(%d, %v, 10, 1m) = %v, want %v", c.calls, c.window, got, c.want)
		}
	}
}
