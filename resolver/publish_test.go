package resolver

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestUpdatesKeepsOnlyTheLatestSet(t *testing.T) {
	u := NewUpdates()
	if _, ok := u.Latest(); ok {
		t.Fatal("a new Updates claims a set")
	}
	first := []Endpoint{{Host: "a", Port: 1}}
	second := []Endpoint{{Host: "b", Port: 2}}
	u.Publish(first) // never read: must not block the next Publish
	u.Publish(second)
	select {
	case <-u.Kicked():
	default:
		t.Fatal("no kick after Publish")
	}
	select {
	case <-u.Kicked():
		t.Fatal("two kicks queued for one unread change")
	default:
	}
	got, ok := u.Latest()
	if !ok || !slices.Equal(got, second) {
		t.Fatalf("Latest = %v, %v; want %v", got, ok, second)
	}
	second[0].Port = 9
	if got, _ := u.Latest(); got[0].Port != 2 {
		t.Fatal("Publish kept the caller's slice instead of a copy")
	}
}

func TestStaticPublishesOnEveryRun(t *testing.T) {
	u := NewUpdates()
	s := NewStatic([]Endpoint{{Host: "b", Port: 2}, {Host: "a", Port: 1}, {Host: "b", Port: 2}}, u)
	for run := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx) }()
		select {
		case <-u.Kicked():
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d published nothing", run)
		}
		got, _ := u.Latest()
		if want := []Endpoint{{Host: "a", Port: 1}, {Host: "b", Port: 2}}; !slices.Equal(got, want) {
			t.Fatalf("run %d published %v, want %v", run, got, want)
		}
		cancel()
		if err := <-done; err != context.Canceled {
			t.Fatalf("Serve = %v, want context.Canceled", err)
		}
	}
}
