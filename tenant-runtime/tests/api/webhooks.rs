//! The inbound webhook over real HTTP, on SQLite and PostgreSQL: signatures (valid, forged,
//! stale, replayed), every callback kind, malformed payloads without side effects, idempotent
//! duplicates, and a nonce replay caught after a restart.

use crate::support::{Db, Harness, inbound_text, signed};
use contact_runtime::domain::ChannelType;
use serde_json::Value;

crate::support::both!(
    signed_inbound_is_stored_and_listed,
    forged_signature_is_refused_without_side_effect,
    stale_timestamp_is_refused,
    replayed_nonce_is_refused,
    duplicate_delivery_is_acknowledged_once,
    malformed_payloads_are_refused_without_side_effect,
    every_callback_kind_is_told_apart,
    unknown_channel_app_is_not_found,
);

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

async fn signed_inbound_is_stored_and_listed(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let body = inbound_text(ChannelType::Whatsapp, "+46701234567", "MSG1", "Hello there");
    let (status, ack) = h.post_webhook("wa", &body).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["outcome"], "stored");
    assert_eq!(ack["kind"], "message");
    let convs: Vec<Value> = h
        .api(reqwest::Method::GET, "/conversations?status=queued")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(convs.len(), 1);
    assert_eq!(convs[0]["identity"], "46701234567");
    assert_eq!(convs[0]["channel"], "WHATSAPP");
    let id = convs[0]["id"].as_str().unwrap();
    let msgs: Vec<Value> = h
        .api(
            reqwest::Method::GET,
            &format!("/conversations/{id}/messages"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["content"]["type"], "text");
    assert_eq!(msgs[0]["content"]["text"], "Hello there");
    assert_eq!(msgs[0]["direction"], "inbound");
    let contact: Value = h
        .api(
            reqwest::Method::GET,
            &format!("/contacts/{}", convs[0]["contact_id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(contact["identities"][0]["identity"], "46701234567");
    let metrics = h
        .http
        .get(format!("{}/metrics", h.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"contact_webhooks_total{kind="message",outcome="stored"} 1"#),
        "{metrics}"
    );
}

async fn forged_signature_is_refused_without_side_effect(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let body = inbound_text(ChannelType::Whatsapp, "1", "MSG1", "hi");
    let before = h.counts().await;
    let headers = signed(
        &h.settings,
        "wa",
        &body,
        "n-1",
        chrono::Utc::now().timestamp(),
    );
    let forged = body.replace("hi", "pay me");
    let (status, err) = h.post_webhook_with("wa", &forged, headers).await;
    assert_eq!(status, 401);
    assert_eq!(err["error"]["code"], "bad_signature");
    // Signed with another app's secret.
    let headers = signed(
        &h.settings,
        "sms",
        &body,
        "n-2",
        chrono::Utc::now().timestamp(),
    );
    let (status, _) = h.post_webhook_with("wa", &body, headers).await;
    assert_eq!(status, 401);
    // No signature at all.
    let (status, err) = h
        .post_webhook_with("wa", &body, reqwest::header::HeaderMap::new())
        .await;
    assert_eq!(status, 401);
    assert_eq!(err["error"]["code"], "missing_signature");
    assert_eq!(h.counts().await, before);
}

async fn stale_timestamp_is_refused(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let body = inbound_text(ChannelType::Whatsapp, "1", "MSG1", "hi");
    let before = h.counts().await;
    let old = chrono::Utc::now().timestamp() - 301;
    let (status, err) = h
        .post_webhook_with("wa", &body, signed(&h.settings, "wa", &body, "n", old))
        .await;
    assert_eq!(status, 401);
    assert_eq!(err["error"]["code"], "stale_signature");
    assert_eq!(h.counts().await, before);
}

async fn replayed_nonce_is_refused(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let body = inbound_text(ChannelType::Whatsapp, "1", "MSG1", "hi");
    let headers = signed(
        &h.settings,
        "wa",
        &body,
        "nonce-1",
        chrono::Utc::now().timestamp(),
    );
    let (status, _) = h.post_webhook_with("wa", &body, headers.clone()).await;
    assert_eq!(status, 200);
    let before = h.counts().await;
    let (status, err) = h.post_webhook_with("wa", &body, headers.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(err["error"]["code"], "replayed_nonce");
    assert_eq!(h.counts().await, before);
    // A replay of an ignored kind is refused as well.
    let other = fixture("contact_create.json");
    let headers = signed(
        &h.settings,
        "wa",
        &other,
        "nonce-1",
        chrono::Utc::now().timestamp(),
    );
    let (status, _) = h.post_webhook_with("wa", &other, headers).await;
    assert_eq!(status, 401);
}

async fn duplicate_delivery_is_acknowledged_once(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let body = inbound_text(ChannelType::Whatsapp, "1", "MSG-DUP", "hi");
    let (status, ack) = h.post_webhook("wa", &body).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("stored")));
    for _ in 0..3 {
        // Redeliveries carry fresh nonces; the message id makes them idempotent.
        let (status, ack) = h.post_webhook("wa", &body).await;
        assert_eq!((status, ack["outcome"].as_str()), (200, Some("duplicate")));
    }
    assert_eq!(h.store.count("messages").await.unwrap(), 1);
    assert_eq!(h.store.count("conversations").await.unwrap(), 1);
}

async fn malformed_payloads_are_refused_without_side_effect(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let before = h.counts().await;
    for (body, needle) in [
        ("not json at all", "not a JSON object"),
        ("[1,2,3]", "not a JSON object"),
        (r#"{"message": {"id": "X"}}"#, "invalid `message` callback"),
        (
            r#"{"message": {"id": "X", "contact_message": {}, "channel_identity": {"channel": "WHATSAPP", "identity": "1"}}}"#,
            "no contact_message content",
        ),
        (
            r#"{"message": {"id": "X", "contact_message": {"text_message": {"text": 5}}, "channel_identity": {"channel": "WHATSAPP", "identity": "1"}}}"#,
            "invalid type",
        ),
        (
            r#"{"message": {"id": "X", "contact_message": {"text_message": {"text": "a"}}, "channel_identity": {"channel": "PIGEON", "identity": "1"}}}"#,
            "unsupported channel `PIGEON`",
        ),
        (
            r#"{"message": {"id": "X", "direction": "TO_CONTACT", "contact_message": {"text_message": {"text": "a"}}, "channel_identity": {"channel": "WHATSAPP", "identity": "1"}}}"#,
            "expected TO_APP",
        ),
        (
            r#"{"message_delivery_report": {"status": "READ"}}"#,
            "message_id",
        ),
    ] {
        let (status, err) = h.post_webhook("wa", body).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["code"], "invalid_callback");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{body}: `{message}` lacks `{needle}`"
        );
    }
    assert_eq!(
        h.counts().await,
        before,
        "a refused callback writes nothing"
    );
}

async fn every_callback_kind_is_told_apart(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let mut stored = 0;
    for file in [
        "inbound_text.json",
        "inbound_media.json",
        "inbound_media_card.json",
        "inbound_location.json",
        "inbound_fallback.json",
    ] {
        let (status, ack) = h.post_webhook("wa", &fixture(file)).await;
        assert_eq!(
            (status, ack["outcome"].as_str()),
            (200, Some("stored")),
            "{file}: {ack}"
        );
        stored += 1;
    }
    let (status, ack) = h.post_webhook("wa", &fixture("inbound_choice.json")).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("stored")),
        "{ack}"
    );
    stored += 1;
    assert_eq!(h.store.count("messages").await.unwrap(), stored);
    let before = h.counts().await;
    for (file, kind, outcome) in [
        (
            "delivery_read.json",
            "message_delivery_report",
            "unknown_message",
        ),
        (
            "contact_create.json",
            "contact_create_notification",
            "ignored",
        ),
        (
            "conversation_start.json",
            "conversation_start_notification",
            "ignored",
        ),
        ("event_composing.json", "event", "ignored"),
        (
            "message_submit.json",
            "message_submit_notification",
            "ignored",
        ),
        ("unknown_kind.json", "unknown", "ignored"),
    ] {
        let (status, ack) = h.post_webhook("wa", &fixture(file)).await;
        assert_eq!(status, 200, "{file}: {ack}");
        assert_eq!(ack["kind"], kind, "{file}");
        assert_eq!(ack["outcome"], outcome, "{file}");
    }
    let after = h.counts().await;
    // Only the delivery report's nonce was recorded; no domain row changed.
    assert_eq!(after[..5], before[..5]);
    assert_eq!(after[6], before[6]);
    assert_eq!(after[5], before[5] + 1);
    // The content types came through intact.
    let convs: Vec<Value> = h
        .api(reqwest::Method::GET, "/conversations")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut kinds = Vec::new();
    for c in &convs {
        let msgs: Vec<Value> = h
            .api(
                reqwest::Method::GET,
                &format!("/conversations/{}/messages", c["id"].as_str().unwrap()),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        kinds.extend(
            msgs.iter()
                .map(|m| m["content"]["type"].as_str().unwrap().to_owned()),
        );
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "choice_response",
            "location",
            "media",
            "media",
            "text",
            "unsupported"
        ]
    );
}

