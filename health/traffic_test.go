package health

import (
	"testing"

	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// The gateway's Traffic wakes at the first request a client sends any member after a Rest, and
// the next Rest says whether one came; control frames alone are no request, and neither is a
// member's own rest (its heartbeats) anything to the gateway's.
func TestTrafficWakesAtTheFirstRequest(t *testing.T) {
	table := NewTable()
	loadOf := func(port uint16) *Load { return table.loadOf(resolver.HostPort{Host: "127.0.0.1", Port: port}) }
	traffic := table.Traffic()
	if _, sent := traffic.Rest(); !sent {
		t.Error("the first Rest says no request came before it, want it to say one may have")
	}
	woken, _ := traffic.Rest()
	asleep := func(what string) {
		t.Helper()
		select {
		case <-woken:
			t.Fatalf("the gateway woke for %s", what)
		default:
		}
	}
	ping := int(member.ClientControlBytes(member.SchemeUnknown)) // a keepalive PING, a WINDOW_UPDATE
	loadOf(1).Sent(ping)
	asleep("a control frame")

	member2 := loadOf(2)
	member2.watch(member.SchemeTLS) // the member's heartbeats rest too; over TLS, control frames are larger
	member2.Sent(int(member.ClientControlBytes(member.SchemeTLS)))
	asleep("a control frame over TLS")
	if _, sent := traffic.Rest(); sent {
		t.Fatal("the next Rest says a request came, after control frames alone")
	}

	woken, _ = traffic.Rest()
	split := loadOf(3)
	split.Sent(ping / 2) // a request whose HEADERS and DATA frames came in two writes
	split.Sent(ping/2 + 3)
	select {
	case <-woken:
	default:
		t.Fatal("a request in two small writes did not wake the gateway")
	}
	if _, sent := traffic.Rest(); !sent {
		t.Fatal("the next Rest says no request came")
	}

	woken, _ = traffic.Rest()
	heartbeats, _ := member2.watch(member.SchemeTLS)
	member2.Sent(testRequest)
	for what, ch := range map[string]<-chan struct{}{"the gateway": woken, "the member's heartbeats": heartbeats} {
		select {
		case <-ch:
		default:
			t.Errorf("a request did not wake %s", what)
		}
	}
}
