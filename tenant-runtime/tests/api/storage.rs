//! The repository test suite: every case runs on SQLite and on PostgreSQL (a real server from
//! the `contact-tests` harness), through the `both!` macro.

use std::collections::BTreeSet;

use crate::support::{Db, counts, store};
use contact_runtime::domain::api::{NewCategory, NewSkill, NewUser};
use contact_runtime::domain::{
    ChannelType, ConversationStatus, DeliveryStatus, Direction, MessageContent, Role,
};
use contact_runtime::storage::{
    DeliveryReport, GENERAL_CATEGORY_ID, InboundMessage, InboundOutcome, NewOutbound, Nonce,
    ReportOutcome, RetryAt, Store, new_id, now_ms, on_driver,
};

crate::support::both!(
    migrations_applied_and_ready,
    inbound_creates_contact_conversation_and_message,
    later_messages_join_the_open_conversation,
    duplicate_message_id_changes_nothing,
    replayed_nonce_changes_nothing,
    concurrent_first_messages_make_one_contact_and_conversation,
    outbound_message_and_outbox_in_one_step,
    outbox_lease_expiry_reclaims,
    outbox_retry_and_failure,
    delivery_reports_are_monotonic,
    report_before_send_response_matches_by_correlation_id,
    idempotency_key_returns_first_message,
    directory_users_skills_categories,
    category_skills_become_requirements,
    expired_nonces_are_purged,
    closed_conversation_is_not_reused,
    closed_conversation_reopens_within_the_window,
    concurrent_redeliveries_store_once,
);

fn nonce(n: &str) -> Nonce {
    Nonce {
        channel_app: "wa".into(),
        nonce: n.into(),
        expires_at: now_ms() + 600_000,
    }
}

fn inbound(identity: &str, id: &str, text: &str) -> InboundMessage {
    InboundMessage {
        channel_app: "wa".into(),
        channel: ChannelType::Whatsapp,
        identity: identity.into(),
        external_id: id.into(),
        content: MessageContent::Text { text: text.into() },
        category_id: None,
        reopen_closed_since: None,
    }
}

async fn open_conversation(store: &Store) -> String {
    match store
        .record_inbound(&nonce(&new_id()), &inbound("46700000001", &new_id(), "hi"))
        .await
        .unwrap()
    {
        InboundOutcome::Stored {
            conversation_id, ..
        } => conversation_id,
        other => panic!("expected Stored, got {other:?}"),
    }
}

async fn enqueue(store: &Store, conversation_id: &str, key: Option<&str>) -> (String, bool) {
    let id = new_id();
    let (m, created) = store
        .enqueue_outbound(&NewOutbound {
            id: id.clone(),
            conversation_id: conversation_id.into(),
            content: MessageContent::Text {
                text: "hello".into(),
            },
            payload: serde_json::json!({ "correlation_id": id }),
            author_user_id: None,
            idempotency_key: key.map(str::to_owned),
        })
        .await
        .unwrap();
    (m.id, created)
}

async fn migrations_applied_and_ready(db: Db) {
    let (store, _db) = store(db).await;
    assert!(store.ready().await.unwrap());
    let categories = store.categories().await.unwrap();
    assert_eq!(categories.len(), 1);
    assert_eq!(categories[0].id, GENERAL_CATEGORY_ID);
    assert_eq!(categories[0].name, "General");
    // Migrating again is a no-op.
    store.migrate().await.unwrap();
    assert!(store.ready().await.unwrap());
}

