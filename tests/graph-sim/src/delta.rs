//! `GET /users/delta`: change tracking of users, read from the simulator's change log.
//!
//! Followed (https://learn.microsoft.com/graph/delta-query-overview,
//! https://learn.microsoft.com/graph/delta-query-users, https://learn.microsoft.com/graph/api/user-delta):
//! - a round is one or more pages: every page but the last carries `@odata.nextLink` (with
//!   `$skiptoken`), the last one `@odata.deltaLink` (with `$deltatoken`), never both;
//! - the first round lists every user that exists; a round started from a deltaLink lists the users
//!   that changed since that link was issued; `$deltatoken=latest` answers no users and a deltaLink
//!   from now ("sync from now", supported for Entra ID resources);
//! - query parameters go in the first request only and are carried by the tokens, which are opaque;
//! - with `$select`, only the selected properties are tracked: a user whose only changes are to other
//!   properties does not appear; without it every property is tracked;
//! - a deleted user appears as its `id` and `"@removed": {"reason": "changed"}` (soft-deleted,
//!   restorable) or `"deleted"` (permanently);
//! - a deltaLink older than the token lifetime (7 days for directory objects) answers 400
//!   `syncStateNotFound` ("The sync state generation is not found. The delta token is expired and data
//!   must be synchronized again.", https://learn.microsoft.com/graph/errors and
//!   https://devblogs.microsoft.com/microsoft365dev/duration-of-change-tracking-tokens-for-identity-and-education-resources/);
//!   a synchronization reset answers 410 Gone with a `Location` of a fresh first request (an empty
//!   `$deltatoken`).
//!
//! Assumptions (the documentation is silent or leaves a choice):
//! - a changed user is shown with its *current* value of every selected property (the documentation
//!   promises "at least the properties that have been updated, but additional properties may be
//!   included"), once per round however often it changed, in object id order;
//! - pages hold `pageSize` users; `$top` is refused (400), the documentation says it is not
//!   supported for users;
//! - `$select` together with a non-empty `$skiptoken` or `$deltatoken` is refused (400);
//! - a token that cannot be read answers as an expired one (400 `syncStateNotFound`); the 410's
//!   error code is `resyncRequired` ("The delta token is no longer valid, and the app must reset the
//!   sync state", https://learn.microsoft.com/graph/errors);
//! - skip tokens do not age; they are retired with the delta tokens by `/_sim/faults`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::graph::{metadata_context, user_json, Context, VERSION};
use crate::model::SimConfig;
use crate::odata::{self, Reply, Target, USER_PROPERTIES};
use crate::state::{ChangeKind, Inner};

/// What a token carries. Encoded as hex of a `|`-separated text: opaque enough for clients, and
/// readable when debugging the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    /// Token generation (see `Inner::delta_generation`).
    generation: u64,
    /// Milliseconds since the simulator's delta clock origin, when issued.
    issued_ms: u64,
    /// Changes after this sequence number are in the round; `None`: the first round (every user).
    since: Option<u64>,
    /// Changes up to this sequence number are in the round (later ones wait for the next).
    upto: u64,
    /// `$select` as given (canonical names); empty when there was none.
    select: Vec<&'static str>,
    /// Skip tokens: the last object id served (pages go in object id order).
    after: Option<String>,
}

const PREFIX: &str = "graph-sim-delta";

impl State {
    fn encode(&self) -> String {
        let text = format!(
            "{PREFIX}|{}|{}|{}|{}|{}|{}",
            self.generation,
            self.issued_ms,
            self.since.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            self.upto,
            self.select.join(","),
            self.after.as_deref().unwrap_or(""),
        );
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    fn decode(token: &str) -> Option<State> {
        if token.len() % 2 != 0 || !token.is_ascii() {
            return None;
        }
        let bytes: Option<Vec<u8>> =
            (0..token.len()).step_by(2).map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok()).collect();
        let text = String::from_utf8(bytes?).ok()?;
        let mut fields = text.splitn(7, '|');
        if fields.next()? != PREFIX {
            return None;
        }
        let generation = fields.next()?.parse().ok()?;
        let issued_ms = fields.next()?.parse().ok()?;
        let since = match fields.next()? {
            "-" => None,
            since => Some(since.parse().ok()?),
        };
        let upto = fields.next()?.parse().ok()?;
        let select = match fields.next()? {
            "" => Vec::new(),
            names => {
                names.split(',').map(|n| USER_PROPERTIES.iter().copied().find(|p| *p == n)).collect::<Option<_>>()?
            }
        };
        let after = Some(fields.next()?.to_owned()).filter(|a| !a.is_empty());
        Some(State { generation, issued_ms, since, upto, select, after })
    }
}

