//! Graph's wire conventions: the OData error body, response headers, query options (`$select`,
//! `$filter`, `$top`, `$skiptoken`) and date formats. Pure functions.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

/// Content type of Graph's JSON answers (clients must not expect a bare `application/json`).
pub const JSON_CONTENT_TYPE: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// One answer to a Graph request (or `$batch` sub-request), before it becomes HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply { status, headers: Vec::new(), body: Some(body) }
    }

    pub fn no_content() -> Reply {
        Reply { status: 204, headers: Vec::new(), body: None }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn retry_after(&self) -> Option<u64> {
        self.header("Retry-After").and_then(|v| v.parse().ok())
    }

    /// An OData error whose `innerError` is filled in later by [`Reply::finish_error`].
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Reply {
        Reply::json(status, json!({"error": {"code": code, "message": message.into()}}))
    }

    /// Stamps an error body with `innerError` the way Graph does: date (UTC, no zone suffix), request-id,
    /// client-request-id. Source: https://learn.microsoft.com/en-us/graph/errors ("Error resource type")
    /// and the sample bodies in https://learn.microsoft.com/en-us/graph/json-batching.
    pub fn finish_error(&mut self, now: DateTime<Utc>, request_id: &str, client_request_id: &str) {
        if self.status < 400 {
            return;
        }
        if let Some(Value::Object(body)) = &mut self.body {
            if let Some(Value::Object(error)) = body.get_mut("error") {
                let inner = error.entry("innerError").or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(inner) = inner {
                    inner.insert("date".into(), json!(now.format("%Y-%m-%dT%H:%M:%S").to_string()));
                    inner.insert("request-id".into(), json!(request_id));
                    inner.insert("client-request-id".into(), json!(client_request_id));
                }
            }
        }
    }
}

/// Graph's directory timestamps: UTC, whole seconds, `Z` (e.g. `2024-05-01T09:30:00Z`).
pub fn seconds(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Identity Protection timestamps carry fractions of a second.
pub fn fractional(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Decodes `%XX` escapes (and `+` as a space in query strings). Invalid escapes are kept as they are.
pub fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes a query value for a nextLink.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'$'
            | b','
            | b'\''
            | b'@'
            | b'('
            | b')' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// A path and its decoded query pairs, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Percent-decoded path segments after the version (e.g. `["users", "a@b.test"]`).
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
}

impl Target {
    /// Splits `/users/x?$select=id` (already without the `/v1.0` prefix).
    pub fn parse(path_and_query: &str) -> Target {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let segments = path.split('/').filter(|s| !s.is_empty()).map(|s| percent_decode(s, false)).collect();
        let query = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(name, true), percent_decode(value, true))
            })
            .collect();
        Target { segments, query }
    }

    /// A query option; `$`-prefixed options also match without the `$` (Graph accepts both on v1.0).
    pub fn option(&self, name: &str) -> Option<&str> {
        let bare = name.trim_start_matches('$');
        self.query
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name) || n.eq_ignore_ascii_case(bare))
            .map(|(_, v)| v.as_str())
    }
}

/// The user properties the simulator knows, in Graph's spelling.
pub const USER_PROPERTIES: &[&str] = &[
    "id",
    "userPrincipalName",
    "accountEnabled",
    "onPremisesSyncEnabled",
    "signInSessionsValidFromDateTime",
    "lastPasswordChangeDateTime",
    "userType",
];

/// What `GET /users/{id}` returns without `$select`: Graph's v1.0 default set, of which the simulator
/// keeps only `id` and `userPrincipalName` (accountEnabled and friends are returned only on `$select`).
/// Source: https://learn.microsoft.com/en-us/graph/api/user-get (Optional query parameters: "By default,
/// only a limited set of properties are returned").
pub const USER_DEFAULT_PROPERTIES: &[&str] = &["id", "userPrincipalName"];

