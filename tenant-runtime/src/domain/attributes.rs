//! Contact attributes: free key/value pairs about a customer (`tier = gold`) that admins and the
//! agent serving the customer edit, and that category rules match on. Pure validation.
//!
//! Keys are short machine names so that rules can name them reliably; values are short text.
//! They are personal data (privacy module): exported, searched and erased with the contact.

use std::collections::BTreeMap;

/// Longest key, in characters.
pub(crate) const MAX_KEY_CHARS: usize = 40;
/// Longest value, in characters.
pub(crate) const MAX_VALUE_CHARS: usize = 200;
/// Most attributes one contact (or one rule) has.
pub(crate) const MAX_ATTRIBUTES: usize = 20;

/// Why a set of attributes is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttributeError {
    /// More than [`MAX_ATTRIBUTES`] pairs.
    #[error("at most {MAX_ATTRIBUTES} attributes, got {0}")]
    TooMany(usize),
    /// The key is not 1 to 40 of `a-z`, `0-9`, `_`, `-`, `.` starting with a letter.
    #[error(
        "attribute key `{0}` must have 1 to {MAX_KEY_CHARS} characters of a-z, 0-9, `_`, `-` or `.`, starting with a letter"
    )]
    Key(String),
    /// The value is empty, too long or holds control characters.
    #[error(
        "value of attribute `{0}` must have 1 to {MAX_VALUE_CHARS} characters and no control characters"
    )]
    Value(String),
}

/// Checks one key.
pub(crate) fn check_key(key: &str) -> Result<(), AttributeError> {
    let ok = key.chars().count() <= MAX_KEY_CHARS
        && key.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AttributeError::Key(key.to_owned()))
    }
}

/// Checks a whole set (a contact's, or a rule's conditions).
pub fn check(attributes: &BTreeMap<String, String>) -> Result<(), AttributeError> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(AttributeError::TooMany(attributes.len()));
    }
    for (key, value) in attributes {
        check_key(key)?;
        let chars = value.chars().count();
        if chars == 0 || chars > MAX_VALUE_CHARS || value.chars().any(char::is_control) {
            return Err(AttributeError::Value(key.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn good_sets_pass() {
        assert_eq!(
            check(&set(&[("tier", "gold"), ("crm.id-2_x", "A 1")])),
            Ok(())
        );
        assert_eq!(check(&BTreeMap::new()), Ok(()));
    }

    #[test]
    fn bad_keys_values_and_sizes_are_named() {
        for key in ["", "Tier", "1tier", "ti er", "tier!", &"k".repeat(41)] {
            assert_eq!(
                check(&set(&[(key, "x")])),
                Err(AttributeError::Key(key.to_owned())),
                "{key}"
            );
        }
        assert!(check_key(&"k".repeat(40)).is_ok());
        for value in ["", "a\nb", &"v".repeat(201)] {
            assert_eq!(
                check(&set(&[("tier", value)])),
                Err(AttributeError::Value("tier".to_owned()))
            );
        }
        let many: BTreeMap<String, String> =
            (0..21).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(check(&many), Err(AttributeError::TooMany(21)));
    }
}