fn expired() -> Reply {
    Reply::error(
        400,
        "syncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
    )
}

fn bad_request(message: impl Into<String>) -> Reply {
    // Assumption: the code and wording of Graph's refusal of these query options.
    Reply::error(400, "Request_BadRequest", message)
}

fn now_ms(inner: &Inner) -> u64 {
    Instant::now().duration_since(inner.delta_clock_origin).as_millis() as u64
}

/// `GET /users/delta`.
pub(crate) fn users_delta(inner: &Inner, config: &SimConfig, target: &Target, context: &Context) -> Reply {
    if target.option("$top").is_some() {
        return bad_request("$top is not supported with delta queries on users.");
    }
    let delta_token = target.option("$deltatoken").filter(|t| !t.is_empty());
    let skip_token = target.option("$skiptoken").filter(|t| !t.is_empty());
    let selected = target.option("$select");
    let token = match (delta_token, skip_token) {
        (Some(_), Some(_)) => return bad_request("$deltatoken and $skiptoken cannot be used together."),
        (Some(token), None) | (None, Some(token)) => Some(token),
        (None, None) => None,
    };
    if token.is_some_and(|t| t != "latest") && selected.is_some() {
        return bad_request(
            "Query parameters are carried by the state token: give $select in the first delta request only.",
        );
    }
    let now = now_ms(inner);
    let last = inner.last_change();
    let round = match token {
        None | Some("latest") => {
            let select = match selected {
                Some(_) => match odata::parse_select(selected) {
                    Ok(select) => select,
                    Err(reply) => return reply,
                },
                None => Vec::new(),
            };
            let start = State {
                generation: inner.delta_generation,
                issued_ms: now,
                since: None,
                upto: last,
                select,
                after: None,
            };
            if token == Some("latest") {
                let state = State { since: Some(last), ..start };
                return page(context, Vec::new(), Link::Delta(state));
            }
            start
        }
        Some(token) => {
            let Some(state) = State::decode(token) else {
                return expired();
            };
            if state.generation < inner.delta_reset_below {
                return reset(context, &state);
            }
            if state.generation < inner.delta_expired_below {
                return expired();
            }
            let is_delta_token = delta_token.is_some();
            if is_delta_token
                && u128::from(now.saturating_sub(state.issued_ms)) > config.delta_token_lifetime.as_millis()
            {
                return expired();
            }
            if is_delta_token {
                // A new round: the changes since the deltaLink was issued, up to now.
                State { since: state.since, upto: last, after: None, issued_ms: now, ..state }
            } else {
                state
            }
        }
    };
    serve_round(inner, config, context, round, now)
}

/// One entry of a round: a user as it is now, or a removed one.
enum Entry {
    Present(usize),
    Removed { id: String, permanently: bool },
}

