//! The routing service end to end, on SQLite and PostgreSQL: customers write through the
//! simulator (signed webhooks), agents are real sessions with live event streams (presence), and
//! every expectation is read back through the HTTP API and the database.

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::{Db, Harness, eventually, queued};
use contact_runtime::app::Application;
use contact_runtime::domain::Role;
use contact_runtime::domain::api::{NewSkill, NewUser};
use contact_runtime::http::auth::password;
use contact_runtime::routing::RoutingService;
use contact_runtime::storage::{Claim, Store, new_id, now_ms};
use reqwest::Method;
use serde_json::{Value, json};

crate::support::both!(
    automatic_allocation_spreads_load_pushes_live_and_explains,
    allocation_runs_on_skill_auto_allocate_status_and_close,
    disconnected_agents_conversations_return_after_the_grace,
    picks_race_and_respect_capacity,
    unassign_transfer_and_sticky_return,
    a_deposed_allocator_cannot_claim,
    levels_decide_until_they_are_relaxed,
    optional_skills_prefer_holders_until_dropped,
    contact_attributes_sort_into_categories,
    decisions_go_with_anonymized_and_deleted_conversations,
    transfers_wait_for_a_busy_agent_then_fall_back,
    transfers_to_an_agent_without_the_skills_need_force,
);

/// A signed-in agent.
struct Agent {
    id: String,
    cookie: String,
    csrf: String,
}

async fn agent(store: &Store, name: &str, skill_ids: Vec<String>) -> Agent {
    let user = store
        .create_user(&NewUser {
            email: format!("{name}@example.com"),
            display_name: name.to_owned(),
            role: Role::Agent,
            password_hash: None,
            skill_ids,
        })
        .await
        .unwrap();
    let sid = new_id();
    let csrf = new_id();
    store
        .create_session(
            &password::token_hash(&sid),
            &user.id,
            &csrf,
            now_ms() + 3_600_000,
        )
        .await
        .unwrap();
    Agent {
        id: user.id,
        cookie: format!("contact_session={sid}"),
        csrf,
    }
}

impl Agent {
    fn call(&self, h: &Harness, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.call_at(&h.http, &h.url, method, path)
    }

