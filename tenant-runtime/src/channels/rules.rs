//! Channel rules checked before an outbound message is accepted, so agents get a clear 4xx now
//! instead of an asynchronous `FAILED` delivery report later. Pure functions of the content, the
//! channel and the time of the customer's last message.

use chrono::{DateTime, Duration, Utc};

use crate::domain::{ChannelType, MessageContent};

/// Longest SMS text accepted (about ten concatenated segments).
pub(crate) const SMS_MAX_CHARS: usize = 1600;
/// Most SMS segments accepted.
pub(crate) const SMS_MAX_SEGMENTS: usize = 10;

/// Why an outbound message breaks a channel rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Violation {
    /// Text (or caption) longer than the channel allows.
    #[error("{channel} allows at most {limit} characters per message; this one has {actual}")]
    TooLong {
        /// The channel.
        channel: ChannelType,
        /// Its limit.
        limit: usize,
        /// The length sent.
        actual: usize,
    },
    /// SMS that would need more segments than we allow.
    #[error(
        "SMS text needs {segments} segments ({encoding}); at most {max} segments and {max_chars} characters are sent"
    )]
    TooManySegments {
        /// Segments needed.
        segments: usize,
        /// `GSM-7` or `UCS-2`.
        encoding: &'static str,
        /// Our cap.
        max: usize,
        /// Our character cap.
        max_chars: usize,
    },
    /// WhatsApp outside the 24-hour customer-care window: only templates may be sent.
    #[error(
        "the WhatsApp customer-care window is closed (last customer message {last}); only a template message can be sent"
    )]
    OutsideWindow {
        /// The customer's last message, or "never".
        last: String,
    },
    /// Empty text.
    #[error("text must not be empty")]
    Empty,
    /// Content kind that cannot be sent (choice responses, raw unsupported content).
    #[error("content of type `{0}` cannot be sent")]
    NotSendable(&'static str),
    /// Templates outside WhatsApp.
    #[error("template messages are only supported on WHATSAPP, not {0}")]
    TemplateNotSupported(ChannelType),
    /// Media URL that is not http(s).
    #[error("media url must be an absolute http(s) URL")]
    BadMediaUrl,
}

/// Maximum characters of a generic text message per channel (`None`: segment rules, see SMS).
pub(crate) fn text_limit(channel: ChannelType) -> Option<usize> {
    match channel {
        ChannelType::Whatsapp | ChannelType::Telegram => Some(4096),
        ChannelType::Viber | ChannelType::Instagram => Some(1000),
        ChannelType::Rcs | ChannelType::Messenger => Some(2000),
        ChannelType::Sms => None,
    }
}

/// The GSM 03.38 basic character set (one septet each).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The GSM 03.38 extension table (two septets each: escape + char).
const GSM7_EXTENDED: &str = "^{}\\[~]|€\x0c";

/// `(segments, encoding)` an SMS text needs.
pub(crate) fn sms_segments(text: &str) -> (usize, &'static str) {
    let gsm_units: Option<usize> = text.chars().try_fold(0usize, |n, c| {
        if GSM7_BASIC.contains(c) {
            Some(n + 1)
        } else if GSM7_EXTENDED.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    });
    match gsm_units {
        Some(units) if units <= 160 => (1, "GSM-7"),
        Some(units) => (units.div_ceil(153), "GSM-7"),
        None => {
            let units = text.encode_utf16().count();
            if units <= 70 {
                (1, "UCS-2")
            } else {
                (units.div_ceil(67), "UCS-2")
            }
        }
    }
}

fn check_text(channel: ChannelType, text: &str) -> Result<(), Violation> {
    let actual = text.chars().count();
    match text_limit(channel) {
        Some(limit) if actual > limit => Err(Violation::TooLong {
            channel,
            limit,
            actual,
        }),
        Some(_) => Ok(()),
        None => {
            let (segments, encoding) = sms_segments(text);
            if actual > SMS_MAX_CHARS || segments > SMS_MAX_SEGMENTS {
                Err(Violation::TooManySegments {
                    segments,
                    encoding,
                    max: SMS_MAX_SEGMENTS,
                    max_chars: SMS_MAX_CHARS,
                })
            } else {
                Ok(())
            }
        }
    }
}

