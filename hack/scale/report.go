package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// report prints the table, and writes it with a plot of time-to-applied against the number
// of volumes into --out.
func report(results []cycleResult, idleCalls, idleCPU float64) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Scale run %s: %d simulated nodes (real agents over internal/fakelvm), operator in its own process, envtest apiserver, %d client workers, report interval %v.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), *nodes, *workers, *reportInterval)
	b.WriteString("| volumes | phase | wall | throughput | p50 to applied | p99 to applied | API requests/op | operator CPU | operator GC cycles |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		for _, p := range r.phases {
			fmt.Fprintf(&b, "| %d | %s | %.1f s | %.1f/s | %.0f ms | %.0f ms | %.1f | %.1f s | %d |\n",
				r.n, p.name, p.wall.Seconds(), float64(p.n)/p.wall.Seconds(), ms(p.p50), ms(p.p99), p.apiPerOp, p.operatorCPUs, p.gcs)
		}
	}
	b.WriteString("\n| volumes | operator max RSS | operator CPU (whole cycle) | operator CPU at rest | LVM/sanlock calls per agent per report cycle |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| 0 | | | %.1f ms/s | %.1f |\n", idleCPU*1000, idleCalls)
	for _, r := range results {
		fmt.Fprintf(&b, "| %d | %.0f MiB | %.1f s | %.1f ms/s | %.1f (with %d attached per node) |\n", r.n, float64(r.maxRSS)/(1<<20), r.cpuSeconds, r.restCPU*1000, r.callsPerCycle, r.n / *nodes)
	}
	// What each cached object costs the operator: the live heap (after a forced GC) grows by
	// this much per volume created and per attachment added (the attachments' cost includes
	// what their lock changes leave behind: Events kept for series, queue entries).
	b.WriteString("\n| volumes | operator live heap: before | after create | after attach | after migrate (N volumes, 2N attachments) | per volume | per attachment |\n|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		heap := map[string]int64{}
		for _, p := range r.phases {
			heap[p.name] = p.liveHeap
		}
		mib := func(v int64) string { return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20)) }
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %.0f B | %.0f B |\n", r.n, mib(r.liveHeap0), mib(heap["create"]), mib(heap["attach"]), mib(heap["migrate"]),
			float64(heap["create"]-r.liveHeap0)/float64(r.n), float64(heap["migrate"]-heap["create"])/float64(2*r.n))
	}
	if last := results[len(results)-1]; last.top != "" {
		fmt.Fprintf(&b, "\nThe operator's in-use heap after the migrate phase of %d volumes (`go tool pprof -top -sample_index=inuse_space`):\n\n```\n%s```\n", last.n, last.top)
	}
	if len(results) > 1 {
		// How each per-operation cost grows from the first volume count to the last: linear
		// scaling means wall time grows with the count and the per-operation costs stay.
		first, last := results[0], results[len(results)-1]
		k := float64(last.n) / float64(first.n)
		fmt.Fprintf(&b, "\nGrowth from %d to %d volumes (×%.0f): linear means wall ×%.0f and the per-operation columns ×1.\n\n", first.n, last.n, k, k)
		b.WriteString("| phase | wall | p50 to applied | API requests/op | operator CPU/op |\n|---|---|---|---|---|\n")
		for i, p := range last.phases {
			if i >= len(first.phases) {
				break
			}
			q := first.phases[i]
			ratio := func(a, b float64) string {
				if b == 0 {
					return "–"
				}
				return fmt.Sprintf("×%.2f", a/b)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", p.name,
				ratio(p.wall.Seconds(), q.wall.Seconds()), ratio(ms(p.p50), ms(q.p50)), ratio(p.apiPerOp, q.apiPerOp),
				ratio(p.operatorCPUs/float64(p.n), q.operatorCPUs/float64(q.n)))
		}
		fmt.Fprintf(&b, "\nOperator max RSS ×%.2f; LVM/sanlock calls per agent per cycle %.1f → %.1f.\n",
			float64(last.maxRSS)/float64(max(first.maxRSS, 1)), first.callsPerCycle, last.callsPerCycle)
	}
	fmt.Print("\n" + b.String())
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("20060102-150405")
	md := filepath.Join(*outDir, "scale-"+stamp+".md")
	pngPath := filepath.Join(*outDir, "scale-"+stamp+".png")
	b.WriteString("\n![time to applied](" + filepath.Base(pngPath) + ")\n")
	if err := os.WriteFile(md, []byte(b.String()), 0o644); err != nil {
		return err
	}
	if err := plot(results, pngPath); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s and %s\n", md, pngPath)
	return nil
}

