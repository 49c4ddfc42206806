//! /users/delta: rounds, paging, "sync from now", what shows in the next round, removals, expiry.

use std::time::Duration;

use remedy_graph_sim::{Fault, SimConfig};
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

const SELECT: &str = "id,accountEnabled,onPremisesSyncEnabled,userPrincipalName";

/// One round: every page's users, and the deltaLink that ends it.
struct Round {
    users: Vec<Value>,
    pages: usize,
    delta_link: String,
}

impl Env {
    /// Follows nextLinks from `first` (a path, or an absolute link) until a deltaLink.
    async fn round(&self, first: &str) -> Round {
        let mut url = if first.starts_with("http") { first.to_owned() } else { format!("{}{first}", self.sim.url()) };
        let mut users = Vec::new();
        let mut pages = 0;
        loop {
            let path = url.strip_prefix(&self.sim.url()).unwrap().to_owned();
            let answer = self.get(&path).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            pages += 1;
            let body = answer.body.as_object().unwrap();
            assert!(body["@odata.context"].as_str().unwrap().contains("/v1.0/$metadata#users"));
            users.extend(body["value"].as_array().unwrap().iter().cloned());
            match (body.get("@odata.nextLink"), body.get("@odata.deltaLink")) {
                (Some(next), None) => {
                    let next = next.as_str().unwrap();
                    assert!(next.contains("/v1.0/users/delta?$skiptoken="), "{next}");
                    url = next.to_owned();
                }
                (None, Some(delta)) => {
                    let delta = delta.as_str().unwrap().to_owned();
                    assert!(delta.starts_with(&format!("{}/v1.0/users/delta?$deltatoken=", self.sim.url())));
                    return Round { users, pages, delta_link: delta };
                }
                other => panic!("a page has a nextLink or a deltaLink, never both or neither: {other:?}"),
            }
        }
    }

    async fn latest(&self) -> String {
        let answer = self.get(&format!("/v1.0/users/delta?$select={SELECT}&$deltatoken=latest")).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["value"], json!([]), "sync from now: no users");
        assert!(answer.body.get("@odata.nextLink").is_none());
        answer.body["@odata.deltaLink"].as_str().unwrap().to_owned()
    }
}

fn ids(round: &Round) -> Vec<&str> {
    round.users.iter().map(|u| u["id"].as_str().unwrap()).collect()
}

fn user<'a>(round: &'a Round, id: &str) -> &'a Value {
    round.users.iter().find(|u| u["id"] == id).unwrap_or_else(|| panic!("{id} not in {:?}", round.users))
}

#[tokio::test]
async fn first_round_lists_every_user_once_across_pages() {
    let env = start(SimConfig { page_size: 4, ..config() }).await;
    let round = env.round(&format!("/v1.0/users/delta?$select={SELECT}")).await;
    assert_eq!(round.pages, 3, "11 users, 4 a page");
    let mut seen = ids(&round);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 11, "each user once: {seen:?}");
    let synced = user(&round, SYNCED);
    assert_eq!(synced["accountEnabled"], true);
    assert_eq!(synced["onPremisesSyncEnabled"], true);
    assert_eq!(synced["userPrincipalName"], "staff0042@remedy.test");
    assert_eq!(synced.as_object().unwrap().len(), 4, "only the selected properties: {synced}");

    let nothing = env.round(&round.delta_link).await;
    assert!(nothing.users.is_empty(), "no change since: {:?}", nothing.users);
    assert_eq!(env.get("/v1.0/users/microsoft.graph.delta").await.status, 200, "the fully qualified name");
}

#[tokio::test]
async fn patch_shows_in_the_next_round_once_with_its_current_state() {
    let env = start(config()).await;
    let link = env.latest().await;
    for enabled in [false, true, false] {
        let answer =
            env.call(Method::PATCH, &format!("/v1.0/users/{CLOUD}"), Some(json!({"accountEnabled": enabled}))).await;
        assert_eq!(answer.status, 204);
    }
    let round = env.round(&link).await;
    assert_eq!(ids(&round), [CLOUD], "changed three times, shown once");
    assert_eq!(user(&round, CLOUD)["accountEnabled"], false);
    assert!(env.round(&round.delta_link).await.users.is_empty(), "the next round starts after it");
}

#[tokio::test]
async fn unselected_changes_do_not_show() {
    let env = start(config()).await;
    let link = env.latest().await;
    let revoke = env.call(Method::POST, &format!("/v1.0/users/{CLOUD}/revokeSignInSessions"), None).await;
    assert_eq!(revoke.status, 200);
    assert!(env.round(&link).await.users.is_empty(), "signInSessionsValidFromDateTime is not selected");

    let everything =
        env.get("/v1.0/users/delta?$deltatoken=latest").await.body["@odata.deltaLink"].as_str().unwrap().to_owned();
    env.call(Method::POST, &format!("/v1.0/users/{CLOUD}/revokeSignInSessions"), None).await;
    assert_eq!(ids(&env.round(&everything).await), [CLOUD], "without $select every property is tracked");
}

#[tokio::test]
async fn an_out_of_band_re_enable_shows() {
    let env = start(config()).await;
    env.call(Method::PATCH, &format!("/v1.0/users/{CLOUD}"), Some(json!({"accountEnabled": false}))).await;
    let link = env.latest().await;
    let url = env.sim.url();
    let answer =
        env.http.post(format!("{url}/_sim/users/{CLOUD}")).json(&json!({"accountEnabled": true})).send().await.unwrap();
    assert_eq!(answer.status(), 204);
    let round = env.round(&link).await;
    assert_eq!(ids(&round), [CLOUD]);
    assert_eq!(user(&round, CLOUD)["accountEnabled"], true);
    let missing = env.http.post(format!("{url}/_sim/users/nobody")).json(&json!({"accountEnabled": true})).send();
    assert_eq!(missing.await.unwrap().status(), 404);
}