async fn unknown_channel_app_is_not_found(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let body = inbound_text(ChannelType::Whatsapp, "1", "M", "hi");
    let (status, err) = h.post_webhook("nope", &body).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_restart_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("c.sqlite").display());
    let body = inbound_text(ChannelType::Whatsapp, "1", "MSG1", "hi");
    let headers;
    {
        let h = Harness::start_on(url.clone(), crate::support::DbGuard::External, |_| {}).await;
        headers = signed(
            &h.settings,
            "wa",
            &body,
            "once",
            chrono::Utc::now().timestamp(),
        );
        let (status, _) = h.post_webhook_with("wa", &body, headers.clone()).await;
        assert_eq!(status, 200);
        h.stop_runtime();
        h.store.close().await;
    }
    let h = Harness::start_on(url, crate::support::DbGuard::External, |_| {}).await;
    let (status, err) = h.post_webhook_with("wa", &body, headers).await;
    assert_eq!(status, 401, "{err}");
    assert_eq!(err["error"]["code"], "replayed_nonce");
    assert_eq!(h.store.count("messages").await.unwrap(), 1);
}

#[tokio::test]
async fn probes_and_auth() {
    let h = Harness::start(Db::Sqlite, |_| {}).await;
    let get = |p: &str| h.http.get(format!("{}{p}", h.url)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let ready: Value = get("/readyz").await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    let r = get("/api/v1/conversations").await.unwrap();
    assert_eq!(r.status(), 401);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "unauthorized");
    let r = h
        .http
        .get(format!("{}/api/v1/conversations", h.url))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let doc: Value = get("/api/v1/openapi.json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/v1/conversations/{id}/messages"]["post"].is_object());
    let r = h
        .api(reqwest::Method::GET, "/conversations?status=sleeping")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "invalid_query");
    assert_eq!(get("/nowhere").await.unwrap().status(), 404);
    // axum's own refusals come in the same JSON shape.
    let r = get("/webhooks/sinch/wa").await.unwrap();
    assert_eq!(r.status(), 405);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "method_not_allowed");
    let r = h
        .http
        .post(format!("{}/webhooks/sinch/wa", h.url))
        .body(vec![b'x'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "payload_too_large");
    assert_eq!(h.store.count("webhook_nonces").await.unwrap(), 0);
}

