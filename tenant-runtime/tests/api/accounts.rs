//! Accounts and the Workspace's storage on SQLite and PostgreSQL (atomic picks, sessions,
//! one-time invites, notes, events, figures), plus the HTTP contract of login, CSRF, roles and
//! rate limits over real sockets.

use std::sync::Arc;

use crate::support::{Db, Harness, queued, store};
use contact_runtime::config::Secret;
use contact_runtime::domain::api::{CategoryEdit, NewSkill, NewUser, SkillOption};
use contact_runtime::domain::{CategoryRule, ChannelType, Role};
use contact_runtime::http::auth::password;
use contact_runtime::storage::{AcceptOutcome, NewInvite, PickRefusal, Store, now_ms};
use serde_json::{Value, json};

crate::support::both!(
    concurrent_picks_have_exactly_one_winner,
    one_agents_simultaneous_picks_stay_within_capacity,
    sessions_expire_and_end,
    invites_work_once_and_expire,
    close_transfer_notes_and_events,
    categories_with_routing_attributes,
);

async fn agent(store: &Store, email: &str) -> String {
    store
        .create_user(&NewUser {
            email: email.into(),
            display_name: email.into(),
            role: Role::Agent,
            password_hash: None,
            skill_ids: vec![],
        })
        .await
        .unwrap()
        .id
}

async fn concurrent_picks_have_exactly_one_winner(db: Db) {
    let (store, _db) = store(db).await;
    let agents: Vec<String> = futures::future::join_all((0..6).map(|i| {
        let store = store.clone();
        async move { agent(&store, &format!("a{i}@x.test")).await }
    }))
    .await;
    let agents = Arc::new(agents);
    for round in 0..10 {
        let id = queued(&store, &format!("4670000{round}")).await;
        let outcomes = futures::future::join_all(agents.iter().map(|a| {
            let store = store.clone();
            let id = id.clone();
            let a = a.clone();
            tokio::spawn(async move { (a.clone(), store.claim_pick(&id, &a, None).await.unwrap()) })
        }))
        .await;
        let winners: Vec<String> = outcomes
            .into_iter()
            .map(|r| r.unwrap())
            .filter(|(_, o)| o.is_ok())
            .map(|(a, _)| a)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}");
        let c = store.conversation(&id).await.unwrap();
        assert_eq!(c.assigned_user_id.as_deref(), Some(winners[0].as_str()));
        assert_eq!(
            store.claim_pick(&id, &agents[0], None).await.unwrap(),
            Err(PickRefusal::NotQueued {
                status: "assigned".into()
            })
        );
    }
    assert!(store.queue().await.unwrap().is_empty());
    assert!(matches!(
        store.claim_pick("nope", &agents[0], None).await,
        Err(contact_runtime::storage::Error::NotFound { .. })
    ));
}

async fn sessions_expire_and_end(db: Db) {
    let (store, _db) = store(db).await;
    let user = agent(&store, "s@x.test").await;
    store
        .create_session("live", &user, "csrf1", now_ms() + 60_000)
        .await
        .unwrap();
    store
        .create_session("old", &user, "csrf2", now_ms() - 1)
        .await
        .unwrap();
    let s = store.session("live").await.unwrap().unwrap();
    assert_eq!(
        (s.user_id.as_str(), s.csrf_token.as_str()),
        (user.as_str(), "csrf1")
    );
    assert_eq!(s.role, Role::Agent);
    assert!(store.session("old").await.unwrap().is_none(), "expired");
    store.delete_session("live").await.unwrap();
    assert!(store.session("live").await.unwrap().is_none(), "logged out");
    store
        .create_session("again", &user, "csrf3", now_ms() + 60_000)
        .await
        .unwrap();
    store.set_user_role(&user, Role::Dpo).await.unwrap();
    assert_eq!(
        store.session("again").await.unwrap().unwrap().role,
        Role::Dpo,
        "at once"
    );
    store.deactivate_user(&user).await.unwrap();
    assert!(
        store.session("again").await.unwrap().is_none(),
        "signed out everywhere"
    );
    assert!(
        store
            .credentials("s@x.test")
            .await
            .unwrap()
            .unwrap()
            .password_hash
            .is_none()
    );
}

