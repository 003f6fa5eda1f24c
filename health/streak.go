package health

// streak is rise and fall: it counts consecutive results that differ from an endpoint's state
// and says when there have been enough of them to change it. Results better than the state
// need rise of them in a row, worse ones fall. A result equal to the state changes nothing; a
// different result starts a new count. A probe that says nothing of the member is never
// observed.
type streak struct {
	pending State // the result being counted
	count   int
}

// observe counts got against the current state and returns the state to hold from now on.
func (s *streak) observe(state, got State, rise, fall int) State {
	switch {
	case got == state:
		s.count = 0
		return state
	case got != s.pending || s.count == 0:
		s.pending, s.count = got, 0
	}
	s.count++
	need := rise
	if got < state {
		need = fall
	}
	if s.count < need {
		return state
	}
	s.count = 0
	return got
}

// reset forgets the count, after the state changed for another reason.
func (s *streak) reset() { s.count = 0 }
