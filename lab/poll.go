package lab

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Poll calls cond every interval until it returns true, or ctx ends; then
// the error names what was awaited and wraps ctx's error and the last
// error cond returned (cond explains with it why it does not hold yet).
// An error made by Abort ends the wait at once: it will never hold.
// It is the one polling loop of the lab, the e2e tests, the benchmark and
// the charon tests: wait for a condition, never sleep for a guessed time.
func Poll(ctx context.Context, what string, interval time.Duration, cond func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		var ab abortError
		if errors.As(err, &ab) {
			return fmt.Errorf("%s: %w", what, ab.err)
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%s: %w (last: %v)", what, ctx.Err(), last)
			}
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

// PollFor is Poll bounded by timeout as well as ctx.
func PollFor(ctx context.Context, what string, timeout, interval time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return Poll(ctx, what, interval, cond)
}

// Abort makes cond's error end Poll at once.
func Abort(err error) error { return abortError{err} }

type abortError struct{ err error }

func (a abortError) Error() string { return a.err.Error() }
func (a abortError) Unwrap() error { return a.err }