async fn invites_work_once_and_expire(db: Db) {
    let (store, _db) = store(db).await;
    let new = |hash: &str, expires_at| NewInvite {
        token_hash: hash.into(),
        email: "Inv@X.test".into(),
        display_name: "Inv".into(),
        role: Role::Agent,
        created_by: None,
        expires_at,
    };
    store
        .create_invite(&new("h1", now_ms() + 60_000))
        .await
        .unwrap();
    store.create_invite(&new("h2", now_ms() - 1)).await.unwrap();
    assert_eq!(
        store.accept_invite("h2", "phc", None).await.unwrap(),
        AcceptOutcome::Spent
    );
    assert_eq!(
        store.accept_invite("zz", "phc", None).await.unwrap(),
        AcceptOutcome::Unknown
    );
    // Two accepts at once: one account, one winner.
    let (a, b) = tokio::join!(
        store.accept_invite("h1", "phc", Some("Ina")),
        store.accept_invite("h1", "phc", Some("Ina"))
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, AcceptOutcome::Accepted(_)))
            .count(),
        1,
        "{outcomes:?}"
    );
    let creds = store.credentials("inv@x.TEST").await.unwrap().unwrap();
    assert_eq!(creds.password_hash.as_deref(), Some("phc"));
    assert_eq!(
        store.user(&creds.user_id).await.unwrap().display_name,
        "Ina"
    );
    let invites = store.invites().await.unwrap();
    assert_eq!(
        invites.iter().filter(|i| i.accepted_at.is_some()).count(),
        1
    );
}

async fn close_transfer_notes_and_events(db: Db) {
    let (store, _db) = store(db).await;
    let a = agent(&store, "a@x.test").await;
    let b = agent(&store, "b@x.test").await;
    let id = queued(&store, "4671").await;
    let before = store.last_event_id().await.unwrap();
    assert_eq!(store.claim_pick(&id, &a, None).await.unwrap(), Ok(()));
    assert!(
        !store
            .transfer_conversation(&id, Some(&b), Some(&a), &b)
            .await
            .unwrap(),
        "only the owner transfers"
    );
    assert!(
        store
            .transfer_conversation(&id, Some(&a), Some(&b), &a)
            .await
            .unwrap()
    );
    assert_eq!(
        store.assigned_conversation_ids(&b).await.unwrap(),
        vec![id.clone()]
    );
    let note = store.add_note(&id, &b, "VIP customer").await.unwrap();
    assert_eq!(store.notes(&id).await.unwrap()[0].id, note.id);
    assert!(
        store
            .transfer_conversation(&id, Some(&b), None, &b)
            .await
            .unwrap()
    );
    assert_eq!(store.queue().await.unwrap().len(), 1, "back in the queue");
    assert_eq!(store.claim_pick(&id, &a, None).await.unwrap(), Ok(()));
    assert!(
        !store.close_conversation(&id, Some(&b), &b).await.unwrap(),
        "not b's"
    );
    assert!(store.close_conversation(&id, Some(&a), &a).await.unwrap());
    assert!(
        !store.close_conversation(&id, None, "admin").await.unwrap(),
        "already closed"
    );
    let kinds: Vec<String> = store
        .events_after(before, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "conversation_assigned",
            "conversation_assigned",
            "note_added",
            "conversation_queued",
            "conversation_assigned",
            "conversation_closed"
        ]
    );
    let f = store.figures(&a, now_ms()).await.unwrap();
    assert_eq!((f.assigned_now, f.closed_today, f.waiting_now), (0, 1, 0));
    assert!(f.avg_handling_secs.is_some());
    store.set_auto_allocate(&a, false).await.unwrap();
    assert!(!store.auto_allocate(&a).await.unwrap());
    assert!(store.auto_allocate(&b).await.unwrap(), "on by default");
}