    fn call_at(
        &self,
        http: &reqwest::Client,
        url: &str,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        http.request(method, format!("{url}/api/v1{path}"))
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf)
    }

    async fn put(&self, h: &Harness, path: &str, body: Value) -> u16 {
        self.call(h, Method::PUT, path)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn post(&self, h: &Harness, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .call(h, Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Opens the live stream (the agent is connected while it is open).
    async fn live(&self, h: &Harness) -> Live {
        self.live_at(&h.http, &h.url, &h.store).await
    }

    /// Opens the live stream on the runtime at `url`.
    async fn live_at(&self, http: &reqwest::Client, url: &str, store: &Store) -> Live {
        let resp = self
            .call_at(http, url, Method::GET, "/live")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut live = Live {
            resp,
            buf: String::new(),
        };
        live.until(5, |kind, _| kind == "ready").await;
        // Presence is recorded asynchronously; once it is stored, the allocator reads it before
        // any conversation written later (signals are read before events).
        eventually(10, "presence", || async {
            let row = store.routing_agent(&self.id, now_ms()).await.ok()??;
            (row.sessions > 0).then_some(())
        })
        .await;
        live
    }
}

/// A Server-Sent Events reader.
struct Live {
    resp: reqwest::Response,
    buf: String,
}

impl Live {
    /// Reads events until `f` accepts one; panics after `secs`.
    async fn until(&mut self, secs: u64, mut f: impl FnMut(&str, &Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut kind = "message".to_owned();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(k) = line.strip_prefix("event:") {
                        kind = k.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim());
                    }
                }
                let value = serde_json::from_str(&data).unwrap_or(Value::Null);
                if f(&kind, &value) {
                    return value;
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("timed out waiting for a live event")
                .expect("live stream failed")
                .expect("live stream ended");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// The customer `identity` writes `text` through the simulator (a signed webhook).
async fn customer(h: &Harness, identity: &str, text: &str) {
    let r = h
        .http
        .post(format!("{}/_sim/inbound", h.sim_url))
        .json(&json!({ "channel": "wa", "identity": identity, "text": text }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "simulator: {}", r.status());
}

/// The open conversation of `identity`, once it exists: `(id, status, assignee)`.
async fn conversation_of(h: &Harness, identity: &str) -> (String, String, Option<String>) {
    eventually(10, "the conversation", || async {
        let list: Value = h
            .api(Method::GET, "/conversations?limit=200")
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let items = list
            .get("items")
            .or(Some(&list))
            .and_then(Value::as_array)?
            .clone();
        items
            .iter()
            .filter(|c| c["identity"] == identity && c["status"] != "closed")
            .map(|c| {
                (
                    c["id"].as_str().unwrap().to_owned(),
                    c["status"].as_str().unwrap().to_owned(),
                    c["assigned_user_id"].as_str().map(str::to_owned),
                )
            })
            .next()
    })
    .await
}

/// Waits until the conversation is assigned; returns the assignee.
async fn assigned(h: &Harness, id: &str) -> String {
    eventually(10, "an assignment", || async {
        let c: Value = h
            .api(Method::GET, &format!("/conversations/{id}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (c["status"] == "assigned").then(|| c["assigned_user_id"].as_str().unwrap().to_owned())
    })
    .await
}

async fn decisions(h: &Harness, id: &str) -> Vec<Value> {
    h.api(Method::GET, &format!("/conversations/{id}/routing"))
        .send()
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap()
}

async fn set_routing(h: &Harness, capacity: u32, grace: u32) {
    let r = h
        .api(Method::PUT, "/admin/routing")
        .json(&json!({ "auto_allocate_by_default": true, "max_conversations_per_agent": capacity, "return_to_queue_after_disconnect_secs": grace }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn automatic_allocation_spreads_load_pushes_live_and_explains(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let a = agent(&h.store, "ann", vec![]).await;
    let b = agent(&h.store, "bob", vec![]).await;
    let mut live_a = a.live(&h).await;
    let mut live_b = b.live(&h).await;
    for i in 0..4 {
        customer(&h, &format!("4670000100{i}"), "hello").await;
    }
    let mut owners = Vec::new();
    for i in 0..4 {
        let (id, _, _) = conversation_of(&h, &format!("4670000100{i}")).await;
        owners.push((id.clone(), assigned(&h, &id).await));
    }
    let of = |who: &str| owners.iter().filter(|(_, o)| o == who).count();
    assert_eq!((of(&a.id), of(&b.id)), (2, 2), "{owners:?}");
    // Each agent is told live about their own assignments.
    for (live, me) in [(&mut live_a, &a.id), (&mut live_b, &b.id)] {
        for (conversation, _) in owners.iter().filter(|(_, o)| o == me) {
            live.until(10, |kind, e| {
                kind == "conversation_assigned"
                    && e["conversation_id"] == conversation.as_str()
                    && e["assigned_user_id"] == me.as_str()
            })
            .await;
        }
    }
    // Every decision is stored with its explanation: the winner, the reason, every candidate.
    let (last, owner) = owners.last().unwrap();
    let d = decisions(&h, last).await;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["kind"], "automatic");
    assert_eq!(d[0]["user_id"], owner.as_str());
    let explanation = &d[0]["explanation"];
    assert_eq!(explanation["reason"], d[0]["reason"]);
    assert!(
        [
            "least_loaded",
            "idle_longest",
            "lowest_id",
            "only_candidate",
            "sticky"
        ]
        .contains(&d[0]["reason"].as_str().unwrap()),
        "{d:?}"
    );
    assert_eq!(explanation["considered"].as_array().unwrap().len(), 2);
    // An agent may read the explanation of a conversation they hold, not of another's.
    let other = owners.iter().find(|(_, o)| o != owner).unwrap();
    let who = if owner == &a.id { &a } else { &b };
    let r = who
        .call(
            &h,
            Method::GET,
            &format!("/conversations/{}/routing", other.0),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = who
        .call(&h, Method::GET, &format!("/conversations/{last}/routing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn allocation_runs_on_skill_auto_allocate_status_and_close(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    set_routing(&h, 1, 60).await;
    let billing = h
        .store
        .create_skill(&NewSkill {
            name: "billing".into(),
        })
        .await
        .unwrap()
        .id;
    let r = h
        .api(Method::POST, "/admin/categories")
        .json(&json!({ "name": "Billing", "priority": 5, "rules": [{ "keywords": ["refund"] }], "skill_ids": [billing] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let category: Value = r.json().await.unwrap();
    let a = agent(&h.store, "ann", vec![billing.clone()]).await;
    let b = agent(&h.store, "bob", vec![]).await;
    assert_eq!(
        a.put(
            &h,
            &format!("/me/skills/{billing}"),
            json!({ "enabled": false })
        )
        .await,
        204
    );
    assert_eq!(
        a.put(&h, "/me/status", json!({ "status": "away" })).await,
        204
    );
    assert_eq!(
        b.put(&h, "/me/auto-allocate", json!({ "enabled": false }))
            .await,
        204
    );
    let _la = a.live(&h).await;
    let _lb = b.live(&h).await;

    // A refund request is sorted into Billing by its keyword and waits: nobody has the skill on.
    customer(&h, "46700002001", "I want a REFUND please").await;
    let (refund, status, _) = conversation_of(&h, "46700002001").await;
    let c = eventually(10, "categorization", || async {
        let c: Value = h
            .api(Method::GET, &format!("/conversations/{refund}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (c["category_id"] == category["id"]).then_some(c)
    })
    .await;
    assert_eq!(
        (status.as_str(), &c["status"]),
        ("queued", &json!("queued"))
    );
    // A general question waits too: ann is away, bob has auto-allocate off.
    customer(&h, "46700002002", "hello").await;
    let (general, _, _) = conversation_of(&h, "46700002002").await;

    // Bob switches auto-allocate on: the general question is his (not the refund: no skill).
    let before = chrono::Utc::now();
    assert_eq!(
        b.put(&h, "/me/auto-allocate", json!({ "enabled": true }))
            .await,
        204
    );
    assert_eq!(assigned(&h, &general).await, b.id);
    // Ann comes back and switches billing on: the refund is hers.
    assert_eq!(
        a.put(&h, "/me/status", json!({ "status": "available" }))
            .await,
        204
    );
    assert_eq!(
        a.put(
            &h,
            &format!("/me/skills/{billing}"),
            json!({ "enabled": true })
        )
        .await,
        204
    );
    assert_eq!(assigned(&h, &refund).await, a.id);
    for id in [&general, &refund] {
        let d = decisions(&h, id).await;
        let at: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(d[0]["created_at"].clone()).unwrap();
        assert!(at >= before, "decided before the trigger: {d:?}");
    }

    // Capacity 1: a third customer waits until bob closes his conversation.
    customer(&h, "46700002003", "hello again").await;
    let (third, _, _) = conversation_of(&h, "46700002003").await;
    let (status, _) = b
        .post(&h, &format!("/conversations/{general}/close"), json!({}))
        .await;
    assert_eq!(status, 204);
    assert_eq!(assigned(&h, &third).await, b.id);
}

async fn disconnected_agents_conversations_return_after_the_grace(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    set_routing(&h, 5, 1).await;
    let a = agent(&h.store, "ann", vec![]).await;
    let b = agent(&h.store, "bob", vec![]).await;
    let live_a = a.live(&h).await;
    customer(&h, "46700003001", "hello").await;
    let (id, _, _) = conversation_of(&h, "46700003001").await;
    assert_eq!(assigned(&h, &id).await, a.id);
    let queued_at = h
        .store
        .routing_conversation(&id)
        .await
        .unwrap()
        .unwrap()
        .enqueued_at;
    let _live_b = b.live(&h).await;
    // Ann's browser goes away; after the 1 s grace her conversation goes back to the queue at
    // its old place, and bob (connected, free) gets it.
    drop(live_a);
    assert_eq!(
        eventually(15, "the hand-over", || async {
            let owner = assigned(&h, &id).await;
            (owner != a.id).then_some(owner)
        })
        .await,
        b.id
    );
    let d = decisions(&h, &id).await;
    let kinds: Vec<(&str, &str)> = d
        .iter()
        .map(|d| (d["kind"].as_str().unwrap(), d["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds[1], ("returned", "grace_expired"), "{kinds:?}");
    assert_eq!(kinds[2].0, "automatic", "{kinds:?}");
    let row = h.store.routing_conversation(&id).await.unwrap().unwrap();
    assert_eq!(row.enqueued_at, queued_at, "the queue position is kept");
}

async fn picks_race_and_respect_capacity(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    set_routing(&h, 1, 60).await;
    // Nobody is connected: conversations wait for a pick.
    let a = agent(&h.store, "ann", vec![]).await;
    let b = agent(&h.store, "bob", vec![]).await;
    customer(&h, "46700004001", "one").await;
    customer(&h, "46700004002", "two").await;
    let (one, _, _) = conversation_of(&h, "46700004001").await;
    let (two, _, _) = conversation_of(&h, "46700004002").await;
    let path = format!("/conversations/{one}/pick");
    let (ra, rb) = tokio::join!(a.post(&h, &path, json!({})), b.post(&h, &path, json!({})));
    let mut statuses = [ra.0, rb.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{ra:?} {rb:?}");
    let loser = if ra.0 == 409 { &ra.1 } else { &rb.1 };
    assert_eq!(loser["error"]["code"], "already_taken");
    let winner = if ra.0 == 200 { &a } else { &b };
    let (status, body) = winner
        .post(&h, &format!("/conversations/{two}/pick"), json!({}))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("at_capacity"))
    );
    let d = decisions(&h, &one).await;
    assert_eq!((d.len(), &d[0]["reason"]), (1, &json!("manual_pick")));
    assert_eq!(d[0]["user_id"], winner.id.as_str());
}

async fn unassign_transfer_and_sticky_return(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let billing = h
        .store
        .create_skill(&NewSkill {
            name: "billing".into(),
        })
        .await
        .unwrap()
        .id;
    let r = h
        .api(Method::POST, "/admin/categories")
        .json(&json!({ "name": "Billing", "skill_ids": [billing] }))
        .send()
        .await
        .unwrap();
    let category: Value = r.json().await.unwrap();
    let a = agent(&h.store, "ann", vec![]).await;
    let b = agent(&h.store, "bob", vec![billing.clone()]).await;
    let _la = a.live(&h).await;
    customer(&h, "46700005001", "hello").await;
    let (id, _, _) = conversation_of(&h, "46700005001").await;
    assert_eq!(assigned(&h, &id).await, a.id);
    let _lb = b.live(&h).await;
    // Ann puts it back: it is not given to her again, bob gets it.
    let (status, _) = a
        .post(
            &h,
            &format!("/conversations/{id}/transfer"),
            json!({ "to_user_id": null }),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        eventually(10, "re-routing", || async {
            let o = assigned(&h, &id).await;
            (o != a.id).then_some(o)
        })
        .await,
        b.id
    );
    // Bob moves it to Billing: back in the queue with the category's skills; bob is avoided
    // and ann lacks the skill, so it waits.
    let (status, _) = b
        .post(
            &h,
            &format!("/conversations/{id}/transfer"),
            json!({ "to_category_id": category["id"] }),
        )
        .await;
    assert_eq!(status, 204);
    let c: Value = h
        .api(Method::GET, &format!("/conversations/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&c["category_id"], &c["status"]),
        (&category["id"], &json!("queued"))
    );
    assert_eq!(c["skill_requirements"], json!([billing]));
    let (status, body) = a
        .post(
            &h,
            &format!("/conversations/{id}/transfer"),
            json!({ "to_category_id": "nope" }),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // A close, then the customer writes again: the same conversation reopens (within the
    // reopen window) and goes back to the agent who served them last (sticky), although ann is
    // less loaded.
    customer(&h, "46700005002", "other customer").await;
    let (other, _, _) = conversation_of(&h, "46700005002").await;
    let owner = assigned(&h, &other).await;
    let (status, _) = a
        .post(&h, &format!("/conversations/{other}/close"), json!({}))
        .await;
    let closer = if status == 204 { &a } else { &b };
    if status != 204 {
        assert_eq!(
            b.post(&h, &format!("/conversations/{other}/close"), json!({}))
                .await
                .0,
            204
        );
    }
    assert_eq!(closer.id, owner);
    customer(&h, "46700005002", "me again").await;
    let (again, _, _) = conversation_of(&h, "46700005002").await;
    assert_eq!(again, other, "the closed conversation reopens");
    assert_eq!(assigned(&h, &again).await, owner);
    let d = decisions(&h, &again).await;
    assert_eq!(
        d.len(),
        2,
        "the first assignment and the one after the reopen: {d:?}"
    );
    assert_eq!(d[1]["reason"], "sticky", "{d:?}");
}

/// Seconds after which the widening tests relax levels and drop optional skills.
const WIDEN_SECS: u32 = 3;

async fn levels_decide_until_they_are_relaxed(db: Db) {
    widening_scenario(db, false).await;
}

async fn optional_skills_prefer_holders_until_dropped(db: Db) {
    widening_scenario(db, true).await;
}

/// An admin API call: `(status, body)`.
async fn admin(h: &Harness, method: Method, path: &str, body: Value) -> (u16, Value) {
    let r = h.api(method, path).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Ann is the better match (level 4 against bob's level 2, or she holds the optional skill bob
/// lacks): she gets the conversation although bob is less loaded. Once she is full, the next one
/// waits until the widening threshold and then goes to bob, and its stored explanation says so.
async fn widening_scenario(db: Db, optional: bool) {
    let h = Harness::start(db, |s| {
        s.routing.relax_levels_after_secs = Some(WIDEN_SECS);
        s.routing.drop_optional_after_secs = Some(WIDEN_SECS);
    })
    .await;
    set_routing(&h, 2, 60).await;
    let spanish = h
        .store
        .create_skill(&NewSkill {
            name: "spanish".into(),
        })
        .await
        .unwrap()
        .id;
    let a = agent(&h.store, "ann", vec![]).await;
    let b = agent(&h.store, "bob", vec![]).await;

    // Bad levels are refused precisely, naming the field.
    for (body, needle) in [
        (
            json!({ "skill_ids": [spanish], "levels": { &spanish: 6 } }),
            "out of range",
        ),
        (
            json!({ "skill_ids": [spanish], "levels": { &spanish: 0 } }),
            "out of range",
        ),
        (
            json!({ "skill_ids": [], "levels": { &spanish: 3 } }),
            "not in skill_ids",
        ),
    ] {
        let (status, err) = admin(
            &h,
            Method::PUT,
            &format!("/admin/users/{}/skills", a.id),
            body,
        )
        .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("invalid_level")),
            "{err}"
        );
        assert!(
            err["error"]["message"].as_str().unwrap().contains(needle),
            "{err}"
        );
    }
    let (status, err) = admin(
        &h,
        Method::POST,
        "/admin/categories",
        json!({
            "name": "Bad", "skill_ids": [spanish], "skill_options": { &spanish: { "min_level": 9 } }
        }),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_level")),
        "{err}"
    );
    let (status, err) = admin(
        &h,
        Method::POST,
        "/admin/categories",
        json!({
            "name": "Bad", "skill_ids": [], "skill_options": { &spanish: { "optional": true } }
        }),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_skill_option")),
        "{err}"
    );

    let (a_skills, b_skills, option) = if optional {
        (
            json!({ "skill_ids": [spanish] }),
            json!({ "skill_ids": [] }),
            json!({ "optional": true }),
        )
    } else {
        (
            json!({ "skill_ids": [spanish], "levels": { &spanish: 4 } }),
            json!({ "skill_ids": [spanish], "levels": { &spanish: 2 } }),
            json!({ "min_level": 4 }),
        )
    };
    for (who, body) in [(&a, a_skills), (&b, b_skills)] {
        let (status, err) = admin(
            &h,
            Method::PUT,
            &format!("/admin/users/{}/skills", who.id),
            body,
        )
        .await;
        assert_eq!(status, 204, "{err}");
    }
    let (status, category) = admin(
        &h,
        Method::POST,
        "/admin/categories",
        json!({
            "name": "Spanish", "rules": [{ "keywords": ["hola"] }],
            "skill_ids": [spanish], "skill_options": { &spanish: option }
        }),
    )
    .await;
    assert_eq!(status, 201, "{category}");
    // The admin reads the requirement back; the agent sees their level in the Workspace.
    let (_, cats) = admin(&h, Method::GET, "/admin/categories", Value::Null).await;
    let saved = cats
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == category["id"])
        .unwrap();
    assert_eq!(
        saved["skill_options"][&spanish],
        json!({ "min_level": if optional { Value::Null } else { json!(4) }, "optional": optional })
    );
    let me: Value = a
        .call(&h, Method::GET, "/me")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["skills"][0]["name"], "spanish");
    assert_eq!(
        me["skills"][0]["level"],
        if optional { Value::Null } else { json!(4) }
    );

    widening_hands_over_to_the_less_skilled(&h, &a, &b, &category, optional).await;
}

/// The second half of [`widening_scenario`]: the better-skilled agent is preferred while she has room; then the conversation waits for the widening and goes to the other agent.
async fn widening_hands_over_to_the_less_skilled(
    h: &Harness,
    a: &Agent,
    b: &Agent,
    category: &Value,
    optional: bool,
) {
    // Ann takes a general conversation while bob is away: bob is the less loaded one after.
    let _la = a.live(h).await;
    let _lb = b.live(h).await;
    assert_eq!(
        b.put(h, "/me/status", json!({ "status": "away" })).await,
        204
    );
    customer(h, "46700007001", "hello").await;
    let (general, _, _) = conversation_of(h, "46700007001").await;
    assert_eq!(assigned(h, &general).await, a.id);
    assert_eq!(
        b.put(h, "/me/status", json!({ "status": "available" }))
            .await,
        204
    );

    // A Spanish conversation goes to ann (1/2) rather than bob (0/2).
    customer(h, "46700007002", "hola, una pregunta").await;
    let (first, _, _) = conversation_of(h, "46700007002").await;
    assert_eq!(assigned(h, &first).await, a.id);
    let d = decisions(h, &first).await;
    let e = &d[0]["explanation"];
    assert_eq!(
        e["widening"],
        json!({ "levels_relaxed": false, "optional_dropped": false }),
        "{e}"
    );
    let bob = e["considered"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["excluded"]["agent"] == b.id.as_str())
        .unwrap_or_else(|| panic!("bob is excluded: {e}"));
    let why = if optional {
        "missing_skill"
    } else {
        "level_too_low"
    };
    assert!(bob["excluded"]["reason"].get(why).is_some(), "{bob}");

    // Ann is full now: the next one waits for the widening, then bob gets it.
    customer(h, "46700007003", "hola otra vez").await;
    let (second, status, _) = conversation_of(h, "46700007003").await;
    assert_eq!(status, "queued");
    // Categorization runs in the allocator right after arrival.
    let c = eventually(10, "categorization", || async {
        let c: Value = h
            .api(Method::GET, &format!("/conversations/{second}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (c["category_id"] == category["id"]).then_some(c)
    })
    .await;
    assert_eq!(assigned(h, &second).await, b.id);
    let d = decisions(h, &second).await;
    assert_eq!(d.len(), 1, "{d:?}");
    let widened = if optional {
        "optional_dropped"
    } else {
        "levels_relaxed"
    };
    assert_eq!(d[0]["explanation"]["widening"][widened], true, "{d:?}");
    let decided: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(d[0]["created_at"].clone()).unwrap();
    let arrived: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(c["created_at"].clone()).unwrap();
    assert!(
        decided - arrived >= chrono::TimeDelta::seconds(i64::from(WIDEN_SECS)),
        "widened only after the wait: arrived {arrived}, decided {decided}"
    );
}

/// A contact with `tier = gold` (set by the agent serving them, audited) lands in the Gold
/// category by its rule the next time they write, and is served before an older conversation.
async fn contact_attributes_sort_into_categories(db: Db) {
    // No reopening: the customer's next message starts a new conversation, categorized anew.
    let h = Harness::start(db, |s| s.routing.reopen_within_secs = 0).await;
    set_routing(&h, 1, 60).await;
    let (status, gold) = admin(
        &h,
        Method::POST,
        "/admin/categories",
        json!({
            "name": "Gold", "priority": 7, "rules": [{ "contact_attributes": { "tier": "gold" } }]
        }),
    )
    .await;
    assert_eq!(status, 201, "{gold}");
    let (status, err) = admin(
        &h,
        Method::POST,
        "/admin/categories",
        json!({
            "name": "Bad", "rules": [{ "contact_attributes": { "Tier!": "gold" } }]
        }),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_category")),
        "{err}"
    );
    let (_, cats) = admin(&h, Method::GET, "/admin/categories", Value::Null).await;
    let saved = cats
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == gold["id"])
        .unwrap();
    assert_eq!(
        saved["rules"][0]["contact_attributes"],
        json!({ "tier": "gold" })
    );
    let a = agent(&h.store, "ann", vec![]).await;
    let b = agent(&h.store, "bob", vec![]).await;
    let _la = a.live(&h).await;
    customer(&h, "46700008001", "hello").await;
    let (first, _, _) = conversation_of(&h, "46700008001").await;
    assert_eq!(assigned(&h, &first).await, a.id);
    let view: Value = a
        .call(
            &h,
            Method::GET,
            &format!("/workspace/conversations/{first}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["contact_attributes"], json!({}));
    let contact = view["conversation"]["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/contacts/{contact}/attributes");

    // Bad input is refused precisely; bob holds no conversation of this contact.
    for (attributes, needle) in [
        (json!({ "Tier": "gold" }), "attribute key `Tier`"),
        (json!({ "tier": "" }), "value of attribute `tier`"),
        (
            json!({ "tier": "x".repeat(201) }),
            "value of attribute `tier`",
        ),
    ] {
        let r = a
            .call(&h, Method::PUT, &path)
            .json(&json!({ "attributes": attributes }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["code"], "invalid_attribute", "{err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(needle),
            "{err}"
        );
    }
    let r = b
        .call(&h, Method::PUT, &path)
        .json(&json!({ "attributes": { "tier": "gold" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = a
        .call(&h, Method::PUT, &path)
        .json(&json!({ "attributes": { "tier": "gold" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["attributes"], json!({ "tier": "gold" }));
    // Audited as ann, about the contact.
    let audit = h
        .store
        .audit_entries(&contact_runtime::storage::AuditQuery {
            subject_id: Some(contact.clone()),
            after_seq: 0,
            limit: 0,
        })
        .await
        .unwrap();
    assert!(
        audit.iter().any(|e| e.actor == a.id
            && e.entity == "contact_attribute"
            && e.attribute == "tier"
            && e.new_value.as_deref() == Some("gold")),
        "{audit:?}"
    );
    assert_eq!(
        a.post(&h, &format!("/conversations/{first}/close"), json!({}))
            .await
            .0,
        204
    );
    // Once closed, ann holds nothing of this contact any more.
    let r = a.call(&h, Method::GET, &path).send().await.unwrap();
    assert_eq!(r.status(), 403);

    gold_customers_are_served_first(&h, &a, &gold, &first).await;
}

/// The second half of [`contact_attributes_sort_into_categories`]: the gold category's priority puts its conversation first when the agent comes back.
async fn gold_customers_are_served_first(h: &Harness, a: &Agent, gold: &Value, first: &str) {
    // Ann is away: an ordinary customer writes first, then the gold one.
    assert_eq!(
        a.put(h, "/me/status", json!({ "status": "away" })).await,
        204
    );
    customer(h, "46700008002", "hello").await;
    let (plain, _, _) = conversation_of(h, "46700008002").await;
    customer(h, "46700008001", "it is me again").await;
    let (again, _, _) = conversation_of(h, "46700008001").await;
    assert_ne!(again, first, "a new conversation");
    let queue: Value = eventually(10, "the gold conversation categorized", || async {
        let q: Value = a
            .call(h, Method::GET, "/queue")
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (q[0]["id"] == again.as_str()).then_some(q)
    })
    .await;
    assert_eq!(
        (&queue[0]["category_id"], &queue[0]["priority"]),
        (&gold["id"], &json!(7))
    );
    assert_eq!(queue[1]["id"], plain.as_str());
    // Ann comes back with room for one: the gold customer is served first.
    assert_eq!(
        a.put(h, "/me/status", json!({ "status": "available" }))
            .await,
        204
    );
    assert_eq!(assigned(h, &again).await, a.id);
    let c: Value = h
        .api(Method::GET, &format!("/conversations/{plain}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["status"], "queued");
}

/// Routing decisions explain a conversation (who was considered, who served the contact last):
/// they go when the DPO anonymizes the contact and when retention deletes the conversation,
/// and stay for everything else.
async fn decisions_go_with_anonymized_and_deleted_conversations(db: Db) {
    use contact_runtime::config::RetentionSettings;
    use contact_runtime::privacy::ManualClock;
    use contact_runtime::privacy::retention::RetentionJob;
    const DAY: i64 = 86_400_000;
    let h = Harness::start(db, |_| {}).await;
    let a = agent(&h.store, "ann", vec![]).await;
    let _la = a.live(&h).await;
    let mut ids = Vec::new();
    for identity in ["46700009001", "46700009002", "46700009003"] {
        customer(&h, identity, "hello").await;
        let (id, _, _) = conversation_of(&h, identity).await;
        assert_eq!(assigned(&h, &id).await, a.id);
        ids.push(id);
    }
    let count = |id: String| {
        let store = h.store.clone();
        async move { store.routing_decisions(&id).await.unwrap().len() }
    };
    for id in &ids {
        assert_eq!(count(id.clone()).await, 1);
    }
    let (anonymized, deleted, kept) = (&ids[0], &ids[1], &ids[2]);

    // The DPO anonymizes the first customer: their conversation's decisions go.
    let c: Value = h
        .api(Method::GET, &format!("/conversations/{anonymized}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    h.store
        .anonymize_contact(c["contact_id"].as_str().unwrap(), "dpo-test", now_ms())
        .await
        .unwrap();
    assert_eq!(count(anonymized.clone()).await, 0);
    assert_eq!(count(deleted.clone()).await, 1);

    // The second is closed and, a year later, deleted by retention (without anonymization
    // first): its decisions go with it; the open third one keeps its decision.
    assert_eq!(
        a.post(&h, &format!("/conversations/{deleted}/close"), json!({}))
            .await
            .0,
        204
    );
    let clock = ManualClock::at(now_ms() + 366 * DAY);
    let settings = RetentionSettings {
        anonymize_conversations_after_days: 0,
        delete_conversations_after_days: 365,
        ..RetentionSettings::default()
    };
    let job = RetentionJob::new(h.store.clone(), Arc::new(clock), settings);
    let r = job.run_once(None).await.unwrap();
    assert!(r.deleted >= 1, "{r:?}");
    assert!(h.store.conversation(deleted).await.is_err(), "deleted");
    assert_eq!(count(deleted.clone()).await, 0);
    assert_eq!(count(kept.clone()).await, 1);
}

/// Seconds a transfer waits for a busy agent in the transfer test.
const PIN_SECS: u64 = 3;

/// A transfer to a full agent waits for them (the queue and the explanation say so) and is
/// theirs once they have room; another one falls back to anyone eligible after the fallback; an
/// agent with room gets a transfer at once; an offline one is refused.
async fn transfers_wait_for_a_busy_agent_then_fall_back(db: Db) {
    let h = Harness::start(db, |s| s.routing.transfer_pin_fallback_secs = PIN_SECS).await;
    set_routing(&h, 1, 60).await;
    let a = agent(&h.store, "ann", vec![]).await;
    let b = agent(&h.store, "bob", vec![]).await;
    let d = agent(&h.store, "dan", vec![]).await;
    assert_eq!(
        d.put(&h, "/me/status", json!({ "status": "offline" }))
            .await,
        204
    );
    let _la = a.live(&h).await;
    customer(&h, "46700010001", "hello").await;
    let (c1, _, _) = conversation_of(&h, "46700010001").await;
    assert_eq!(assigned(&h, &c1).await, a.id);
    let _lb = b.live(&h).await;
    customer(&h, "46700010002", "hello").await;
    let (c2, _, _) = conversation_of(&h, "46700010002").await;
    assert_eq!(assigned(&h, &c2).await, b.id);

    // An offline colleague: refused, nothing changes.
    let (status, err) = a
        .post(
            &h,
            &format!("/conversations/{c1}/transfer"),
            json!({ "to_user_id": d.id }),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("agent_offline")),
        "{err}"
    );
    assert_eq!(assigned(&h, &c1).await, a.id);

    // Bob is full: the conversation waits for him.
    let (status, body) = a
        .post(
            &h,
            &format!("/conversations/{c1}/transfer"),
            json!({ "to_user_id": b.id }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (
            &body["waiting_for"],
            &body["because"],
            &body["fallback_after_secs"]
        ),
        (&json!(b.id), &json!("at_capacity"), &json!(PIN_SECS))
    );
    let queue: Value = b
        .call(&h, Method::GET, "/queue")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let item = queue
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == c1.as_str())
        .expect("queued");
    assert_eq!(
        (&item["waiting_for"], &item["waiting_for_name"]),
        (&json!(b.id), &json!("bob"))
    );
    let decided = decisions(&h, &c1).await;
    let last = decided.last().unwrap();
    assert_eq!(
        (&last["kind"], &last["reason"], &last["user_id"]),
        (
            &json!("transfer"),
            &json!("waiting_for_agent"),
            &json!(b.id)
        )
    );
    assert_eq!(last["explanation"]["because"], "at_capacity");
    // Ann, who has room now, may not pick it: it is bob's.
    let (status, err) = a
        .post(&h, &format!("/conversations/{c1}/pick"), json!({}))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("transferred_to_other")),
        "{err}"
    );
    // Bob closes his other conversation: the waiting one is his.
    assert_eq!(
        b.post(&h, &format!("/conversations/{c2}/close"), json!({}))
            .await
            .0,
        204
    );
    assert_eq!(assigned(&h, &c1).await, b.id);
    let decided = decisions(&h, &c1).await;
    assert_eq!(decided.last().unwrap()["reason"], "pinned", "{decided:?}");

    transfers_fall_back_after_the_pin(&h, &a, &b).await;
}

/// The second half of [`transfers_wait_for_a_busy_agent_then_fall_back`]: after the fallback anyone eligible takes the transfer; with room, the target gets it at once.
async fn transfers_fall_back_after_the_pin(h: &Harness, a: &Agent, b: &Agent) {
    // Another one for bob while he is full: after the fallback anyone eligible (ann) takes it.
    customer(h, "46700010003", "hello").await;
    let (c3, _, _) = conversation_of(h, "46700010003").await;
    assert_eq!(assigned(h, &c3).await, a.id);
    let (status, body) = a
        .post(
            h,
            &format!("/conversations/{c3}/transfer"),
            json!({ "to_user_id": b.id }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let taken = eventually(20, "the fallback", || async {
        let c: Value = h
            .api(Method::GET, &format!("/conversations/{c3}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (c["status"] == "assigned").then(|| c["assigned_user_id"].as_str().unwrap().to_owned())
    })
    .await;
    assert_eq!(taken, a.id);
    let decided = decisions(h, &c3).await;
    let reasons: Vec<&str> = decided
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    let n = reasons.len();
    assert_eq!(
        &reasons[n - 3..],
        ["waiting_for_agent", "pin_expired", "only_candidate"],
        "{decided:?}"
    );
    let at = |d: &Value| {
        serde_json::from_value::<chrono::DateTime<chrono::Utc>>(d["created_at"].clone()).unwrap()
    };
    let waited = at(&decided[n - 1]) - at(&decided[n - 3]);
    assert!(
        waited >= chrono::TimeDelta::seconds(PIN_SECS as i64),
        "fell back after {waited}"
    );

    // With room for two, bob gets a transfer at once.
    set_routing(h, 2, 60).await;
    let (status, body) = a
        .post(
            h,
            &format!("/conversations/{c3}/transfer"),
            json!({ "to_user_id": b.id }),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(assigned(h, &c3).await, b.id);
}

/// A transfer to an agent who lacks the conversation's required skills is refused naming them,
/// whether the agent could take it at once or not; with `force` it goes through, the decision
/// says who overrode the requirement, and a forced pin on a full agent is theirs as soon as they
/// have room (routing sets the skills aside for that pin only).
async fn transfers_to_an_agent_without_the_skills_need_force(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    set_routing(&h, 1, 60).await;
    let billing = h
        .store
        .create_skill(&NewSkill {
            name: "billing".into(),
        })
        .await
        .unwrap()
        .id;
    let a = agent(&h.store, "ann", vec![billing.clone()]).await;
    let b = agent(&h.store, "bob", vec![]).await;
    let (status, category) = admin(
        &h,
        Method::POST,
        "/admin/categories",
        json!({ "name": "Billing", "rules": [{ "keywords": ["invoice"] }], "skill_ids": [billing] }),
    )
    .await;
    assert_eq!(status, 201, "{category}");
    let _la = a.live(&h).await;
    let _lb = b.live(&h).await;
    customer(&h, "46700020001", "about my invoice").await;
    let (c1, _, _) = conversation_of(&h, "46700020001").await;
    assert_eq!(assigned(&h, &c1).await, a.id);

    // Bob has room but not the skill: refused, naming it; nothing changes.
    let (status, err) = a
        .post(
            &h,
            &format!("/conversations/{c1}/transfer"),
            json!({ "to_user_id": b.id }),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("agent_lacks_skill")),
        "{err}"
    );
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("bob") && message.contains("billing"),
        "{message}"
    );
    assert_eq!(assigned(&h, &c1).await, a.id);
    let before = decisions(&h, &c1).await.len();

    // Forced: his at once, and the decision says ann overrode the requirement.
    let (status, body) = a
        .post(
            &h,
            &format!("/conversations/{c1}/transfer"),
            json!({ "to_user_id": b.id, "force": true }),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(assigned(&h, &c1).await, b.id);
    let decided = decisions(&h, &c1).await;
    assert_eq!(decided.len(), before + 1, "{decided:?}");
    let last = decided.last().unwrap();
    assert_eq!(
        (&last["kind"], &last["reason"], &last["user_id"]),
        (
            &json!("transfer"),
            &json!("skills_overridden"),
            &json!(b.id)
        )
    );
    assert_eq!(
        last["explanation"]["skills_overridden"],
        json!({ "by": a.id, "missing": [{ "missing_skill": { "skill": "billing" } }] })
    );

    // Bob is full now. The next billing conversation goes to ann; a transfer to bob would wait
    // for him, and is refused just the same without force.
    customer(&h, "46700020002", "another invoice").await;
    let (c2, _, _) = conversation_of(&h, "46700020002").await;
    assert_eq!(assigned(&h, &c2).await, a.id);
    let (status, err) = a
        .post(
            &h,
            &format!("/conversations/{c2}/transfer"),
            json!({ "to_user_id": b.id }),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("agent_lacks_skill")),
        "{err}"
    );
    assert_eq!(assigned(&h, &c2).await, a.id);
    let (status, body) = a
        .post(
            &h,
            &format!("/conversations/{c2}/transfer"),
            json!({ "to_user_id": b.id, "force": true }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["because"], "at_capacity");
    let decided = decisions(&h, &c2).await;
    let last = decided.last().unwrap();
    assert_eq!(last["reason"], "waiting_for_agent");
    assert_eq!(
        last["explanation"]["skills_overridden"]["by"],
        a.id.as_str()
    );
    // Bob closes his conversation: the pinned one is his, skills set aside for that pin.
    assert_eq!(
        b.post(&h, &format!("/conversations/{c1}/close"), json!({}))
            .await
            .0,
        204
    );
    assert_eq!(assigned(&h, &c2).await, b.id);
    let decided = decisions(&h, &c2).await;
    assert_eq!(decided.last().unwrap()["reason"], "pinned", "{decided:?}");
}

async fn a_deposed_allocator_cannot_claim(db: Db) {
    let (store, _guard) = crate::support::store(db).await;
    let old = store
        .acquire_lease("old", now_ms(), 1)
        .await
        .unwrap()
        .unwrap();
    // The old holder's lease ran out; a new holder takes over with a higher epoch.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let new = store
        .acquire_lease("new", now_ms(), 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(new > old);
    assert_eq!(
        store.acquire_lease("old", now_ms(), 60_000).await.unwrap(),
        None
    );
    assert!(
        !store
            .renew_lease("old", old, now_ms(), 60_000)
            .await
            .unwrap()
    );
    let a = agent(&store, "ann", vec![]).await;
    let conversation = queued(&store, "46700006001").await;
    let claim = |user: &str| Claim {
        conversation_id: conversation.clone(),
        user_id: user.to_owned(),
        reason: "least_loaded".to_owned(),
        explanation: json!({}),
    };
    let refused = store
        .commit_routing("old", old, &[], &[claim(&a.id)], None)
        .await;
    assert!(
        matches!(refused, Err(contact_runtime::storage::Error::Contended)),
        "{refused:?}"
    );
    let row = store
        .routing_conversation(&conversation)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "queued");
    assert_eq!(
        store
            .commit_routing("new", new, &[], &[claim(&a.id)], None)
            .await
            .unwrap(),
        vec![true]
    );
    // A second claim of the same conversation touches nothing.
    assert_eq!(
        store
            .commit_routing("new", new, &[], &[claim(&a.id)], None)
            .await
            .unwrap(),
        vec![false]
    );
    assert_eq!(
        store.routing_decisions(&conversation).await.unwrap().len(),
        1
    );
}

/// A runtime replica on a shared database, stoppable gracefully.
struct Replica {
    url: String,
    routing: Arc<RoutingService>,
    settings: contact_runtime::config::Settings,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Replica {
    async fn start(database_url: &str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = crate::support::settings(database_url, addr, addr);
        let app = Application::build_on(settings.clone(), listener)
            .await
            .unwrap();
        let routing = app.routing();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = app
                .run_until(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            url: format!("http://{addr}"),
            routing,
            settings,
            stop: Some(stop),
            task,
        }
    }

    async fn webhook(&self, http: &reqwest::Client, identity: &str) {
        let body = crate::support::inbound_text(
            contact_runtime::domain::ChannelType::Whatsapp,
            identity,
            &new_id(),
            "hello",
        );
        let headers = crate::support::signed(
            &self.settings,
            "wa",
            &body,
            &new_id(),
            chrono::Utc::now().timestamp(),
        );
        let r = http
            .post(format!("{}/webhooks/sinch/wa", self.url))
            .headers(headers)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), self.task).await;
    }
}

/// Customers `from..to` write once each, all at once, spread over `targets`.
async fn send_customers(http: &reqwest::Client, from: usize, to: usize, targets: &[&Replica]) {
    let sends = (from..to).map(|i| {
        let target = targets[i % targets.len()];
        async move { target.webhook(http, &format!("4671{i:07}")).await }
    });
    futures::future::join_all(sends).await;
}

/// Customers and per-agent capacity of [`two_replicas_never_assign_a_conversation_twice`].
const CUSTOMERS: usize = 60;
/// See [`CUSTOMERS`].
const CAPACITY: usize = 10;

/// After the race of [`two_replicas_never_assign_a_conversation_twice`]: exactly one assignment
/// event and one decision per conversation, the decision names the assignee, and no agent holds
/// more than their capacity.
async fn one_decision_per_conversation(pool: &sqlx::PgPool) {
    // Exactly one assignment event and one decision per conversation, and the decision names
    // the assignee.
    type Row = (String, i64, i64, Option<String>, Option<String>);
    let per_conversation: Vec<Row> = sqlx::query_as(
        "SELECT c.id, \
           (SELECT COUNT(*) FROM conversation_events e WHERE e.conversation_id = c.id AND e.kind = 'conversation_assigned'), \
           (SELECT COUNT(*) FROM routing_decisions d WHERE d.conversation_id = c.id), \
           c.assigned_user_id, \
           (SELECT d.user_id FROM routing_decisions d WHERE d.conversation_id = c.id ORDER BY d.id LIMIT 1) \
         FROM conversations c",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(per_conversation.len(), CUSTOMERS);
    for (id, events, decisions, assignee, decided) in &per_conversation {
        assert_eq!((*events, *decisions), (1, 1), "conversation {id}");
        assert_eq!(assignee, decided, "conversation {id}");
    }
    let loads: Vec<(String, i64)> = sqlx::query_as(
        "SELECT assigned_user_id, COUNT(*) FROM conversations WHERE status = 'assigned' GROUP BY assigned_user_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        loads.iter().all(|(_, n)| *n <= CAPACITY as i64),
        "{loads:?}"
    );
}

/// Two replicas on one PostgreSQL database: automatic allocation (only the lease holder
/// allocates, and the holder changes mid-run) races with manual picks sent to both replicas,
/// while webhooks arrive at both. No conversation is ever assigned twice and no agent goes over
/// capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_never_assign_a_conversation_twice() {
    let (url, _guard) = crate::support::database_url(Db::Postgres);
    let r1 = Replica::start(&url).await;
    let r2 = Replica::start(&url).await;
    let store = Store::connect(&url, &Default::default()).await.unwrap();
    let http = reqwest::Client::new();
    eventually(10, "one lease holder", || async {
        (r1.routing.is_leading() != r2.routing.is_leading()).then_some(())
    })
    .await;
    let r = http
        .put(format!("{}/api/v1/admin/routing", r1.url))
        .bearer_auth("test-token")
        .json(&json!({ "auto_allocate_by_default": true, "max_conversations_per_agent": CAPACITY, "return_to_queue_after_disconnect_secs": 60 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut online = Vec::new();
    for i in 0..6 {
        online.push(agent(&store, &format!("auto{i}"), vec![]).await);
    }
    let mut lives = Vec::new();
    for (i, a) in online.iter().enumerate() {
        let at = if i % 2 == 0 { &r1.url } else { &r2.url };
        lives.push(a.live_at(&http, at, &store).await);
    }
    // Pickers are not connected: automatic allocation never chooses them, they only pick.
    let pickers = [
        agent(&store, "picker0", vec![]).await,
        agent(&store, "picker1", vec![]).await,
    ];
    let attempts = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let urls = [r1.url.clone(), r2.url.clone()];
    let mut pick_tasks = Vec::new();
    for (p, picker) in pickers.into_iter().enumerate() {
        let (http, urls, attempts, done) =
            (http.clone(), urls.clone(), attempts.clone(), done.clone());
        pick_tasks.push(tokio::spawn(async move {
            let mut n = p;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                let url = &urls[n % 2];
                let queue: Vec<Value> = match picker
                    .call_at(&http, url, Method::GET, "/queue")
                    .send()
                    .await
                {
                    Ok(r) => r.json().await.unwrap_or_default(),
                    Err(_) => Vec::new(),
                };
                for item in queue.iter().take(2) {
                    let path = format!("/conversations/{}/pick", item["id"].as_str().unwrap());
                    if let Ok(r) = picker.call_at(&http, url, Method::POST, &path).send().await {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        assert!([200, 409].contains(&r.status().as_u16()), "{}", r.status());
                    }
                }
                tokio::task::yield_now().await;
            }
            picker.id
        }));
    }
    // First half of the customers write to both replicas at once.
    send_customers(&http, 0, CUSTOMERS / 2, &[&r1, &r2]).await;
    // The lease holder shuts down; the other replica takes over, and the agents connected to
    // the stopped one reconnect to the survivor.
    let (leader, survivor) = if r1.routing.is_leading() {
        (r1, r2)
    } else {
        (r2, r1)
    };
    let first_epoch = leader.routing.epoch();
    // The handover is only tested if the first holder has decided something: wait for its first
    // automatic claim (the pickers race it for the same conversations meanwhile).
    let Store::Postgres(pool) = &store else {
        unreachable!()
    };
    eventually(30, "an automatic claim under the first lease", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM routing_decisions WHERE kind = 'automatic' AND epoch = $1",
        )
        .bind(first_epoch)
        .fetch_one(pool)
        .await
        .ok()?;
        (n > 0).then_some(())
    })
    .await;
    leader.stop().await;
    drop(lives);
    let mut lives = Vec::new();
    for a in &online {
        lives.push(a.live_at(&http, &survivor.url, &store).await);
    }
    send_customers(&http, CUSTOMERS / 2, CUSTOMERS, &[&survivor]).await;
    eventually(30, "the survivor's lease", || async {
        survivor.routing.is_leading().then_some(())
    })
    .await;
    assert!(survivor.routing.epoch() > first_epoch);
    eventually(30, "every conversation assigned", || async {
        let queued: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM conversations WHERE status <> 'assigned'")
                .fetch_one(pool)
                .await
                .ok()?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM conversations")
            .fetch_one(pool)
            .await
            .ok()?;
        (queued == 0 && total == CUSTOMERS as i64).then_some(())
    })
    .await;
    done.store(true, Ordering::Relaxed);
    for t in pick_tasks {
        t.await.unwrap();
    }
    one_decision_per_conversation(pool).await;
    // Both paths decided: manual picks and automatic claims, the latter under both leases.
    let by_kind: Vec<(String, Option<i64>, i64)> = sqlx::query_as(
        "SELECT kind, epoch, COUNT(*) FROM routing_decisions GROUP BY kind, epoch ORDER BY kind, epoch",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    eprintln!(
        "decisions by kind and epoch: {by_kind:?}; pick attempts: {}",
        attempts.load(Ordering::Relaxed)
    );
    assert!(
        by_kind
            .iter()
            .any(|(k, e, _)| k == "automatic" && *e == Some(first_epoch)),
        "{by_kind:?}"
    );
    assert!(
        by_kind
            .iter()
            .any(|(k, e, _)| k == "automatic" && *e == Some(survivor.routing.epoch())),
        "{by_kind:?}"
    );
    assert!(
        attempts.load(Ordering::Relaxed) > 0,
        "the pickers never raced"
    );
    drop(lives);
    survivor.stop().await;
}
