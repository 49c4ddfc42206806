//! The API's OpenAPI 3.1 document: what every route is made from (`super::routes`), plus what no
//! handler says by itself: the bearer scheme, and one reusable response per error code.

use serde_json::json;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Header, OpenApi, Ref, RefOr, Required};
use utoipa::{OpenApi as _, PartialSchema, ToResponse, ToSchema};

use super::error::{Body, ErrorCode};

/// The document, as `GET /openapi.json` serves it and `remedy openapi` prints it.
pub fn openapi() -> OpenApi {
    let mut document = super::routes().split_for_parts().1;
    // Every body the API reads may be left out (empty is `{}`). utoipa says "optional" only with a
    // nullable schema, which would offer `null`: a body the API refuses.
    for item in document.paths.paths.values_mut() {
        for operation in [&mut item.post, &mut item.put, &mut item.patch, &mut item.delete].into_iter().flatten() {
            if let Some(body) = operation.request_body.as_mut() {
                body.required = Some(Required::False);
            }
        }
    }
    document
}

/// The `identity` query parameter of `GET /v1/history`: the forms of `upn:`, `sam:`, `guid:` and
/// `sid:` that remedy takes, narrowed where a pattern cannot say exactly what it takes (UPNs and
/// samAccountNames in ASCII, SID authorities below 10^14) so that every value it allows is taken.
/// The `Identity` schema of the answers is wider: any identity a manifest may declare.
pub(super) struct IdentityFilter;

impl PartialSchema for IdentityFilter {
    fn schema() -> RefOr<Schema> {
        const HEX: &str = "[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}";
        const LABEL: &str = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
        // A sub-authority is a u32: at most 4294967295.
        const U32: &str = concat!(
            "(429496729[0-5]|42949672[0-8][0-9]|4294967[01][0-9]{2}|429496[0-6][0-9]{3}|42949[0-5][0-9]{4}",
            "|4294[0-8][0-9]{5}|429[0-3][0-9]{6}|42[0-8][0-9]{7}|4[01][0-9]{8}|[1-3][0-9]{9}|[0-9]{1,9})"
        );
        let upn = format!(r"upn:[!-?A-~]{{1,256}}@(?=.{{1,255}}$){LABEL}(\.{LABEL})*");
        let sam = r"sam:[ !#-)\-.0-9A-Z^-{}~]{0,19}[!#-)\-0-9A-Z^-{}~]";
        let guid = format!(r"guid:(\{{{HEX}\}}|{HEX})");
        let sid = format!("sid:[Ss]-1-[0-9]{{1,14}}(-{U32}){{1,15}}");
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("An account as declared, `kind:value` (upn, sam, guid, sid)."))
            .pattern(Some(format!("^({upn}|{sam}|{guid}|{sid})$")))
            .examples(["upn:alice@contoso.com", "sam:alice", "sid:S-1-5-21-1-2-3-1104"])
            .into()
    }
}

impl ToSchema for IdentityFilter {}

/// The name of the security scheme the routes that need a token name in `security(...)`.
pub const BEARER: &str = "bearer";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "remedy",
        description = "The HTTP API of `remedy serve`: the manifests' status, the history (the action center), \
                       reconcile requests, approvals of held plans, health and metrics. Every error is \
                       `{\"error\": {\"code\", \"message\"}}` with a stable code (see the responses in the \
                       components); a path that does not exist is `404 not-found`, a method an endpoint does not \
                       take `405 method-not-allowed`. See docs/api.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "health", description = "Probes, metrics and this document"),
        (name = "manifests", description = "The manifests' status, and reconcile requests"),
        (name = "history", description = "The hash-chained record of actions, approvals and reconcile requests"),
        (name = "approvals", description = "Plans held for exceeding maxChangesPerReconcile"),
    ),
)]
struct Base;

