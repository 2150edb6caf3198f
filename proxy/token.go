package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/jsonbody"
)

// serveGenerateToken answers generateToken locally with a token caproxy
// issues itself, so apps never trigger an upstream generation (which would
// log out every other app) and the upstream token never leaves caproxy.
func (p *Proxy) serveGenerateToken(w http.ResponseWriter, r *http.Request, rec *record) {
	rec.route = routeToken
	body, ok := readPost(w, r, rec, cloudagent.WriteTokenError)
	if !ok {
		return
	}
	// The one strict reader: {"USERNAME":…} is not userName here, as it is
	// not to CloudAgent.
	doc, err := jsonbody.Parse(body)
	var req cloudagent.TokenRequest
	if err == nil {
		req.UserName, _, err = doc.String("userName")
	}
	if err == nil && !doc.IsObject() {
		err = jsonbody.ErrNotJSON
	}
	jsonbody.Release(body)
	if err != nil {
		rec.outcome = OutcomeInvalid
		cloudagent.WriteTokenError(w, http.StatusBadRequest, "request body must be a JSON object with a string userName")
		return
	}
	st := p.current()
	acct := st.Accounts[req.UserName]
	if acct == nil || (st.ClientAuth && !acct.keyMatches(credential.Present(r, false).APIKey)) {
		rec.outcome = OutcomeUnauthorized
		cloudagent.WriteTokenError(w, http.StatusUnauthorized, cloudagent.MsgTokenInvalidCredentials)
		return
	}
	rec.account = acct.UserName
	rec.outcome = "issued"
	tok, _ := p.Issuer.Issue(acct.UserName, acct.APIKey, p.now())
	answer, _ := json.Marshal(cloudagent.TokenResponse{Token: tok})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(answer)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(answer)
}
