package sim

import "sync/atomic"

// Stats is a snapshot of what the simulator has seen since New or the last
// ResetStats. Counters are read one by one, so a snapshot taken under traffic
// may split an in-flight request's updates.
type Stats struct {
	AHTCalls          int64 // POSTs to /ca_apis/aht, whatever their fate
	AHTAdmitted       int64 // AHT calls counted against the limit (answered or refused for shape/lookup)
	AHTLimited        int64 // AHT calls refused with "max limit exceeded"
	AHTAuthFailed     int64 // AHT calls refused for credentials or token
	AHTInjectedErrors int64 // AHT calls answered 503 by ErrorRate
	TokenGenerations  int64 // tokens generated
	TokenRejected     int64 // token requests refused (credentials, limit, bad JSON)
	OtherCalls        int64 // POSTs to other CloudAgent endpoints (AgentDetails)
	ReportCalls       int64 // requests to the reporting API's CDR paths, whatever their fate
	ReportAdmitted    int64 // reporting calls counted against cloudagent.CDRLimit
	ReportLimited     int64 // reporting calls refused with HTTP 429
	ReportAuthFailed  int64 // reporting calls refused for credentials (a bearer token included)
	ManualDials       int64 // calls placed (AgentManualDial, its legacy path, PhoneManualDial)
	ControlCalls      int64 // calls to getAgentLogins, changeAgentState, CallControl_V4 and v2 agent status
	// LimitViolations counts calls refused for a rate limit of any kind:
	// AHT "max limit exceeded", AgentDetails and getAgentLogins over their
	// limits, reporting 429s
	// and token generations over the hourly limit. Against a proxy that
	// keeps CloudAgent's limits it is 0; every proxy test of a budget
	// checks that.
	LimitViolations int64
	// MaxReportInWindow is the most admitted calls one account had on one
	// reporting path within a trailing Window (refusals keep it at
	// cloudagent.CDRLimit at most: read LimitViolations).
	MaxReportInWindow int
	// MaxInWindow is the most admitted AHT calls one account had within a
	// trailing Window, measured at each admission. Refusals keep it at Limit
	// at most, so a test of a sender reads MaxArrivalsInWindow and
	// LimitViolations instead. It is not measured when Limit is negative
	// (no limit, no log kept).
	MaxInWindow int
	// MaxArrivalsInWindow is the most AHT calls one account sent within a
	// trailing Window, refused ones included (calls with good credentials;
	// measured at each arrival). Unlike MaxInWindow, which refusals keep at
	// Limit at most, a value above Limit shows a proxy sending over it.
	MaxArrivalsInWindow int
	// PerAccount holds every configured account's counters, by userName.
	PerAccount map[string]AccountStats
}

// AccountStats are one account's counters in Stats.
type AccountStats struct {
	AHTAdmitted      int64
	AHTLimited       int64
	TokenGenerations int64
	OtherCalls       int64 // other-endpoint calls that passed authentication
	ReportAdmitted   int64
	ReportLimited    int64
	ManualDials      int64
}

// counters are the Server-wide counters behind Stats; atomics keep the hot
// path free of a shared lock.
type counters struct {
	ahtCalls, ahtAdmitted, ahtLimited, ahtAuthFailed, ahtInjectedErrors atomic.Int64
	tokenGenerations, tokenRejected, otherCalls                         atomic.Int64
	maxInWindow, maxArrivalsInWindow                                    atomic.Int64
	reportCalls, reportAdmitted, reportLimited, reportAuthFailed        atomic.Int64
	manualDials, maxReportInWindow, limitViolations, controlCalls       atomic.Int64
}

// accountCounters are one account's counters behind AccountStats.
type accountCounters struct {
	ahtAdmitted, ahtLimited, tokenGenerations, otherCalls atomic.Int64
	reportAdmitted, reportLimited, manualDials            atomic.Int64
}

// noteInWindow raises maxInWindow to n if n is larger.
func (c *counters) noteInWindow(n int64) { raise(&c.maxInWindow, n) }

// raise sets v to n if n is larger.
func raise(v *atomic.Int64, n int64) {
	for {
		cur := v.Load()
		if n <= cur || v.CompareAndSwap(cur, n) {
			return
		}
	}
}

// noteReportInWindow raises maxReportInWindow to n if n is larger.
func (c *counters) noteReportInWindow(n int64) {
	for {
		cur := c.maxReportInWindow.Load()
		if n <= cur || c.maxReportInWindow.CompareAndSwap(cur, n) {
			return
		}
	}
}

// Stats returns a snapshot of the counters; safe to call concurrently.
func (s *Server) Stats() Stats {
	c := &s.stats
	st := Stats{
		AHTCalls:            c.ahtCalls.Load(),
		AHTAdmitted:         c.ahtAdmitted.Load(),
		AHTLimited:          c.ahtLimited.Load(),
		AHTAuthFailed:       c.ahtAuthFailed.Load(),
		AHTInjectedErrors:   c.ahtInjectedErrors.Load(),
		TokenGenerations:    c.tokenGenerations.Load(),
		TokenRejected:       c.tokenRejected.Load(),
		OtherCalls:          c.otherCalls.Load(),
		MaxInWindow:         int(c.maxInWindow.Load()),
		MaxArrivalsInWindow: int(c.maxArrivalsInWindow.Load()),
		ReportCalls:         c.reportCalls.Load(),
		ReportAdmitted:      c.reportAdmitted.Load(),
		ReportLimited:       c.reportLimited.Load(),
		ReportAuthFailed:    c.reportAuthFailed.Load(),
		ManualDials:         c.manualDials.Load(),
		ControlCalls:        c.controlCalls.Load(),
		MaxReportInWindow:   int(c.maxReportInWindow.Load()),
		LimitViolations:     c.limitViolations.Load(),
		PerAccount:          make(map[string]AccountStats, len(s.accounts)),
	}
	for name, a := range s.accounts {
		st.PerAccount[name] = AccountStats{
			AHTAdmitted:      a.stats.ahtAdmitted.Load(),
			AHTLimited:       a.stats.ahtLimited.Load(),
			TokenGenerations: a.stats.tokenGenerations.Load(),
			OtherCalls:       a.stats.otherCalls.Load(),
			ReportAdmitted:   a.stats.reportAdmitted.Load(),
			ReportLimited:    a.stats.reportLimited.Load(),
			ManualDials:      a.stats.manualDials.Load(),
		}
	}
	return st
}

// ResetStats zeroes every counter. It leaves the simulator's state (windows,
// tokens) alone: only what is reported starts over.
func (s *Server) ResetStats() {
	c := &s.stats
	for _, v := range []*atomic.Int64{
		&c.ahtCalls, &c.ahtAdmitted, &c.ahtLimited, &c.ahtAuthFailed, &c.ahtInjectedErrors,
		&c.tokenGenerations, &c.tokenRejected, &c.otherCalls, &c.maxInWindow, &c.maxArrivalsInWindow,
		&c.reportCalls, &c.reportAdmitted, &c.reportLimited, &c.reportAuthFailed,
		&c.manualDials, &c.maxReportInWindow, &c.limitViolations, &c.controlCalls,
	} {
		v.Store(0)
	}
	for _, a := range s.accounts {
		a.stats.ahtAdmitted.Store(0)
		a.stats.ahtLimited.Store(0)
		a.stats.tokenGenerations.Store(0)
		a.stats.otherCalls.Store(0)
		a.stats.reportAdmitted.Store(0)
		a.stats.reportLimited.Store(0)
		a.stats.manualDials.Store(0)
	}
}