/// Real user properties this simulator does not model: selecting them gets a clear 400 saying so.
const USER_PROPERTIES_NOT_SIMULATED: &[&str] = &[
    "displayName",
    "givenName",
    "surname",
    "mail",
    "jobTitle",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "businessPhones",
    "onPremisesSamAccountName",
    "onPremisesImmutableId",
    "onPremisesLastSyncDateTime",
    "onPremisesDistinguishedName",
    "userType",
    "createdDateTime",
    "passwordProfile",
    "passwordPolicies",
];

/// Resolves `$select` to canonical property names; `Err` is the 400 answer.
pub fn parse_select(select: Option<&str>) -> Result<Vec<&'static str>, Reply> {
    let default = || USER_DEFAULT_PROPERTIES.iter().filter_map(|name| canonical(name)).collect();
    let Some(select) = select else {
        return Ok(default());
    };
    let mut chosen = Vec::new();
    for name in select.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match canonical(name) {
            Some(property) => {
                if !chosen.contains(&property) {
                    chosen.push(property)
                }
            }
            None if USER_PROPERTIES_NOT_SIMULATED.iter().any(|p| p.eq_ignore_ascii_case(name)) => {
                return Err(Reply::error(
                    400,
                    "Request_BadRequest",
                    format!("graph-sim does not simulate the user property '{name}' (Microsoft Graph has it); simulated: {}", USER_PROPERTIES.join(", ")),
                ))
            }
            // Assumption: the wording of Graph's directory service for an unknown $select property.
            None => {
                return Err(Reply::error(
                    400,
                    "Request_BadRequest",
                    format!("Could not find a property named '{name}' on type 'Microsoft.DirectoryServices.User'."),
                ))
            }
        }
    }
    if chosen.is_empty() {
        return Ok(default());
    }
    Ok(chosen)
}

fn canonical(name: &str) -> Option<&'static str> {
    USER_PROPERTIES.iter().copied().find(|p| p.eq_ignore_ascii_case(name))
}

/// A `$filter` the simulator understands: a disjunction of `property eq 'value'` / `property in (...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// (property, accepted values); a user matches when any clause matches.
    pub clauses: Vec<(&'static str, Vec<String>)>,
}

/// Properties `$filter` supports here.
const FILTERABLE: &[&str] = &["id", "userPrincipalName"];

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, Reply> {
        let tokens = tokenize(text)?;
        let mut parser = FilterParser { tokens, at: 0 };
        let clauses = parser.disjunction()?;
        if parser.at != parser.tokens.len() {
            return Err(invalid_filter(text, "unexpected text after the expression"));
        }
        Ok(Filter { clauses })
    }

    /// How many values the filter compares against (Graph limits this).
    pub fn value_count(&self) -> usize {
        self.clauses.iter().map(|(_, values)| values.len()).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Text(String),
    Open,
    Close,
    Comma,
}

fn invalid_filter(text: &str, why: &str) -> Reply {
    // Assumption: Graph answers malformed filters with 400 "BadRequest" "Invalid filter clause".
    Reply::error(400, "BadRequest", format!("Invalid filter clause: {why} in '{text}'."))
}

fn unsupported_filter(what: &str) -> Reply {
    // Assumption: code used by Graph's directory service for filters it cannot run.
    Reply::error(
        400,
        "Request_UnsupportedQuery",
        format!("Unsupported query: {what}. graph-sim supports only `id` and `userPrincipalName` with `eq` or `in (...)`, joined by `or`."),
    )
}

fn tokenize(text: &str) -> Result<Vec<Token>, Reply> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                tokens.push(Token::Open)
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close)
            }
            ',' => {
                chars.next();
                tokens.push(Token::Comma)
            }
            '\'' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            value.push('\'');
                        }
                        Some('\'') => break,
                        Some(c) => value.push(c),
                        None => return Err(invalid_filter(text, "unterminated string literal")),
                    }
                }
                tokens.push(Token::Text(value));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "(),'".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

struct FilterParser {
    tokens: Vec<Token>,
    at: usize,
}

