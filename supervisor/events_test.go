package supervisor

import (
	"errors"
	"testing"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestEventHookLogsEachEventType(t *testing.T) {
	tests := []struct {
		name      string
		give      []suture.Event
		wantMsg   string
		wantLevel []zapcore.Level
	}{
		{
			name:      "terminate with restart",
			give:      []suture.Event{suture.EventServiceTerminate{ServiceName: "listener", Err: errors.New("accept: boom"), Restarting: true}},
			wantMsg:   "service ended",
			wantLevel: []zapcore.Level{zap.WarnLevel},
		},
		{
			name: "repeated identical failure drops to debug",
			give: []suture.Event{
				suture.EventServiceTerminate{ServiceName: "listener", Err: errors.New("accept: boom"), Restarting: true},
				suture.EventServiceTerminate{ServiceName: "listener", Err: errors.New("accept: boom"), Restarting: true},
				suture.EventServiceTerminate{ServiceName: "listener", Err: errors.New("accept: other"), Restarting: true},
			},
			wantMsg:   "service ended",
			wantLevel: []zapcore.Level{zap.WarnLevel, zap.DebugLevel, zap.WarnLevel},
		},
		{
			name:      "terminate without restart",
			give:      []suture.Event{suture.EventServiceTerminate{ServiceName: "x", Err: errors.New("done"), Restarting: false}},
			wantMsg:   "service ended",
			wantLevel: []zapcore.Level{zap.ErrorLevel},
		},
		{
			name:      "panic",
			give:      []suture.Event{suture.EventServicePanic{ServiceName: "x", PanicMsg: "boom", Stacktrace: "stack", Restarting: true}},
			wantMsg:   "service panicked",
			wantLevel: []zapcore.Level{zap.ErrorLevel},
		},
		{
			name:      "stop timeout",
			give:      []suture.Event{suture.EventStopTimeout{ServiceName: "x"}},
			wantMsg:   "service did not stop in time",
			wantLevel: []zapcore.Level{zap.ErrorLevel},
		},
		{
			name:      "backoff",
			give:      []suture.Event{suture.EventBackoff{SupervisorName: "health"}},
			wantMsg:   "too many failures; restarts paused",
			wantLevel: []zapcore.Level{zap.WarnLevel},
		},
		{
			name:      "resume",
			give:      []suture.Event{suture.EventResume{SupervisorName: "health"}},
			wantMsg:   "restarts resumed",
			wantLevel: []zapcore.Level{zap.InfoLevel},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zap.DebugLevel)
			hook := EventHook(zap.New(core))
			for _, e := range tt.give {
				hook(e)
			}
			entries := logs.All()
			if len(entries) != len(tt.wantLevel) {
				t.Fatalf("logged %d entries, want %d: %v", len(entries), len(tt.wantLevel), entries)
			}
			for i, e := range entries {
				if e.Message != tt.wantMsg || e.Level != tt.wantLevel[i] {
					t.Errorf("entry %d = %s %q, want %s %q", i, e.Level, e.Message, tt.wantLevel[i], tt.wantMsg)
				}
			}
		})
	}
}
