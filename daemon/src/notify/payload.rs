//! What is posted to each kind of sink: the generic webhook's JSON (signed), a Slack incoming
//! webhook's message, a Microsoft Teams Workflows webhook's Adaptive Card. Pure: no I/O.

use remedy_policies::config::SinkKind;
use remedy_policies::notify::EventSeverity;
use serde_json::{json, Value};

use crate::model::Notification;

/// The version of the generic webhook's body (`version` field): fields are only ever added
/// within a version.
pub const WEBHOOK_VERSION: u64 = 1;

/// The header that carries the event's stable id (every kind of sink).
pub const EVENT_ID_HEADER: &str = "Remedy-Event-Id";
/// The Unix time (seconds) the signature was made at (webhook sinks with `hmacSecretFile`).
pub const TIMESTAMP_HEADER: &str = "Remedy-Timestamp";
/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` (webhook sinks with `hmacSecretFile`).
pub const SIGNATURE_HEADER: &str = "Remedy-Signature";

/// The JSON body for a sink of `kind`.
pub fn body(kind: SinkKind, notification: &Notification) -> Vec<u8> {
    let value = match kind {
        SinkKind::Webhook => webhook(notification),
        SinkKind::Slack => slack(notification),
        SinkKind::Teams => teams(notification),
    };
    // A JSON value always serialises.
    serde_json::to_vec(&value).unwrap_or_default()
}

/// The generic webhook: the notification's own fields, plus `version`.
pub fn webhook(notification: &Notification) -> Value {
    let mut value = serde_json::to_value(notification).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut value {
        fields.insert("version".to_owned(), json!(WEBHOOK_VERSION));
    }
    value
}

/// `Remedy-Signature`'s value: `sha256=` and the hex HMAC-SHA256, keyed by the sink's secret, of
/// the timestamp, a period and the body, as sent.
pub fn signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut signed = Vec::with_capacity(body.len() + 21);
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    format!("sha256={}", hex::encode(ring::hmac::sign(&key, &signed).as_ref()))
}

/// The facts every chat message shows, in order, without empty ones.
fn facts(n: &Notification) -> Vec<(&'static str, String)> {
    let mut facts = vec![("Severity", n.severity.name().to_owned()), ("When", n.at.to_rfc3339())];
    if !n.manifests.is_empty() {
        facts.push(("Manifests", n.manifests.join(", ")));
    }
    if !n.identities.is_empty() {
        let more = n.count.saturating_sub(n.identities.len());
        let mut accounts = n.identities.join(", ");
        if more > 0 {
            accounts.push_str(&format!(" and {more} more"));
        }
        facts.push(("Accounts", accounts));
    }
    if let Some(action) = &n.action {
        facts.push(("Action", action.clone()));
    }
    if let Some(provider) = &n.provider {
        facts.push(("Provider", provider.clone()));
    }
    if let Some(detail) = &n.detail {
        facts.push(("Detail", detail.clone()));
    }
    if let Some(record) = n.history_record {
        facts.push(("History record", record.to_string()));
    }
    facts.push(("Event id", n.id.clone()));
    facts
}

fn title(n: &Notification) -> String {
    format!("remedy: {}", n.kind.title())
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped (https://api.slack.com/reference/surfaces/formatting#escaping).
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Cuts text to at most `max` characters (Slack refuses longer block texts).
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A Slack incoming webhook message: `text` (the notification's fallback) and Block Kit `blocks`
/// (https://api.slack.com/messaging/webhooks, https://api.slack.com/reference/block-kit/blocks).
pub fn slack(n: &Notification) -> Value {
    let marker = match n.severity {
        EventSeverity::Critical => ":red_circle:",
        EventSeverity::Warning => ":warning:",
        EventSeverity::Info => ":information_source:",
    };
    let details: Vec<String> = facts(n)
        .into_iter()
        .filter(|(name, _)| *name != "Event id")
        .map(|(name, value)| format!("*{name}:* {}", slack_escape(&value)))
        .collect();
    json!({
        "text": cut(&format!("[{}] {}: {}", n.severity.name().to_uppercase(), n.kind.title(), n.summary), 3000),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": cut(&title(n), 150), "emoji": true}},
            {"type": "section", "text": {"type": "mrkdwn", "text": cut(&format!("{marker} {}", slack_escape(&n.summary)), 3000)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": cut(&details.join("\n"), 3000)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": cut(&format!("event id `{}`", n.id), 3000)}]},
        ],
    })
}

/// A Microsoft Teams Workflows webhook ("When a Teams webhook request is received", then "Post
/// card in a chat or channel"): a message whose one attachment is an Adaptive Card 1.4. Workflows
/// take Adaptive Cards only, not the connectors' MessageCard
/// (https://learn.microsoft.com/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using);
/// the card's elements are those of https://adaptivecards.io/explorer/ (TextBlock, FactSet) within
/// version 1.4, which Teams renders.
pub fn teams(n: &Notification) -> Value {
    let color = match n.severity {
        EventSeverity::Critical => "Attention",
        EventSeverity::Warning => "Warning",
        EventSeverity::Info => "Good",
    };
    let facts: Vec<Value> =
        facts(n).into_iter().map(|(title, value)| json!({"title": title, "value": value})).collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": {"width": "Full"},
                "body": [
                    {"type": "TextBlock", "text": title(n), "weight": "Bolder", "size": "Medium", "color": color, "wrap": true},
                    {"type": "TextBlock", "text": n.summary, "wrap": true},
                    {"type": "FactSet", "facts": facts},
                ],
            },
        }],
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use remedy_policies::notify::EventKind;

    use super::*;
    use crate::model::RecordId;

    fn failed() -> Notification {
        Notification {
            id: "rec-42-0123456789ab".to_owned(),
            kind: EventKind::ActionFailed,
            severity: EventSeverity::Critical,
            at: chrono::Utc.with_ymd_and_hms(2026, 12, 5, 8, 0, 0).unwrap(),
            summary: "disable of upn:alice@contoso.com in active-directory failed".to_owned(),
            history_record: Some(RecordId(42)),
            manifests: vec!["inc-1".to_owned()],
            identities: vec!["upn:alice@contoso.com".to_owned()],
            count: 1,
            action: Some("disable".to_owned()),
            provider: Some("active-directory".to_owned()),
            detail: Some("insufficient access <rights> & more".to_owned()),
        }
    }

    #[test]
    fn the_webhook_body_is_the_notification_with_its_version() {
        let body: Value = serde_json::from_slice(&body(SinkKind::Webhook, &failed())).unwrap();
        assert_eq!(body["version"], 1);
        assert_eq!(body["id"], "rec-42-0123456789ab");
        assert_eq!(body["type"], "action-failed");
        assert_eq!(body["severity"], "critical");
        assert_eq!(body["at"], "2026-12-05T08:00:00Z");
        assert_eq!(body["historyRecord"], 42);
        assert_eq!(body["manifests"], json!(["inc-1"]));
        assert_eq!(body["identities"], json!(["upn:alice@contoso.com"]));
        assert_eq!((body["count"].clone(), body["action"].clone()), (json!(1), json!("disable")));
        let back: Notification = serde_json::from_value(body).expect("a receiver reads it back");
        assert_eq!(back, failed());
    }

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Worked example of docs/operations.md, checked with
        // `printf '%s' '1765000000.{"id":"x"}' | openssl dgst -sha256 -hmac 'whsec-example'`.
        let signature = signature(b"whsec-example", 1_765_000_000, br#"{"id":"x"}"#);
        assert_eq!(signature, "sha256=c8ff814df890bce3693fc57d2af5f4fa46fb244560e5c89dbf6e1cd95f578d05");
        assert!(signature.starts_with("sha256=") && signature.len() == 7 + 64);
        assert_ne!(
            signature,
            super::signature(b"whsec-example", 1_765_000_001, br#"{"id":"x"}"#),
            "the time is signed"
        );
        assert_ne!(signature, super::signature(b"other", 1_765_000_000, br#"{"id":"x"}"#), "the key matters");
    }

    #[test]
    fn slack_gets_text_and_blocks_escaped() {
        let message = slack(&failed());
        assert!(message["text"].as_str().unwrap().starts_with("[CRITICAL] Action failed: disable of"));
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        let details = blocks[2]["text"]["text"].as_str().unwrap();
        assert!(details.contains("insufficient access &lt;rights&gt; &amp; more"), "{details}");
        assert!(blocks[3]["elements"][0]["text"].as_str().unwrap().contains("rec-42-0123456789ab"));
    }

    #[test]
    fn teams_gets_an_adaptive_card_1_4_attachment() {
        let message = teams(&failed());
        assert_eq!(message["type"], "message");
        let attachment = &message["attachments"][0];
        assert_eq!(attachment["contentType"], "application/vnd.microsoft.card.adaptive");
        let card = &attachment["content"];
        assert_eq!((card["type"].as_str(), card["version"].as_str()), (Some("AdaptiveCard"), Some("1.4")));
        assert_eq!(card["body"][0]["color"], "Attention", "critical shows red");
        let facts = card["body"][2]["facts"].as_array().unwrap();
        assert!(facts.iter().any(|f| f["title"] == "Event id" && f["value"] == "rec-42-0123456789ab"));
        assert!(facts.iter().any(|f| f["title"] == "Accounts" && f["value"] == "upn:alice@contoso.com"));
    }

    #[test]
    fn many_accounts_are_counted_not_all_listed() {
        let mut held = failed();
        held.count = 30;
        let accounts = facts(&held).into_iter().find(|(name, _)| *name == "Accounts").unwrap().1;
        assert!(accounts.ends_with("and 29 more"), "{accounts}");
    }
}
