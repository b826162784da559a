//! Checks on a rendered chart SVG, as a reader would see it: every label inside the picture and
//! large enough to read, the legend beside the plot rather than on it, and a y-axis that spans
//! the data. Used by the report's tests and by the run tests on a real run's `charts/`.
//!
//! Hand-rolled: the SVG is plotters' own flat output (no transforms, nesting or CSS), and these
//! questions need only its `<text>` and `<polyline>` elements, not a general SVG renderer.

/// A `<text>` element: its anchor point, alignment, font size and content.
#[derive(Clone, Debug, PartialEq)]
pub struct SvgText {
    pub x: f64,
    pub y: f64,
    /// `start`, `middle` or `end`.
    pub anchor: String,
    pub size: f64,
    pub text: String,
    /// Set on its side (`rotate(90…)`/`rotate(270…)` about its anchor, as plotters does the
    /// y-axis description): its extent is then vertical. 270 turns the text's "down" to +x.
    pub rotate: Option<i32>,
    /// The baseline's shift (`dy`), in em (an ex taken as half an em).
    pub dy_em: f64,
}

impl SvgText {
    /// The glyph box's top and bottom relative to `y` before any rotation: ascent 0.76 em above
    /// the baseline, descent 0.24 em below (sans-serif's proportions, as plotters assumes).
    fn across(&self) -> (f64, f64) {
        (
            (self.dy_em - 0.76) * self.size,
            (self.dy_em + 0.24) * self.size,
        )
    }

    /// The box it covers: (x0, x1, y0, y1).
    pub fn bounds(&self) -> (f64, f64, f64, f64) {
        let (l, r) = self.extent();
        let (top, bottom) = self.across();
        match self.rotate {
            // Text runs up the page, its "down" to the right, centred on y like on x.
            Some(270) => (
                self.x + top,
                self.x + bottom,
                self.y - (r - self.x),
                self.y - (l - self.x),
            ),
            Some(90) => (
                self.x - bottom,
                self.x - top,
                self.y + (l - self.x),
                self.y + (r - self.x),
            ),
            _ => (l, r, self.y + top, self.y + bottom),
        }
    }

    /// Horizontal extent, estimated at 0.6 em per character (sans-serif digits and lower case are
    /// narrower; this errs towards calling a label clipped).
    pub fn extent(&self) -> (f64, f64) {
        let w = self.text.chars().count() as f64 * self.size * 0.6;
        match self.anchor.as_str() {
            "middle" => (self.x - w / 2.0, self.x + w / 2.0),
            "end" => (self.x - w, self.x),
            _ => (self.x, self.x + w),
        }
    }
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let i = tag.find(&key)? + key.len();
    let j = tag[i..].find('"')? + i;
    Some(tag[i..j].to_owned())
}

