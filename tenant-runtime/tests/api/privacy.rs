//! Personal data on real databases: the audit chain (tampering found, purging keeps it
//! verifiable), the retention job under an injected clock, the DPO's search, export and
//! anonymization over real HTTP (proved by scanning every column of every table), and contact
//! import/export. Every case runs on SQLite and on PostgreSQL.

use std::sync::Arc;

use crate::support::{Db, Harness, inbound_text, store};
use contact_runtime::config::RetentionSettings;
use contact_runtime::domain::audit::{AuditAction, AuditChange, Broken};
use contact_runtime::domain::{ChannelType, MessageContent};
use contact_runtime::http::auth::password;
use contact_runtime::privacy::ManualClock;
use contact_runtime::privacy::retention::RetentionJob;
use contact_runtime::storage::{
    AuditQuery, InboundMessage, InboundOutcome, NewOutbound, Nonce, Store, new_id, now_ms,
    on_driver,
};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;

crate::support::both!(
    migration_0110_keeps_an_existing_chain,
    audit_entries_commit_unchained_and_chain_later,
    background_chainers_on_two_replicas_make_one_chain,
    audit_chain_detects_tampering,
    audit_purge_keeps_the_chain_verifiable,
    inbound_and_outbound_writes_are_audited,
    concurrent_writers_keep_one_chain,
    retention_anonymizes_then_deletes_resumably,
    two_retention_runners_do_not_overlap,
    dpo_search_export_anonymize_leaves_no_trace,
    privacy_routes_need_the_dpo_role,
    forged_actor_header_changes_nothing,
    contact_import_and_export,
);

const DAY: i64 = 86_400_000;

fn nonce() -> Nonce {
    Nonce {
        channel_app: "wa".into(),
        nonce: new_id(),
        expires_at: now_ms() + 600_000,
    }
}

async fn inbound(store: &Store, identity: &str, text: &str) -> (String, String) {
    let msg = InboundMessage {
        channel_app: "wa".into(),
        channel: ChannelType::Whatsapp,
        identity: identity.into(),
        external_id: new_id(),
        content: MessageContent::Text { text: text.into() },
        category_id: None,
        reopen_closed_since: None,
    };
    match store.record_inbound(&nonce(), &msg).await.unwrap() {
        InboundOutcome::Stored {
            conversation_id,
            contact_id,
            ..
        } => (contact_id, conversation_id),
        other => panic!("not stored: {other:?}"),
    }
}

/// Percent-encodes a query value.
fn enc(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Runs `sql` (an UPDATE/DELETE with one optional i64 parameter) on the raw pool.
async fn exec(store: &Store, sql: &str, arg: i64) {
    on_driver!(store, |p| {
        sqlx::query(AssertSqlSafe(sql.to_owned()))
            .bind(arg)
            .execute(p)
            .await
            .unwrap();
    });
}

/// Every (table, column) of the database, and the ones whose text contains `needle`.
async fn columns_containing(store: &Store, needle: &str) -> (usize, Vec<String>) {
    let cols: Vec<(String, String)> = match store {
        Store::Sqlite(p) => sqlx::query_as(
            "SELECT m.name, c.name FROM sqlite_master m JOIN pragma_table_info(m.name) c \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
        )
        .fetch_all(p)
        .await
        .unwrap(),
        Store::Postgres(p) => sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns WHERE table_schema = current_schema()",
        )
        .fetch_all(p)
        .await
        .unwrap(),
    };
    let mut hits = Vec::new();
    let pattern = format!("%{}%", needle.to_lowercase());
    for (t, c) in &cols {
        let sql =
            format!("SELECT COUNT(*) FROM \"{t}\" WHERE LOWER(CAST(\"{c}\" AS TEXT)) LIKE $1");
        let n: i64 = on_driver!(store, |p| sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
            .bind(&pattern)
            .fetch_one(p)
            .await
            .unwrap());
        if n > 0 {
            hits.push(format!("{t}.{c}"));
        }
    }
    (cols.len(), hits)
}

async fn audit_changes(store: &Store, n: usize) {
    let changes: Vec<AuditChange> = (0..n)
        .map(|i| {
            AuditChange::new(
                "user-1",
                AuditAction::Update,
                "contact",
                "c1",
                "display_name",
                Some(format!("Name {i}")),
            )
            .about("c1")
        })
        .collect();
    store.audit_append(now_ms(), &changes).await.unwrap();
    // Entries commit unchained; the tampering cases below edit chained entries.
    store.settle_audit().await.unwrap();
}

async fn chained_count(store: &Store) -> i64 {
    on_driver!(store, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE seq IS NOT NULL"
    )
    .fetch_one(p)
    .await
    .unwrap())
}