#[tokio::test]
async fn simulator_plays_a_customer_with_every_content_type() {
    let h = Harness::start(Db::Sqlite, |_| {}).await;
    let contents = [
        serde_json::json!({ "text_message": { "text": "hi" } }),
        serde_json::json!({ "media_message": { "url": "https://m.example/a.jpg" } }),
        serde_json::json!({ "media_card_message": { "url": "https://m.example/b.jpg", "caption": "box" } }),
        serde_json::json!({ "location_message": { "coordinates": { "latitude": 1.0, "longitude": 2.0 }, "title": "here" } }),
        serde_json::json!({ "choice_response_message": { "message_id": "M1", "postback_data": "yes" } }),
    ];
    for c in &contents {
        let r: Value = h
            .http
            .post(format!("{}/_sim/inbound", h.sim_url))
            .json(&serde_json::json!({ "channel": "wa", "identity": "46709999999", "contact_message": c }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["runtime_status"], 200, "{r}");
        assert_eq!(r["runtime_response"]["outcome"], "stored", "{r}");
    }
    let convs = h
        .store
        .conversations(&contact_runtime::storage::ConversationFilter {
            status: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(convs.len(), 1);
    let kinds: Vec<_> = h
        .store
        .messages(&convs[0].id)
        .await
        .unwrap()
        .iter()
        .map(|m| m.content.kind())
        .collect();
    assert_eq!(
        kinds,
        ["text", "media", "media", "location", "choice_response"]
    );
}
