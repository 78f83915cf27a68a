package lab

import (
	"fmt"
	"os"
	"testing"
)

// Runner stands in for testing.TB so that the lab runs outside `go test`
// (the demo, the benchmark's lab experiment): Fatal ends the Run with the
// message, cleanups run in reverse order when Run returns.
type Runner struct {
	testing.TB // never called: the lab uses only the methods below
	name       string
	cleanups   []func()
	failed     bool
	tmp        string
}

type runnerFailure struct{ msg string }

// NewRunner is a Runner whose log lines go to stderr. testing.Init must
// have been called (the lab reads testing.Short).
func NewRunner(name string) *Runner { return &Runner{name: name} }

func (r *Runner) Helper()                   {}
func (r *Runner) Logf(f string, a ...any)   { fmt.Fprintf(os.Stderr, f+"\n", a...) }
func (r *Runner) Errorf(f string, a ...any) { r.failed = true; r.Logf(f, a...) }
func (r *Runner) Fatalf(f string, a ...any) {
	r.failed = true
	panic(runnerFailure{fmt.Sprintf(f, a...)})
}
func (r *Runner) Fatal(a ...any)           { r.failed = true; panic(runnerFailure{fmt.Sprint(a...)}) }
func (r *Runner) Skip(a ...any)            { panic(runnerFailure{fmt.Sprint(a...)}) }
func (r *Runner) Skipf(f string, a ...any) { panic(runnerFailure{fmt.Sprintf(f, a...)}) }
func (r *Runner) Failed() bool             { return r.failed }
func (r *Runner) Cleanup(f func())         { r.cleanups = append(r.cleanups, f) }
func (r *Runner) Name() string             { return r.name }

// TempDir is one directory per Runner, removed by its cleanups.
func (r *Runner) TempDir() string {
	if r.tmp == "" {
		d, err := os.MkdirTemp("", r.name)
		if err != nil {
			r.Fatal(err)
		}
		r.tmp = d
		r.Cleanup(func() { os.RemoveAll(d) })
	}
	return r.tmp
}

// Run calls fn and then the cleanups registered meanwhile; a Fatal (or
// Skip) in fn becomes the error returned.
func (r *Runner) Run(fn func()) (err error) {
	defer func() {
		for i := len(r.cleanups) - 1; i >= 0; i-- {
			r.cleanups[i]()
		}
		r.cleanups = nil
	}()
	defer func() {
		if v := recover(); v != nil {
			f, ok := v.(runnerFailure)
			if !ok {
				panic(v)
			}
			err = fmt.Errorf("%s", f.msg)
		}
	}()
	fn()
	return nil
}
