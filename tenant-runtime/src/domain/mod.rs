//! Domain vocabulary shared by storage, the services and the HTTP API: the lowest floor of the
//! runtime (see the crate's floor table), importing nothing else of it.
//!
//! Everything here is pure: enums with their wire names, message content, and the monotonic
//! delivery-status state machine; contact attributes ([`attributes`]); the audit log's entry
//! format and hash chain ([`audit`]), which storage writes in the transaction of each change;
//! and what anonymized data looks like ([`anonymize`]), which storage writes too; and the API
//! types ([`api`]) that storage builds and the routes serialize. No I/O, so it
//! is covered by unit and property tests.

pub(crate) mod anonymize;
pub mod api;
pub mod attributes;
pub mod audit;

use contact_routing::wire_enum;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The vocabulary the routing engine shares: one type each, defined in the engine's crate
/// (the lowest floor) and used as they are by storage, services and the API.
pub use contact_routing::{AgentStatus, CategoryRule, ChannelType, ParseError as Error};

wire_enum!(
    /// Where a conversation stands.
    #[derive(ToSchema)]
    ConversationStatus, "conversation status", {
        /// Waiting for an agent.
        Queued => "queued",
        /// An agent owns it.
        Assigned => "assigned",
        /// Finished; a new inbound message opens a new conversation.
        Closed => "closed",
    }
);

wire_enum!(
    /// Which way a message travelled.
    #[derive(ToSchema)]
    Direction, "direction", {
        /// From the customer to us.
        Inbound => "inbound",
        /// From an agent to the customer.
        Outbound => "outbound",
    }
);

wire_enum!(
    /// What a user may do.
    #[derive(ToSchema)]
    Role, "role", {
        /// Configures the tenant.
        Admin => "admin",
        /// Answers conversations.
        Agent => "agent",
        /// Data protection officer: searches, exports and anonymizes personal data.
        Dpo => "dpo",
    }
);

wire_enum!(
    /// Delivery status of a message, using the Conversation API names where they exist.
    #[derive(ToSchema)]
    DeliveryStatus, "delivery status", {
        /// Inbound message stored (inbound messages have no delivery lifecycle).
        Received => "RECEIVED",
        /// Outbound message waiting in the outbox.
        Pending => "PENDING",
        /// Accepted by the Conversation API (`messages:send` answered 200).
        Queued => "QUEUED",
        /// Handed to the channel.
        QueuedOnChannel => "QUEUED_ON_CHANNEL",
        /// Reached the device.
        Delivered => "DELIVERED",
        /// Read by the customer (terminal).
        Read => "READ",
        /// Failed for good (terminal, with a reason).
        Failed => "FAILED",
    }
);

impl DeliveryStatus {
    /// Position in the monotonic order; a status only replaces one of lower rank.
    ///
    /// `READ` and `FAILED` share the top rank: whichever terminal status arrives first wins, and
    /// reports that arrive out of order (a late `DELIVERED` after `READ`) change nothing.
    pub(crate) fn rank(self) -> i64 {
        match self {
            DeliveryStatus::Received => 0,
            DeliveryStatus::Pending => 1,
            DeliveryStatus::Queued => 2,
            DeliveryStatus::QueuedOnChannel => 3,
            DeliveryStatus::Delivered => 4,
            DeliveryStatus::Read | DeliveryStatus::Failed => 10,
        }
    }

    /// The status after a report of `next` arrives: `Some(next)` if it moves forward, else `None`
    /// (the rule the storage's `status_rank` comparison applies; the property tests state it).
    #[cfg(test)]
    fn advance(self, next: DeliveryStatus) -> Option<DeliveryStatus> {
        (next.rank() > self.rank()).then_some(next)
    }
}

/// The content of a message, inbound or outbound.
///
/// Inbound content Contact does not model (product responses, WhatsApp Flows, fallbacks) is kept
/// as `unsupported` with the raw JSON, so nothing a customer sent is dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageContent {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// An image, video, audio clip or document, optionally with a caption.
    Media {
        /// Where the media can be fetched.
        url: String,
        /// Caption shown with the media.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
    },
    /// A shared location.
    Location {
        /// Latitude in degrees.
        latitude: f64,
        /// Longitude in degrees.
        longitude: f64,
        /// Name of the place.
        #[serde(default)]
        title: String,
        /// Address or label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// The customer picked a choice (button) of an earlier message.
    ChoiceResponse {
        /// The Conversation API id of the message that carried the choice.
        message_id: String,
        /// The postback data of the chosen option.
        postback_data: String,
    },
    /// An approved template (the only thing WhatsApp allows outside the customer-care window).
    Template {
        /// Template name.
        template_id: String,
        /// Language, e.g. `en_US`.
        language_code: String,
        /// Positional parameters, e.g. `body[1]text`.
        #[serde(default)]
        parameters: std::collections::BTreeMap<String, String>,
    },
    /// Inbound content of a kind Contact does not model yet, kept verbatim.
    Unsupported {
        /// The Conversation API key of the content (e.g. `product_response_message`).
        kind: String,
        /// The raw JSON of the content.
        #[schema(value_type = Object)]
        raw: serde_json::Value,
    },
}

impl MessageContent {
    /// Short name of the content kind (stored in its own column for filtering).
    pub fn kind(&self) -> &'static str {
        match self {
            MessageContent::Text { .. } => "text",
            MessageContent::Media { .. } => "media",
            MessageContent::Location { .. } => "location",
            MessageContent::ChoiceResponse { .. } => "choice_response",
            MessageContent::Template { .. } => "template",
            MessageContent::Unsupported { .. } => "unsupported",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wire_names_round_trip() {
        for c in ChannelType::ALL {
            assert_eq!(c.as_str().parse::<ChannelType>().unwrap(), *c);
        }
        assert_eq!("VIBER".parse::<ChannelType>().unwrap(), ChannelType::Viber);
        assert!(matches!(
            "FAX".parse::<ChannelType>(),
            Err(Error::Unknown {
                what: "channel",
                ..
            })
        ));
    }

    #[test]
    fn delivery_reports_move_forward_only() {
        use DeliveryStatus::*;
        assert_eq!(Queued.advance(Delivered), Some(Delivered));
        assert_eq!(Read.advance(Delivered), None);
        assert_eq!(Delivered.advance(Failed), Some(Failed));
        assert_eq!(Failed.advance(Read), None);
        assert_eq!(Read.advance(Failed), None);
    }

    fn status() -> impl Strategy<Value = DeliveryStatus> {
        proptest::sample::select(DeliveryStatus::ALL.to_vec())
    }

    proptest! {
        /// Whatever order reports arrive in, the final status is the highest-ranked one seen
        /// first among equals, and the rank never decreases along the way.
        #[test]
        fn any_report_order_is_monotonic(reports in proptest::collection::vec(status(), 0..12)) {
            let mut current = DeliveryStatus::Pending;
            for r in &reports {
                let before = current.rank();
                if let Some(next) = current.advance(*r) { current = next; }
                prop_assert!(current.rank() >= before);
            }
            let max = reports.iter().map(|r| r.rank()).max().unwrap_or(0).max(DeliveryStatus::Pending.rank());
            prop_assert_eq!(current.rank(), max);
        }
    }
}