async fn categories_with_routing_attributes(db: Db) {
    let (store, _db) = store(db).await;
    let german = store
        .create_skill(&NewSkill {
            name: "german".into(),
        })
        .await
        .unwrap();
    let edit = CategoryEdit {
        name: "Returns".into(),
        description: "".into(),
        priority: 7,
        rules: vec![CategoryRule {
            channels: vec![ChannelType::Sms],
            channel_apps: vec![],
            keywords: vec!["refund".into()],
            contact_attributes: [("tier".into(), "gold".into())].into(),
        }],
        skill_ids: vec![german.id.clone()],
        skill_options: [(
            german.id.clone(),
            SkillOption {
                min_level: Some(3),
                optional: true,
            },
        )]
        .into(),
    };
    let id = store.save_category(None, &edit).await.unwrap();
    let routing = store.category_routing().await.unwrap();
    assert_eq!(routing[&id].priority, 7);
    assert_eq!(routing[&id].rules, edit.rules);
    let saved = store.categories().await.unwrap();
    let saved = saved.iter().find(|c| c.id == id).unwrap();
    assert_eq!(
        saved.skill_options, edit.skill_options,
        "level and flag kept"
    );
    store.rename_skill(&german.id, "deutsch").await.unwrap();
    assert_eq!(store.skills().await.unwrap()[0].name, "deutsch");
    store.delete_skill(&german.id).await.unwrap();
    let cat = store
        .categories()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == id)
        .unwrap();
    assert!(
        cat.skill_ids.is_empty(),
        "deleting a skill removes the requirement"
    );
    store.delete_category(&id).await.unwrap();
    assert!(matches!(
        store.delete_category(&id).await,
        Err(contact_runtime::storage::Error::NotFound { .. })
    ));
}

/// `(status, body, set-cookie)` of a JSON request.
async fn call(
    h: &Harness,
    method: reqwest::Method,
    path: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let mut req = h.http.request(method, format!("{}{path}", h.url));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let set_cookie = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, r.json().await.unwrap_or(Value::Null), set_cookie)
}

