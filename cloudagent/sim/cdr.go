package sim

import (
	"cmp"
	"encoding/json"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
)

// DefaultCallsPerAgent is how many calls each agent makes a day when
// Options.CallsPerAgent is 0: with the 302 default agents a day is some
// 300 records (a few hundred KB). A busy day (50 agents × 100 calls) runs
// to megabytes.
const DefaultCallsPerAgent = 1

// MaxCallsPerAgent bounds Options.CallsPerAgent: the simulated working day
// (workStart to workEnd) gives each call a slot of at least 10 seconds.
const MaxCallsPerAgent = 3600

// The simulated working day, seconds after midnight on the Server's clock.
const (
	workStart = 9 * 3600
	workEnd   = 19 * 3600
)

// Values the generated records draw from. They look like production's
// (the docs' sample record, docs.ozonetel.com/reference/
// get_ca-reports-fetchcdrdetails) without claiming to be its full range.
var (
	cdrLocations    = []string{"Bangalore", "Hyderabad", "Chennai", "Mumbai", "Delhi", "Pune"}
	cdrSkills       = []string{"General", "Sales", "Support", "Collections"}
	cdrTypes        = []string{"InBound", "Manual", "Progressive"}
	cdrDispositions = []string{"Interested", "Not Interested", "Callback", "Sale", "Wrap up time exceeded :1"}
	cdrHangups      = []string{"UserHangup", "AgentHangup"}
)

// callGen generates one account's calls deterministically: the same seed,
// account, agents and day always give the same records, byte for byte.
type callGen struct {
	seed    uint64
	perDay  int
	agents  []string          // sorted agent ids
	names   map[string]string // agent id -> name
	camps   []string          // sorted campaign names
	campIDs map[string]string // campaign name -> CampaignID
}

// day returns user's calls on day (midnight in the clock's location) that
// started within [from, to] and had ended by now, sorted by start time
// then CallID. A day in the future has none yet.
func (g *callGen) day(user string, day, from, to, now time.Time) []cloudagent.CDRRecord {
	if g.perDay <= 0 || day.After(now) {
		return []cloudagent.CDRRecord{}
	}
	out := make([]cloudagent.CDRRecord, 0, len(g.agents)*g.perDay)
	type keyed struct {
		start int64
		rec   cloudagent.CDRRecord
	}
	var recs []keyed
	for a := range g.agents {
		for k := range g.perDay {
			c := g.call(user, day, a, k)
			if c.start.Before(from) || c.start.After(to) || c.end.After(now) {
				continue
			}
			recs = append(recs, keyed{c.start.Unix(), c.rec})
		}
	}
	slices.SortFunc(recs, func(x, y keyed) int {
		return cmp.Or(cmp.Compare(x.start, y.start), cmp.Compare(x.rec.CallID, y.rec.CallID))
	})
	for _, r := range recs {
		out = append(out, r.rec)
	}
	return out
}

// generated is one call and the times the day's filters need.
type generated struct {
	rec        cloudagent.CDRRecord
	start, end time.Time
}

// call generates agent a's k-th call of day for user. Each agent's day is
// cut into perDay equal slots; a call starts early in its slot and ends
// within it, so one agent's calls never overlap.
func (g *callGen) call(user string, day time.Time, a, k int) generated {
	dayKey := day.Format("2006-01-02")
	rng := mrand.New(mrand.NewPCG(g.seed^fnv1a(user, dayKey), uint64(a)<<32|uint64(k)))
	pick := func(list []string) string { return list[rng.IntN(len(list))] }
	upTo := func(n int64) int64 { // uniform in [0, n]
		if n <= 0 {
			return 0
		}
		return rng.Int64N(n + 1)
	}

	slot := int64((workEnd - workStart) / g.perDay)
	startSec := int64(workStart) + int64(k)*slot + upTo(slot/5)
	start := day.Add(time.Duration(startSec) * time.Second)
	answered := rng.IntN(10) < 8
	ring := upTo(min(30, slot/10))
	var talk, hold, wrap int64
	if answered {
		talk = 5 + upTo(max(0, slot/2-5))
		hold = upTo(talk / 10)
		wrap = upTo(min(60, slot/10))
	}
	end := start.Add(time.Duration(ring+talk) * time.Second)

	agentID := g.agents[a]
	camp := ""
	if len(g.camps) > 0 {
		camp = g.camps[(a+k)%len(g.camps)]
	}
	id := callID(start, uint64(a*g.perDay+k))
	customer := "9" + strconv.FormatUint(100000000+rng.Uint64N(900000000), 10)
	r := cloudagent.CDRRecord{
		AgentID:            agentID,
		AgentName:          g.names[agentID],
		CallDate:           dayKey,
		CallID:             id,
		CallerID:           customer,
		CampaignName:       camp,
		ConferenceDuration: "00:00:00",
		CustomerRingTime:   formatHMS(ring),
		DID:                "080" + strconv.FormatUint(4000000+fnv1a("did", camp)%1000000, 10),
		DialedNumber:       customer,
		Duration:           formatHMS(ring + talk),
		E164:               "+91" + customer,
		EndTime:            end.Format(time.TimeOnly),
		Event:              "AgentDial",
		HangupBy:           pick(cdrHangups),
		HoldDuration:       formatHMS(hold),
		Location:           pick(cdrLocations),
		QueueTime:          formatHMS(upTo(min(20, slot/20))),
		Rating:             "0",
		Skill:              pick(cdrSkills),
		StartTime:          start.Format(time.TimeOnly),
		TalkTime:           formatHMS(talk),
		TimeToAnswer:       formatHMS(ring),
		Type:               pick(cdrTypes),
		UCID:               id,
		WrapupDuration:     formatHMS(wrap),
		HandlingTime:       formatHMS(talk + wrap),
	}
	if answered {
		r.Status = cloudagent.CallAnswered
		r.AgentDialStatus, r.CustomerDialStatus, r.DialStatus = "answered", "answered", "answered"
		r.CallAudio = "https://s3.ap-southeast-1.amazonaws.com/recordings.kookoo.in/" + user + "/" + id + ".mp3"
		r.Disposition = pick(cdrDispositions)
		r.PickupTime = start.Add(time.Duration(ring) * time.Second).Format(time.TimeOnly)
		r.WrapUpStartTime = end.Format(time.TimeOnly)
		r.WrapUpEndTime = end.Add(time.Duration(wrap) * time.Second).Format(time.TimeOnly)
	} else {
		r.Status = cloudagent.CallUnanswered
		r.AgentDialStatus, r.CustomerDialStatus, r.DialStatus = "answered", "NotAnswered", "NotAnswered"
		r.HangupBy = "UserHangup"
	}
	return generated{rec: r, start: start, end: end.Add(time.Duration(wrap) * time.Second)}
}