async fn inbound_creates_contact_conversation_and_message(db: Db) {
    let (store, _db) = store(db).await;
    let out = store
        .record_inbound(&nonce("n1"), &inbound("46701234567", "EXT1", "parcel?"))
        .await
        .unwrap();
    let InboundOutcome::Stored {
        message_id,
        conversation_id,
        contact_id,
        opened_conversation,
    } = out
    else {
        panic!("{out:?}")
    };
    assert!(opened_conversation);
    let contact = store.contact(&contact_id).await.unwrap();
    assert_eq!(contact.identities.len(), 1);
    assert_eq!(contact.identities[0].channel, ChannelType::Whatsapp);
    assert_eq!(contact.identities[0].identity, "46701234567");
    let conv = store.conversation(&conversation_id).await.unwrap();
    assert_eq!(conv.status, ConversationStatus::Queued);
    assert_eq!(conv.contact_id, contact_id);
    assert_eq!(conv.channel_app, "wa");
    assert_eq!(conv.category_id.as_deref(), Some(GENERAL_CATEGORY_ID));
    assert!(conv.last_inbound_at.is_some());
    let messages = store.messages(&conversation_id).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].id, message_id);
    assert_eq!(messages[0].direction, Direction::Inbound);
    assert_eq!(messages[0].external_id.as_deref(), Some("EXT1"));
    assert_eq!(messages[0].status, DeliveryStatus::Received);
    assert_eq!(
        messages[0].content,
        MessageContent::Text {
            text: "parcel?".into()
        }
    );
    let events = store
        .conversation_events(&conversation_id, 0)
        .await
        .unwrap();
    let kinds: Vec<_> = events.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["conversation_opened", "message_received"]);
}

async fn later_messages_join_the_open_conversation(db: Db) {
    let (store, _db) = store(db).await;
    let first = store
        .record_inbound(&nonce("n1"), &inbound("111", "E1", "a"))
        .await
        .unwrap();
    let second = store
        .record_inbound(&nonce("n2"), &inbound("111", "E2", "b"))
        .await
        .unwrap();
    let other = store
        .record_inbound(&nonce("n3"), &inbound("222", "E3", "c"))
        .await
        .unwrap();
    let conv = |o: &InboundOutcome| match o {
        InboundOutcome::Stored {
            conversation_id,
            opened_conversation,
            ..
        } => (conversation_id.clone(), *opened_conversation),
        other => panic!("{other:?}"),
    };
    assert_eq!(conv(&first).0, conv(&second).0);
    assert!(!conv(&second).1);
    assert_ne!(conv(&first).0, conv(&other).0);
    assert_eq!(store.count("contacts").await.unwrap(), 2);
    assert_eq!(store.count("conversations").await.unwrap(), 2);
    assert_eq!(store.messages(&conv(&first).0).await.unwrap().len(), 2);
    let queued = store
        .conversations(&contact_runtime::storage::ConversationFilter {
            status: Some(ConversationStatus::Queued),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 2);
}

async fn duplicate_message_id_changes_nothing(db: Db) {
    let (store, _db) = store(db).await;
    store
        .record_inbound(&nonce("n1"), &inbound("111", "SAME", "a"))
        .await
        .unwrap();
    let before = counts(&store).await;
    let again = store
        .record_inbound(&nonce("n2"), &inbound("111", "SAME", "a"))
        .await
        .unwrap();
    assert!(
        matches!(again, InboundOutcome::Duplicate { .. }),
        "{again:?}"
    );
    let after = counts(&store).await;
    // Only the new nonce is recorded.
    assert_eq!(after[..5], before[..5]);
    assert_eq!(after[6], before[6]);
    assert_eq!(after[5], before[5] + 1);
}

async fn replayed_nonce_changes_nothing(db: Db) {
    let (store, _db) = store(db).await;
    store
        .record_inbound(&nonce("n1"), &inbound("111", "E1", "a"))
        .await
        .unwrap();
    let before = counts(&store).await;
    let replay = store
        .record_inbound(&nonce("n1"), &inbound("111", "E2", "b"))
        .await
        .unwrap();
    assert_eq!(replay, InboundOutcome::Replayed);
    assert_eq!(counts(&store).await, before);
}

async fn concurrent_first_messages_make_one_contact_and_conversation(db: Db) {
    let (store, _db) = store(db).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .record_inbound(
                    &nonce(&format!("n{i}")),
                    &inbound("999", &format!("E{i}"), "x"),
                )
                .await
        }));
    }
    for t in tasks {
        let out = t.await.unwrap().unwrap();
        assert!(matches!(out, InboundOutcome::Stored { .. }), "{out:?}");
    }
    assert_eq!(store.count("contacts").await.unwrap(), 1);
    assert_eq!(store.count("conversations").await.unwrap(), 1);
    assert_eq!(store.count("messages").await.unwrap(), 16);
}

