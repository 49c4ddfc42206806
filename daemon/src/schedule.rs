//! The full-resync schedule (`resync` in `remedy.yaml`): a cron expression, evaluated in UTC.
//!
//! File events get lost, so the daemon also reconciles on a schedule (level-triggered: a resync
//! re-reads everything, whatever the events said). Expressions are read by the `cron` crate, with
//! two conveniences on top. Accepted forms:
//!
//! - **6 or 7 fields**, seconds first: `sec min hour day-of-month month day-of-week [year]`, e.g.
//!   `0 */5 * * * *` (every five minutes, the default) or `0 30 2 * * MON-FRI`. In this form
//!   **day-of-week counts from 1 = Sunday to 7 = Saturday** (as Quartz does, and unlike classic
//!   crontab, where 0 = Sunday and 1 = Monday): `0 0 9 * * 2-6` is Monday to Friday, and `0` is an
//!   error. Names avoid the question: `SUN`, `MON`, `TUE`, `WED`, `THU`, `FRI`, `SAT` (also `Tues`,
//!   `Thurs` and the full English names; any case), alone, in ranges (`MON-FRI`) and in lists
//!   (`MON,WED,FRI`). Months take names too (`JAN`...`DEC`).
//! - **A standard 5-field crontab line**, `min hour day-of-month month day-of-week`, e.g.
//!   `*/5 * * * *`: it runs at second 0, and its day-of-week numbers keep their crontab meaning
//!   (0 or 7 = Sunday, 1 = Monday ... 6 = Saturday) — they are translated, not passed on as they
//!   are, so `0 9 * * 1-5` is Monday to Friday in both forms' sense of the words.
//! - `@hourly`, `@daily`, `@weekly` (Sunday 00:00), `@monthly`, `@yearly`.
//!
//! Field syntax: `*`, `?` (day fields only, same as `*`), numbers, ranges `a-b`, lists `a,b`, steps
//! `*/n` and `a-b/n`. Not supported: `L`, `W`, `#`. When both day-of-month and day-of-week are
//! restricted, a time must match **both** (classic cron takes either).
//!
//! Times are UTC, always: there is no time zone setting, so a schedule never skips or repeats a
//! firing across a daylight-saving change — `0 30 2 * * *` fires every 24 hours, which is 03:30 in
//! Berlin in winter and 04:30 in summer.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The longest single sleep of [`ResyncSchedule::sleep_until_next`]: the wall clock is looked at
/// again at least this often, so a clock stepped forward (NTP, a resumed VM) delays a firing by at
/// most this much.
const LONGEST_SLEEP: Duration = Duration::from_secs(60);

/// What the accepted forms are, for error messages.
const ACCEPTED: &str = "expected 6 or 7 fields `sec min hour day-of-month month day-of-week [year]` \
     (day-of-week 1 = Sunday ... 7 = Saturday, or names such as MON-FRI), a standard 5-field crontab line \
     `min hour day-of-month month day-of-week` (day-of-week 0 or 7 = Sunday), or one of @hourly, @daily, \
     @weekly, @monthly, @yearly; times are UTC";

