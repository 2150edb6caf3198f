package cache

import (
	"strconv"
	"strings"

	"github.com/caproxy/caproxy/cloudagent"
)

// Kinds of AHT question, as used in keys.
const (
	KindAgent    = "agent"
	KindCampaign = "campaign"
)

// keySep separates the parts of a key after the length-prefixed account.
// Kinds never contain it, and the id is the last part, so it may.
const keySep = '|'

// KeyFor returns the cache key of the AHT of id (an agent id or campaign
// name, as kind says) in account, e.g. "4:demo|agent|agent1".
//
// The account is length-prefixed and the id comes last, so no two
// (account, kind, id) triples share a key whatever characters they contain,
// and every key of an account starts with PrefixFor(account). kind must be
// KindAgent or KindCampaign (any string without '|' works). Keys hold no
// secret: only the account's user name, which is not one.
func KeyFor(account, kind, id string) string {
	var b strings.Builder
	b.Grow(len(account) + len(kind) + len(id) + 8)
	writePrefix(&b, account)
	b.WriteString(kind)
	b.WriteByte(keySep)
	b.WriteString(id)
	return b.String()
}

// PrefixFor returns the prefix shared by every key of account and by no
// key of any other account.
func PrefixFor(account string) string {
	var b strings.Builder
	b.Grow(len(account) + 8)
	writePrefix(&b, account)
	return b.String()
}

func writePrefix(b *strings.Builder, account string) {
	var n [20]byte
	b.Write(strconv.AppendInt(n[:0], int64(len(account)), 10))
	b.WriteByte(':')
	b.WriteString(account)
	b.WriteByte(keySep)
}

// RequestKey returns the cache key of a validated AHT request (see
// cloudagent.AHTRequest.Validate) made for account: an agent's key if it
// names an agent, else its campaign's.
func RequestKey(account string, r cloudagent.AHTRequest) string {
	if r.AgentID != "" {
		return KeyFor(account, KindAgent, r.AgentID)
	}
	return KeyFor(account, KindCampaign, r.CampaignName)
}
