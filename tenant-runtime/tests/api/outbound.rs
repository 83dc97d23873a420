//! Outbound messages end to end over real HTTP: API → outbox → simulator `messages:send` →
//! signed delivery reports → status. Channel rules refuse with 4xx and write nothing. The sender
//! survives 5xx, 429 with `Retry-After` and timeouts without sending twice.

use std::time::{Duration, Instant};

use crate::support::{Db, Harness, eventually, inbound_text};
use contact_runtime::channels::simulator::SentLog;
use contact_runtime::domain::ChannelType;
use contact_runtime::storage::{Store, on_driver};
use serde_json::{Value, json};

crate::support::both!(
    reply_is_sent_once_and_reaches_read,
    channel_rules_refuse_without_side_effect,
    whatsapp_window_allows_only_templates,
    channel_refuses_late_message_asynchronously,
    idempotency_key_makes_retries_safe,
    server_errors_are_retried,
    throttling_honours_retry_after,
    timeouts_are_retried_without_duplicates,
);

/// A customer writes on `app`; returns the conversation id.
async fn customer_writes(h: &Harness, app: &str, channel: ChannelType) -> String {
    let body = inbound_text(
        channel,
        "46701234567",
        &uuid::Uuid::new_v4().to_string(),
        "hello",
    );
    let (status, ack) = h.post_webhook(app, &body).await;
    assert_eq!(status, 200, "{ack}");
    let convs: Vec<Value> = h
        .api(reqwest::Method::GET, "/conversations")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    convs
        .iter()
        .find(|c| c["channel_app"] == app)
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .expect("conversation")
}

async fn reply(h: &Harness, conv: &str, content: Value) -> reqwest::Response {
    h.api(
        reqwest::Method::POST,
        &format!("/conversations/{conv}/messages"),
    )
    .json(&json!({ "content": content }))
    .send()
    .await
    .unwrap()
}

