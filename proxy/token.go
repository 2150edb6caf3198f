package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/caproxy/caproxy/cloudagent"
)

// serveGenerateToken answers generateToken locally with a token caproxy
// issues itself, so apps never trigger an upstream generation (which would
// log out every other app) and the upstream token never leaves caproxy.
func (p *Proxy) serveGenerateToken(w http.ResponseWriter, r *http.Request, rec *record) {
	rec.route = routeToken
	buf, ok := readPost(w, r, rec, cloudagent.WriteTokenError)
	if !ok {
		return
	}
	var req cloudagent.TokenRequest
	err := json.Unmarshal(buf.Bytes(), &req)
	putBody(buf)
	if err != nil {
		rec.outcome = OutcomeInvalid
		cloudagent.WriteTokenError(w, http.StatusBadRequest, "request body must be a JSON object with a string userName")
		return
	}
	st := p.current()
	acct := st.Accounts[req.UserName]
	if acct == nil || (st.ClientAuth && !acct.keyMatches(apiKeyOf(r))) {
		rec.outcome = OutcomeUnauthorized
		cloudagent.WriteTokenError(w, http.StatusUnauthorized, cloudagent.MsgTokenInvalidCredentials)
		return
	}
	rec.account = acct.UserName
	rec.outcome = "issued"
	tok, _ := p.Issuer.Issue(acct.UserName, acct.APIKey, p.now())
	body, _ := json.Marshal(cloudagent.TokenResponse{Token: tok})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}
