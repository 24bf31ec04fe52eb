package main

import (
	"fmt"
	"html"
	"math"
	"os"
	"strings"
)

// Hand-written SVG charts: a strip plot of a latency distribution per
// contender, and a line chart of a measure against offered load. No
// dependency, and the files diff well.

// palette gives each contender the same colour in every chart.
var palette = map[string]string{
	"reqpool":   "#1f77b4",
	"errgroup":  "#7f7f7f",
	"semaphore": "#ff7f0e",
	"pond":      "#2ca02c",
	"ants":      "#9467bd",
}

// dashes gives each contender its own stroke pattern, so that two lines
// that coincide (semaphore and pond are both FIFO) both stay visible.
var dashes = map[string]string{
	"errgroup":  "7,3",
	"semaphore": "2,3",
	"ants":      "9,3,2,3",
}

func colour(name string) string {
	if c, ok := palette[name]; ok {
		return c
	}
	return "#17becf"
}

// svgDoc accumulates an SVG document.
type svgDoc struct {
	b    strings.Builder
	w, h float64
}

func newSVG(w, h float64) *svgDoc {
	d := &svgDoc{w: w, h: h}
	fmt.Fprintf(&d.b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" `+
		`font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&d.b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	return d
}

func (d *svgDoc) line(x1, y1, x2, y2 float64, stroke string, width float64, extra string) {
	fmt.Fprintf(&d.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%.1f" %s/>`+"\n",
		x1, y1, x2, y2, stroke, width, extra)
}

func (d *svgDoc) text(x, y float64, anchor, s, extra string) {
	fmt.Fprintf(&d.b, `<text x="%.1f" y="%.1f" text-anchor="%s" %s>%s</text>`+"\n", x, y, anchor, extra, html.EscapeString(s))
}

func (d *svgDoc) circle(x, y, r float64, fill string, opacity float64) {
	fmt.Fprintf(&d.b, `<circle cx="%.1f" cy="%.1f" r="%.1f" fill="%s" fill-opacity="%.2f"/>`+"\n", x, y, r, fill, opacity)
}