fn serve_round(inner: &Inner, config: &SimConfig, context: &Context, round: State, now: u64) -> Reply {
    // Object id (lower-case) → entry, in object id order.
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    match round.since {
        None => {
            for (index, user) in inner.users.iter().enumerate() {
                entries.insert(user.id.to_ascii_lowercase(), Entry::Present(index));
            }
        }
        Some(since) => {
            let tracked =
                |properties: &[&str]| round.select.is_empty() || properties.iter().any(|p| round.select.contains(p));
            let from = inner.changes.partition_point(|c| c.sequence <= since);
            for change in inner.changes[from..].iter().take_while(|c| c.sequence <= round.upto) {
                let relevant = match &change.kind {
                    ChangeKind::Updated(properties) => tracked(properties),
                    ChangeKind::Removed { .. } => true,
                };
                if relevant {
                    // The user as it is now (present, or removed since, even after `upto`).
                    let entry = match inner.find_user_by_id(&change.id) {
                        Some(index) => Entry::Present(index),
                        None => Entry::Removed {
                            id: change.id.clone(),
                            permanently: removed_permanently(inner, &change.id),
                        },
                    };
                    entries.insert(change.id.to_ascii_lowercase(), entry);
                }
            }
        }
    }
    let page_size = config.page_size.max(1);
    let remaining: Vec<(&String, &Entry)> = match &round.after {
        Some(after) => {
            entries.range::<String, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)).collect()
        }
        None => entries.iter().collect(),
    };
    let shown =
        if round.select.is_empty() { odata::parse_select(None).unwrap_or_default() } else { round.select.clone() };
    let values: Vec<Value> = remaining
        .iter()
        .take(page_size)
        .map(|(_, entry)| match entry {
            Entry::Present(index) => Value::Object(user_json(&inner.users[*index], &shown)),
            Entry::Removed { id, permanently } => {
                json!({"id": id, "@removed": {"reason": if *permanently { "deleted" } else { "changed" }}})
            }
        })
        .collect();
    let link = if remaining.len() > page_size {
        let after = remaining[page_size - 1].0.clone();
        Link::Next(State { after: Some(after), ..round })
    } else {
        Link::Delta(State { since: Some(round.upto), after: None, issued_ms: now, ..round })
    };
    page(context, values, link)
}

fn removed_permanently(inner: &Inner, id: &str) -> bool {
    inner
        .changes
        .iter()
        .rev()
        .find_map(|c| match c.kind {
            ChangeKind::Removed { permanently } if c.id.eq_ignore_ascii_case(id) => Some(permanently),
            _ => None,
        })
        .unwrap_or(false)
}

enum Link {
    Next(State),
    Delta(State),
}

impl Link {
    fn state(&self) -> &State {
        match self {
            Link::Next(state) | Link::Delta(state) => state,
        }
    }
}

fn delta_url(context: &Context) -> String {
    format!("{}/{VERSION}/users/delta", context.base)
}

fn page(context: &Context, values: Vec<Value>, link: Link) -> Reply {
    let state = link.state();
    let selected = (!state.select.is_empty()).then_some(state.select.as_slice());
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(metadata_context(context, selected, false)));
    match link {
        Link::Next(state) => body
            .insert("@odata.nextLink".into(), json!(format!("{}?$skiptoken={}", delta_url(context), state.encode()))),
        Link::Delta(state) => body
            .insert("@odata.deltaLink".into(), json!(format!("{}?$deltatoken={}", delta_url(context), state.encode()))),
    };
    body.insert("value".into(), Value::Array(values));
    Reply::json(200, Value::Object(body))
}

/// 410 Gone: start again with a full synchronization, at `Location` (the first request, with the
/// token's `$select` and an empty `$deltatoken`).
fn reset(context: &Context, state: &State) -> Reply {
    let select = if state.select.is_empty() {
        String::new()
    } else {
        format!("$select={}&", odata::percent_encode(&state.select.join(",")))
    };
    Reply::error(410, "resyncRequired", "The delta token is no longer valid, and the app must reset the sync state.")
        .with_header("Location", format!("{}?{select}$deltatoken=", delta_url(context)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let state = State {
            generation: 2,
            issued_ms: 1234,
            since: Some(7),
            upto: 9,
            select: vec!["id", "accountEnabled"],
            after: Some("11111111-0000-4000-8000-000000000042".into()),
        };
        assert_eq!(State::decode(&state.encode()), Some(state.clone()));
        let first = State { since: None, select: Vec::new(), after: None, ..state };
        assert_eq!(State::decode(&first.encode()), Some(first));
        assert_eq!(State::decode("nothex"), None);
        assert_eq!(State::decode("6869"), None, "hex, but not a token");
    }
}
