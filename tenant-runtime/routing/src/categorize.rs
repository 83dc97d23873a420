//! Categorization: which category a new conversation belongs to (pure).
//!
//! Categories are tried in their configured order; inside a category its rules are tried in
//! order; the first rule that matches decides. A rule matches when every condition it sets holds:
//! channel, channel app, a keyword in the first message (case-insensitive, whole words) and
//! contact attributes (exact `key = value`). When nothing matches, the default category applies.
//! The result carries the category's priority and skill requirements, and which rule matched, so
//! the Workspace can show why a conversation landed where it did.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{Categories, Category, CategoryId, CategoryRule, ChannelType, SkillRequirement};

/// What categorization looks at.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// The channel.
    pub channel: ChannelType,
    /// The Conversation API app id the message came through, if known.
    pub channel_app: Option<&'a str>,
    /// The text of the first message.
    pub first_message: &'a str,
    /// The contact's attributes.
    pub contact_attributes: &'a BTreeMap<String, String>,
}

/// Why a category was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    /// Rule number `rule` (0-based) of the category matched; `keyword` is the keyword found, when
    /// the rule had keywords.
    Rule {
        /// Index of the rule inside the category.
        rule: usize,
        /// The keyword that matched.
        keyword: Option<String>,
    },
    /// Nothing matched.
    Default,
}

/// The outcome of categorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Categorized {
    /// The category.
    pub category: CategoryId,
    /// Its priority.
    pub priority: i32,
    /// Its skill requirements.
    pub required_skills: Vec<SkillRequirement>,
    /// Why.
    pub matched_by: MatchedBy,
}

/// Sorts a new conversation into a category.
pub fn categorize(categories: &Categories, inbound: &Inbound<'_>) -> Categorized {
    let message = inbound.first_message.to_lowercase();
    for category in &categories.ordered {
        for (index, rule) in category.rules.iter().enumerate() {
            if let Some(keyword) = rule_matches(rule, inbound, &message) {
                return categorized(
                    category,
                    MatchedBy::Rule {
                        rule: index,
                        keyword,
                    },
                );
            }
        }
    }
    categorized(&categories.default, MatchedBy::Default)
}

fn categorized(category: &Category, matched_by: MatchedBy) -> Categorized {
    Categorized {
        category: category.id,
        priority: category.priority,
        required_skills: category.required_skills.clone(),
        matched_by,
    }
}

/// `None` when the rule does not match; `Some(keyword)` (the keyword found, if any) when it does.
fn rule_matches(
    rule: &CategoryRule,
    inbound: &Inbound<'_>,
    lowered_message: &str,
) -> Option<Option<String>> {
    if !rule.channels.is_empty() && !rule.channels.contains(&inbound.channel) {
        return None;
    }
    if !rule.channel_apps.is_empty()
        && !inbound
            .channel_app
            .is_some_and(|app| rule.channel_apps.iter().any(|a| a == app))
    {
        return None;
    }
    let attributes_hold = rule
        .contact_attributes
        .iter()
        .all(|(key, value)| inbound.contact_attributes.get(key) == Some(value));
    if !attributes_hold {
        return None;
    }
    if rule.keywords.is_empty() {
        return Some(None);
    }
    rule.keywords
        .iter()
        .find(|keyword| contains_word(lowered_message, &keyword.to_lowercase()))
        .map(|keyword| Some(keyword.clone()))
}