#[tokio::test]
async fn login_csrf_roles_and_logout_over_http() {
    let h = Harness::start(Db::Sqlite, |s| {
        s.auth.bootstrap_admin_email = "root@x.test".into();
        s.auth.bootstrap_admin_password = Some(Secret("root-password-1".into()));
    })
    .await;
    let post = reqwest::Method::POST;
    let (status, _, _) = call(
        &h,
        post.clone(),
        "/auth/login",
        None,
        None,
        Some(json!({"email": "root@x.test", "password": "nope-nope-nope"})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body, cookie) = call(
        &h,
        post.clone(),
        "/auth/login",
        None,
        None,
        Some(json!({"email": "ROOT@x.test", "password": "root-password-1"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let cookie = cookie.unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP without a forwarded proto"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(body["home"], "/admin");

    // Admin session: reads work, writes need the CSRF token.
    let (status, users, _) = call(
        &h,
        reqwest::Method::GET,
        "/api/v1/users",
        Some(&session),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(users[0]["role"], "admin");
    let skill = json!({"name": "billing"});
    let (status, err, _) = call(
        &h,
        post.clone(),
        "/api/v1/skills",
        Some(&session),
        None,
        Some(skill.clone()),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (403, Some("csrf_failed"))
    );
    let (status, _, _) = call(
        &h,
        post.clone(),
        "/api/v1/skills",
        Some(&session),
        Some("wrong"),
        Some(skill.clone()),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = call(
        &h,
        post.clone(),
        "/api/v1/skills",
        Some(&session),
        Some(&csrf),
        Some(skill),
    )
    .await;
    assert_eq!(status, 201);

    invited_agents_bearer_tokens_and_logout(&h, &post, &session, &csrf).await;
}

/// The second half of [`login_csrf_roles_and_logout_over_http`]: an invited agent's rights, the bearer token without CSRF, logout, and the stored session hash.
async fn invited_agents_bearer_tokens_and_logout(
    h: &Harness,
    post: &reqwest::Method,
    session: &str,
    csrf: &str,
) {
    // An invited agent: 403 on admin routes, 200 on the Workspace's.
    let (status, invite, _) = call(
        h,
        post.clone(),
        "/api/v1/admin/invites",
        Some(session),
        Some(csrf),
        Some(json!({"email": "ag@x.test", "role": "agent"})),
    )
    .await;
    assert_eq!(status, 201, "{invite}");
    let token = invite["url"]
        .as_str()
        .unwrap()
        .split('#')
        .nth(1)
        .unwrap()
        .to_owned();
    let (status, body, agent_cookie) = call(
        h,
        post.clone(),
        "/auth/invite/accept",
        None,
        None,
        Some(json!({"token": token, "password": "agent-password-1"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let agent = agent_cookie.unwrap().split(';').next().unwrap().to_owned();
    for path in [
        "/api/v1/users",
        "/api/v1/admin/channels",
        "/api/v1/contacts",
        "/api/v1/admin/invites",
    ] {
        let (status, _, _) = call(h, reqwest::Method::GET, path, Some(&agent), None, None).await;
        assert_eq!(status, 403, "{path}");
    }
    let (status, _, _) = call(
        h,
        reqwest::Method::GET,
        "/api/v1/queue",
        Some(&agent),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let r = h
        .http
        .get(format!("{}/admin", h.url))
        .header("cookie", &agent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The bearer token keeps working and needs no CSRF token.
    let r = h
        .api(post.clone(), "/skills")
        .json(&json!({"name": "german"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Logout ends the session for good.
    let (status, _, cleared) = call(
        h,
        post.clone(),
        "/auth/logout",
        Some(session),
        Some(csrf),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert!(cleared.unwrap().contains("Max-Age=0"));
    let (status, _, _) = call(
        h,
        reqwest::Method::GET,
        "/api/v1/users",
        Some(session),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);

    // The stored session id is a hash, never the cookie value.
    let raw = session.split('=').nth(1).unwrap();
    assert_eq!(password::token_hash(raw).len(), 64);
    assert!(h.store.session(raw).await.unwrap().is_none());
}

#[tokio::test]
async fn bootstrap_admin_never_overwrites_a_password() {
    let (url, guard) = crate::support::database_url(Db::Sqlite);
    let h = Harness::start_on(url.clone(), guard, |s| {
        s.auth.bootstrap_admin_email = "boot@x.test".into();
        s.auth.bootstrap_admin_password = Some(Secret("first-password-1".into()));
    })
    .await;
    let first = h.store.credentials("boot@x.test").await.unwrap().unwrap();
    contact_runtime::http::auth::bootstrap_admin(&h.store, &{
        let mut a = h.settings.auth.clone();
        a.bootstrap_admin_password = Some(Secret("second-password-2".into()));
        a
    })
    .await
    .unwrap();
    let again = h.store.credentials("boot@x.test").await.unwrap().unwrap();
    assert_eq!(first.password_hash, again.password_hash);
    assert!(password::verify(
        "first-password-1",
        again.password_hash.as_deref().unwrap()
    ));
}

/// One agent picking several conversations at once (two tabs, a double click) never ends above
/// capacity: on PostgreSQL the claims of one agent serialize on the agent's row.
async fn one_agents_simultaneous_picks_stay_within_capacity(db: Db) {
    let (store, _db) = store(db).await;
    let a = agent(&store, "busy@x.test").await;
    for round in 0..8 {
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(queued(&store, &format!("4672{round}{i}")).await);
        }
        let outcomes = futures::future::join_all(ids.iter().map(|id| {
            let (store, id, a) = (store.clone(), id.clone(), a.clone());
            tokio::spawn(async move { store.claim_pick(&id, &a, Some(2)).await.unwrap() })
        }))
        .await;
        let won = outcomes.iter().filter(|o| matches!(o, Ok(Ok(())))).count();
        assert_eq!(won, 2, "round {round}: {outcomes:?}");
        for o in outcomes.iter().map(|o| o.as_ref().unwrap()) {
            if let Err(refusal) = o {
                assert!(
                    matches!(
                        refusal,
                        PickRefusal::AtCapacity {
                            load: 2,
                            capacity: 2
                        }
                    ),
                    "{refusal:?}"
                );
            }
        }
        // Free the agent for the next round.
        for id in &ids {
            store.close_conversation(id, Some(&a), &a).await.ok();
        }
    }
}