#[tokio::test]
async fn a_sync_revert_shows_within_one_poll() {
    let env = start(config()).await;
    let disable =
        env.call(Method::PATCH, &format!("/v1.0/users/{SYNCED}"), Some(json!({"accountEnabled": false}))).await;
    assert_eq!(disable.status, 204);
    let link = env.round(&env.latest().await).await.delta_link;
    let sync = env.http.post(format!("{}/_sim/sync", env.sim.url())).send().await.unwrap();
    assert_eq!(sync.status(), 204);
    let round = env.round(&link).await;
    assert_eq!(ids(&round), [SYNCED], "AD still says enabled: directory sync undid the cloud disable");
    assert_eq!(user(&round, SYNCED)["accountEnabled"], true);
}

#[tokio::test]
async fn removed_users_carry_the_reason() {
    let env = start(config()).await;
    let link = env.latest().await;
    assert!(env.sim.remove_user(CLOUD, false));
    let url = env.sim.url();
    assert_eq!(env.http.delete(format!("{url}/_sim/users/{ADMIN}?permanent=true")).send().await.unwrap().status(), 204);
    let round = env.round(&link).await;
    assert_eq!(round.users.len(), 2);
    assert_eq!(user(&round, CLOUD)["@removed"], json!({"reason": "changed"}));
    assert_eq!(user(&round, ADMIN)["@removed"], json!({"reason": "deleted"}));
    assert_eq!(env.get(&format!("/v1.0/users/{CLOUD}")).await.status, 404);
    let first = env.round(&format!("/v1.0/users/delta?$select={SELECT}")).await;
    assert_eq!(first.users.len(), 9, "a first round lists the users that exist");
}

#[tokio::test]
async fn expired_tokens_answer_sync_state_not_found() {
    let env = start(SimConfig { delta_token_lifetime: Duration::from_millis(300), ..config() }).await;
    let link = env.latest().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let path = link.strip_prefix(&env.sim.url()).unwrap();
    let old = env.get(path).await;
    assert_eq!(old.status, 400);
    assert_odata_error(&old.body, Some("syncStateNotFound"));

    // Retired on demand, skip tokens too.
    let env = start(SimConfig { page_size: 2, ..config() }).await;
    let first = env.get(&format!("/v1.0/users/delta?$select={SELECT}")).await;
    let next = first.body["@odata.nextLink"].as_str().unwrap().to_owned();
    let link = env.latest().await;
    let faults = env.http.post(format!("{}/_sim/faults", env.sim.url())).json(&json!("expireDeltaTokens"));
    assert_eq!(faults.send().await.unwrap().status(), 204);
    for stale in [next, link] {
        let answer = env.get(stale.strip_prefix(&env.sim.url()).unwrap()).await;
        assert_eq!(answer.status, 400, "{stale}");
        assert_odata_error(&answer.body, Some("syncStateNotFound"));
    }
    let garbled = env.get("/v1.0/users/delta?$deltatoken=not-a-token").await;
    assert_odata_error(&garbled.body, Some("syncStateNotFound"));
    assert_eq!(env.round(&env.latest().await).await.users.len(), 0, "tokens issued later work");

    env.sim.inject(Fault::ResetDeltaTokens);
    let link = env.latest().await;
    env.sim.inject(Fault::ResetDeltaTokens);
    let reset = env.get(link.strip_prefix(&env.sim.url()).unwrap()).await;
    assert_eq!(reset.status, 410);
    assert_odata_error(&reset.body, Some("resyncRequired"));
    let location = reset.header("location").unwrap().to_owned();
    assert!(location.ends_with("$deltatoken="), "{location}");
    assert_eq!(env.round(&location).await.users.len(), 11, "Location starts a full synchronization");
}

#[tokio::test]
async fn query_options_are_checked() {
    let env = start(config()).await;
    let unknown = env.get("/v1.0/users/delta?$select=id,favouriteColour").await;
    assert_eq!(unknown.status, 400);
    assert_odata_error(&unknown.body, Some("Request_BadRequest"));
    let not_simulated = env.get("/v1.0/users/delta?$select=id,displayName").await;
    assert_eq!(not_simulated.status, 400);
    assert_eq!(env.get("/v1.0/users/delta?$top=5").await.status, 400);
    let link = env.latest().await;
    let with_select = format!("{}&$select=id", link.strip_prefix(&env.sim.url()).unwrap());
    assert_eq!(env.get(&with_select).await.status, 400, "query options go in the first request only");
    let posted = env.call(Method::POST, "/v1.0/users/delta", Some(json!({}))).await;
    assert_eq!(posted.status, 405);
}

#[tokio::test]
async fn delta_goes_through_the_gateway_like_other_reads() {
    let env = start(config()).await;
    env.sim.inject(Fault::Throttle { count: 1, retry_after: Duration::from_secs(1) });
    let throttled = env.get("/v1.0/users/delta?$deltatoken=latest").await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.header("retry-after"), Some("1"));
    let anonymous = env.http.get(format!("{}/v1.0/users/delta", env.sim.url())).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let statuses: Vec<u16> =
        env.sim.log().iter().filter(|r| r.path.starts_with("/v1.0/users/delta")).map(|r| r.status).collect();
    assert_eq!(statuses, [429, 401], "logged like the others");
}
