package redistest

import "testing"

func TestStartAnswersPing(t *testing.T) {
	addr := Start(t)
	if !ping(addr) {
		t.Fatalf("redis-server at %s does not answer PING", addr)
	}
}
