//! Which audit entries storage's write paths record: pure builders, called from inside the
//! transactions that make the change (inbound messages, outbound messages, users, contact
//! attributes, retention), so personal data never commits without its entry. They sit beside
//! the audit writer rather than in `privacy`: storage is below the services and must not call
//! up, and keeping the entry next to the write that needs it keeps that promise in one place.

use std::collections::BTreeMap;

use crate::domain::audit::{AuditAction, AuditChange};

/// The actor of changes made by a channel's inbound traffic.
pub(crate) fn channel_actor(channel_app: &str) -> String {
    format!("channel:{channel_app}")
}

/// The actor of changes made by a background job.
pub(crate) fn system_actor(job: &str) -> String {
    format!("system:{job}")
}

/// Entries for an inbound message: the new contact and identity (when the sender was unknown)
/// and the message content.
pub(crate) fn inbound(
    channel_app: &str,
    contact_id: &str,
    new_identity: Option<(&str, &str)>,
    message_id: &str,
    content_json: &str,
) -> Vec<AuditChange> {
    let actor = channel_actor(channel_app);
    let mut out = Vec::with_capacity(3);
    if let Some((channel, identity)) = new_identity {
        out.push(
            AuditChange::new(
                &actor,
                AuditAction::Create,
                "contact",
                contact_id,
                "id",
                None,
            )
            .about(contact_id),
        );
        out.push(
            AuditChange::new(
                &actor,
                AuditAction::Create,
                "contact_identity",
                contact_id,
                format!("identity:{channel}"),
                Some(identity.to_owned()),
            )
            .about(contact_id),
        );
    }
    out.push(
        AuditChange::new(
            &actor,
            AuditAction::Create,
            "message",
            message_id,
            "content",
            Some(content_json.to_owned()),
        )
        .about(contact_id),
    );
    out
}

/// The entry for an outbound message written by `author` (a user id) or an API client.
pub(crate) fn outbound(
    author: Option<&str>,
    contact_id: Option<&str>,
    message_id: &str,
    content_json: &str,
) -> Vec<AuditChange> {
    let change = AuditChange::new(
        author.unwrap_or("api"),
        AuditAction::Create,
        "message",
        message_id,
        "content",
        Some(content_json.to_owned()),
    );
    vec![match contact_id {
        Some(c) => change.about(c),
        None => change,
    }]
}

/// Entries for a new user (user data is personal data too).
pub(crate) fn user_created(
    actor: &str,
    user_id: &str,
    email: &str,
    display_name: &str,
    role: &str,
) -> Vec<AuditChange> {
    [
        ("email", email),
        ("display_name", display_name),
        ("role", role),
    ]
    .into_iter()
    .map(|(attribute, value)| {
        AuditChange::new(
            actor,
            AuditAction::Create,
            "user",
            user_id,
            attribute,
            Some(value.to_owned()),
        )
        .about(user_id)
    })
    .collect()
}

/// Entries for an edit of a contact's attributes from `old` to `new`: one per key added
/// (`create`), changed (`update`) or removed (`delete`, no value), all about the contact.
pub(crate) fn contact_attributes(
    actor: &str,
    contact_id: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<AuditChange> {
    let entry = |action, key: &str, value: Option<&String>| {
        AuditChange::new(
            actor,
            action,
            "contact_attribute",
            contact_id,
            key,
            value.cloned(),
        )
        .about(contact_id)
    };
    let mut out: Vec<AuditChange> = new
        .iter()
        .filter_map(|(key, value)| match old.get(key) {
            None => Some(entry(AuditAction::Create, key, Some(value))),
            Some(before) if before != value => Some(entry(AuditAction::Update, key, Some(value))),
            Some(_) => None,
        })
        .collect();
    out.extend(
        old.keys()
            .filter(|key| !new.contains_key(*key))
            .map(|key| entry(AuditAction::Delete, key, None)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_edits_record_each_changed_key() {
        let pairs = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let old = pairs(&[("tier", "silver"), ("lang", "de"), ("crm", "7")]);
        let new = pairs(&[("tier", "gold"), ("lang", "de"), ("vip", "yes")]);
        let e = contact_attributes("u1", "c1", &old, &new);
        let got: Vec<(&str, &str, Option<&str>)> = e
            .iter()
            .map(|c| {
                (
                    c.action.as_str(),
                    c.attribute.as_str(),
                    c.new_value.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("update", "tier", Some("gold")),
                ("create", "vip", Some("yes")),
                ("delete", "crm", None)
            ]
        );
        assert!(e.iter().all(|c| c.subject_id.as_deref() == Some("c1")
            && c.entity == "contact_attribute"
            && c.actor == "u1"));
        assert!(contact_attributes("u1", "c1", &new, &new).is_empty());
    }

    #[test]
    fn a_first_message_records_contact_identity_and_content() {
        let e = inbound("wa", "c1", Some(("WHATSAPP", "4670")), "m1", "{}");
        assert_eq!(e.len(), 3);
        assert!(
            e.iter()
                .all(|c| c.actor == "channel:wa" && c.subject_id.as_deref() == Some("c1"))
        );
        assert_eq!(e[1].new_value.as_deref(), Some("4670"));
        assert_eq!(inbound("wa", "c1", None, "m2", "{}").len(), 1);
    }

    #[test]
    fn outbound_without_author_is_the_api() {
        let e = outbound(None, Some("c1"), "m1", "{}");
        assert_eq!(e[0].actor, "api");
        assert_eq!(user_created("u0", "u1", "a@b", "A", "dpo").len(), 3);
    }
}