fn num(tag: &str, name: &str) -> Option<f64> {
    attr(tag, name)?.trim_end_matches("px").parse().ok()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The picture's size, from the root element.
pub fn size(svg: &str) -> Option<(f64, f64)> {
    let end = svg.find('>')?;
    let root = &svg[..end];
    Some((num(root, "width")?, num(root, "height")?))
}

/// Every `<text>` of the SVG.
pub fn texts(svg: &str) -> Vec<SvgText> {
    let mut out = vec![];
    let mut rest = svg;
    while let Some(i) = rest.find("<text") {
        rest = &rest[i..];
        let Some(open_end) = rest.find('>') else {
            break;
        };
        let tag = &rest[..open_end];
        let Some(close) = rest.find("</text>") else {
            break;
        };
        let text = unescape(rest[open_end + 1..close].trim());
        if let (Some(x), Some(y)) = (num(tag, "x"), num(tag, "y")) {
            out.push(SvgText {
                x,
                y,
                anchor: attr(tag, "text-anchor").unwrap_or_else(|| "start".to_owned()),
                size: num(tag, "font-size").unwrap_or(0.0),
                text,
                rotate: attr(tag, "transform").and_then(|t| {
                    let a = t.strip_prefix("rotate(")?;
                    a[..a.find([',', ')'])?].trim().parse().ok()
                }),
                dy_em: attr(tag, "dy").map_or(0.0, |d| {
                    let em =
                        |u: &str, k: f64| d.strip_suffix(u)?.parse::<f64>().ok().map(|v| v * k);
                    em("em", 1.0).or_else(|| em("ex", 0.5)).unwrap_or(0.0)
                }),
            });
        }
        rest = &rest[close..];
    }
    out
}

/// Every `<polyline>`'s points.
pub fn polylines(svg: &str) -> Vec<Vec<(f64, f64)>> {
    let mut out = vec![];
    let mut rest = svg;
    while let Some(i) = rest.find("<polyline") {
        rest = &rest[i..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        if let Some(points) = attr(tag, "points") {
            out.push(
                points
                    .split_whitespace()
                    .filter_map(|p| {
                        let (x, y) = p.split_once(',')?;
                        Some((x.parse().ok()?, y.parse().ok()?))
                    })
                    .collect(),
            );
        }
        rest = &rest[end..];
    }
    out
}

/// The y-axis tick labels' values: right-aligned numbers (plotters aligns y labels to the axis;
/// legend labels are left-aligned, x labels centred).
pub fn y_ticks(svg: &str) -> Vec<f64> {
    texts(svg)
        .iter()
        .filter(|t| t.anchor == "end")
        .filter_map(|t| t.text.trim().parse().ok())
        .collect()
}

/// What is wrong with a chart as a reader sees it; empty when nothing is. `legend` names labels
/// that belong to the legend (node names, say): each must sit right of every data line and of the
/// x-axis labels, i.e. outside the plot area. `data` is the y range of the chart's data, whose
/// ticks must cover it and not stray far from it (an axis from zero flattens data far from it).
pub fn problems(svg: &str, legend: &[&str], data: Option<(f64, f64)>) -> Vec<String> {
    let mut out = vec![];
    let Some((w, h)) = size(svg) else {
        return vec!["no width and height on the root element".to_owned()];
    };
    let texts = texts(svg);
    for t in &texts {
        if t.size < 12.0 {
            out.push(format!("{:?} is set in {} px (under 12)", t.text, t.size));
        }
        let (x0, x1, y0, y1) = t.bounds();
        if x0 < 0.0 || x1 > w || y0 < 0.0 || y1 > h {
            out.push(format!(
                "{:?} is clipped: spans x {x0:.0}–{x1:.0}, y {y0:.0}–{y1:.0} in {w}×{h}",
                t.text
            ));
        }
    }
    // The plot's right edge: the furthest data point (lines of more than two points; legend
    // swatches have two) and the furthest x-axis label (centred on its tick).
    let data_right = polylines(svg)
        .iter()
        .filter(|p| p.len() > 2)
        .flat_map(|p| p.iter().map(|q| q.0))
        .fold(0.0f64, f64::max);
    let axis_right = texts
        .iter()
        .filter(|t| t.anchor == "middle" && t.rotate.is_none())
        .map(|t| t.x)
        .fold(0.0f64, f64::max);
    let plot_right = data_right.max(axis_right);
    for name in legend {
        match texts.iter().find(|t| t.text.starts_with(name)) {
            None => out.push(format!("legend entry {name:?} is missing")),
            Some(t) if t.extent().0 <= plot_right => out.push(format!(
                "legend entry {name:?} at x {:.0} is inside the plot (right edge {plot_right:.0})",
                t.x
            )),
            Some(_) => {}
        }
    }
    if let Some((lo, hi)) = data {
        let ticks = y_ticks(svg);
        let (tlo, thi) = ticks
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &t| {
                (a.min(t), b.max(t))
            });
        let span = (hi - lo).max(hi.abs().max(lo.abs()) * 0.15).max(1e-9);
        if ticks.len() < 2 {
            out.push(format!("{} y tick labels", ticks.len()));
        } else if tlo < lo - span || thi > hi + span {
            out.push(format!(
                "y ticks {tlo}–{thi} stray from the data {lo}–{hi}: the axis does not follow it"
            ));
        } else if thi - tlo < (hi - lo) * 0.5 {
            out.push(format!(
                "y ticks {tlo}–{thi} cover too little of the data {lo}–{hi}"
            ));
        }
    }
    out
}
