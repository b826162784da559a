//! What `GET /metrics` answers: content negotiation on `Accept` between OpenMetrics 1.0.0 and the
//! Prometheus text format 0.0.4, and the translation from the one to the other.
//!
//! prometheus-client 0.25 encodes OpenMetrics text only, and the workspace pins it (libp2p's
//! metrics build on 0.25; another version would give two `Registry` types). Clients that ask for
//! the Prometheus format, or for nothing in particular (`curl`, `promtool check metrics`), would
//! then read OpenMetrics as 0.0.4: counter families named without their `_total`, hence "no help
//! text" for every counter sample. So the 0.0.4 answer is the registry's OpenMetrics text,
//! translated line by line by [`to_text_004`]. Both formats share the sample syntax; what differs
//! is in the descriptors, exemplars, timestamps and `_created` samples.

use std::collections::HashMap;

/// The exposition formats the node serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// Prometheus text format 0.0.4: the answer unless OpenMetrics is asked for.
    Text004,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text004 => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The format for a request's `Accept` header (its values joined by commas; empty when absent).
/// OpenMetrics when the client names `application/openmetrics-text` (version 1.0.0, 0.0.1 or
/// none: the two parse alike) with a q-value at least that of the Prometheus text format; the
/// text format otherwise, wildcards and unknown types included. Prometheus 2.x sends
/// `application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,
/// text/plain;version=0.0.4;q=0.5,*/*;q=0.1`.
pub fn negotiate(accept: &str) -> Format {
    let mut openmetrics = 0.0_f32;
    // The text format's q from its most specific range: text/plain, then text/*, then */*.
    let mut text: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let (mut q, mut version) = (1.0_f32, None);
        for param in parts {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                // A malformed q disqualifies its range.
                "q" => {
                    q = v
                        .parse()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q))
                        .unwrap_or(0.0)
                }
                "version" => version = Some(v.to_owned()),
                _ => {}
            }
        }
        let specificity = match media.as_str() {
            "application/openmetrics-text" => {
                if matches!(version.as_deref(), None | Some("1.0.0" | "0.0.1")) {
                    openmetrics = openmetrics.max(q);
                }
                continue;
            }
            "text/plain" if matches!(version.as_deref(), None | Some("0.0.4")) => 3,
            "text/*" => 2,
            "*/*" => 1,
            _ => continue,
        };
        text = match text {
            Some((s, t)) if s > specificity => Some((s, t)),
            Some((s, t)) if s == specificity => Some((s, t.max(q))),
            _ => Some((specificity, q)),
        };
    }
    let text = text.map_or(0.0, |(_, q)| q);
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::Text004
    }
}

/// Translates OpenMetrics text (as prometheus-client writes it) into the Prometheus text format
/// 0.0.4:
///
/// - a counter family's `# HELP`/`# TYPE` name gets the `_total` its samples carry (0.0.4 names a
///   family by its samples), an info family's the `_info`;
/// - types 0.0.4 lacks: `unknown` → `untyped`, `info` and `stateset` → `gauge`,
///   `gaugehistogram` → `histogram` (its `_gsum`/`_gcount` → `_sum`/`_count`);
/// - `# UNIT`, `# EOF`, `_created` samples and exemplars (` # {…} value` after a sample) are
///   dropped; a sample's timestamp goes from seconds to milliseconds;
/// - HELP text is unescaped from OpenMetrics (`\\`, `\n`, `\"`) and escaped for 0.0.4 (`\\` and
///   `\n` only).
///
/// Sample lines are otherwise the same in both formats (label values escape alike).
pub fn to_text_004(openmetrics: &str) -> String {
    // Descriptors come first in a family, so the types are known before any HELP is written.
    let types: HashMap<&str, &str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    // The family the samples being read belong to, and its OpenMetrics type.
    let mut family = ("", "unknown");
    for line in openmetrics.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let (keyword, name, rest) = (
                words.next().unwrap_or(""),
                words.next().unwrap_or(""),
                words.next().unwrap_or(""),
            );
            let kind = types.get(name).copied().unwrap_or("unknown");
            match keyword {
                "HELP" => {
                    family = (name, kind);
                    let help = escape_help_004(&unescape_openmetrics(rest));
                    out.push_str(&format!("# HELP {} {help}\n", family_name(name, kind)));
                }
                "TYPE" => {
                    family = (name, kind);
                    let kind_004 = match kind {
                        "unknown" => "untyped",
                        "info" | "stateset" => "gauge",
                        "gaugehistogram" => "histogram",
                        other => other,
                    };
                    out.push_str(&format!("# TYPE {} {kind_004}\n", family_name(name, kind)));
                }
                // UNIT, EOF: nothing in 0.0.4.
                _ => {}
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if let Some(sample) = sample_004(line, family) {
            out.push_str(&sample);
            out.push('\n');
        }
    }
    out
}