/// What the routes are added to: info, tags, the bearer scheme, the error responses.
pub(super) fn base() -> OpenApi {
    let mut document = Base::openapi();
    let components = document.components.get_or_insert_with(Default::default);
    let bearer = Http::builder()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(
            "A token from `api.tokens` (remedy keeps its SHA-256): `security-reader` reads, `security-operator` \
             and `security-administrator` may also reconcile and approve (403 otherwise).",
        ))
        .build();
    components.security_schemes.insert(BEARER.to_owned(), SecurityScheme::Http(bearer));
    components.schemas.insert(<Body as ToSchema>::name().into_owned(), Body::schema());
    let mut schemas = Vec::new();
    <Body as ToSchema>::schemas(&mut schemas);
    components.schemas.extend(schemas);
    for code in ErrorCode::ALL {
        components.responses.insert(response_name(code).to_owned(), RefOr::T(error_response(code)));
    }
    document
}

/// The component name of the response for `code`.
fn response_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest => "BadRequest",
        ErrorCode::Unauthorized => "Unauthorized",
        ErrorCode::Forbidden => "Forbidden",
        ErrorCode::NotFound => "NotFound",
        ErrorCode::MethodNotAllowed => "MethodNotAllowed",
        ErrorCode::Conflict => "Conflict",
        ErrorCode::TooLarge => "TooLarge",
        ErrorCode::Internal => "Internal",
        ErrorCode::Unavailable => "Unavailable",
    }
}

/// When the API answers `code` (docs/api.md, "Errors").
fn when(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest => {
            "A malformed manifest name, record id or plan id; an unknown or invalid query parameter; a body that is \
             neither empty nor a JSON object {\"comment\": \"...\"}."
        }
        ErrorCode::Unauthorized => "No Authorization header, not `Bearer <token>`, or an unknown token.",
        ErrorCode::Forbidden => "The token's role may not do this (a security-reader asking to reconcile or approve).",
        ErrorCode::NotFound => "No such manifest, history record, or endpoint.",
        ErrorCode::MethodNotAllowed => "The endpoint exists but not with this method.",
        ErrorCode::Conflict => "The plan to approve is not the one held (the message names the held plan, or none).",
        ErrorCode::TooLarge => "A request body larger than the server accepts.",
        ErrorCode::Internal => "The store failed (the message says how).",
        ErrorCode::Unavailable => {
            "remedy is shutting down; or, on a standby of several instances, etcd did not take a request queued for \
             the leader (the message has etcd's answer)."
        }
    }
}

/// The error shape, with `error.code` pinned to `code`.
fn error_response(code: ErrorCode) -> Response {
    let written = serde_json::to_value(code).unwrap_or_default();
    let pinned = ObjectBuilder::new().property(
        "error",
        ObjectBuilder::new()
            .property("code", ObjectBuilder::new().schema_type(Type::String).enum_values(Some([written.clone()]))),
    );
    let schema: Schema =
        AllOfBuilder::new().item(Ref::from_schema_name(<Body as ToSchema>::name())).item(pinned).into();
    let content = ContentBuilder::new()
        .schema(Some(schema))
        .example(Some(json!({ "error": { "code": written, "message": when(code) } })))
        .build();
    let mut response = ResponseBuilder::new()
        .description(format!("`{}`: {}", written.as_str().unwrap_or_default(), when(code)))
        .content("application/json", content);
    if code == ErrorCode::Unauthorized {
        let challenge = Header::builder()
            .schema(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["Bearer realm=\"remedy\""])))
            .description(Some("Bearer realm=\"remedy\""))
            .build();
        response = response.header("WWW-Authenticate", challenge);
    }
    response.build()
}

/// The handlers' `responses((status = ..., response = X))`: a reference to the component of one
/// error code.
macro_rules! error_responses {
    ($($name:ident),* $(,)?) => {
        $(
            pub(super) struct $name;

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    let code = ErrorCode::$name;
                    (response_name(code), RefOr::T(error_response(code)))
                }
            }
        )*
    };
}

