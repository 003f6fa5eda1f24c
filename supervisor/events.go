package supervisor

import (
	"fmt"
	"sync"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"
)

// EventHook logs suture's events: a crash that will be restarted at Warn, a panic and a service
// that would not stop at Error, backoff at Warn and the end of backoff at Info. A failure that
// repeats the previous one exactly is logged at Debug, so a crash loop does not flood the log.
// It runs on a supervisor's own goroutine and never blocks.
func EventHook(log *zap.Logger) suture.EventHook {
	log = log.Named("supervisor")
	var (
		mu   sync.Mutex // the hook runs on the goroutine of every supervisor it is given to
		last string
	)
	repeated := func(failure string) bool {
		mu.Lock()
		defer mu.Unlock()
		same := failure == last
		last = failure
		return same
	}
	return func(e suture.Event) {
		switch ev := e.(type) {
		case suture.EventServiceTerminate:
			lvl := zap.WarnLevel
			if repeated(fmt.Sprintf("%s\x00%v", ev.ServiceName, ev.Err)) {
				lvl = zap.DebugLevel
			}
			if !ev.Restarting {
				lvl = zap.ErrorLevel
			}
			log.Log(lvl, "service ended", zap.String("supervisor_name", ev.SupervisorName),
				zap.String("service", ev.ServiceName), zap.Any("error", ev.Err),
				zap.Bool("restarting", ev.Restarting), zap.Float64("current_failures", ev.CurrentFailures))
		case suture.EventServicePanic:
			log.Error("service panicked", zap.String("supervisor_name", ev.SupervisorName),
				zap.String("service", ev.ServiceName), zap.String("panic", ev.PanicMsg),
				zap.Bool("restarting", ev.Restarting), zap.String("stack", ev.Stacktrace))
		case suture.EventStopTimeout:
			log.Error("service did not stop in time", zap.String("supervisor_name", ev.SupervisorName),
				zap.String("service", ev.ServiceName))
		case suture.EventBackoff:
			log.Warn("too many failures; restarts paused", zap.String("supervisor_name", ev.SupervisorName))
		case suture.EventResume:
			log.Info("restarts resumed", zap.String("supervisor_name", ev.SupervisorName))
		}
	}
}
