//! What anonymized data looks like: pure replacements that keep a record's shape and kind (so
//! statistics such as message counts per kind and timestamps survive) but none of its content.

use super::MessageContent;

/// Replaces names.
pub(crate) const ANONYMIZED_NAME: &str = "Anonymized";
/// Replaces texts, captions, titles and labels.
pub(crate) const ANONYMIZED_TEXT: &str = "[anonymized]";

/// The content that replaces `content`: same kind, nothing said, no media URL, no location.
pub(crate) fn anonymize_content(content: &MessageContent) -> MessageContent {
    match content {
        MessageContent::Text { .. } => MessageContent::Text {
            text: ANONYMIZED_TEXT.to_owned(),
        },
        MessageContent::Media { .. } => MessageContent::Media {
            url: String::new(),
            caption: None,
        },
        MessageContent::Location { .. } => MessageContent::Location {
            latitude: 0.0,
            longitude: 0.0,
            title: String::new(),
            label: None,
        },
        MessageContent::ChoiceResponse { .. } => MessageContent::ChoiceResponse {
            message_id: String::new(),
            postback_data: String::new(),
        },
        MessageContent::Template {
            template_id,
            language_code,
            ..
        } => MessageContent::Template {
            // Which template was sent is the tenant's, not the customer's; the parameters are.
            template_id: template_id.clone(),
            language_code: language_code.clone(),
            parameters: Default::default(),
        },
        MessageContent::Unsupported { kind, .. } => MessageContent::Unsupported {
            kind: kind.clone(),
            raw: serde_json::Value::Object(Default::default()),
        },
    }
}

/// Stored JSON of the anonymized `content_json`; content that does not parse is replaced by an
/// anonymized text (it cannot be shown anyway, and must not survive).
pub(crate) fn anonymize_content_json(content_json: &str) -> String {
    let replaced = match serde_json::from_str::<MessageContent>(content_json) {
        Ok(c) => anonymize_content(&c),
        Err(_) => MessageContent::Text {
            text: ANONYMIZED_TEXT.to_owned(),
        },
    };
    serde_json::to_string(&replaced).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_keeps_its_kind_and_loses_its_content() {
        let originals = [
            MessageContent::Text {
                text: "my address is Main St 1".into(),
            },
            MessageContent::Media {
                url: "https://cdn.example/me.jpg".into(),
                caption: Some("me".into()),
            },
            MessageContent::Location {
                latitude: 59.3,
                longitude: 18.1,
                title: "Home".into(),
                label: Some("Main St 1".into()),
            },
            MessageContent::ChoiceResponse {
                message_id: "m".into(),
                postback_data: "yes-42".into(),
            },
            MessageContent::Template {
                template_id: "order".into(),
                language_code: "en_US".into(),
                parameters: [("body[1]text".to_owned(), "Alice".to_owned())].into(),
            },
            MessageContent::Unsupported {
                kind: "product_response_message".into(),
                raw: serde_json::json!({"name": "Alice"}),
            },
        ];
        for original in &originals {
            let a = anonymize_content(original);
            assert_eq!(a.kind(), original.kind());
            let json = serde_json::to_string(&a).unwrap();
            for secret in ["Main St", "cdn.example", "59.3", "yes-42", "Alice", "Home"] {
                assert!(!json.contains(secret), "{json} still holds {secret}");
            }
        }
    }

    #[test]
    fn unreadable_content_is_replaced_too() {
        assert_eq!(
            anonymize_content_json("not json, Alice"),
            r#"{"type":"text","text":"[anonymized]"}"#
        );
    }
}
