package cloudagent

import (
	"path"
	"strings"
	"time"
)

// AHTLimit is how many AHT calls an account may make per minute.
const AHTLimit = 50

// documentedLimit is one API's documented rate limit per account.
type documentedLimit struct {
	calls  int
	window time.Duration
}

// documentedLimits are CloudAgent's documented per-account limits, keyed by
// path in lower case (see DocumentedLimit). Add a path here when its limit
// is learnt, so configuration checks guard it too.
var documentedLimits = map[string]documentedLimit{
	strings.ToLower(PathAHT):                  {AHTLimit, time.Minute},
	strings.ToLower(PathAgentDetails):         {AgentDetailsLimit, time.Minute},
	strings.ToLower(PathSummaryReport):        {SummaryReportLimit, time.Minute},
	strings.ToLower(PathFetchCDRDetails):      {CDRLimit, time.Minute},
	strings.ToLower(PathFetchCdrByPagination): {CDRPaginationLimit, time.Minute},
	strings.ToLower(PathFetchCdrByUCID):       {CDRByUCIDLimit, time.Minute},
	strings.ToLower(PathGetAgentLogins):       {AgentLoginsLimit, time.Minute},
}

// DocumentedLimit returns CloudAgent's documented limit for path: at most
// calls per account in any trailing window. ok is false when no limit is
// documented for path. The path is compared after cleaning and without
// regard to case, so a spelling that reaches the same API has its limit
// too (comparing loosely can only refuse more configurations, never fewer).
func DocumentedLimit(p string) (calls int, window time.Duration, ok bool) {
	l, ok := documentedLimits[strings.ToLower(path.Clean("/"+p))]
	return l.calls, l.window, ok
}

// ExceedsLimit reports whether a budget of calls in any trailing window
// allows more than limit calls in limitWindow: either more calls than the
// limit at once, or a higher rate (a shorter window at the same count
// refills faster than CloudAgent's). A window of zero or less is taken as
// limitWindow.
func ExceedsLimit(calls int, window time.Duration, limit int, limitWindow time.Duration) bool {
	if window <= 0 {
		window = limitWindow
	}
	if calls > limit {
		return true
	}
	// calls/window > limit/limitWindow, in integers (windows are at most
	// hours in nanoseconds and counts small, so the products fit in int64).
	return int64(calls)*int64(limitWindow) > int64(limit)*int64(window)
}
