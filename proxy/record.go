package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/caproxy/caproxy/accesslog"
	"github.com/caproxy/caproxy/route"
)

// RouteAHT is AHT's route name, in metrics and logs.
const RouteAHT = route.NameAHT

// Routes served ahead of the table, as metric labels and in logs.
const (
	routeAHT   = route.NameAHT
	routeToken = route.NameToken
	routeOther = route.NameOther
)

// record is what one request did, filled in by its handler and read by the
// access log and metrics once it is answered.
type record struct {
	start          time.Time
	requestID      string
	route          string
	account        string
	outcome        string
	upstreamStatus int
}

var recordPool = sync.Pool{New: func() any { return new(record) }}

// requestIDPrefix makes generated ids unique across processes; the counter
// makes them unique within one without a random read per request.
var (
	requestIDPrefix = func() string {
		var b [6]byte
		rand.Read(b[:])
		return hex.EncodeToString(b[:]) + "-"
	}()
	requestIDSeq atomic.Uint64
)

// requestID takes the client's X-Request-Id or makes one, and echoes it.
func requestID(w http.ResponseWriter, r *http.Request) string {
	var id string
	if v := r.Header["X-Request-Id"]; len(v) > 0 { // canonical: no Get
		id = v[0]
	}
	if id == "" || len(id) > 128 {
		g := new(generatedID)
		b := strconv.AppendUint(append(g.b[:0], requestIDPrefix...), requestIDSeq.Add(1), 36)
		// b is g.b (13 + at most 13 bytes fit), never written again.
		g.v[0] = unsafe.String(&b[0], len(b))
		w.Header()["X-Request-Id"] = g.v[:]
		return g.v[0]
	}
	w.Header()["X-Request-Id"] = []string{id}
	return id
}

// generatedID is a generated request id: its header value and its bytes in
// one allocation.
type generatedID struct {
	v [1]string
	b [32]byte
}

// finish records the request in metrics and the access log.
func (p *Proxy) finish(r *http.Request, rec *record) {
	if p.Metrics != nil {
		p.Metrics.Request(rec.route, rec.outcome)
	}
	if p.AccessLog == nil {
		return
	}
	now := time.Now()
	p.AccessLog.Log(&accesslog.Entry{
		Time:           now,
		Duration:       now.Sub(rec.start),
		ID:             rec.requestID,
		Method:         r.Method,
		Path:           r.URL.Path,
		Route:          rec.route,
		Account:        rec.account,
		Outcome:        rec.outcome,
		UpstreamStatus: rec.upstreamStatus,
	})
}
