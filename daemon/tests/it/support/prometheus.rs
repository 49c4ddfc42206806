//! A strict reader of the Prometheus text exposition format (0.0.4), for `GET /metrics`: it
//! refuses what a lenient scraper would skip (a sample before its family's `# TYPE`, a family's
//! samples apart, the same series twice, a counter below zero, bad escapes in label values,
//! histograms whose buckets are not cumulative or whose `+Inf` bucket is not `_count`), so that a
//! test reading it also proves the exposition well-formed. (The `prometheus-parse` crate was
//! weighed: it splits labels on `,` and `=` without escapes, skips lines it cannot read, and keeps
//! one histogram per name whatever its labels, so it could not check any of that.)

use std::collections::{BTreeMap, BTreeSet};

/// A strictly read Prometheus text exposition (format 0.0.4).
#[derive(Debug, Default)]
pub struct Exposition {
    /// Family name → type.
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub family: String,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// A sample value: a float in Go's syntax, `+Inf`, `-Inf` or `NaN`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if text.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')) => text.parse().ok(),
        _ => None,
    }
}

/// `{name="value",...}` at the start of `text`; returns the labels and the rest.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{').ok_or("expected '{'")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest.split_once("=\"").ok_or("expected name=\"value\"")?;
        if !is_label_name(name) {
            return Err(format!("{name:?} is not a label name"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) | None => return Err("unterminated label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} given twice"));
        }
        rest = &after[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// The family a sample name belongs to: itself, or a histogram's `_bucket`, `_sum`, `_count`.
fn family_of(name: &str, types: &BTreeMap<String, String>) -> Option<String> {
    if let Some(kind) = types.get(name) {
        return (kind != "histogram" && kind != "summary").then(|| name.to_owned());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        match types.get(base).map(String::as_str) {
            Some("histogram") => Some(base.to_owned()),
            Some("summary") if *suffix != "_bucket" => Some(base.to_owned()),
            _ => None,
        }
    })
}

pub fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut exposition = Exposition::default();
    let mut helped = BTreeSet::new();
    let mut done_families = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series = BTreeSet::new();
    if !text.ends_with('\n') {
        return Err("the exposition does not end with a line feed".into());
    }
    for (number, line) in text.lines().enumerate() {
        let fail = |why: String| format!("line {}: {why}: {line:?}", number + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match words.next() {
                Some("HELP") => {
                    let name = words.next().ok_or_else(|| fail("HELP without a name".into()))?;
                    if !is_metric_name(name) || !helped.insert(name.to_owned()) {
                        return Err(fail("a bad or repeated HELP".into()));
                    }
                }
                Some("TYPE") => {
                    let name = words.next().ok_or_else(|| fail("TYPE without a name".into()))?;
                    let kind = words.next().unwrap_or_default();
                    if !is_metric_name(name) {
                        return Err(fail(format!("{name:?} is not a metric name")));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(fail(format!("unknown type {kind:?}")));
                    }
                    if exposition.samples.iter().any(|s| s.family == name) || done_families.contains(name) {
                        return Err(fail("TYPE after the family's samples".into()));
                    }
                    if exposition.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(fail("a second TYPE for the family".into()));
                    }
                }
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| fail("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(fail(format!("{name:?} is not a metric name")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(&fail)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields =
            rest.strip_prefix(' ').ok_or_else(|| fail("expected one space before the value".into()))?.split(' ');
        let value = fields.next().and_then(parse_value).ok_or_else(|| fail("the value is not a float".into()))?;
        if let Some(timestamp) = fields.next() {
            timestamp.parse::<i64>().map_err(|_| fail("the timestamp is not an integer".into()))?;
        }
        if fields.next().is_some() {
            return Err(fail("more than a value and a timestamp".into()));
        }
        let family =
            family_of(name, &exposition.types).ok_or_else(|| fail("no # TYPE declares its family before it".into()))?;
        if current.as_deref() != Some(family.as_str()) {
            if done_families.contains(&family) {
                return Err(fail(format!("the samples of {family} are not together")));
            }
            done_families.extend(current.replace(family.clone()));
        }
        if !series.insert((name.to_owned(), labels.clone().into_iter().collect::<Vec<_>>())) {
            return Err(fail("the same series twice".into()));
        }
        let kind = exposition.types[&family].as_str();
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(fail("a counter below zero".into()));
        }
        if name.ends_with("_bucket") && !labels.contains_key("le") {
            return Err(fail("a bucket without le".into()));
        }
        exposition.samples.push(Sample { name: name.to_owned(), labels, value, family });
    }
    check_histograms(&exposition)?;
    Ok(exposition)
}