/// A `resync` expression that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resync schedule {expression:?}: {reason}; {ACCEPTED}")]
pub struct ScheduleError {
    /// The expression as written.
    pub expression: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed `resync` schedule.
#[derive(Debug, Clone)]
pub struct ResyncSchedule {
    expression: String,
    schedule: cron::Schedule,
}

impl ResyncSchedule {
    /// Reads an expression in any of the forms the [module documentation](self) lists.
    pub fn parse(expression: &str) -> Result<Self, ScheduleError> {
        let error = |reason: String| ScheduleError { expression: expression.to_owned(), reason };
        let trimmed = expression.trim();
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        let normalized = if trimmed.starts_with('@') {
            trimmed.to_owned()
        } else {
            match fields.len() {
                0 => return Err(error("the expression is empty".to_owned())),
                5 => {
                    let day_of_week = crontab_day_of_week(fields[4]).map_err(error)?;
                    format!("0 {} {} {} {} {day_of_week}", fields[0], fields[1], fields[2], fields[3])
                }
                6 | 7 => fields.join(" "),
                n => return Err(error(format!("it has {n} fields"))),
            }
        };
        let schedule = cron::Schedule::from_str(&normalized).map_err(|e| {
            // Field positions in the expression as written: the 5-field form lacks the seconds.
            let written = if fields.len() == 5 { 1 } else { 0 };
            error(crate_reason(&normalized, &e.to_string(), |at| at.checked_sub(written).and_then(|i| fields.get(i))))
        })?;
        Ok(ResyncSchedule { expression: expression.to_owned(), schedule })
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first firing strictly after `after`; `None` when the schedule never fires again (a
    /// year field in the past, or a date that does not exist such as 30 February).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&after).next()
    }

    /// How long from `now` to the next firing; [`Duration::MAX`] when there is none.
    pub fn until_next(&self, now: DateTime<Utc>) -> Duration {
        self.next_after(now).and_then(|next| (next - now).to_std().ok()).unwrap_or(Duration::MAX)
    }

    /// Sleeps (on tokio's clock) until the wall clock `clock` reaches the next firing after the
    /// time it shows when called, and returns that firing. The wall clock is read again after
    /// every sleep and at least every minute, so a clock that is stepped backwards does not fire
    /// early and one stepped forwards fires at most a minute late. Never returns when the schedule
    /// never fires again (cancel it, e.g. in a `select!`, to stop waiting).
    pub async fn sleep_until_next(&self, clock: impl Fn() -> DateTime<Utc>) -> DateTime<Utc> {
        let Some(next) = self.next_after(clock()) else {
            return std::future::pending().await;
        };
        loop {
            let now = clock();
            if now >= next {
                return next;
            }
            let left = (next - now).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep(left.min(LONGEST_SLEEP)).await;
        }
    }
}

impl fmt::Display for ResyncSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

/// The fields of the `cron` crate's form, by position.
const FIELD_NAMES: [&str; 7] = ["second", "minute", "hour", "day-of-month", "month", "day-of-week", "year"];

/// Rewrites a `cron` crate error, which echoes the expression it read with a caret under the
/// field at fault and then (not always) says why, into one line naming the field as written.
fn crate_reason<'a>(normalized: &str, message: &str, written: impl Fn(usize) -> Option<&'a &'a str>) -> String {
    let mut lines = message.lines();
    let (echo, caret) = (lines.next().unwrap_or_default(), lines.next().unwrap_or_default());
    // The crate says "less than" for its inclusive maximum.
    let why = lines
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .trim_end_matches('.')
        .replace(" must be less than ", " must be at most ");
    let why = if why.is_empty() {
        "cannot be read (write numbers, names, `*`, ranges `a-b`, lists `a,b` and steps `/n`)".to_owned()
    } else {
        why
    };
    let Some(column) = caret.find('^').filter(|_| echo == normalized) else {
        return message.lines().map(str::trim).collect::<Vec<_>>().join(" ");
    };
    // The field the caret points into: the last one starting at or before it.
    let field = normalized
        .char_indices()
        .filter(|&(at, c)| !c.is_whitespace() && (at == 0 || normalized[..at].ends_with(char::is_whitespace)))
        .take_while(|&(at, _)| at <= column)
        .count()
        .saturating_sub(1);
    match (FIELD_NAMES.get(field), written(field)) {
        (Some(name), Some(text)) => format!("the {name} field {text:?}: {why}"),
        (Some(name), None) => format!("the {name} field: {why}"),
        _ => why,
    }
}

/// Translates a crontab day-of-week field (0 or 7 = Sunday ... 6 = Saturday) into the `cron`
/// crate's numbering (1 = Sunday ... 7 = Saturday). Numeric items are expanded into the days they
/// name; `*`, `?` and names mean the same in both numberings (steps over `*` too, as both start
/// on Sunday) and are kept as they are.
fn crontab_day_of_week(field: &str) -> Result<String, String> {
    let problem = |item: &str, why: &str| {
        format!("day-of-week {item:?} of the 5-field form: {why} (there 0 or 7 = Sunday, 1 = Monday ... 6 = Saturday)")
    };
    let number = |item: &str, text: &str| -> Result<u32, String> {
        match text.parse::<u32>() {
            Ok(day) if day <= 7 => Ok(day),
            Ok(_) => Err(problem(item, "days are 0 to 7")),
            Err(_) => Err(problem(item, "not a number, a range, a name or `*`")),
        }
    };
    let mut days = Vec::new();
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(step)),
            None => (item, None),
        };
        if base.is_empty() || base == "*" || base == "?" || base.chars().any(|c| c.is_ascii_alphabetic()) {
            days.push(item.to_owned());
            continue;
        }
        let (first, last) = match base.split_once('-') {
            Some((first, last)) => (number(item, first)?, number(item, last)?),
            // `n/step` runs from n to the end of the week, as the crate reads it.
            None if step.is_some() => (number(item, base)?, 6),
            None => (number(item, base)?, number(item, base)?),
        };
        if first > last {
            return Err(problem(item, "the range runs backwards"));
        }
        let step = match step {
            Some(step) => match step.parse::<usize>() {
                Ok(step) if step >= 1 => step,
                _ => return Err(problem(item, "the step must be a whole number of at least 1")),
            },
            None => 1,
        };
        days.extend((first..=last).step_by(step).map(|day| (day % 7 + 1).to_string()));
    }
    Ok(days.join(","))
}
