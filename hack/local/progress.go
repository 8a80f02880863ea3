package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// progress prints how a wait goes: on a terminal one line redrawn in place (carriage
// return), anywhere else (a file, a pipe, CI) one plain line per change of state, so a
// log of the run reads like a log.
type progress struct {
	out   io.Writer
	tty   bool
	what  string
	start time.Time
	last  string
}

// isTerminal reports whether f is a character device (a terminal), not a file or a pipe.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newProgress(out io.Writer, tty bool, what string, start time.Time) *progress {
	return &progress{out: out, tty: tty, what: what, start: start}
}

// state shows a new state; a repeated one prints nothing.
func (p *progress) state(s string, now time.Time) {
	if s == p.last {
		return
	}
	p.last = s
	if p.tty {
		fmt.Fprintf(p.out, "\r  %s: %s (%.0fs)%*s", p.what, s, now.Sub(p.start).Seconds(), 10, "")
		return
	}
	fmt.Fprintf(p.out, "  %s: %s (%.0fs)\n", p.what, s, now.Sub(p.start).Seconds())
}

// done ends the wait's line.
func (p *progress) done(now time.Time) {
	if p.tty {
		fmt.Fprintf(p.out, "\r  %s: done in %.1fs%*s\n", p.what, now.Sub(p.start).Seconds(), 20, "")
		return
	}
	fmt.Fprintf(p.out, "  %s: done in %.1fs\n", p.what, now.Sub(p.start).Seconds())
}