/// A family's name in 0.0.4: what its samples are called.
fn family_name(name: &str, kind: &str) -> String {
    match kind {
        "counter" => format!("{name}_total"),
        "info" => format!("{name}_info"),
        _ => name.to_owned(),
    }
}

/// One sample line in 0.0.4, or None for a sample 0.0.4 does not have (`_created`).
fn sample_004(line: &str, (family, kind): (&str, &str)) -> Option<String> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let labels_end = if line[name_end..].starts_with('{') {
        name_end + label_set_len(&line[name_end..])
    } else {
        name_end
    };
    let labels = &line[name_end..labels_end];
    let suffix = name.strip_prefix(family).unwrap_or("");
    let name = match (kind, suffix) {
        ("counter" | "histogram" | "summary" | "gaugehistogram", "_created") => return None,
        ("gaugehistogram", "_gsum") => format!("{family}_sum"),
        ("gaugehistogram", "_gcount") => format!("{family}_count"),
        _ => name.to_owned(),
    };
    // What follows the labels: ` value [timestamp] [# exemplar]`. A `#` here cannot be inside a
    // label value any more.
    let rest = line[labels_end..].split('#').next().unwrap_or("");
    let mut fields = rest.split_whitespace();
    let value = fields.next()?;
    let mut sample = format!("{name}{labels} {value}");
    if let Some(ts) = fields.next().and_then(|t| t.parse::<f64>().ok()) {
        sample.push_str(&format!(" {}", (ts * 1000.0).round() as i64));
    }
    Some(sample)
}

/// Length of the label set `{…}` at the start of `s`, quotes and escapes respected (a label value
/// may hold `}`, `#` or spaces).
fn label_set_len(s: &str) -> usize {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return i + 1,
            _ => {}
        }
    }
    s.len()
}