/// A database whose audit log was written before migration 0110 (chained inline) keeps its chain
/// across the migration, and new entries chain on after it.
async fn migration_0110_keeps_an_existing_chain(db: Db) {
    use contact_runtime::domain::audit::{GENESIS_HASH, seal};
    let (url, _g) = crate::support::database_url(db);
    let store = Store::connect(&url, &Default::default()).await.unwrap();
    let dir = match db {
        Db::Sqlite => "migrations/sqlite",
        Db::Postgres => "migrations/postgres",
    };
    // Every migration but 0110: deployed databases have the later-numbered 0200s already.
    let mut before = sqlx::migrate::Migrator::new(std::path::Path::new(dir))
        .await
        .unwrap();
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version != 110)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let mut prev = GENESIS_HASH.to_owned();
    let mut old = Vec::new();
    for seq in 1..=3 {
        let change = AuditChange::new(
            "u",
            AuditAction::Update,
            "contact",
            "c",
            "email",
            Some(format!("{seq}@x.io")),
        )
        .about("c");
        let e = seal(seq, now_ms(), &prev, &change);
        prev = e.hash.clone();
        old.push(e);
    }
    let insert = "INSERT INTO audit_log (seq, at, actor, action, entity, entity_id, subject_id, attribute, new_value, salt, value_hash, prev_hash, hash) \
                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
    on_driver!(&store, |pool| {
        before.run(pool).await.unwrap();
        for e in &old {
            sqlx::query(insert)
                .bind(e.seq)
                .bind(e.at)
                .bind(&e.actor)
                .bind(&e.action)
                .bind(&e.entity)
                .bind(&e.entity_id)
                .bind(&e.subject_id)
                .bind(&e.attribute)
                .bind(&e.new_value)
                .bind(&e.salt)
                .bind(&e.value_hash)
                .bind(&e.prev_hash)
                .bind(&e.hash)
                .execute(pool)
                .await
                .unwrap();
        }
    });
    store.migrate().await.unwrap();
    audit_changes(&store, 2).await;
    let r = store.verify_audit_chain().await.unwrap();
    assert_eq!((r.checked, r.broken, r.pending), (5, None, 0));
    let entries = store.audit_entries(&AuditQuery::default()).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(entries[..3], old[..]);
}

