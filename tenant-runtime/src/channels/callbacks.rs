//! Parsing Conversation API callbacks into what the runtime acts on.
//!
//! A callback carries no type field: its kind is the one known top-level key present (`message`,
//! `message_delivery_report`, …). Unknown fields are ignored everywhere (Sinch's own fixtures
//! add `"foo": "bar"` to test that), unknown kinds are reported as [`Callback::Ignored`] so the
//! webhook can acknowledge them without side effects. Parsing is pure and works on the raw bytes.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::domain::{ChannelType, DeliveryStatus, MessageContent};

/// Why a callback body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    /// The body is not a JSON object.
    #[error("callback body is not a JSON object: {0}")]
    NotJsonObject(String),
    /// A known callback kind is missing a field or has one of the wrong type.
    #[error("invalid `{kind}` callback: {detail}")]
    Invalid {
        /// The top-level key.
        kind: &'static str,
        /// What serde said.
        detail: String,
    },
    /// The message has no content of any kind.
    #[error("inbound message `{0}` has no contact_message content")]
    NoContent(String),
    /// The message is not from a contact (`direction` other than `TO_APP`).
    #[error("message `{0}` has direction `{1}`, expected TO_APP")]
    WrongDirection(String, String),
    /// The channel is not one Contact can answer on.
    #[error("unsupported channel `{0}`")]
    UnsupportedChannel(String),
}

/// The kinds the runtime acts on; everything else is acknowledged and ignored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Callback {
    /// MESSAGE_INBOUND: a customer wrote.
    Message(Inbound),
    /// MESSAGE_DELIVERY: what happened to one of our messages.
    DeliveryReport(Report),
    /// A known kind Contact does not act on yet, or an unknown one.
    Ignored {
        /// The top-level key that identified it (or `unknown`).
        kind: String,
    },
}

impl Callback {
    /// Short label for metrics and logs.
    pub(crate) fn kind(&self) -> &str {
        match self {
            Callback::Message(_) => "message",
            Callback::DeliveryReport(_) => "message_delivery_report",
            Callback::Ignored { kind } => kind,
        }
    }
}

/// An inbound customer message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Inbound {
    /// Conversation API message id.
    pub message_id: String,
    /// The channel it came over.
    pub channel: ChannelType,
    /// The customer's identity on it.
    pub identity: String,
    /// What was sent.
    pub content: MessageContent,
}

/// A delivery report for an outbound message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    /// Conversation API message id.
    pub message_id: String,
    /// The `correlation_id` of the send request, when echoed.
    pub correlation_id: Option<String>,
    /// The status, or `None` for statuses that do not change ours (`SWITCHING_CHANNEL`, new ones).
    pub status: Option<DeliveryStatus>,
    /// `code: description` for failures.
    pub reason: Option<String>,
}

/// Every documented top-level key, in the order the official SDK checks them.
pub(crate) const KNOWN_KINDS: &[&str] = &[
    "message",
    "message_redaction",
    "message_submit_notification",
    "message_delivery_report",
    "event",
    "event_delivery_report",
    "conversation_start_notification",
    "conversation_stop_notification",
    "conversation_delete_notification",
    "contact_create_notification",
    "contact_delete_notification",
    "contact_merge_notification",
    "contact_update_notification",
    "duplicated_identities",
    "capability_notification",
    "opt_in_notification",
    "opt_out_notification",
    "channel_event_notification",
    "unsupported_callback",
    "smart_conversation_notification",
    "record_notification",
];

#[derive(Deserialize)]
struct WireMessage {
    id: String,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    contact_message: Option<Map<String, Value>>,
    channel_identity: WireIdentity,
}

#[derive(Deserialize)]
struct WireIdentity {
    channel: String,
    identity: String,
}

#[derive(Deserialize)]
struct WireReport {
    message_id: String,
    status: String,
    #[serde(default)]
    reason: Option<WireReason>,
}

#[derive(Deserialize)]
struct WireReason {
    #[serde(default)]
    code: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct WireText {
    text: String,
}

#[derive(Deserialize)]
struct WireMedia {
    url: String,
    #[serde(default)]
    caption: Option<String>,
}

#[derive(Deserialize)]
struct WireLocation {
    coordinates: WireCoordinates,
    #[serde(default)]
    title: String,
    #[serde(default)]
    label: Option<String>,
}

#[derive(Deserialize)]
struct WireCoordinates {
    latitude: f64,
    longitude: f64,
}

#[derive(Deserialize)]
struct WireChoice {
    message_id: String,
    #[serde(default)]
    postback_data: String,
}

fn typed<T: for<'de> Deserialize<'de>>(kind: &'static str, v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|e| Error::Invalid {
        kind,
        detail: e.to_string(),
    })
}