impl FilterParser {
    fn text(&self) -> String {
        self.tokens
            .iter()
            .map(|t| match t {
                Token::Word(w) => w.clone(),
                Token::Text(t) => format!("'{t}'"),
                Token::Open => "(".into(),
                Token::Close => ")".into(),
                Token::Comma => ",".into(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn disjunction(&mut self) -> Result<Vec<(&'static str, Vec<String>)>, Reply> {
        let mut clauses = self.term()?;
        while let Some(Token::Word(word)) = self.peek() {
            match word.to_ascii_lowercase().as_str() {
                "or" => {
                    self.at += 1;
                    clauses.extend(self.term()?);
                }
                "and" => return Err(unsupported_filter("'and'")),
                _ => return Err(invalid_filter(&self.text(), &format!("unexpected '{word}'"))),
            }
        }
        Ok(clauses)
    }

    fn term(&mut self) -> Result<Vec<(&'static str, Vec<String>)>, Reply> {
        match self.next() {
            Some(Token::Open) => {
                let clauses = self.disjunction()?;
                match self.next() {
                    Some(Token::Close) => Ok(clauses),
                    _ => Err(invalid_filter(&self.text(), "missing ')'")),
                }
            }
            Some(Token::Word(property)) => {
                let Some(canonical) = FILTERABLE.iter().copied().find(|p| p.eq_ignore_ascii_case(&property)) else {
                    return Err(unsupported_filter(&format!("filtering on '{property}'")));
                };
                let operator = match self.next() {
                    Some(Token::Word(operator)) => operator.to_ascii_lowercase(),
                    _ => return Err(invalid_filter(&self.text(), &format!("missing operator after '{property}'"))),
                };
                match operator.as_str() {
                    "eq" => match self.next() {
                        Some(Token::Text(value)) => Ok(vec![(canonical, vec![value])]),
                        _ => Err(invalid_filter(&self.text(), "expected a quoted string after 'eq'")),
                    },
                    "in" => {
                        if self.next() != Some(Token::Open) {
                            return Err(invalid_filter(&self.text(), "expected '(' after 'in'"));
                        }
                        let mut values = Vec::new();
                        loop {
                            match self.next() {
                                Some(Token::Text(value)) => values.push(value),
                                _ => {
                                    return Err(invalid_filter(&self.text(), "expected a quoted string in 'in (...)'"))
                                }
                            }
                            match self.next() {
                                Some(Token::Comma) => continue,
                                Some(Token::Close) => break,
                                _ => return Err(invalid_filter(&self.text(), "expected ',' or ')' in 'in (...)'")),
                            }
                        }
                        Ok(vec![(canonical, values)])
                    }
                    other => Err(unsupported_filter(&format!("operator '{other}'"))),
                }
            }
            _ => Err(invalid_filter(&self.text(), "expected a property name")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse() {
        let filter = Filter::parse("userPrincipalName eq 'a@b.test' or id in ('1', '2')").unwrap();
        assert_eq!(
            filter.clauses,
            vec![("userPrincipalName", vec!["a@b.test".to_owned()]), ("id", vec!["1".to_owned(), "2".to_owned()])]
        );
        assert_eq!(Filter::parse("(id eq 'o''brien')").unwrap().clauses, vec![("id", vec!["o'brien".to_owned()])]);
        for bad in
            ["displayName eq 'x'", "id ne 'x'", "id eq 'x' and id eq 'y'", "id eq", "id eq 'x' 'y'", "id in ('x'"]
        {
            let reply = Filter::parse(bad).unwrap_err();
            assert_eq!(reply.status, 400, "{bad}");
        }
    }

    #[test]
    fn targets_decode() {
        let target = Target::parse("/users/a%40b.test?%24select=id,accountEnabled&$filter=id+eq+'x'");
        assert_eq!(target.segments, vec!["users", "a@b.test"]);
        assert_eq!(target.option("$select"), Some("id,accountEnabled"));
        assert_eq!(target.option("$filter"), Some("id eq 'x'"));
    }

    #[test]
    fn select_is_checked() {
        assert_eq!(parse_select(Some("ID,accountEnabled")).unwrap(), vec!["id", "accountEnabled"]);
        assert_eq!(parse_select(Some("nope")).unwrap_err().status, 400);
    }
}