async fn outbound_message_and_outbox_in_one_step(db: Db) {
    let (store, _db) = store(db).await;
    let conv = open_conversation(&store).await;
    let (id, created) = enqueue(&store, &conv, None).await;
    assert!(created);
    let m = store.message(&id).await.unwrap();
    assert_eq!(m.direction, Direction::Outbound);
    assert_eq!(m.status, DeliveryStatus::Pending);
    assert_eq!(store.outbox_count("pending").await.unwrap(), 1);
    let claimed = store.claim_outbox(10, 30_000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, id);
    assert_eq!(claimed[0].attempts, 1);
    let payload: serde_json::Value = serde_json::from_str(&claimed[0].payload).unwrap();
    assert_eq!(payload["correlation_id"], id.as_str());
    // Leased: a second sender gets nothing.
    assert!(store.claim_outbox(10, 30_000).await.unwrap().is_empty());
    store.mark_outbox_sent(&id, "SINCH1").await.unwrap();
    let m = store.message(&id).await.unwrap();
    assert_eq!(m.status, DeliveryStatus::Queued);
    assert_eq!(m.external_id.as_deref(), Some("SINCH1"));
    assert_eq!(store.outbox_count("sent").await.unwrap(), 1);
    assert!(store.claim_outbox(10, 0).await.unwrap().is_empty());
    // Unknown conversation: not found, nothing written.
    let before = counts(&store).await;
    let err = store
        .enqueue_outbound(&NewOutbound {
            id: new_id(),
            conversation_id: "nope".into(),
            content: MessageContent::Text { text: "x".into() },
            payload: serde_json::json!({}),
            author_user_id: None,
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, contact_runtime::storage::Error::NotFound { .. }),
        "{err}"
    );
    assert_eq!(counts(&store).await, before);
}

async fn outbox_lease_expiry_reclaims(db: Db) {
    let (store, _db) = store(db).await;
    let conv = open_conversation(&store).await;
    let (id, _) = enqueue(&store, &conv, None).await;
    let first = store.claim_outbox(10, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    // The first sender "died": its lease ran out, so the row is due again.
    let second = store.claim_outbox(10, 30_000).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, id);
    assert_eq!(second[0].attempts, 2);
}

async fn outbox_retry_and_failure(db: Db) {
    let (store, _db) = store(db).await;
    let conv = open_conversation(&store).await;
    let (id, _) = enqueue(&store, &conv, None).await;
    assert_eq!(store.claim_outbox(10, 30_000).await.unwrap().len(), 1);
    store
        .retry_outbox(&id, RetryAt(now_ms() + 60_000), "503 busy")
        .await
        .unwrap();
    assert!(
        store.claim_outbox(10, 30_000).await.unwrap().is_empty(),
        "not due yet"
    );
    let row = store.outbox_row(&id).await.unwrap();
    assert_eq!(
        (row.state.as_str(), row.attempts, row.last_error.as_deref()),
        ("pending", 1, Some("503 busy"))
    );
    store.fail_outbox(&id, "400 bad request").await.unwrap();
    let m = store.message(&id).await.unwrap();
    assert_eq!(m.status, DeliveryStatus::Failed);
    assert_eq!(m.status_reason.as_deref(), Some("400 bad request"));
    assert_eq!(store.outbox_count("failed").await.unwrap(), 1);
}