/// A series' labels but `le`, in order: one histogram of a family.
type LabelPairs = Vec<(String, String)>;

/// Buckets in increasing `le`, cumulative, ending with `+Inf` equal to `_count`; `_sum` present.
fn check_histograms(exposition: &Exposition) -> Result<(), String> {
    for (family, _) in exposition.types.iter().filter(|(_, kind)| *kind == "histogram") {
        let of = |suffix: &str| -> Vec<&Sample> {
            exposition.samples.iter().filter(|s| s.name == format!("{family}{suffix}")).collect()
        };
        let mut groups: BTreeMap<LabelPairs, Vec<(f64, f64)>> = BTreeMap::new();
        for bucket in of("_bucket") {
            let le =
                parse_value(&bucket.labels["le"]).ok_or_else(|| format!("{family}: le {:?}", bucket.labels["le"]))?;
            let rest = bucket.labels.iter().filter(|(k, _)| *k != "le").map(|(k, v)| (k.clone(), v.clone()));
            groups.entry(rest.collect()).or_default().push((le, bucket.value));
        }
        if groups.is_empty() {
            return Err(format!("{family}: a histogram without buckets"));
        }
        for (labels, buckets) in groups {
            for pair in buckets.windows(2) {
                if pair[1].0 <= pair[0].0 {
                    return Err(format!("{family}{labels:?}: le not increasing: {buckets:?}"));
                }
                if pair[1].1 < pair[0].1 {
                    return Err(format!("{family}{labels:?}: buckets not cumulative: {buckets:?}"));
                }
            }
            let (last_le, last_count) = *buckets.last().expect("a bucket");
            if last_le != f64::INFINITY {
                return Err(format!("{family}{labels:?}: no +Inf bucket"));
            }
            let same = |s: &&Sample| s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>() == labels;
            let count = of("_count").into_iter().find(same).ok_or_else(|| format!("{family}{labels:?}: no _count"))?;
            if count.value != last_count {
                return Err(format!("{family}{labels:?}: +Inf {last_count} but _count {}", count.value));
            }
            of("_sum").into_iter().find(same).ok_or_else(|| format!("{family}{labels:?}: no _sum"))?;
        }
    }
    Ok(())
}

impl Exposition {
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == labels).map(|s| s.value)
    }

    pub fn sum(&self, name: &str) -> f64 {
        self.samples.iter().filter(|s| s.name == name).map(|s| s.value).sum()
    }
}

#[test]
fn the_exposition_reader_is_strict() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n# TYPE h histogram\n\
                h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
    let parsed = parse_exposition(good).expect("valid");
    assert_eq!(parsed.value("a_total", &[("x", "1")]), Some(2.0));
    for (bad, why) in [
        ("a_total 1\n", "no # TYPE"),
        ("# TYPE a counter\na one\n", "not a float"),
        ("# TYPE a counter\na{x=\"1} 1\n", "unterminated"),
        ("# TYPE a counter\na{x=\"1\",x=\"2\"} 1\n", "twice"),
        ("# TYPE a counter\na  1\n", "not a float"),
        ("# TYPE a counter\n# TYPE a gauge\na 1\n", "second TYPE"),
        ("# TYPE a counter\na -1\n", "below zero"),
        ("# TYPE a counter\n# TYPE b gauge\na 1\nb 1\na{x=\"y\"} 1\n", "not together"),
        ("# TYPE a counter\na 1\na 2\n", "same series"),
        ("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", "cumulative"),
        ("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", "_count"),
        ("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", "+Inf"),
        ("# TYPE a counter\na 1", "line feed"),
    ] {
        let error = parse_exposition(bad).expect_err(bad);
        assert!(error.contains(why), "{bad:?}: {error}");
    }
}