async fn sent(h: &Harness) -> SentLog {
    h.http
        .get(format!("{}/_sim/sent", h.sim_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn faults(h: &Harness, faults: Value) {
    let r = h
        .http
        .post(format!("{}/_sim/faults", h.sim_url))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn status_of(store: &Store, id: &str) -> String {
    store.message(id).await.unwrap().status.as_str().to_owned()
}

async fn reply_is_sent_once_and_reaches_read(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let conv = customer_writes(&h, "wa", ChannelType::Whatsapp).await;
    let r = reply(&h, &conv, json!({ "type": "text", "text": "We are on it" })).await;
    assert_eq!(r.status(), 202);
    let msg: Value = r.json().await.unwrap();
    assert_eq!(msg["status"], "PENDING");
    let id = msg["id"].as_str().unwrap().to_owned();
    let log = eventually(10, "the simulator to receive the reply", || async {
        let log = sent(&h).await;
        (!log.messages.is_empty()).then_some(log)
    })
    .await;
    assert_eq!(log.messages.len(), 1);
    let rec = &log.messages[0];
    assert_eq!(rec.correlation_id.as_deref(), Some(id.as_str()));
    assert_eq!(rec.identity, "46701234567");
    assert_eq!(rec.body["message"]["text_message"]["text"], "We are on it");
    assert_eq!(rec.body["app_id"], "APPWHATSAPP");
    // The simulator's delivery reports drive the status to READ (terminal).
    eventually(10, "READ", || async {
        (status_of(&h.store, &id).await == "READ").then_some(())
    })
    .await;
    eventually(10, "outbox row marked sent", || async {
        (h.store.outbox_count("sent").await.unwrap() == 1).then_some(())
    })
    .await;
    let m = h.store.message(&id).await.unwrap();
    assert_eq!(m.external_id.as_deref(), Some(rec.message_id.as_str()));
    assert_eq!(sent(&h).await.duplicates, 0);
}

async fn channel_rules_refuse_without_side_effect(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let wa = customer_writes(&h, "wa", ChannelType::Whatsapp).await;
    let sms = customer_writes(&h, "sms", ChannelType::Sms).await;
    let before = h.counts().await;
    for (conv, content, status, code) in [
        (
            &wa,
            json!({ "type": "text", "text": "x".repeat(4097) }),
            422,
            "text_too_long",
        ),
        (
            &sms,
            json!({ "type": "text", "text": "x".repeat(1531) }),
            422,
            "sms_too_long",
        ),
        (
            &sms,
            json!({ "type": "text", "text": "  " }),
            422,
            "empty_text",
        ),
        (
            &sms,
            json!({ "type": "template", "template_id": "t", "language_code": "en_US" }),
            422,
            "template_not_supported",
        ),
        (
            &wa,
            json!({ "type": "choice_response", "message_id": "m", "postback_data": "p" }),
            422,
            "content_not_sendable",
        ),
        (
            &wa,
            json!({ "type": "media", "url": "ftp://x/y.png" }),
            422,
            "invalid_media_url",
        ),
        (&wa, json!({ "type": "hologram" }), 400, "invalid_json"),
    ] {
        let r = reply(&h, conv, content.clone()).await;
        assert_eq!(r.status().as_u16(), status, "{content}");
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["code"], code, "{content}: {err}");
    }
    let r = reply(
        &h,
        "no-such-conversation",
        json!({ "type": "text", "text": "x" }),
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = h
        .api(
            reqwest::Method::POST,
            &format!("/conversations/{wa}/messages"),
        )
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(h.counts().await, before, "refusals write nothing");
    // SMS within the cap is fine (10 segments).
    let r = reply(
        &h,
        &sms,
        json!({ "type": "text", "text": "x".repeat(1530) }),
    )
    .await;
    assert_eq!(r.status(), 202);
}

async fn whatsapp_window_allows_only_templates(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let conv = customer_writes(&h, "wa", ChannelType::Whatsapp).await;
    // The customer's last message is 25 hours old.
    let old = contact_runtime::storage::now_ms() - 25 * 3600 * 1000;
    let sql = "UPDATE conversations SET last_inbound_at = $1 WHERE id = $2";
    on_driver!(&h.store, |p| sqlx::query(sql)
        .bind(old)
        .bind(&conv)
        .execute(p)
        .await
        .map(|_| ()))
    .unwrap();
    let r = reply(&h, &conv, json!({ "type": "text", "text": "late" })).await;
    assert_eq!(r.status(), 422);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "outside_customer_care_window");
    let r = reply(
        &h,
        &conv,
        json!({ "type": "template", "template_id": "case_followup", "language_code": "en_US",
                "parameters": { "body[1]text": "T-1042" } }),
    )
    .await;
    assert_eq!(r.status(), 202);
    let log = eventually(10, "template sent", || async {
        let log = sent(&h).await;
        (!log.messages.is_empty()).then_some(log)
    })
    .await;
    assert_eq!(
        log.messages[0].body["message"]["template_message"]["channel_template"]["WHATSAPP"]["template_id"],
        "case_followup"
    );
}

/// Sinch's own window check runs after the send is accepted: when its view of the customer's
/// last message is older than 24 hours (here: the simulator is told so, as if an inbound message
/// never reached us), the send succeeds and a `FAILED` report with the window reason follows.
/// The customer writes through the simulator, so the first message is preceded by the contact
/// and conversation lifecycle callbacks, which the runtime acknowledges without storing anything.
async fn channel_refuses_late_message_asynchronously(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let identity = "46709990001";
    let r: Value = h
        .http
        .post(format!("{}/_sim/inbound", h.sim_url))
        .json(&json!({ "channel": "wa", "identity": identity, "text": "hello" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["runtime_status"], 200, "{r}");
    assert_eq!(r["runtime_response"]["outcome"], "stored", "{r}");
    let lifecycle: Vec<(&str, i64)> = r["lifecycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap(),
                l["runtime_status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lifecycle,
        vec![
            ("contact_create_notification", 200),
            ("conversation_start_notification", 200)
        ]
    );
    // One contact, one conversation, one message: the lifecycle callbacks added nothing.
    assert_eq!(h.counts().await[..4], [1, 1, 1, 1]);
    // A second message from the same customer has no lifecycle callbacks.
    let r: Value = h
        .http
        .post(format!("{}/_sim/inbound", h.sim_url))
        .json(&json!({ "channel": "wa", "identity": identity, "text": "still there?" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["lifecycle"], json!([]));
    let convs: Vec<Value> = h
        .api(reqwest::Method::GET, "/conversations")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conv = convs[0]["id"].as_str().unwrap().to_owned();

    let r = h
        .http
        .post(format!("{}/_sim/window", h.sim_url))
        .json(&json!({ "channel": "wa", "identity": identity, "last_inbound_secs_ago": 25 * 3600 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = reply(
        &h,
        &conv,
        json!({ "type": "text", "text": "sorry for the wait" }),
    )
    .await;
    assert_eq!(r.status(), 202, "the runtime's own window check passes");
    let late = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = eventually(10, "the window failure to arrive", || async {
        let m = h.store.message(&late).await.unwrap();
        (m.status.as_str() == "FAILED").then_some(m)
    })
    .await;
    let reason = failed.status_reason.unwrap_or_default();
    assert!(
        reason.starts_with("OUTSIDE_ALLOWED_SENDING_WINDOW: "),
        "{reason}"
    );
    // The send itself was accepted once, not retried.
    assert_eq!(sent(&h).await.messages.len(), 1);

    // A template is allowed outside the window and goes all the way.
    let r = reply(
        &h,
        &conv,
        json!({ "type": "template", "template_id": "case_followup", "language_code": "en_US",
                "parameters": { "body[1]text": "T-1042" } }),
    )
    .await;
    assert_eq!(r.status(), 202);
    let tpl = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(10, "the template to be read", || async {
        (status_of(&h.store, &tpl).await == "READ").then_some(())
    })
    .await;
}

async fn idempotency_key_makes_retries_safe(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let conv = customer_writes(&h, "wa", ChannelType::Whatsapp).await;
    let send = || {
        h.api(
            reqwest::Method::POST,
            &format!("/conversations/{conv}/messages"),
        )
        .header("Idempotency-Key", "agent-click-1")
        .json(&json!({ "content": { "type": "text", "text": "once" } }))
        .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(h.store.count("outbox").await.unwrap(), 1);
}

async fn server_errors_are_retried(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let conv = customer_writes(&h, "wa", ChannelType::Whatsapp).await;
    faults(&h, json!({ "fail_next": 3 })).await;
    let msg: Value = reply(&h, &conv, json!({ "type": "text", "text": "persist" }))
        .await
        .json()
        .await
        .unwrap();
    let id = msg["id"].as_str().unwrap();
    eventually(15, "sent after 3 failures", || async {
        (h.store.outbox_count("sent").await.unwrap() == 1).then_some(())
    })
    .await;
    let attempts = h.store.outbox_row(id).await.unwrap().attempts;
    assert_eq!(attempts, 4, "three 500s, then success");
    let log = sent(&h).await;
    assert_eq!(log.messages.len(), 1);
    assert_eq!(log.duplicates, 0);
}

async fn throttling_honours_retry_after(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let conv = customer_writes(&h, "wa", ChannelType::Whatsapp).await;
    faults(&h, json!({ "throttle_next": 1, "retry_after_secs": 1 })).await;
    let started = Instant::now();
    let msg: Value = reply(&h, &conv, json!({ "type": "text", "text": "slow down" }))
        .await
        .json()
        .await
        .unwrap();
    let id = msg["id"].as_str().unwrap();
    eventually(15, "sent after 429", || async {
        (h.store.outbox_count("sent").await.unwrap() == 1).then_some(())
    })
    .await;
    // Backoff alone would retry after ≤50 ms; Retry-After asked for a second.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let attempts = h.store.outbox_row(id).await.unwrap().attempts;
    assert_eq!(attempts, 2);
}

async fn timeouts_are_retried_without_duplicates(db: Db) {
    let h = Harness::start(db, |s| s.outbox.request_timeout_ms = 300).await;
    let conv = customer_writes(&h, "wa", ChannelType::Whatsapp).await;
    // The first answer comes after the client gave up; the simulator may still have taken it.
    faults(&h, json!({ "delay_next": 1, "delay_ms": 1000 })).await;
    let msg: Value = reply(&h, &conv, json!({ "type": "text", "text": "patience" }))
        .await
        .json()
        .await
        .unwrap();
    let id = msg["id"].as_str().unwrap().to_owned();
    eventually(15, "sent after a timeout", || async {
        (h.store.outbox_count("sent").await.unwrap() == 1).then_some(())
    })
    .await;
    let attempts = h.store.outbox_row(&id).await.unwrap().attempts;
    assert!(attempts >= 2, "attempts = {attempts}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let log = sent(&h).await;
    let for_id: Vec<_> = log
        .messages
        .iter()
        .filter(|m| m.correlation_id.as_deref() == Some(id.as_str()))
        .collect();
    assert_eq!(for_id.len(), 1, "delivered once, whatever the retries");
}

#[tokio::test]
async fn messages_give_up_after_max_attempts() {
    let h = Harness::start(Db::Sqlite, |s| s.outbox.max_attempts = 2).await;
    let conv = customer_writes(&h, "wa", ChannelType::Whatsapp).await;
    faults(&h, json!({ "fail_next": 10 })).await;
    let msg: Value = reply(&h, &conv, json!({ "type": "text", "text": "doomed" }))
        .await
        .json()
        .await
        .unwrap();
    let id = msg["id"].as_str().unwrap();
    eventually(10, "FAILED", || async {
        (status_of(&h.store, id).await == "FAILED").then_some(())
    })
    .await;
    let m = h.store.message(id).await.unwrap();
    assert!(
        m.status_reason
            .unwrap()
            .contains("gave up after 2 attempts")
    );
    assert_eq!(h.store.outbox_count("failed").await.unwrap(), 1);
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_before_expiry() {
    let (url, guard) = crate::support::database_url(Db::Sqlite);
    // Tokens live 2 s: the client refreshes after 1 s (half the lifetime for short tokens).
    let h = Harness::start_full(url, guard, |_| {}, |sim| sim.token_ttl_secs = 2).await;
    let conv = customer_writes(&h, "wa", ChannelType::Whatsapp).await;
    for n in 1..=3 {
        let r = reply(
            &h,
            &conv,
            json!({ "type": "text", "text": format!("reply {n}") }),
        )
        .await;
        assert_eq!(r.status(), 202);
        eventually(10, "sent", || async {
            (h.store.outbox_count("sent").await.unwrap() == n).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // Each send succeeded at the first attempt: no 401 from an expired token.
    let convs = h.store.messages(&conv).await.unwrap();
    for m in convs
        .iter()
        .filter(|m| m.direction == contact_runtime::domain::Direction::Outbound)
    {
        assert_eq!(
            h.store.outbox_row(&m.id).await.unwrap().attempts,
            1,
            "{m:?}"
        );
    }
}

#[tokio::test]
async fn simulator_refuses_bad_credentials_and_bearers() {
    let h = Harness::start(Db::Sqlite, |_| {}).await;
    let r = h
        .http
        .post(format!("{}/oauth2/token", h.sim_url))
        .basic_auth("test-key", Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = h
        .http
        .post(format!(
            "{}/v1/projects/test-project/messages:send",
            h.sim_url
        ))
        .bearer_auth("forged")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(err["error"]["code"], 401);
}