async fn audit_entries_commit_unchained_and_chain_later(db: Db) {
    let (store, _g) = store(db).await;
    let (contact, _) = inbound(&store, "46700000077", "first").await;
    inbound(&store, "46700000077", "second").await;
    // Committed with the messages, not chained yet: contact, identity and two contents.
    assert_eq!(store.audit_pending().await.unwrap(), 4);
    assert_eq!(chained_count(&store).await, 0);
    // Redacting before chaining is fine: the chain covers the salted value hash, not the value.
    exec(
        &store,
        "UPDATE audit_log SET new_value = NULL, salt = NULL, redacted_at = $1 WHERE attribute = 'identity:WHATSAPP'",
        now_ms(),
    )
    .await;
    // Another one commits while an earlier one is still unchained: the chainer links what it
    // finds, in row order, and a later pass continues the same chain.
    assert_eq!(store.chain_audit(3).await.unwrap(), 3);
    assert_eq!(store.audit_pending().await.unwrap(), 1);
    inbound(&store, "46700000077", "third").await;
    let r = store.verify_audit_chain().await.unwrap();
    assert_eq!((r.checked, r.broken, r.pending), (5, None, 0));
    let entries = store
        .audit_entries(&AuditQuery {
            subject_id: Some(contact),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(entries[1].new_value, None);
    assert!(entries[4].new_value.as_deref().unwrap().contains("third"));
}

async fn background_chainers_on_two_replicas_make_one_chain(db: Db) {
    use contact_runtime::privacy::chainer::AuditChainer;
    let (url, _g) = crate::support::database_url(db);
    let connect = || async {
        let s = Store::connect(&url, &Default::default()).await.unwrap();
        s.migrate().await.unwrap();
        s
    };
    let (a, b) = (connect().await, connect().await);
    // Two replicas, each with its chainer, while both take traffic.
    let chainers = [
        tokio::spawn(AuditChainer::new(a.clone()).run_forever()),
        tokio::spawn(AuditChainer::new(b.clone()).run_forever()),
    ];
    let writers: Vec<_> = (0..6)
        .map(|t| {
            let store = if t % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for i in 0..20 {
                    inbound(&store, &format!("467400{t}{:02}", i % 5), "replica").await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    // The chainers catch up on their own: wait for the tail to drain (no settle here).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while a.audit_pending().await.unwrap() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "chainers did not catch up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for c in chainers {
        c.abort();
    }
    // 120 messages and 30 new contacts with one identity each, in one unbroken chain.
    assert_eq!(chained_count(&a).await, 120 + 2 * 30);
    let r = b.verify_audit_chain().await.unwrap();
    assert_eq!((r.checked, r.broken, r.pending), (180, None, 0));
}

async fn audit_chain_detects_tampering(db: Db) {
    let (store, _g) = store(db).await;
    audit_changes(&store, 5).await;
    let ok = store.verify_audit_chain().await.unwrap();
    assert_eq!((ok.checked, ok.broken), (5, None));

    exec(
        &store,
        "UPDATE audit_log SET new_value = 'Mallory' WHERE seq = $1",
        3,
    )
    .await;
    let r = store.verify_audit_chain().await.unwrap();
    assert_eq!(r.broken, Some(Broken::Value { seq: 3 }));
    assert_eq!(r.checked, 2);

    let (store, _g) = crate::support::store(db).await;
    audit_changes(&store, 5).await;
    exec(&store, "UPDATE audit_log SET at = at + $1 WHERE seq = 2", 1).await;
    assert_eq!(
        store.verify_audit_chain().await.unwrap().broken,
        Some(Broken::Content { seq: 2 })
    );

    let (store, _g) = crate::support::store(db).await;
    audit_changes(&store, 5).await;
    exec(&store, "DELETE FROM audit_log WHERE seq = $1", 4).await;
    assert_eq!(
        store.verify_audit_chain().await.unwrap().broken,
        Some(Broken::Gap {
            seq: 5,
            expected: 4
        })
    );
}

async fn audit_purge_keeps_the_chain_verifiable(db: Db) {
    let (store, _g) = store(db).await;
    let t0 = now_ms();
    for day in 0..6 {
        store
            .audit_append(
                t0 + day * DAY,
                &[AuditChange::new(
                    "u",
                    AuditAction::Update,
                    "contact",
                    "c",
                    "email",
                    Some(format!("{day}@x.io")),
                )],
            )
            .await
            .unwrap();
    }
    // Batches of 2 until everything older than day 4 is gone.
    let mut purged = 0;
    loop {
        let n = store.purge_audit(t0 + 4 * DAY, 2).await.unwrap();
        if n == 0 {
            break;
        }
        purged += n;
    }
    assert_eq!(purged, 4);
    let left = store.audit_entries(&AuditQuery::default()).await.unwrap();
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 6]);
    let r = store.verify_audit_chain().await.unwrap();
    assert_eq!((r.checked, r.anchor_seq, r.broken), (2, Some(4), None));
    // New entries chain on, and removing the oldest survivor is still detected.
    audit_changes(&store, 1).await;
    assert_eq!(store.verify_audit_chain().await.unwrap().broken, None);
    exec(&store, "DELETE FROM audit_log WHERE seq = $1", 5).await;
    assert_eq!(
        store.verify_audit_chain().await.unwrap().broken,
        Some(Broken::Gap {
            seq: 6,
            expected: 5
        })
    );
}

async fn inbound_and_outbound_writes_are_audited(db: Db) {
    let (store, _g) = store(db).await;
    let (contact, conversation) = inbound(&store, "46700000001", "hello").await;
    inbound(&store, "46700000001", "again").await;
    store
        .enqueue_outbound(&NewOutbound {
            id: new_id(),
            conversation_id: conversation,
            content: MessageContent::Text {
                text: "hi back".into(),
            },
            payload: json!({}),
            author_user_id: None,
            idempotency_key: None,
        })
        .await
        .unwrap();
    let entries = store
        .audit_entries(&AuditQuery {
            subject_id: Some(contact),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let summary: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e.actor.as_str(), e.entity.as_str(), e.attribute.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("channel:wa", "contact", "id"),
            ("channel:wa", "contact_identity", "identity:WHATSAPP"),
            ("channel:wa", "message", "content"),
            ("channel:wa", "message", "content"),
            ("api", "message", "content"),
        ]
    );
    assert_eq!(entries[1].new_value.as_deref(), Some("46700000001"));
    assert!(entries[4].new_value.as_deref().unwrap().contains("hi back"));
    assert_eq!(store.verify_audit_chain().await.unwrap().broken, None);
}

async fn concurrent_writers_keep_one_chain(db: Db) {
    let (store, _g) = store(db).await;
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..15 {
                    inbound(&store, &format!("467200{t}{:02}", i % 4), "concurrent").await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let r = store.verify_audit_chain().await.unwrap();
    assert_eq!(r.broken, None);
    // 120 messages, and 32 new contacts with one identity each.
    assert_eq!(r.checked, 120 + 2 * 32);
}

async fn retention_anonymizes_then_deletes_resumably(db: Db) {
    let (store, _g) = store(db).await;
    let (c1, first) = inbound(&store, "46700000011", "old secret one").await;
    let (_c2, _) = inbound(&store, "46700000012", "old secret two").await;
    let (c3, open) = inbound(&store, "46700000013", "still talking").await;
    // Internal notes on a closed and on the open conversation.
    let agent = store
        .create_user(&contact_runtime::domain::api::NewUser {
            email: "agent@example.org".into(),
            display_name: "Agent".into(),
            role: contact_runtime::domain::Role::Agent,
            password_hash: None,
            skill_ids: Vec::new(),
        })
        .await
        .unwrap()
        .id;
    store
        .add_note(&first, &agent, "old secret note: lives at Oak Road 3")
        .await
        .unwrap();
    store
        .add_note(&open, &agent, "still talking note")
        .await
        .unwrap();
    let closed_at = now_ms();
    exec(
        &store,
        "UPDATE conversations SET status = 'closed', closed_at = $1 WHERE status <> 'closed'",
        closed_at,
    )
    .await;
    // The third customer's conversation is still open.
    let reopen = format!(
        "UPDATE conversations SET status = 'queued', closed_at = NULL WHERE id = '{open}' AND $1 = 1"
    );
    exec(&store, &reopen, 1).await;
    let clock = ManualClock::at(closed_at + 89 * DAY);
    let settings = RetentionSettings {
        batch_size: 1,
        ..RetentionSettings::default()
    };
    let job = RetentionJob::new(store.clone(), Arc::new(clock.clone()), settings);

    // Day 89: nothing is due.
    let r = job.run_once(None).await.unwrap();
    assert_eq!((r.anonymized, r.deleted, r.audit_purged), (0, 0, 0));

    // Day 91: two closed conversations are due; stop after one batch, then resume.
    clock.advance_days(2);
    let r = job.run_once(Some(1)).await.unwrap();
    assert_eq!(r.anonymized, 1);
    let cp = store
        .retention_checkpoint("anonymize_conversations")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cp.processed, 1);
    let r = job.run_once(None).await.unwrap();
    assert_eq!(r.anonymized, 1, "the resumed run does the rest: {r:?}");
    assert!(
        store
            .retention_checkpoint("anonymize_conversations")
            .await
            .unwrap()
            .is_none()
    );
    let again = job.run_once(None).await.unwrap();
    assert_eq!((again.anonymized, again.deleted), (0, 0), "idempotent");

    let (_, hits) = columns_containing(&store, "old secret").await;
    assert!(hits.is_empty(), "old texts survive in {hits:?}");
    let (_, hits) = columns_containing(&store, "46700000011").await;
    assert!(hits.is_empty(), "identity survives in {hits:?}");
    let (_, hits) = columns_containing(&store, "still talking").await;
    assert!(!hits.is_empty(), "the open conversation keeps its content");
    let (_, hits) = columns_containing(&store, "still talking note").await;
    assert!(!hits.is_empty(), "the open conversation keeps its notes");
    assert_eq!(store.count("messages").await.unwrap(), 3, "counts are kept");
    assert_eq!(store.count("conversation_notes").await.unwrap(), 2);
    let notes = store.notes(&first).await.unwrap();
    assert_eq!(notes[0].text, "[anonymized]");
    assert!(
        store
            .contact_details(&c1)
            .await
            .unwrap()
            .anonymized_at
            .is_some()
    );
    assert!(
        store
            .contact_details(&c3)
            .await
            .unwrap()
            .anonymized_at
            .is_none()
    );

    // Day 366: the closed conversations go, with their contacts; the audit log is purged up
    // to what the jobs wrote since, and still verifies.
    clock.set(closed_at + 366 * DAY);
    let r = job.run_once(None).await.unwrap();
    assert_eq!(r.deleted, 2);
    assert!(r.audit_purged > 0);
    assert_eq!(store.count("conversations").await.unwrap(), 1);
    assert_eq!(store.count("messages").await.unwrap(), 1);
    assert_eq!(
        store.count("conversation_notes").await.unwrap(),
        1,
        "notes go with their conversation"
    );
    assert_eq!(store.count("contacts").await.unwrap(), 1);
    let v = store.verify_audit_chain().await.unwrap();
    assert_eq!(v.broken, None);
    assert!(v.anchor_seq.is_some());
}

async fn two_retention_runners_do_not_overlap(db: Db) {
    let (store, _g) = store(db).await;
    for i in 0..12 {
        inbound(&store, &format!("4673000{i:04}"), "due").await;
    }
    let closed_at = now_ms();
    exec(
        &store,
        "UPDATE conversations SET status = 'closed', closed_at = $1",
        closed_at,
    )
    .await;
    let clock = Arc::new(ManualClock::at(closed_at + 100 * DAY));
    let settings = RetentionSettings {
        batch_size: 2,
        ..RetentionSettings::default()
    };
    // Two replicas, each with its own job, at the same time.
    let a = RetentionJob::new(store.clone(), clock.clone(), settings.clone());
    let b = RetentionJob::new(store.clone(), clock, settings);
    let (ra, rb) = tokio::join!(a.run_once(None), b.run_once(None));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.anonymized + rb.anonymized, 12, "{ra:?} {rb:?}");
    let entries = store.audit_entries(&AuditQuery::default()).await.unwrap();
    let per_conversation = entries
        .iter()
        .filter(|e| {
            e.entity == "conversation" && e.action == "anonymize" && e.attribute == "messages"
        })
        .count();
    assert_eq!(per_conversation, 12, "each conversation anonymized once");
    assert_eq!(store.verify_audit_chain().await.unwrap().broken, None);
}

/// Creates a user through the API and returns its id.
/// Creates a user through the API and a browser session for them (stored the way
/// `/auth/login` stores one: only the SHA-256 of the cookie value); returns the user id.
async fn user(h: &Harness, email: &str, role: &str) -> String {
    let resp = h
        .api(Method::POST, "/users")
        .json(&json!({ "email": email, "display_name": email, "role": role }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.store
        .create_session(
            &password::token_hash(&format!("sid-{id}")),
            &id,
            &format!("csrf-{id}"),
            now_ms() + 3_600_000,
        )
        .await
        .unwrap();
    id
}

/// A request of `user`'s browser session (cookie and CSRF token), without the bearer token.
fn as_user(h: &Harness, user: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    h.http
        .request(method, format!("{}/api/v1{path}", h.url))
        .header("cookie", format!("contact_session=sid-{user}"))
        .header("x-csrf-token", format!("csrf-{user}"))
}

async fn dpo_search_export_anonymize_leaves_no_trace(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let dpo = user(&h, "dpo@example.org", "dpo").await;
    let agent = user(&h, "agent@example.org", "agent").await;
    let supervisor = user(&h, "supervisor@example.org", "admin").await;
    let secrets = [
        "Alice Example",
        "alice@example.com",
        "alice.old@example.com",
        "46701112233",
        "Elm Street",
        "cdn.example.net",
        "Prefers Mornings Elmwood",
        // Only in an internal note: what an agent typed about her.
        "Birchwood Lane 12",
    ];
    for (i, text) in [
        "Hi, I live on Elm Street 7",
        "photo at https://cdn.example.net/a.jpg",
    ]
    .iter()
    .enumerate()
    {
        let body = inbound_text(ChannelType::Whatsapp, "46701112233", &format!("m{i}"), text);
        assert_eq!(h.post_webhook("wa", &body).await.0, 200);
    }
    // Another customer, who must be left alone.
    let other = inbound_text(ChannelType::Whatsapp, "46709999999", "o1", "Bob here");
    assert_eq!(h.post_webhook("wa", &other).await.0, 200);
    let contacts: Value = h
        .api(Method::GET, "/contacts")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let contact = contacts
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["identities"][0]["identity"] == "46701112233")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let conversations: Value = h
        .api(Method::GET, "/conversations")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conversation = conversations
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["contact_id"] == contact.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sent = h
        .api(Method::POST, &format!("/conversations/{conversation}/messages"))
        .json(&json!({ "content": { "type": "text", "text": "Noted, Elm Street 7" }, "author_user_id": agent }))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let patched = as_user(&h, &agent, Method::PATCH, &format!("/privacy/contacts/{contact}"))
        .json(&json!({ "display_name": "Alice Example", "email": "alice.old@example.com", "phone": "+46 70 111 22 33" }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    // Attributes are personal data too: set by an admin (the API token here), audited.
    let attributes = h
        .api(Method::PUT, &format!("/contacts/{contact}/attributes"))
        .json(&json!({ "attributes": { "crm_note": "Prefers Mornings Elmwood", "tier": "gold" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(attributes.status(), 200);
    // Agents' internal notes repeat what the customer said: personal data as well.
    let note = as_user(
        &h,
        &supervisor,
        Method::POST,
        &format!("/conversations/{conversation}/notes"),
    )
    .json(&json!({ "text": "Moved to Birchwood Lane 12, call 46701112233 after 5" }))
    .send()
    .await
    .unwrap();
    assert_eq!(note.status(), 201);

    search_and_export_find_everything(&h, &dpo, &agent, &supervisor, &contact, &secrets).await;
}

/// The first half of [`dpo_search_export_anonymize_leaves_no_trace`]: search finds the contact by every key, the export holds all of it.
async fn search_and_export_find_everything(
    h: &Harness,
    dpo: &str,
    agent: &str,
    supervisor: &str,
    contact: &str,
    secrets: &[&str],
) {
    // Search by every kind of key finds her, and only her.
    for q in [
        "alice.old@example.com",
        "ALICE.old@example.com",
        "+46 70 111 22 33",
        "46701112233",
        "alice ex",
        "prefers mornings elmwood",
    ] {
        let found: Value = as_user(
            h,
            dpo,
            Method::GET,
            &format!("/privacy/subjects?q={}", enc(q)),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let ids: Vec<&str> = found
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![contact], "q={q}");
    }

    // An address she had before is hers too: it is found through the audit log.
    let moved = as_user(
        h,
        agent,
        Method::PATCH,
        &format!("/privacy/contacts/{contact}"),
    )
    .json(&json!({ "email": "alice@example.com" }))
    .send()
    .await
    .unwrap();
    assert_eq!(moved.status(), 200);
    let found: Value = as_user(
        h,
        dpo,
        Method::GET,
        "/privacy/subjects?q=alice.old%40example.com",
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(found[0]["id"], contact);

    // The export holds all of it, including who changed what.
    let export = as_user(
        h,
        dpo,
        Method::GET,
        &format!("/privacy/subjects/{contact}/export"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(export.status(), 200);
    assert!(
        export.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let export: Value = export.json().await.unwrap();
    let text = export.to_string();
    for s in secrets {
        assert!(text.contains(s), "export lacks {s}");
    }
    assert_eq!(export["messages"].as_array().unwrap().len(), 3);
    assert_eq!(export["notes"].as_array().unwrap().len(), 1);
    assert_eq!(export["notes"][0]["author_user_id"], supervisor);
    assert_eq!(export["contact"]["attributes"]["tier"], "gold");
    let audit = export["audit"].as_array().unwrap();
    assert!(audit.iter().any(|e| e["actor"] == "api"
        && e["entity"] == "contact_attribute"
        && e["attribute"] == "crm_note"));
    assert!(
        audit
            .iter()
            .any(|e| e["actor"] == agent && e["attribute"] == "email")
    );
    assert!(
        audit
            .iter()
            .any(|e| e["actor"] == "channel:wa" && e["entity"] == "message")
    );

    anonymize_leaves_no_trace(h, dpo, agent, contact, secrets).await;
}

/// The second half of [`dpo_search_export_anonymize_leaves_no_trace`]: the DPO anonymizes the contact, then the agent; nothing of either survives anywhere.
async fn anonymize_leaves_no_trace(
    h: &Harness,
    dpo: &str,
    agent: &str,
    contact: &str,
    secrets: &[&str],
) {
    // Anonymize: the confirmation must name the contact.
    let wrong = as_user(
        h,
        dpo,
        Method::POST,
        &format!("/privacy/subjects/{contact}/anonymize"),
    )
    .json(&json!({ "confirm": "yes" }))
    .send()
    .await
    .unwrap();
    assert_eq!(wrong.status(), 400);
    let report: Value = as_user(
        h,
        dpo,
        Method::POST,
        &format!("/privacy/subjects/{contact}/anonymize"),
    )
    .json(&json!({ "confirm": contact }))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(report["messages"], 3);
    assert_eq!(report["notes"], 1);
    assert_eq!(report["identities"], 1);

    // Gone from every column of every table...
    let (columns, _) = columns_containing(&h.store, "zz-nothing").await;
    assert!(columns > 60, "scanned only {columns} columns");
    for s in secrets {
        let (_, hits) = columns_containing(&h.store, s).await;
        assert!(hits.is_empty(), "`{s}` survives in {hits:?}");
    }
    // ...while the other customer's data and the statistics stay.
    let (_, hits) = columns_containing(&h.store, "Bob here").await;
    assert!(!hits.is_empty());
    assert_eq!(h.store.count("messages").await.unwrap(), 4);
    assert_eq!(h.store.count("conversation_notes").await.unwrap(), 1);
    // Gone from search and export too.
    let found: Value = as_user(h, dpo, Method::GET, "/privacy/subjects?q=46701112233")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found, json!([]));
    let export: Value = as_user(
        h,
        dpo,
        Method::GET,
        &format!("/privacy/subjects/{contact}/export"),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let text = export.to_string();
    for s in secrets {
        assert!(!text.contains(s), "export still holds {s}");
    }
    assert!(export["contact"]["anonymized_at"].is_string());
    assert_eq!(export["contact"]["attributes"], json!({}));
    assert_eq!(export["notes"][0]["text"], "[anonymized]");
    assert!(
        export["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "anonymize" && e["attribute"] == "notes")
    );
    // The chain still verifies, and the anonymization is in it.
    let verify: Value = as_user(h, dpo, Method::GET, "/privacy/audit/verify")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verify["broken"], Value::Null);
    assert!(
        export["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "anonymize" && e["actor"] == dpo)
    );
    // User data goes only on explicit request; the agent's messages stay counted.
    let gone: Value = as_user(
        h,
        dpo,
        Method::POST,
        &format!("/privacy/users/{agent}/anonymize"),
    )
    .json(&json!({ "confirm": agent }))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(gone["audit_entries_redacted"].as_u64().unwrap() >= 3);
    let (_, hits) = columns_containing(&h.store, "agent@example.org").await;
    assert!(hits.is_empty(), "the agent's e-mail survives in {hits:?}");
    assert_eq!(h.store.count("users").await.unwrap(), 3);
    assert_eq!(h.store.verify_audit_chain().await.unwrap().broken, None);

    // A new message from the same number is a new, unlinked contact.
    let again = inbound_text(ChannelType::Whatsapp, "46701112233", "m9", "back again");
    assert_eq!(h.post_webhook("wa", &again).await.0, 200);
    assert_eq!(h.store.count("contacts").await.unwrap(), 3);
}

async fn privacy_routes_need_the_dpo_role(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let agent = user(&h, "agent@example.org", "agent").await;
    let admin = user(&h, "admin@example.org", "admin").await;
    let dpo = user(&h, "dpo@example.org", "dpo").await;
    // The role is the session's: naming a DPO in X-Contact-User does not lend an agent, an
    // admin or the API token the DPO's rights.
    let cases = [
        (
            as_user(&h, &agent, Method::GET, "/privacy/audit/verify"),
            403,
        ),
        (
            as_user(&h, &admin, Method::GET, "/privacy/audit/verify"),
            403,
        ),
        (h.api(Method::GET, "/privacy/audit/verify"), 403),
        (as_user(&h, &dpo, Method::GET, "/privacy/audit/verify"), 200),
    ];
    for (i, (req, status)) in cases.into_iter().enumerate() {
        let resp = req.header("X-Contact-User", &dpo).send().await.unwrap();
        assert_eq!(resp.status(), status, "case {i}");
        if status == 403 {
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "forbidden", "case {i}");
        }
    }
    // Without a session or token: 401, header or not.
    let resp = h
        .http
        .get(format!("{}/api/v1/privacy/audit/verify", h.url))
        .header("X-Contact-User", &dpo)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // A session's state change without its CSRF token is refused.
    let resp = h
        .http
        .post(format!("{}/api/v1/privacy/retention/run", h.url))
        .header("cookie", format!("contact_session=sid-{dpo}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let bad = as_user(&h, &dpo, Method::GET, "/privacy/subjects?q=")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let missing = as_user(&h, &dpo, Method::POST, "/privacy/subjects/nope/anonymize")
        .json(&json!({ "confirm": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// Whatever `X-Contact-User` says, the audit log records the authenticated principal: the
/// session's user, or `api` for the bearer token.
async fn forged_actor_header_changes_nothing(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let admin = user(&h, "admin@example.org", "admin").await;
    let dpo = user(&h, "dpo@example.org", "dpo").await;
    let agent = user(&h, "agent@example.org", "agent").await;
    let msg = inbound_text(ChannelType::Whatsapp, "46705550001", "f1", "Hi, Carol here");
    assert_eq!(h.post_webhook("wa", &msg).await.0, 200);
    let found: Value = as_user(&h, &dpo, Method::GET, "/privacy/subjects?q=46705550001")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let contact = found[0]["id"].as_str().unwrap().to_owned();

    // A DPO naming the admin: the export and the anonymization are the DPO's.
    let resp = as_user(
        &h,
        &dpo,
        Method::GET,
        &format!("/privacy/subjects/{contact}/export"),
    )
    .header("X-Contact-User", &admin)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    // An agent's contact edit naming the DPO, and the token's naming the admin.
    let resp = as_user(
        &h,
        &agent,
        Method::PATCH,
        &format!("/privacy/contacts/{contact}"),
    )
    .header("X-Contact-User", &dpo)
    .json(&json!({ "display_name": "Carol" }))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = h
        .api(Method::PATCH, &format!("/privacy/contacts/{contact}"))
        .header("X-Contact-User", &admin)
        .json(&json!({ "email": "carol@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = h
        .api(Method::GET, "/privacy/contacts/export")
        .header("X-Contact-User", &dpo)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = as_user(
        &h,
        &dpo,
        Method::POST,
        &format!("/privacy/subjects/{contact}/anonymize"),
    )
    .header("X-Contact-User", &admin)
    .json(&json!({ "confirm": contact }))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);

    let entries = h.store.audit_entries(&AuditQuery::default()).await.unwrap();
    let actor_of = |action: &str, attribute: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e.action == action && e.attribute == attribute)
            .map(|e| e.actor.clone())
            .collect()
    };
    assert_eq!(
        actor_of("export", "subject_access_export"),
        vec![dpo.clone()]
    );
    assert_eq!(actor_of("update", "display_name"), vec![agent.clone()]);
    assert_eq!(actor_of("update", "email"), vec!["api".to_owned()]);
    assert_eq!(
        actor_of("export", "contacts_export"),
        vec!["api".to_owned()]
    );
    let anonymizers: Vec<&str> = entries
        .iter()
        .filter(|e| e.action == "anonymize")
        .map(|e| e.actor.as_str())
        .collect();
    assert!(!anonymizers.is_empty());
    assert!(anonymizers.iter().all(|a| *a == dpo), "{anonymizers:?}");
    assert!(
        entries.iter().all(|e| e.actor != admin),
        "the admin never acted"
    );
    assert_eq!(h.store.verify_audit_chain().await.unwrap().broken, None);
}

async fn contact_import_and_export(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let admin = user(&h, "admin@example.org", "admin").await;
    // Attributes take one `attr:<key>` column each; values are kept as written (quotes,
    // separators, outer spaces), an empty cell is no attribute.
    let long = "x".repeat(201);
    let csv = format!(
        "display_name,email,phone,identities,attr:tier,attr:crm.note\n\
         Ann Import,ann@example.com,+46 70 000 0001,WHATSAPP:46700000001,gold,\"Likes \"\"quotes\"\"; a=b, c\"\n\
         Bad Mail,bad-mail,,,,\n\
         Ben Import,,,SMS:46700000002;TELEGRAM:ben_t,, padded \n\
         Dup,,,WHATSAPP:46700000001,,\n\
         Eve Long,,,,{long},\n"
    );
    let resp = as_user(&h, &admin, Method::POST, "/privacy/contacts/import")
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["imported"].as_array().unwrap().len(), 2);
    assert_eq!(
        report["errors"],
        json!([
            { "row": 3, "field": "email", "message": "`bad-mail` is not an e-mail address" },
            { "row": 5, "field": "identities", "message": "WHATSAPP:46700000001 appears in an earlier row" },
            { "row": 6, "field": "attr:tier", "message": "value of attribute `tier` must have 1 to 200 characters and no control characters" },
        ])
    );
    let attributes_of = |name: &'static str| {
        let h = &h;
        async move {
            let all = h.store.all_contact_details().await.unwrap();
            all.into_iter()
                .find(|c| c.display_name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no contact {name}"))
                .attributes
        }
    };
    assert_eq!(
        attributes_of("Ann Import").await,
        [
            ("crm.note".to_owned(), "Likes \"quotes\"; a=b, c".to_owned()),
            ("tier".to_owned(), "gold".to_owned())
        ]
        .into()
    );
    assert_eq!(
        attributes_of("Ben Import").await,
        [("crm.note".to_owned(), " padded ".to_owned())].into()
    );
    // A column whose key the API would refuse refuses the file, naming column and key.
    let bad = as_user(
        &h,
        &admin,
        Method::POST,
        "/privacy/contacts/import?format=csv",
    )
    .body("display_name,attr:Tier\nZed,gold\n")
    .send()
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("column `attr:Tier`") && message.contains("attribute key `Tier`"),
        "{message}"
    );
    // An identity that already exists in the database is a row error too, and the rest lands.
    let json_rows = json!([
        { "display_name": "Cid", "identities": [{ "channel": "SMS", "identity": "46700000002" }] },
        { "display_name": "Dora", "email": "dora@example.com", "attributes": { "tier": "silver" } },
        { "display_name": "Finn", "attributes": { "Bad Key": "x" } },
    ]);
    let report: Value = as_user(
        &h,
        &admin,
        Method::POST,
        "/privacy/contacts/import?format=json",
    )
    .json(&json_rows)
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(report["imported"][0]["row"], 2);
    assert_eq!(report["errors"][0]["row"], 1);
    assert_eq!(
        (&report["errors"][1]["row"], &report["errors"][1]["field"]),
        (&json!(3), &json!("attributes.Bad Key"))
    );
    assert_eq!(
        attributes_of("Dora").await,
        [("tier".to_owned(), "silver".to_owned())].into()
    );
    assert!(
        report["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("already belongs")
    );
    assert_eq!(h.store.count("contacts").await.unwrap(), 3);
    assert_eq!(h.store.count("contact_identities").await.unwrap(), 3);

    // Whole-file errors and all-invalid files.
    let bad = as_user(
        &h,
        &admin,
        Method::POST,
        "/privacy/contacts/import?format=csv",
    )
    .body("name,mail\nA,b\n")
    .send()
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown column `name`")
    );
    let none = as_user(
        &h,
        &admin,
        Method::POST,
        "/privacy/contacts/import?format=csv",
    )
    .body("email\nnope\n")
    .send()
    .await
    .unwrap();
    assert_eq!(none.status(), 422);
    assert_eq!(
        h.store.count("contacts").await.unwrap(),
        3,
        "nothing lost, nothing added"
    );

    imports_and_exports_are_audited_and_round_trip(&h, &admin).await;
}

/// The second half of [`contact_import_and_export`]: audit entries name the importer, both export formats are audited, and an export imported again gives the same attributes back.
async fn imports_and_exports_are_audited_and_round_trip(h: &Harness, admin: &str) {
    // Imports are audited with the importer as actor.
    let entries = h.store.audit_entries(&AuditQuery::default()).await.unwrap();
    assert!(entries.iter().any(|e| e.actor == admin
        && e.attribute == "email"
        && e.new_value.as_deref() == Some("ann@example.com")));
    assert!(
        entries
            .iter()
            .any(|e| e.actor == admin && e.attribute == "identity:TELEGRAM")
    );
    assert!(entries.iter().any(|e| e.actor == admin
        && e.entity == "contact_attribute"
        && e.attribute == "crm.note"
        && e.new_value.as_deref() == Some(" padded ")));

    // Export in both formats; the export is audited.
    let csv_out = as_user(h, admin, Method::GET, "/privacy/contacts/export?format=csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv_out.starts_with(
            "id,display_name,email,phone,identities,created_at,anonymized_at,attr:crm.note,attr:tier\n"
        ),
        "{csv_out}"
    );
    assert!(csv_out.contains("Ann Import,ann@example.com,46700000001,WHATSAPP:46700000001"));
    assert!(csv_out.contains("SMS:46700000002;TELEGRAM:ben_t"));
    let json_out: Value = as_user(h, admin, Method::GET, "/privacy/contacts/export")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json_out.as_array().unwrap().len(), 3);
    let entries = h.store.audit_entries(&AuditQuery::default()).await.unwrap();
    assert_eq!(entries.iter().filter(|e| e.action == "export").count(), 2);

    // Round trip: the export's name and attribute columns, imported again (as new contacts
    // named `again <name>`), give every contact the same attributes back.
    let mut reader = csv::Reader::from_reader(csv_out.as_bytes());
    let header = reader.headers().unwrap().clone();
    let keep: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| *h == "display_name" || h.starts_with("attr:"))
        .map(|(i, _)| i)
        .collect();
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(keep.iter().map(|&i| &header[i]))
        .unwrap();
    for record in reader.records() {
        let record = record.unwrap();
        writer
            .write_record(keep.iter().map(|&i| {
                if header[i] == *"display_name" {
                    format!("again {}", &record[i])
                } else {
                    record[i].to_owned()
                }
            }))
            .unwrap();
    }
    let again = as_user(
        h,
        admin,
        Method::POST,
        "/privacy/contacts/import?format=csv",
    )
    .body(writer.into_inner().unwrap())
    .send()
    .await
    .unwrap();
    assert_eq!(again.status(), 200);
    let report: Value = again.json().await.unwrap();
    assert_eq!(report["errors"], json!([]));
    let all = h.store.all_contact_details().await.unwrap();
    for original in all.iter().filter(|c| {
        !c.display_name
            .as_deref()
            .unwrap_or("")
            .starts_with("again ")
    }) {
        let name = format!("again {}", original.display_name.as_deref().unwrap());
        let copy = all
            .iter()
            .find(|c| c.display_name.as_deref() == Some(name.as_str()))
            .unwrap();
        assert_eq!(copy.attributes, original.attributes, "{name}");
    }
    assert_eq!(h.store.verify_audit_chain().await.unwrap().broken, None);
}