var palette = []color.RGBA{{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255}, {148, 103, 189, 255}, {140, 86, 75, 255}}

// plot draws p50 (solid) and p99 (dashed) time-to-applied per phase against the number of
// volumes, log-scaled on both axes, with the standard library's image packages.
func plot(results []cycleResult, path string) error {
	const W, H, left, right, top, bottom = 900, 560, 80, 200, 40, 60
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	black := color.RGBA{0, 0, 0, 255}
	grey := color.RGBA{220, 220, 220, 255}
	text := func(x, y int, s string, c color.Color) {
		d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	line := func(x0, y0, x1, y1 int, c color.Color, dashed bool) {
		dx, dy := float64(x1-x0), float64(y1-y0)
		n := int(math.Max(math.Abs(dx), math.Abs(dy)))
		for i := 0; i <= n; i++ {
			if dashed && (i/6)%2 == 1 {
				continue
			}
			t := float64(i) / math.Max(float64(n), 1)
			x, y := x0+int(dx*t), y0+int(dy*t)
			img.Set(x, y, c)
			img.Set(x, y+1, c)
		}
	}
	// Ranges.
	minN, maxN := math.Inf(1), math.Inf(-1)
	minL, maxL := math.Inf(1), math.Inf(-1)
	for _, r := range results {
		minN, maxN = math.Min(minN, float64(r.n)), math.Max(maxN, float64(r.n))
		for _, p := range r.phases {
			minL = math.Min(minL, math.Max(ms(p.p50), 1))
			maxL = math.Max(maxL, math.Max(ms(p.p99), 1))
		}
	}
	if minN == maxN {
		minN, maxN = minN/2, maxN*2
	}
	lx0, lx1 := math.Log10(minN)-0.1, math.Log10(maxN)+0.1
	ly0, ly1 := math.Floor(math.Log10(minL)), math.Ceil(math.Log10(maxL))
	if ly0 == ly1 {
		ly1++
	}
	px := func(n float64) int { return left + int((math.Log10(n)-lx0)/(lx1-lx0)*float64(W-left-right)) }
	py := func(l float64) int {
		return H - bottom - int((math.Log10(math.Max(l, 1))-ly0)/(ly1-ly0)*float64(H-top-bottom))
	}
	for e := ly0; e <= ly1; e++ {
		y := py(math.Pow(10, e))
		line(left, y, W-right, y, grey, false)
		text(10, y+4, fmt.Sprintf("%g ms", math.Pow(10, e)), black)
	}
	for _, r := range results {
		x := px(float64(r.n))
		line(x, top, x, H-bottom, grey, false)
		text(x-15, H-bottom+20, fmt.Sprintf("%d", r.n), black)
	}
	line(left, H-bottom, W-right, H-bottom, black, false)
	line(left, top, left, H-bottom, black, false)
	text(left, 25, "time from CR change to applied status vs number of volumes (p50 solid, p99 dashed)", black)
	text(W/2-60, H-15, "volumes (log)", black)
	if len(results) == 0 {
		return nil
	}
	for pi, ph := range results[0].phases {
		c := palette[pi%len(palette)]
		var prev50, prev99 [2]int
		for ri, r := range results {
			if pi >= len(r.phases) {
				continue
			}
			p := r.phases[pi]
			x := px(float64(r.n))
			cur50, cur99 := [2]int{x, py(ms(p.p50))}, [2]int{x, py(ms(p.p99))}
			for _, pt := range [][2]int{cur50, cur99} {
				for d := -3; d <= 3; d++ {
					img.Set(pt[0]+d, pt[1], c)
					img.Set(pt[0], pt[1]+d, c)
				}
			}
			if ri > 0 {
				line(prev50[0], prev50[1], cur50[0], cur50[1], c, false)
				line(prev99[0], prev99[1], cur99[0], cur99[1], c, true)
			}
			prev50, prev99 = cur50, cur99
		}
		ly := top + 20 + pi*20
		line(W-right+15, ly-4, W-right+45, ly-4, c, false)
		text(W-right+52, ly, ph.name, black)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return png.Encode(f, img)
}