/// Parses a raw callback body.
pub(crate) fn parse(body: &[u8]) -> Result<Callback, Error> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Error::NotJsonObject(e.to_string()))?;
    let Value::Object(mut top) = value else {
        return Err(Error::NotJsonObject(
            "top level is not an object".to_owned(),
        ));
    };
    let Some(kind) = KNOWN_KINDS.iter().copied().find(|k| top.contains_key(*k)) else {
        return Ok(Callback::Ignored {
            kind: "unknown".to_owned(),
        });
    };
    let payload = top.remove(kind).unwrap_or(Value::Null);
    match kind {
        "message" => parse_message(payload).map(Callback::Message),
        "message_delivery_report" => {
            let report: WireReport = typed(kind, payload)?;
            let correlation_id = top
                .get("correlation_id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            let status = match report.status.as_str() {
                // QUEUED is never sent as a callback but is harmless; SWITCHING_CHANNEL means
                // Sinch is still trying, so ours stays as it is.
                "QUEUED" => Some(DeliveryStatus::Queued),
                "QUEUED_ON_CHANNEL" => Some(DeliveryStatus::QueuedOnChannel),
                "DELIVERED" => Some(DeliveryStatus::Delivered),
                "READ" => Some(DeliveryStatus::Read),
                "FAILED" => Some(DeliveryStatus::Failed),
                _ => None,
            };
            let reason = report
                .reason
                .filter(|r| !r.code.is_empty() || !r.description.is_empty())
                .map(|r| format!("{}: {}", r.code, r.description));
            Ok(Callback::DeliveryReport(Report {
                message_id: report.message_id,
                correlation_id,
                status,
                reason,
            }))
        }
        other => Ok(Callback::Ignored {
            kind: other.to_owned(),
        }),
    }
}

fn parse_message(payload: Value) -> Result<Inbound, Error> {
    let msg: WireMessage = typed("message", payload)?;
    if let Some(direction) = msg.direction.as_deref()
        && direction != "TO_APP"
    {
        return Err(Error::WrongDirection(msg.id, direction.to_owned()));
    }
    let channel: ChannelType = msg
        .channel_identity
        .channel
        .parse()
        .map_err(|_| Error::UnsupportedChannel(msg.channel_identity.channel.clone()))?;
    let mut content = msg.contact_message.unwrap_or_default();
    let content = if let Some(v) = content.remove("text_message") {
        let t: WireText = typed("message", v)?;
        MessageContent::Text { text: t.text }
    } else if let Some(v) = content.remove("media_message") {
        let m: WireMedia = typed("message", v)?;
        MessageContent::Media {
            url: m.url,
            caption: None,
        }
    } else if let Some(v) = content.remove("media_card_message") {
        let m: WireMedia = typed("message", v)?;
        MessageContent::Media {
            url: m.url,
            caption: m.caption.filter(|c| !c.is_empty()),
        }
    } else if let Some(v) = content.remove("location_message") {
        let l: WireLocation = typed("message", v)?;
        MessageContent::Location {
            latitude: l.coordinates.latitude,
            longitude: l.coordinates.longitude,
            title: l.title,
            label: l.label.filter(|s| !s.is_empty()),
        }
    } else if let Some(v) = content.remove("choice_response_message") {
        let c: WireChoice = typed("message", v)?;
        MessageContent::ChoiceResponse {
            message_id: c.message_id,
            postback_data: c.postback_data,
        }
    } else if let Some((kind, raw)) = content.into_iter().find(|(k, _)| k.ends_with("_message")) {
        // fallback_message, product_response_message, channel_specific_message, future kinds:
        // keep them whole rather than lose what the customer sent.
        MessageContent::Unsupported { kind, raw }
    } else {
        return Err(Error::NoContent(msg.id));
    };
    Ok(Inbound {
        message_id: msg.id,
        channel,
        identity: normalise_identity(channel, &msg.channel_identity.identity),
        content,
    })
}

