package health

import "testing"

func TestStreak(t *testing.T) {
	tests := []struct {
		name       string
		start      State
		rise, fall int
		results    []State
		want       []State // the state after each result
	}{
		{"fall 1: one failure is enough", Healthy, 1, 1, []State{Down}, []State{Down}},
		{"fall 3 needs three in a row", Healthy, 1, 3, []State{Down, Down, Down}, []State{Healthy, Healthy, Down}},
		{"a good result in between starts over", Healthy, 1, 2, []State{Down, Healthy, Down, Down}, []State{Healthy, Healthy, Healthy, Down}},
		{"rise 2 needs two in a row", Down, 2, 1, []State{Healthy, Healthy}, []State{Down, Healthy}},
		{"rise 3 broken by a failure", Down, 3, 1, []State{Healthy, Healthy, Down, Healthy, Healthy, Healthy}, []State{Down, Down, Down, Down, Down, Healthy}},
		{"rise counts toward degraded too", Down, 2, 1, []State{Degraded, Degraded}, []State{Down, Degraded}},
		{"a change of direction restarts the count", Degraded, 2, 2, []State{Healthy, Down, Down}, []State{Degraded, Degraded, Down}},
		{"rise ignored when 1 would be wrong", Down, 4, 1, []State{Healthy, Healthy, Healthy}, []State{Down, Down, Down}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s streak
			state := tt.start
			for i, got := range tt.results {
				state = s.observe(state, got, tt.rise, tt.fall)
				if state != tt.want[i] {
					t.Fatalf("after results %v: state %v, want %v", tt.results[:i+1], state, tt.want[i])
				}
			}
		})
	}
}