fn report(ext: &str, corr: Option<&str>, status: DeliveryStatus) -> DeliveryReport {
    DeliveryReport {
        channel_app: "wa".into(),
        external_id: ext.into(),
        correlation_id: corr.map(str::to_owned),
        status,
        reason: (status == DeliveryStatus::Failed).then(|| "CHANNEL_FAILURE: x".to_owned()),
    }
}

async fn delivery_reports_are_monotonic(db: Db) {
    let (store, _db) = store(db).await;
    let conv = open_conversation(&store).await;
    let (id, _) = enqueue(&store, &conv, None).await;
    store.mark_outbox_sent(&id, "EXT-OUT").await.unwrap();
    let mut n = 0;
    let mut apply = |s: DeliveryStatus| {
        n += 1;
        let store = store.clone();
        async move {
            store
                .record_delivery_report(&nonce(&format!("dr{n}")), &report("EXT-OUT", None, s))
                .await
                .unwrap()
        }
    };
    assert!(matches!(
        apply(DeliveryStatus::Delivered).await,
        ReportOutcome::Updated { .. }
    ));
    assert_eq!(
        apply(DeliveryStatus::QueuedOnChannel).await,
        ReportOutcome::Unchanged
    );
    assert!(matches!(
        apply(DeliveryStatus::Read).await,
        ReportOutcome::Updated { .. }
    ));
    assert_eq!(
        apply(DeliveryStatus::Failed).await,
        ReportOutcome::Unchanged
    );
    assert_eq!(
        store.message(&id).await.unwrap().status,
        DeliveryStatus::Read
    );
    // A late send response does not move it back either.
    store.mark_outbox_sent(&id, "EXT-OUT").await.unwrap();
    assert_eq!(
        store.message(&id).await.unwrap().status,
        DeliveryStatus::Read
    );
    assert_eq!(
        store
            .record_delivery_report(&nonce("other"), &report("NOPE", None, DeliveryStatus::Read))
            .await
            .unwrap(),
        ReportOutcome::UnknownMessage
    );
    assert_eq!(
        store
            .record_delivery_report(
                &nonce("dr1"),
                &report("EXT-OUT", None, DeliveryStatus::Read)
            )
            .await
            .unwrap(),
        ReportOutcome::Replayed
    );
}

async fn report_before_send_response_matches_by_correlation_id(db: Db) {
    let (store, _db) = store(db).await;
    let conv = open_conversation(&store).await;
    let (id, _) = enqueue(&store, &conv, None).await;
    // The report overtakes the messages:send response: only our id (correlation_id) is known.
    let out = store
        .record_delivery_report(
            &nonce("early"),
            &report("EXT-LATE", Some(&id), DeliveryStatus::Failed),
        )
        .await
        .unwrap();
    assert!(matches!(out, ReportOutcome::Updated { .. }), "{out:?}");
    let m = store.message(&id).await.unwrap();
    assert_eq!(m.status, DeliveryStatus::Failed);
    assert_eq!(m.status_reason.as_deref(), Some("CHANNEL_FAILURE: x"));
    assert_eq!(
        m.external_id.as_deref(),
        Some("EXT-LATE"),
        "learnt from the report"
    );
    // The late send response keeps it.
    store.mark_outbox_sent(&id, "EXT-LATE").await.unwrap();
    assert_eq!(
        store.message(&id).await.unwrap().external_id.as_deref(),
        Some("EXT-LATE")
    );
}

async fn idempotency_key_returns_first_message(db: Db) {
    let (store, _db) = store(db).await;
    let conv = open_conversation(&store).await;
    let (a, created_a) = enqueue(&store, &conv, Some("key-1")).await;
    let (b, created_b) = enqueue(&store, &conv, Some("key-1")).await;
    let (c, _) = enqueue(&store, &conv, Some("key-2")).await;
    assert!(created_a && !created_b);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(store.count("outbox").await.unwrap(), 2);
}

