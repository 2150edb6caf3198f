package redistest

import "testing"

func TestStartAnswersPing(t *testing.T) {
	addr := Start(t)
	if !ping(addr) {
		t.Fatalf("redis-server at %s does not answer PING", addr)
	}
}

func TestKillRestartPause(t *testing.T) {
	s := StartServer(t)
	s.Kill()
	if ping(s.Addr) {
		t.Fatal("a killed server answers PING")
	}
	s.Restart()
	if !ping(s.Addr) {
		t.Fatal("a restarted server does not answer PING")
	}
	s.Pause()
	if ping(s.Addr) {
		t.Fatal("a paused server answers PING")
	}
	s.Resume()
	if !ping(s.Addr) {
		t.Fatal("a resumed server does not answer PING")
	}
}

func TestClusterStarts(t *testing.T) {
	c := StartCluster(t, 3)
	for _, a := range c.Addrs() {
		if !ping(a) {
			t.Fatalf("cluster node %s does not answer PING", a)
		}
	}
}
