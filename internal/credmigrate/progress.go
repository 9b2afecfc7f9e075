package credmigrate

import (
	"fmt"
	"io"
	"time"
)

// progress draws "name  n/total  pct  rate  ETA" on one terminal line,
// rewritten at most five times a second.
type progress struct {
	w     io.Writer
	name  string
	total int64
	n     int64
	start time.Time
	last  time.Time
	now   func() time.Time
	drawn bool
}

func newProgress(w io.Writer, name string, total int64, now func() time.Time) *progress {
	t := now()
	return &progress{w: w, name: name, total: total, start: t, now: now}
}

func (p *progress) add(n int64) {
	p.n += n
	if p.w == nil {
		return
	}
	t := p.now()
	if t.Sub(p.last) < 200*time.Millisecond && p.n < p.total {
		return
	}
	p.last = t
	p.draw(t)
}

func (p *progress) draw(t time.Time) {
	elapsed := t.Sub(p.start)
	rate := float64(p.n) / max(elapsed.Seconds(), 1e-3)
	line := fmt.Sprintf("%-10s %d users", p.name, p.n)
	if p.total > 0 {
		pct := 100 * float64(p.n) / float64(p.total)
		eta := "?"
		if rate > 0 && p.n <= p.total {
			eta = time.Duration(float64(p.total-p.n) / rate * float64(time.Second)).Round(time.Second).String()
		}
		line = fmt.Sprintf("%-10s %d/%d users  %5.1f%%  %.0f/s  ETA %s", p.name, p.n, p.total, min(pct, 100), rate, eta)
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
	p.drawn = true
}

func (p *progress) done() {
	if p.w == nil || !p.drawn {
		return
	}
	p.draw(p.now())
	fmt.Fprintln(p.w)
}