/// Phone-number identities arrive with and without `+`: store them without, so one customer is
/// one contact whichever way a channel spells the number.
pub(crate) fn normalise_identity(channel: ChannelType, identity: &str) -> String {
    let trimmed = identity.trim();
    match channel {
        ChannelType::Sms | ChannelType::Whatsapp | ChannelType::Rcs | ChannelType::Viber => {
            trimmed.trim_start_matches('+').to_owned()
        }
        _ => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn inbound_text() {
        let Callback::Message(m) = parse(&fixture("inbound_text.json")).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(m.message_id, "01HZX4B9C1D3F5G7H9J1K3M5N7");
        assert_eq!(m.channel, ChannelType::Whatsapp);
        assert_eq!(m.identity, "46701234567");
        assert_eq!(
            m.content,
            MessageContent::Text {
                text: "Hi, my parcel 48213 has not arrived yet".into()
            }
        );
    }

    #[test]
    fn inbound_media_and_media_card() {
        let Callback::Message(m) = parse(&fixture("inbound_media.json")).unwrap() else {
            panic!()
        };
        assert_eq!(
            m.content,
            MessageContent::Media {
                url: "https://media.example-sinch-cdn.test/01HZX4J2K4L6M8N0P2Q4R6S8T0/photo.jpg"
                    .into(),
                caption: None
            }
        );
        let Callback::Message(m) = parse(&fixture("inbound_media_card.json")).unwrap() else {
            panic!()
        };
        assert!(
            matches!(m.content, MessageContent::Media { caption: Some(ref c), .. } if c == "The damaged box")
        );
    }

    #[test]
    fn inbound_location_and_choice() {
        let Callback::Message(m) = parse(&fixture("inbound_location.json")).unwrap() else {
            panic!()
        };
        assert!(
            matches!(m.content, MessageContent::Location { latitude, longitude, .. } if (latitude - 59.3293).abs() < 1e-9 && (longitude - 18.0686).abs() < 1e-9)
        );
        let Callback::Message(m) = parse(&fixture("inbound_choice.json")).unwrap() else {
            panic!()
        };
        assert_eq!(
            m.content,
            MessageContent::ChoiceResponse {
                message_id: "01HZX5C3D5F7G9H1J3K5M7N9P1".into(),
                postback_data: "track_parcel".into()
            }
        );
        assert_eq!(m.channel, ChannelType::Messenger);
    }

    #[test]
    fn inbound_unmodelled_content_is_kept() {
        let Callback::Message(m) = parse(&fixture("inbound_fallback.json")).unwrap() else {
            panic!()
        };
        assert!(
            matches!(m.content, MessageContent::Unsupported { ref kind, .. } if kind == "fallback_message")
        );
        // An SMS number with "+" is the same customer as without.
        assert_eq!(m.identity, "15551234567");
    }

    #[test]
    fn delivery_reports() {
        let Callback::DeliveryReport(r) = parse(&fixture("delivery_failed.json")).unwrap() else {
            panic!()
        };
        assert_eq!(r.status, Some(DeliveryStatus::Failed));
        assert_eq!(r.correlation_id.as_deref(), Some("T-1042"));
        assert!(
            r.reason
                .unwrap()
                .starts_with("OUTSIDE_ALLOWED_SENDING_WINDOW: ")
        );
        let Callback::DeliveryReport(r) = parse(&fixture("delivery_read.json")).unwrap() else {
            panic!()
        };
        assert_eq!(r.status, Some(DeliveryStatus::Read));
        assert_eq!(r.correlation_id, None);
        assert_eq!(r.reason, None);
    }

    #[test]
    fn other_kinds_are_ignored_by_key() {
        for (file, kind) in [
            ("contact_create.json", "contact_create_notification"),
            ("conversation_start.json", "conversation_start_notification"),
            ("event_composing.json", "event"),
            ("message_submit.json", "message_submit_notification"),
            ("unknown_kind.json", "unknown"),
        ] {
            assert_eq!(
                parse(&fixture(file)).unwrap(),
                Callback::Ignored { kind: kind.into() },
                "{file}"
            );
        }
    }

    #[test]
    fn every_documented_kind_is_recognised_by_its_key() {
        for kind in KNOWN_KINDS {
            if matches!(*kind, "message" | "message_delivery_report") {
                continue;
            }
            // Envelope plus an unknown extra field, as Sinch's own fixtures do.
            let body = format!(
                r#"{{"app_id":"A","project_id":"P","accepted_time":"2026-01-01T00:00:00.123456789Z","{kind}":{{"x":1}},"foo":"bar"}}"#
            );
            assert_eq!(
                parse(body.as_bytes()).unwrap(),
                Callback::Ignored {
                    kind: (*kind).to_owned()
                },
                "{kind}"
            );
        }
    }

    #[test]
    fn malformed_bodies_are_refused_precisely() {
        assert!(matches!(parse(b"not json"), Err(Error::NotJsonObject(_))));
        assert!(matches!(parse(b"[1,2]"), Err(Error::NotJsonObject(_))));
        assert!(matches!(
            parse(br#"{"message":{"id":"X"}}"#),
            Err(Error::Invalid {
                kind: "message",
                ..
            })
        ));
        assert!(matches!(
            parse(br#"{"message":{"id":"X","contact_message":{},"channel_identity":{"channel":"SMS","identity":"1"}}}"#),
            Err(Error::NoContent(_))
        ));
        assert!(matches!(
            parse(br#"{"message":{"id":"X","contact_message":{"text_message":{"text":"a"}},"channel_identity":{"channel":"FAX","identity":"1"}}}"#),
            Err(Error::UnsupportedChannel(_))
        ));
        assert!(matches!(
            parse(br#"{"message_delivery_report":{"status":"READ"}}"#),
            Err(Error::Invalid {
                kind: "message_delivery_report",
                ..
            })
        ));
    }
}