// callID builds a 17-digit call id as production's look: "3", the call's
// Unix second (10 digits), then 6 digits told apart by n.
func callID(start time.Time, n uint64) string {
	b := make([]byte, 0, 17)
	b = append(b, '3')
	b = strconv.AppendInt(b, start.Unix()%1e10, 10)
	for len(b) < 11 {
		b = append(b, '0') // only before 2001; keeps 17 digits
	}
	tail := strconv.FormatUint(1e6+n%1e6, 10)[1:]
	return string(append(b, tail...))
}

// appendCDRAnswer appends ans as JSON, the bytes json.Marshal gives, about
// five times faster: a busy day is thousands of records, and the simulator
// is a load-testing target. TestAppendCDRAnswerMatchesMarshal holds the two
// equal.
func appendCDRAnswer(b []byte, ans *cloudagent.CDRAnswer) []byte {
	b = append(b, `{"status":`...)
	b = appendJSONString(b, ans.Status)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, ans.Message)
	b = append(b, `,"details":[`...)
	for i := range ans.Details {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendCDRRecord(b, &ans.Details[i])
	}
	b = append(b, ']')
	if ans.TotalCount != nil {
		b = append(b, `,"totalCount":`...)
		b = strconv.AppendInt(b, int64(*ans.TotalCount), 10)
	}
	return append(b, '}')
}

// appendCDRRecord appends r's 46 fields in json.Marshal's order.
func appendCDRRecord(b []byte, r *cloudagent.CDRRecord) []byte {
	vals := [...]string{r.AgentDialStatus, r.AgentID, r.AgentName, r.CallAudio, r.CallDate, r.CallFlow,
		r.CallID, r.CallerConfAudioFile, r.CallerID, r.CampaignName, r.Comments, r.ConferenceDuration,
		r.CustomerDialStatus, r.CustomerRingTime, r.DID, r.DialOutName, r.DialStatus, r.DialedNumber,
		r.Disposition, r.Duration, r.DynamicDID, r.E164, r.EndTime, r.Event, r.HandlingTime, r.HangupBy,
		r.HoldDuration, r.Location, r.PickupTime, r.QueueTime, r.Rating, r.RatingComments, r.Skill,
		r.StartTime, r.Status, r.TalkTime, r.TimeToAnswer, r.TransferType, r.TransferredTo, r.Type, r.UCID,
		r.UUI, r.VideoRecordingURL, r.WrapUpEndTime, r.WrapUpStartTime, r.WrapupDuration}
	for i, v := range vals {
		b = append(b, cdrKeys[i]...)
		b = appendJSONString(b, v)
	}
	return append(b, '}')
}

// cdrKeys are the JSON keys of a CDRRecord in field order, each with what
// precedes it ("{" or ",") and its colon.
var cdrKeys = func() [46]string {
	names := [...]string{"AgentDialStatus", "AgentID", "AgentName", "CallAudio", "CallDate", "CallFlow",
		"CallID", "CallerConfAudioFile", "CallerID", "CampaignName", "Comments", "ConferenceDuration",
		"CustomerDialStatus", "CustomerRingTime", "DID", "DialOutName", "DialStatus", "DialedNumber",
		"Disposition", "Duration", "DynamicDID", "E164", "EndTime", "Event", "HandlingTime", "HangupBy",
		"HoldDuration", "Location", "PickupTime", "QueueTime", "Rating", "RatingComments", "Skill",
		"StartTime", "Status", "TalkTime", "TimeToAnswer", "TransferType", "TransferredTo", "Type", "UCID",
		"UUI", "VideoRecordingURL", "WrapUpEndTime", "WrapUpStartTime", "WrapupDuration"}
	var keys [46]string
	for i, n := range names {
		keys[i] = `,"` + n + `":`
	}
	keys[0] = "{" + keys[0][1:]
	return keys
}()

// appendJSONString appends s as a JSON string. Plain printable ASCII is
// copied; anything json.Marshal would escape (quotes, backslashes,
// control bytes, <, >, &, non-ASCII) goes through json.Marshal itself.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			m, _ := json.Marshal(s) // a string always marshals
			return append(b, m...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