error_responses!(BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooLarge, Internal, Unavailable);

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn document() -> Value {
        serde_json::to_value(openapi()).expect("the document is JSON")
    }

    const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

    /// Every operation: (method, path, operation).
    fn operations(document: &Value) -> Vec<(String, String, Value)> {
        let paths = document["paths"].as_object().expect("paths");
        let mut found = Vec::new();
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("a path item") {
                assert!(METHODS.contains(&method.as_str()), "{path}: {method} is not a method");
                found.push((method.clone(), path.clone(), operation.clone()));
            }
        }
        found
    }

    /// Every `$ref` in `value`, with where it is.
    fn refs(value: &Value, at: &str, found: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    if key == "$ref" {
                        found.push((at.to_owned(), inner.as_str().expect("a $ref is text").to_owned()));
                    } else {
                        refs(inner, &format!("{at}/{key}"), found);
                    }
                }
            }
            Value::Array(items) => {
                for (index, inner) in items.iter().enumerate() {
                    refs(inner, &format!("{at}/{index}"), found);
                }
            }
            _ => {}
        }
    }

    /// Follows a local JSON pointer (`#/components/...`).
    fn resolve<'d>(document: &'d Value, reference: &str) -> Option<&'d Value> {
        document.pointer(reference.strip_prefix('#')?)
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_route_and_method() {
        let document = document();
        assert_eq!(document["openapi"], "3.1.0");
        assert_eq!(document["info"]["title"], "remedy");
        assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
        let routes: BTreeSet<(String, String)> =
            operations(&document).into_iter().map(|(method, path, _)| (method, path)).collect();
        let expected: BTreeSet<(String, String)> = [
            ("get", "/healthz"),
            ("get", "/readyz"),
            ("get", "/openapi.json"),
            ("get", "/metrics"),
            ("get", "/v1/manifests"),
            ("get", "/v1/manifests/{name}"),
            ("post", "/v1/manifests/{name}/reconcile"),
            ("post", "/v1/reconcile"),
            ("get", "/v1/history"),
            ("get", "/v1/history/verify"),
            ("get", "/v1/history/{id}"),
            ("post", "/v1/approvals/{planId}"),
        ]
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
        assert_eq!(routes, expected);
    }

    #[test]
    fn every_route_but_the_probes_and_the_document_needs_a_bearer_token() {
        let document = document();
        assert_eq!(
            document["components"]["securitySchemes"][BEARER],
            json!({
                "type": "http",
                "scheme": "bearer",
                "description": document["components"]["securitySchemes"][BEARER]["description"],
            })
        );
        assert!(document.get("security").is_none(), "no global requirement: the open routes say nothing");
        for (method, path, operation) in operations(&document) {
            let open = ["/healthz", "/readyz", "/openapi.json"].contains(&path.as_str());
            let responses = operation["responses"].as_object().expect("responses");
            if open {
                assert!(operation.get("security").is_none(), "{method} {path}: {operation:#}");
                assert!(!responses.contains_key("401"), "{method} {path}");
            } else {
                assert_eq!(operation["security"], json!([{ BEARER: [] }]), "{method} {path}");
                assert_eq!(
                    responses["401"],
                    json!({ "$ref": "#/components/responses/Unauthorized" }),
                    "{method} {path}"
                );
            }
            // Only the acting routes can refuse a role; they take a body.
            let acts = method == "post";
            assert_eq!(responses.contains_key("403"), acts, "{method} {path}");
            assert_eq!(responses.contains_key("413"), acts, "{method} {path}");
            if acts {
                let body = &operation["requestBody"];
                assert_eq!(body["required"], false, "{method} {path}: an empty body is `{{}}`");
                let schema = &body["content"]["application/json"]["schema"];
                assert_eq!(schema, &json!({ "$ref": "#/components/schemas/RequestBody" }), "{method} {path}");
            } else {
                assert!(operation.get("requestBody").is_none(), "{method} {path}");
            }
            assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path}: no success");
        }
    }

    #[test]
    fn every_path_parameter_is_declared_and_every_reference_resolves() {
        let document = document();
        for (method, path, operation) in operations(&document) {
            let templated: BTreeSet<&str> =
                path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .map(|params| {
                    params.iter().filter(|p| p["in"] == "path").map(|p| p["name"].as_str().expect("a name")).collect()
                })
                .unwrap_or_default();
            assert_eq!(templated, declared, "{method} {path}");
        }
        let mut found = Vec::new();
        refs(&document, "#", &mut found);
        assert!(found.len() > 20, "{found:?}");
        for (at, reference) in found {
            assert!(resolve(&document, &reference).is_some(), "{at}: {reference} does not resolve");
        }
    }

    #[test]
    fn every_post_answers_202_recorded_or_on_a_standby_queued_and_readyz_shows_ha() {
        let document = document();
        for (method, path, operation) in operations(&document) {
            if method != "post" {
                continue;
            }
            let schema = &operation["responses"]["202"]["content"]["application/json"]["schema"];
            assert_eq!(schema, &json!({ "$ref": "#/components/schemas/Answered" }), "{path}");
            assert_eq!(
                operation["responses"]["503"],
                json!({ "$ref": "#/components/responses/Unavailable" }),
                "{path}"
            );
        }
        let schemas = &document["components"]["schemas"];
        assert_eq!(
            schemas["Answered"]["oneOf"],
            json!([{ "$ref": "#/components/schemas/Accepted" }, { "$ref": "#/components/schemas/Queued" }])
        );
        let required = |name: &str| schemas[name]["required"].as_array().cloned().unwrap_or_default();
        // Exactly one of the two matches any answer: each requires what the other lacks.
        assert!(required("Queued").contains(&json!("queued")) && required("Queued").contains(&json!("leader")));
        assert!(required("Accepted").contains(&json!("accepted")));
        assert_eq!(schemas["Queued"]["properties"]["leader"]["type"], json!(["string", "null"]));
        let readiness = &schemas["Readiness"]["properties"]["ha"];
        assert_eq!(readiness["oneOf"][1]["$ref"], "#/components/schemas/HaState", "{readiness:#}");
        assert_eq!(schemas["HaRole"]["enum"], json!(["leader", "standby", "etcd-unavailable"]));
    }

    #[test]
    fn the_history_limit_is_documented_with_its_bounds() {
        let document = document();
        let parameters = document["paths"]["/v1/history"]["get"]["parameters"].as_array().expect("parameters");
        let limit = parameters.iter().find(|p| p["name"] == "limit").expect("limit");
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], crate::store::HistoryQuery::MAX_LIMIT);
        let default = format!("default {}", crate::store::HistoryQuery::DEFAULT_LIMIT);
        assert!(limit["description"].as_str().is_some_and(|d| d.contains(&default)), "{limit:#}");
    }

    #[test]
    fn each_error_code_has_a_response_pinning_it_with_its_status() {
        let document = document();
        let responses = &document["components"]["responses"];
        for code in ErrorCode::ALL {
            let written = serde_json::to_value(code).expect("a code");
            let response = &responses[response_name(code)];
            let content = &response["content"]["application/json"];
            let pinned = &content["schema"]["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"];
            assert_eq!(pinned, &json!([written]), "{code:?}");
            assert_eq!(content["schema"]["allOf"][0]["$ref"], "#/components/schemas/Error");
            assert_eq!(content["example"]["error"]["code"], written);
        }
        // Each route's error responses name the component of the code its status stands for.
        for (method, path, operation) in operations(&document) {
            for (status, response) in operation["responses"].as_object().expect("responses") {
                let Some(reference) = response["$ref"].as_str() else { continue };
                let code = ErrorCode::ALL
                    .into_iter()
                    .find(|c| reference == format!("#/components/responses/{}", response_name(*c)))
                    .unwrap_or_else(|| panic!("{method} {path} {status}: {reference}"));
                assert_eq!(status, code.status().as_str(), "{method} {path}");
            }
        }
        let error = &document["components"]["schemas"]["ErrorDetail"]["properties"]["code"];
        let codes = resolve(&document, error["$ref"].as_str().expect("a reference to ErrorCode")).expect("ErrorCode");
        let all: Vec<Value> = ErrorCode::ALL.iter().map(|c| serde_json::to_value(c).expect("a code")).collect();
        assert_eq!(codes["enum"], json!(all));
    }
}
