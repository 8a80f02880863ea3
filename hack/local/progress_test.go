package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestProgressPlainWhenNotATerminal(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var b bytes.Buffer
	p := newProgress(&b, false, "attach", t0)
	p.state("Pending", t0)
	p.state("Pending", t0.Add(time.Second)) // unchanged: nothing
	p.state("Attaching", t0.Add(2*time.Second))
	p.done(t0.Add(2500 * time.Millisecond))
	want := "  attach: Pending (0s)\n  attach: Attaching (2s)\n  attach: done in 2.5s\n"
	if b.String() != want {
		t.Fatalf("plain output:\n%q\nwant\n%q", b.String(), want)
	}
	if strings.Contains(b.String(), "\r") {
		t.Fatal("carriage return in plain output")
	}
}

func TestProgressRedrawsOnATerminal(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var b bytes.Buffer
	p := newProgress(&b, true, "attach", t0)
	p.state("Pending", t0)
	p.done(t0.Add(time.Second))
	if got := strings.Count(b.String(), "\r"); got != 2 {
		t.Fatalf("%d carriage returns in %q, want 2", got, b.String())
	}
	if !strings.HasSuffix(b.String(), "\n") || strings.Count(b.String(), "\n") != 1 {
		t.Fatalf("terminal output %q: want one line, ended once", b.String())
	}
}