/// OpenMetrics escapes in a descriptor: `\\`, `\n`, `\"`; anything else stays as written.
fn unescape_openmetrics(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(c @ ('\\' | '"')) => out.push(c),
            Some(c) => {
                out.push('\\');
                out.push(c);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// 0.0.4 HELP escapes `\` and line feeds only (a `\"` would be read as two characters).
fn escape_help_004(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::{Registry, Unit};

    const PROMETHEUS_2: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn openmetrics_only_when_asked_for_at_least_as_much_as_text() {
        use Format::*;
        for (accept, want) in [
            ("", Text004),
            ("*/*", Text004),
            ("text/plain", Text004),
            ("text/plain;version=0.0.4", Text004),
            ("application/json", Text004),
            (PROMETHEUS_2, OpenMetrics),
            // Prometheus 3.x: OpenMetrics first, its own text format 1.0.0 (not ours) later.
            (
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                OpenMetrics,
            ),
            ("application/openmetrics-text", OpenMetrics),
            (
                "Application/OpenMetrics-Text ; Version=\"1.0.0\"",
                OpenMetrics,
            ),
            (
                "application/openmetrics-text;version=0.0.1;q=0.75,*/*;q=0.1",
                OpenMetrics,
            ),
            // Equal q: OpenMetrics.
            (
                "text/plain;q=0.5, application/openmetrics-text;q=0.5",
                OpenMetrics,
            ),
            (
                "application/openmetrics-text;q=0.3,text/plain;version=0.0.4;q=0.5",
                Text004,
            ),
            // The most specific range decides text's q: text/plain at 0.2 beats */* at 1.
            (
                "*/*,text/plain;q=0.2,application/openmetrics-text;q=0.4",
                OpenMetrics,
            ),
            ("text/*;q=0.9,application/openmetrics-text;q=0.4", Text004),
            ("application/openmetrics-text;q=0", Text004),
            ("application/openmetrics-text;q=x", Text004),
            ("application/openmetrics-text;version=2.0.0", Text004),
            ("application/*", Text004),
        ] {
            assert_eq!(negotiate(accept), want, "{accept}");
        }
    }

    #[test]
    fn the_registry_translates_to_the_prometheus_text_format() {
        let mut r = Registry::default();
        let sub = r.sub_registry_with_prefix("x");
        let c = Counter::<u64>::default();
        c.inc_by(3);
        sub.register("requests", "Requests served", c);
        let f = Family::<[(&str, &str); 1], Counter>::default();
        f.get_or_create(&[("kind", "a b}#\"c")]).inc();
        sub.register_with_unit("sent", "Bytes sent", Unit::Bytes, f);
        let g = Gauge::<i64>::default();
        g.set(-2);
        sub.register("depth", "Queue depth", g);
        let h = Histogram::new([0.5]);
        h.observe(0.25);
        sub.register_with_unit("rtt", "Round trips", Unit::Seconds, h);
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &r).unwrap();
        assert!(om.contains("# UNIT x_rtt_seconds seconds\n") && om.ends_with("# EOF\n"));
        assert_eq!(
            to_text_004(&om),
            "# HELP x_requests_total Requests served.\n\
             # TYPE x_requests_total counter\n\
             x_requests_total 3\n\
             # HELP x_sent_bytes_total Bytes sent.\n\
             # TYPE x_sent_bytes_total counter\n\
             x_sent_bytes_total{kind=\"a b}#\\\"c\"} 1\n\
             # HELP x_depth Queue depth.\n\
             # TYPE x_depth gauge\n\
             x_depth -2\n\
             # HELP x_rtt_seconds Round trips.\n\
             # TYPE x_rtt_seconds histogram\n\
             x_rtt_seconds_sum 0.25\n\
             x_rtt_seconds_count 1\n\
             x_rtt_seconds_bucket{le=\"0.5\"} 1\n\
             x_rtt_seconds_bucket{le=\"+Inf\"} 1\n"
        );
    }

    #[test]
    fn what_0_0_4_lacks_is_renamed_converted_or_dropped() {
        let om = "# HELP a_seconds A \\\"quoted\\\" back\\\\slash\\nnewline.\n\
                  # TYPE a_seconds counter\n\
                  # UNIT a_seconds seconds\n\
                  a_seconds_total{k=\"v # {x}\"} 2.5 # {trace=\"1\"} 0.5 1700000000.5\n\
                  a_seconds_created 1700000000.25\n\
                  # HELP b Build.\n\
                  # TYPE b info\n\
                  b_info{version=\"1\"} 1\n\
                  # TYPE c unknown\n\
                  c 7 1700000000.001\n\
                  # TYPE d stateset\n\
                  d{d=\"on\"} 1\n\
                  # TYPE e gaugehistogram\n\
                  e_bucket{le=\"+Inf\"} 4\n\
                  e_gcount 4\n\
                  e_gsum 9\n\
                  # TYPE f histogram\n\
                  f_count 1\n\
                  f_created 1.5\n\
                  # EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP a_seconds_total A \"quoted\" back\\\\slash\\nnewline.\n\
             # TYPE a_seconds_total counter\n\
             a_seconds_total{k=\"v # {x}\"} 2.5\n\
             # HELP b_info Build.\n\
             # TYPE b_info gauge\n\
             b_info{version=\"1\"} 1\n\
             # TYPE c untyped\n\
             c 7 1700000000001\n\
             # TYPE d gauge\n\
             d{d=\"on\"} 1\n\
             # TYPE e histogram\n\
             e_bucket{le=\"+Inf\"} 4\n\
             e_count 4\n\
             e_sum 9\n\
             # TYPE f histogram\n\
             f_count 1\n"
        );
    }
}