func (d *svgDoc) write(path string) error {
	d.b.WriteString("</svg>\n")
	return os.WriteFile(path, []byte(d.b.String()), 0o644)
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// niceFloor rounds v down to 1, 2 or 5 times a power of ten.
func niceFloor(v float64) float64 {
	if v <= 0 || math.IsNaN(v) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{5, 2, 1} {
		if m*p <= v {
			return m * p
		}
	}
	return p
}

// stripRow is one contender's values in a strip chart.
type stripRow struct {
	Name     string
	Values   []float64
	P50, P95 float64
	// Palette, when set, names the contender whose colour the row takes;
	// otherwise Name does.
	Palette string
	// Note, when set, is written in the row: what has no dot, such as
	// requests refused.
	Note string
}

// stripChart shows each row's values as dots along a linear or
// logarithmic x axis, with ticks at the row's p50 and p95 and an optional
// vertical mark (a goal).
type stripChart struct {
	Title, XLabel string
	Rows          []stripRow
	Mark          float64 // x of the mark; 0 for none
	MarkLabel     string
	LogX          bool // a logarithmic x axis; every value must be above 0
}

func writeStripChart(path string, c stripChart) error {
	const (
		right, top, rowH, bottom = 30.0, 50.0, 46.0, 60.0
		width                    = 820.0
	)
	left := 100.0 // wider for long row names, at about 7 px a bold character
	for _, r := range c.Rows {
		left = max(left, 7*float64(len([]rune(r.Name)))+20)
	}
	height := top + rowH*float64(len(c.Rows)) + bottom
	d := newSVG(width, height)
	xmax := c.Mark
	for _, r := range c.Rows {
		if len(r.Values) > 0 { // max with maxOf's NaN for none would be NaN
			xmax = max(xmax, maxOf(r.Values))
		}
	}
	xmax = niceCeil(xmax * 1.05)
	plotW := width - left - right
	x := func(v float64) float64 { return left + v/xmax*plotW }
	var xticks []float64
	if c.LogX {
		// Bounds and ticks on the 1-2-5 series around the data.
		xmin := math.Inf(1)
		if c.Mark > 0 {
			xmin = c.Mark
		}
		for _, r := range c.Rows {
			for _, v := range r.Values {
				if v > 0 {
					xmin = min(xmin, v)
				}
			}
		}
		lo, hi := math.Log10(niceFloor(0.9*xmin)), math.Log10(xmax) // room for the dots at xmin
		if hi <= lo {
			hi = lo + 1
		}
		x = func(v float64) float64 { return left + (math.Log10(v)-lo)/(hi-lo)*plotW }
		for e := math.Floor(lo); e <= hi; e++ {
			for _, m := range []float64{1, 2, 5} {
				if v := m * math.Pow(10, e); math.Log10(v) >= lo-1e-9 && math.Log10(v) <= hi+1e-9 {
					xticks = append(xticks, v)
				}
			}
		}
	} else {
		step := niceCeil(xmax / 8)
		for v := 0.0; v <= xmax+step/1e6; v += step {
			xticks = append(xticks, v)
		}
	}
	plotBottom := top + rowH*float64(len(c.Rows))

	d.text(width/2, 24, "middle", c.Title, `font-size="14" font-weight="bold"`)
	// Grid and x axis.
	for _, v := range xticks {
		d.line(x(v), top, x(v), plotBottom, "#e5e5e5", 1, "")
		d.text(x(v), plotBottom+16, "middle", trimFloat(v), "")
	}
	d.line(left, plotBottom, width-right, plotBottom, "#333", 1, "")
	d.text(left+plotW/2, plotBottom+40, "middle", c.XLabel, "")

	for i, r := range c.Rows {
		y0 := top + rowH*float64(i)
		yc := y0 + rowH/2
		d.text(left-10, yc+4, "end", r.Name, `font-weight="bold"`)
		if i > 0 {
			d.line(left, y0, width-right, y0, "#f0f0f0", 1, "")
		}
		col := colour(r.Name)
		if r.Palette != "" {
			col = colour(r.Palette)
		}
		for j, v := range r.Values {
			// Deterministic jitter, so that equal values stay visible and
			// the file is the same for the same data.
			jit := (float64((j*7919)%17)/16 - 0.5) * rowH * 0.55
			d.circle(x(v), yc+jit, 3, col, 0.45)
		}
		if r.Note != "" {
			d.text(width-right-4, y0+14, "end", r.Note, `fill="#d62728"`)
		}
		if !math.IsNaN(r.P50) {
			d.line(x(r.P50), yc-rowH*0.42, x(r.P50), yc+rowH*0.42, "#000", 2, "")
		}
		if !math.IsNaN(r.P95) {
			d.line(x(r.P95)-1.5, yc-rowH*0.42, x(r.P95)-1.5, yc+rowH*0.42, "#000", 1, "")
			d.line(x(r.P95)+1.5, yc-rowH*0.42, x(r.P95)+1.5, yc+rowH*0.42, "#000", 1, "")
		}
	}
	if c.Mark > 0 {
		d.line(x(c.Mark), top-6, x(c.Mark), plotBottom, "#d62728", 1.5, `stroke-dasharray="5,4"`)
		d.text(x(c.Mark)+4, top-8, "start", c.MarkLabel, `fill="#d62728"`)
	}
	return d.write(path)
}

// lineSeries is one contender's points in a line chart.
type lineSeries struct {
	Name string
	X, Y []float64
}

// lineChart plots series against a linear x axis and a linear or
// logarithmic y axis, with a legend.
type lineChart struct {
	Title, XLabel, YLabel string
	Series                []lineSeries
	LogY                  bool
}

func writeLineChart(path string, c lineChart) error {
	const (
		left, right, top, bottom = 80.0, 150.0, 50.0, 60.0
		width, height            = 820.0, 460.0
	)
	d := newSVG(width, height)
	xmin, xmax := math.Inf(1), math.Inf(-1)
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for _, s := range c.Series {
		for i := range s.X {
			if math.IsNaN(s.Y[i]) || (c.LogY && s.Y[i] <= 0) {
				continue
			}
			xmin, xmax = min(xmin, s.X[i]), max(xmax, s.X[i])
			ymin, ymax = min(ymin, s.Y[i]), max(ymax, s.Y[i])
		}
	}
	if math.IsInf(xmin, 0) {
		xmin, xmax, ymin, ymax = 0, 1, 1, 10
	}
	if xmax == xmin {
		xmax = xmin + 1
	}
	pad := (xmax - xmin) * 0.05
	xmin, xmax = xmin-pad, xmax+pad
	plotW, plotH := width-left-right, height-top-bottom
	x := func(v float64) float64 { return left + (v-xmin)/(xmax-xmin)*plotW }
	var y func(float64) float64
	var yticks []float64
	if c.LogY {
		// Bounds and ticks on the 1-2-5 series around the data.
		lo, hi := math.Log10(niceFloor(ymin)), math.Log10(niceCeil(ymax))
		if hi <= lo {
			hi = lo + 1
		}
		y = func(v float64) float64 { return top + plotH - (math.Log10(v)-lo)/(hi-lo)*plotH }
		for e := math.Floor(lo); e <= hi; e++ {
			for _, m := range []float64{1, 2, 5} {
				if v := m * math.Pow(10, e); math.Log10(v) >= lo-1e-9 && math.Log10(v) <= hi+1e-9 {
					yticks = append(yticks, v)
				}
			}
		}
	} else {
		hi := niceCeil(ymax * 1.05)
		y = func(v float64) float64 { return top + plotH - v/hi*plotH }
		for v := 0.0; v <= hi+1e-9; v += hi / 5 {
			yticks = append(yticks, v)
		}
	}

	d.text(width/2, 24, "middle", c.Title, `font-size="14" font-weight="bold"`)
	for _, v := range yticks {
		d.line(left, y(v), left+plotW, y(v), "#e5e5e5", 1, "")
		d.text(left-8, y(v)+4, "end", trimFloat(v), "")
	}
	seen := map[float64]bool{}
	for _, s := range c.Series {
		for _, v := range s.X {
			if !seen[v] {
				seen[v] = true
				d.line(x(v), top, x(v), top+plotH, "#f0f0f0", 1, "")
				d.text(x(v), top+plotH+16, "middle", trimFloat(v), "")
			}
		}
	}
	d.line(left, top+plotH, left+plotW, top+plotH, "#333", 1, "")
	d.line(left, top, left, top+plotH, "#333", 1, "")
	d.text(left+plotW/2, top+plotH+40, "middle", c.XLabel, "")
	d.text(18, top+plotH/2, "middle", c.YLabel, fmt.Sprintf(`transform="rotate(-90 18 %.1f)"`, top+plotH/2))

	// Solid lines first, dashed ones over them, reqpool last, on top; the
	// legend keeps the series' order.
	rank := func(name string) int {
		switch _, dashed := dashes[name]; {
		case name == "reqpool":
			return 2
		case dashed:
			return 1
		}
		return 0
	}
	order := make([]int, 0, len(c.Series))
	for r := range 3 {
		for i, s := range c.Series {
			if rank(s.Name) == r {
				order = append(order, i)
			}
		}
	}
	for _, i := range order {
		s := c.Series[i]
		var pts []string
		for j := range s.X {
			if math.IsNaN(s.Y[j]) || (c.LogY && s.Y[j] <= 0) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.X[j]), y(s.Y[j])))
		}
		col := colour(s.Name)
		width := 2.0
		if s.Name == "reqpool" {
			width = 3
		}
		dash := ""
		if p, ok := dashes[s.Name]; ok {
			dash = fmt.Sprintf(`stroke-dasharray="%s"`, p)
		}
		fmt.Fprintf(&d.b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="%.1f" %s/>`+"\n",
			strings.Join(pts, " "), col, width, dash)
		for _, p := range pts {
			var px, py float64
			fmt.Sscanf(p, "%f,%f", &px, &py)
			d.circle(px, py, 4, col, 1)
		}
		ly := top + 10 + float64(i)*22
		d.line(left+plotW+16, ly, left+plotW+40, ly, col, width, dash)
		d.circle(left+plotW+28, ly, 4, col, 1)
		d.text(left+plotW+48, ly+4, "start", s.Name, "")
	}
	return d.write(path)
}

// trimFloat formats an axis value without needless decimals.
func trimFloat(v float64) string {
	if v == math.Trunc(v) {
		return fmtInt(int64(v))
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}