/// Checks `content` against the rules of `channel` at time `now`.
pub(crate) fn check_outbound(
    channel: ChannelType,
    content: &MessageContent,
    last_inbound_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), Violation> {
    let is_template = matches!(content, MessageContent::Template { .. });
    match content {
        MessageContent::Text { text } => {
            if text.trim().is_empty() {
                return Err(Violation::Empty);
            }
            check_text(channel, text)?;
        }
        MessageContent::Media { url, caption } => {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(Violation::BadMediaUrl);
            }
            if let Some(caption) = caption {
                check_text(channel, caption)?;
            }
        }
        MessageContent::Location { .. } => {}
        MessageContent::Template { .. } if channel != ChannelType::Whatsapp => {
            return Err(Violation::TemplateNotSupported(channel));
        }
        MessageContent::Template { .. } => {}
        other @ (MessageContent::ChoiceResponse { .. } | MessageContent::Unsupported { .. }) => {
            return Err(Violation::NotSendable(other.kind()));
        }
    }
    if channel == ChannelType::Whatsapp && !is_template {
        let open = last_inbound_at.is_some_and(|t| now - t < Duration::hours(24));
        if !open {
            return Err(Violation::OutsideWindow {
                last: last_inbound_at.map_or_else(|| "never".to_owned(), |t| t.to_rfc3339()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize, c: char) -> MessageContent {
        MessageContent::Text {
            text: std::iter::repeat_n(c, n).collect(),
        }
    }

    #[test]
    fn per_channel_limits() {
        let now = Utc::now();
        let recent = Some(now - Duration::minutes(5));
        for (channel, limit) in [
            (ChannelType::Whatsapp, 4096),
            (ChannelType::Viber, 1000),
            (ChannelType::Rcs, 2000),
            (ChannelType::Messenger, 2000),
            (ChannelType::Instagram, 1000),
            (ChannelType::Telegram, 4096),
        ] {
            assert_eq!(
                check_outbound(channel, &text(limit, 'x'), recent, now),
                Ok(())
            );
            assert_eq!(
                check_outbound(channel, &text(limit + 1, 'é'), recent, now),
                Err(Violation::TooLong {
                    channel,
                    limit,
                    actual: limit + 1
                })
            );
        }
    }

    #[test]
    fn sms_segments_and_cap() {
        assert_eq!(sms_segments(&"a".repeat(160)), (1, "GSM-7"));
        assert_eq!(sms_segments(&"a".repeat(161)), (2, "GSM-7"));
        assert_eq!(sms_segments(&"€".repeat(80)), (1, "GSM-7"));
        assert_eq!(sms_segments(&"ж".repeat(70)), (1, "UCS-2"));
        assert_eq!(sms_segments(&"ж".repeat(71)), (2, "UCS-2"));
        let now = Utc::now();
        assert_eq!(
            check_outbound(ChannelType::Sms, &text(1530, 'a'), None, now),
            Ok(())
        );
        assert!(matches!(
            check_outbound(ChannelType::Sms, &text(1531, 'a'), None, now),
            Err(Violation::TooManySegments { segments: 11, .. })
        ));
        assert!(matches!(
            check_outbound(ChannelType::Sms, &text(671, 'ж'), None, now),
            Err(Violation::TooManySegments {
                encoding: "UCS-2",
                ..
            })
        ));
    }

    #[test]
    fn whatsapp_window() {
        let now = Utc::now();
        let hi = text(2, 'h');
        assert_eq!(
            check_outbound(
                ChannelType::Whatsapp,
                &hi,
                Some(now - Duration::hours(23)),
                now
            ),
            Ok(())
        );
        assert!(matches!(
            check_outbound(
                ChannelType::Whatsapp,
                &hi,
                Some(now - Duration::hours(25)),
                now
            ),
            Err(Violation::OutsideWindow { .. })
        ));
        assert!(matches!(
            check_outbound(ChannelType::Whatsapp, &hi, None, now),
            Err(Violation::OutsideWindow { .. })
        ));
        let template = MessageContent::Template {
            template_id: "case_followup".into(),
            language_code: "en_US".into(),
            parameters: Default::default(),
        };
        assert_eq!(
            check_outbound(ChannelType::Whatsapp, &template, None, now),
            Ok(())
        );
        assert_eq!(
            check_outbound(ChannelType::Sms, &template, None, now),
            Err(Violation::TemplateNotSupported(ChannelType::Sms))
        );
        // Other channels have no window here.
        assert_eq!(
            check_outbound(ChannelType::Telegram, &hi, None, now),
            Ok(())
        );
    }

    #[test]
    fn unsendable_content() {
        let now = Utc::now();
        assert_eq!(
            check_outbound(ChannelType::Sms, &text(0, 'x'), None, now),
            Err(Violation::Empty)
        );
        let choice = MessageContent::ChoiceResponse {
            message_id: "m".into(),
            postback_data: "p".into(),
        };
        assert_eq!(
            check_outbound(ChannelType::Sms, &choice, None, now),
            Err(Violation::NotSendable("choice_response"))
        );
        let media = MessageContent::Media {
            url: "file:///etc/passwd".into(),
            caption: None,
        };
        assert_eq!(
            check_outbound(ChannelType::Sms, &media, None, now),
            Err(Violation::BadMediaUrl)
        );
    }
}