async fn directory_users_skills_categories(db: Db) {
    let (store, _db) = store(db).await;
    let german = store
        .create_skill(&NewSkill {
            name: "german".into(),
        })
        .await
        .unwrap();
    let dup = store
        .create_skill(&NewSkill {
            name: "german".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(dup, contact_runtime::storage::Error::Conflict(_)),
        "{dup}"
    );
    let cat = store
        .create_category(&NewCategory {
            name: "Billing".into(),
            description: "money".into(),
            skill_ids: vec![german.id.clone()],
        })
        .await
        .unwrap();
    let user = store
        .create_user(&NewUser {
            email: "alice@example.com".into(),
            display_name: "Alice".into(),
            role: Role::Agent,
            password_hash: None,
            skill_ids: vec![german.id.clone()],
        })
        .await
        .unwrap();
    assert_eq!(user.role, Role::Agent);
    assert_eq!(user.skills.len(), 1);
    assert!(user.skills[0].active);
    let dup = store
        .create_user(&NewUser {
            email: "alice@example.com".into(),
            display_name: "Other".into(),
            role: Role::Dpo,
            password_hash: None,
            skill_ids: vec![],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(dup, contact_runtime::storage::Error::Conflict(_)),
        "{dup}"
    );
    let bad = store
        .create_user(&NewUser {
            email: "bob@example.com".into(),
            display_name: "Bob".into(),
            role: Role::Agent,
            password_hash: None,
            skill_ids: vec!["no-such-skill".into()],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(bad, contact_runtime::storage::Error::NotFound { .. }),
        "{bad}"
    );
    assert_eq!(
        store.users().await.unwrap().len(),
        1,
        "failed create left nothing"
    );
    let cats = store.categories().await.unwrap();
    let billing = cats.iter().find(|c| c.id == cat.id).unwrap();
    assert_eq!(billing.skill_ids, vec![german.id]);
    assert_eq!(
        store.category_id_by_name("Billing").await.unwrap(),
        Some(cat.id)
    );
}

async fn category_skills_become_requirements(db: Db) {
    let (store, _db) = store(db).await;
    let skill = store
        .create_skill(&NewSkill {
            name: "billing".into(),
        })
        .await
        .unwrap();
    let cat = store
        .create_category(&NewCategory {
            name: "Billing".into(),
            description: String::new(),
            skill_ids: vec![skill.id.clone()],
        })
        .await
        .unwrap();
    let mut msg = inbound("555", "E1", "invoice");
    msg.category_id = Some(cat.id.clone());
    let InboundOutcome::Stored {
        conversation_id, ..
    } = store.record_inbound(&nonce("n"), &msg).await.unwrap()
    else {
        panic!()
    };
    let conv = store.conversation(&conversation_id).await.unwrap();
    assert_eq!(conv.category_id, Some(cat.id));
    assert_eq!(conv.skill_requirements, vec![skill.id]);
    store
        .set_conversation_skills(&conversation_id, &[])
        .await
        .unwrap();
    assert!(
        store
            .conversation(&conversation_id)
            .await
            .unwrap()
            .skill_requirements
            .is_empty()
    );
}

async fn expired_nonces_are_purged(db: Db) {
    let (store, _db) = store(db).await;
    let mut old = nonce("old");
    old.expires_at = now_ms() - 1;
    store
        .record_inbound(&old, &inbound("1", "E1", "a"))
        .await
        .unwrap();
    store
        .record_inbound(&nonce("fresh"), &inbound("1", "E2", "b"))
        .await
        .unwrap();
    assert_eq!(store.purge_nonces(now_ms()).await.unwrap(), 1);
    assert!(!store.nonce_seen("wa", "old").await.unwrap());
    assert!(store.nonce_seen("wa", "fresh").await.unwrap());
    let ids: BTreeSet<_> = ["E1", "E2"].into();
    assert_eq!(ids.len() as i64, store.count("messages").await.unwrap());
}

async fn closed_conversation_is_not_reused(db: Db) {
    let (store, _db) = store(db).await;
    let first = open_conversation(&store).await;
    // Closing is the routing/UI's job (later); do it in SQL here.
    let sql = "UPDATE conversations SET status = 'closed', closed_at = $1 WHERE id = $2";
    on_driver!(&store, |p| sqlx::query(sql)
        .bind(now_ms())
        .bind(&first)
        .execute(p)
        .await
        .map(|_| ()))
    .unwrap();
    let second = open_conversation(&store).await;
    assert_ne!(
        first, second,
        "a message after closing opens a new conversation"
    );
    assert_eq!(store.count("contacts").await.unwrap(), 1, "same customer");
    assert_eq!(
        store.conversation(&first).await.unwrap().status,
        ConversationStatus::Closed
    );
    assert_eq!(
        store.conversation(&second).await.unwrap().status,
        ConversationStatus::Queued
    );
}

async fn concurrent_redeliveries_store_once(db: Db) {
    let (store, _db) = store(db).await;
    open_conversation(&store).await;
    let before = store.count("messages").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Same message id, fresh nonce each: redeliveries racing each other.
            store
                .record_inbound(
                    &nonce(&format!("redeliver-{i}")),
                    &inbound("46700000001", "SAME-ID", "x"),
                )
                .await
                .unwrap()
        }));
    }
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap() {
            InboundOutcome::Stored { .. } => stored += 1,
            InboundOutcome::Duplicate { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(store.count("messages").await.unwrap(), before + 1);
}

/// Closes `id` as the Workspace does, `closed_at` set to `at`.
async fn close_at(store: &Store, id: &str, at: i64) {
    let sql = "UPDATE conversations SET status = 'closed', closed_at = $1, assigned_user_id = NULL WHERE id = $2";
    on_driver!(store, |p| sqlx::query(sql)
        .bind(at)
        .bind(id)
        .execute(p)
        .await
        .map(|_| ()))
    .unwrap();
}

async fn closed_conversation_reopens_within_the_window(db: Db) {
    let (store, _db) = store(db).await;
    let week = 7 * 24 * 3600 * 1000;
    let first = open_conversation(&store).await;
    close_at(&store, &first, now_ms()).await;
    let events_before = store.count("conversation_events").await.unwrap();
    let mut again = inbound("46700000001", &new_id(), "me again");
    again.reopen_closed_since = Some(now_ms() - week);
    match store
        .record_inbound(&nonce(&new_id()), &again)
        .await
        .unwrap()
    {
        InboundOutcome::Stored {
            conversation_id,
            opened_conversation,
            ..
        } => {
            assert_eq!(conversation_id, first, "the closed conversation reopens");
            assert!(!opened_conversation);
        }
        other => panic!("expected Stored, got {other:?}"),
    }
    let conv = store.conversation(&first).await.unwrap();
    assert_eq!(conv.status, ConversationStatus::Queued);
    assert_eq!(conv.assigned_user_id, None);
    assert_eq!(store.count("conversations").await.unwrap(), 1);
    // The reopen and the message are both events for routing and the live view.
    assert_eq!(
        store.count("conversation_events").await.unwrap(),
        events_before + 2
    );

    // Closed longer ago than the window: a new conversation, the old one stays closed.
    close_at(&store, &first, now_ms() - 2 * week).await;
    let mut late = inbound("46700000001", &new_id(), "remember me?");
    late.reopen_closed_since = Some(now_ms() - week);
    let second = match store
        .record_inbound(&nonce(&new_id()), &late)
        .await
        .unwrap()
    {
        InboundOutcome::Stored {
            conversation_id, ..
        } => conversation_id,
        other => panic!("expected Stored, got {other:?}"),
    };
    assert_ne!(second, first);
    assert_eq!(
        store.conversation(&first).await.unwrap().status,
        ConversationStatus::Closed
    );
}