/// Whether `needle` occurs in `haystack` with a non-alphanumeric character (or the text's edge)
/// on both sides. Both must already be lowercased. Blank keywords never match.
pub fn contains_word(haystack: &str, needle: &str) -> bool {
    let needle = needle.trim();
    if needle.is_empty() {
        return false;
    }
    // Every occurrence, overlapping ones included ("ab ab" in "xab ab ab" starts at 4).
    let mut from = 0;
    while let Some(offset) = haystack[from..].find(needle) {
        let start = from + offset;
        let before = haystack[..start].chars().next_back();
        let after = haystack[start + needle.len()..].chars().next();
        if !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric) {
            return true;
        }
        from = start + haystack[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn category(id: i64, priority: i32, skill: &str, rules: Vec<CategoryRule>) -> Category {
        Category {
            id: CategoryId(id),
            name: format!("c{id}"),
            priority,
            required_skills: vec![SkillRequirement::new(skill)],
            rules,
        }
    }

    fn tenant() -> Categories {
        Categories {
            ordered: vec![
                category(
                    1,
                    10,
                    "billing",
                    vec![CategoryRule {
                        keywords: vec!["refund".into(), "money back".into()],
                        ..CategoryRule::default()
                    }],
                ),
                category(
                    2,
                    5,
                    "vip",
                    vec![CategoryRule {
                        contact_attributes: [("tier".to_string(), "gold".to_string())].into(),
                        ..CategoryRule::default()
                    }],
                ),
                category(
                    3,
                    1,
                    "telegram",
                    vec![
                        CategoryRule {
                            channels: vec![ChannelType::Telegram],
                            ..CategoryRule::default()
                        },
                        CategoryRule {
                            channel_apps: vec!["app-tg".into()],
                            ..CategoryRule::default()
                        },
                    ],
                ),
            ],
            default: category(0, 0, "general", vec![]),
        }
    }

    fn inbound<'a>(
        channel: ChannelType,
        app: Option<&'a str>,
        message: &'a str,
        attributes: &'a BTreeMap<String, String>,
    ) -> Inbound<'a> {
        Inbound {
            channel,
            channel_app: app,
            first_message: message,
            contact_attributes: attributes,
        }
    }

    #[test]
    fn keyword_matches_case_insensitively_as_a_whole_word() {
        let none = BTreeMap::new();
        let got = categorize(
            &tenant(),
            &inbound(ChannelType::Sms, None, "I want a REFUND!", &none),
        );
        assert_eq!(got.category, CategoryId(1));
        assert_eq!(got.priority, 10);
        assert_eq!(got.required_skills, vec![SkillRequirement::new("billing")]);
        assert_eq!(
            got.matched_by,
            MatchedBy::Rule {
                rule: 0,
                keyword: Some("refund".into())
            }
        );
    }

    #[test]
    fn keyword_inside_a_longer_word_does_not_match() {
        let none = BTreeMap::new();
        let got = categorize(
            &tenant(),
            &inbound(ChannelType::Sms, None, "refunded already", &none),
        );
        assert_eq!(got.category, CategoryId(0));
        assert_eq!(got.matched_by, MatchedBy::Default);
    }

    #[test]
    fn multi_word_keyword_and_unicode_boundaries() {
        let none = BTreeMap::new();
        let got = categorize(
            &tenant(),
            &inbound(ChannelType::Sms, None, "Money Back, bitte", &none),
        );
        assert_eq!(got.category, CategoryId(1));
        assert!(contains_word("ça va, refund", "refund"));
        assert!(!contains_word("érefund", "refund"));
        assert!(!contains_word("anything", " "));
        assert!(
            contains_word("xab ab ab", "ab ab"),
            "overlapping occurrences count"
        );
    }

    #[test]
    fn attributes_match_on_exact_key_and_value() {
        let gold = [("tier".to_string(), "gold".to_string())].into();
        let silver = [("tier".to_string(), "silver".to_string())].into();
        assert_eq!(
            categorize(&tenant(), &inbound(ChannelType::Sms, None, "hi", &gold)).category,
            CategoryId(2)
        );
        assert_eq!(
            categorize(&tenant(), &inbound(ChannelType::Sms, None, "hi", &silver)).category,
            CategoryId(0)
        );
    }

    #[test]
    fn first_matching_category_in_order_wins() {
        let gold = [("tier".to_string(), "gold".to_string())].into();
        let got = categorize(
            &tenant(),
            &inbound(ChannelType::Telegram, None, "refund", &gold),
        );
        assert_eq!(got.category, CategoryId(1));
    }

    #[test]
    fn channel_and_channel_app_rules_are_alternatives() {
        let none = BTreeMap::new();
        let by_channel = categorize(
            &tenant(),
            &inbound(ChannelType::Telegram, None, "hi", &none),
        );
        assert_eq!(
            by_channel.matched_by,
            MatchedBy::Rule {
                rule: 0,
                keyword: None
            }
        );
        let by_app = categorize(
            &tenant(),
            &inbound(ChannelType::Sms, Some("app-tg"), "hi", &none),
        );
        assert_eq!(by_app.category, CategoryId(3));
        assert_eq!(
            by_app.matched_by,
            MatchedBy::Rule {
                rule: 1,
                keyword: None
            }
        );
        let other_app = categorize(
            &tenant(),
            &inbound(ChannelType::Sms, Some("app-x"), "hi", &none),
        );
        assert_eq!(other_app.category, CategoryId(0));
    }

    #[test]
    fn all_conditions_of_a_rule_must_hold() {
        let categories = Categories {
            ordered: vec![category(
                7,
                3,
                "wa-billing",
                vec![CategoryRule {
                    channels: vec![ChannelType::Whatsapp],
                    keywords: vec!["invoice".into()],
                    ..CategoryRule::default()
                }],
            )],
            default: category(0, 0, "general", vec![]),
        };
        let none = BTreeMap::new();
        let hit = inbound(ChannelType::Whatsapp, None, "my invoice", &none);
        let wrong_channel = inbound(ChannelType::Sms, None, "my invoice", &none);
        let no_keyword = inbound(ChannelType::Whatsapp, None, "hello", &none);
        assert_eq!(categorize(&categories, &hit).category, CategoryId(7));
        assert_eq!(
            categorize(&categories, &wrong_channel).category,
            CategoryId(0)
        );
        assert_eq!(categorize(&categories, &no_keyword).category, CategoryId(0));
    }
}
