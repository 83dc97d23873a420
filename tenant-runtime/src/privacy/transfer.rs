//! Contact import and export formats (CSV and JSON): parsing and per-row validation, pure.
//!
//! CSV has a header row naming any of the columns `display_name`, `email`, `phone`,
//! `identities` (in any order); `identities` holds `CHANNEL:identity` pairs separated by `;`,
//! e.g. `WHATSAPP:46700000001;SMS:46700000001`. Contact attributes take one column each,
//! `attr:<key>` (`attr:tier`), whose cell is the value as is (not trimmed: the API keeps
//! spaces too) and an empty cell no attribute; one column per key rather than one packed column
//! because values may hold any separator, and the CSV quoting already round-trips them. JSON is
//! an array of objects with the fields of [`ContactInput`] and an optional `attributes` object.
//! Attributes follow the API's rules ([`crate::domain::attributes`]). A file that cannot be read
//! at all (no header, unknown column, an `attr:` column whose key is invalid, not a JSON array)
//! is refused as a whole; otherwise every row is validated on its own and the valid ones are
//! imported, and each invalid one is reported with its row number, field (`attr:<key>` or
//! `attributes.<key>` for an attribute) and reason.
//!
//! Row numbers: for CSV the line in the file (the header is line 1); for JSON the 1-based
//! position in the array.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::ChannelType;
use crate::domain::api::{ContactDetails, ContactIdentity, ContactInput, normalize_phone};
use crate::domain::attributes::{self, MAX_ATTRIBUTES};

/// Errors that refuse a whole file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    /// The CSV header is missing or names an unknown column.
    #[error("invalid CSV header: {0}")]
    Header(String),
    /// The CSV could not be read (e.g. not UTF-8, unbalanced quotes).
    #[error("invalid CSV at line {line}: {message}")]
    Csv {
        /// Line in the file.
        line: u64,
        /// What the reader said.
        message: String,
    },
    /// The JSON is not an array of objects.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The file has no rows.
    #[error("the file holds no contacts")]
    Empty,
}

/// Why one row was not imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct RowError {
    /// Row number (CSV: line in the file; JSON: position in the array, from 1).
    pub row: u64,
    /// The field at fault (`row` for the row as a whole).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// A contact's attributes (`key -> value`).
pub(crate) type Attributes = BTreeMap<String, String>;

/// The outcome of parsing: valid rows and row errors.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Parsed {
    /// Valid rows with their row numbers and attributes.
    pub valid: Vec<(u64, ContactInput, Attributes)>,
    /// Invalid rows.
    pub errors: Vec<RowError>,
}

/// Import or export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// A JSON array.
    Json,
}

const COLUMNS: [&str; 4] = ["display_name", "email", "phone", "identities"];

/// Prefix of an attribute column: `attr:tier`.
pub(crate) const ATTRIBUTE_PREFIX: &str = "attr:";

/// Parses and validates a CSV file.
pub(crate) fn parse_csv(bytes: &[u8]) -> Result<Parsed, Error> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        // Only the header: the contact fields are trimmed by `validate`, attribute values are
        // kept as written.
        .trim(csv::Trim::Headers)
        .from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| Error::Header(e.to_string()))?
        .clone();
    if headers.is_empty() || headers.iter().all(str::is_empty) {
        return Err(Error::Header("the header row is missing".to_owned()));
    }
    let mut index = [None; 4];
    let mut attribute_columns: Vec<(usize, String)> = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        if let Some(key) = h
            .get(..ATTRIBUTE_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(ATTRIBUTE_PREFIX))
            .map(|_| &h[ATTRIBUTE_PREFIX.len()..])
        {
            attributes::check_key(key).map_err(|e| Error::Header(format!("column `{h}`: {e}")))?;
            if attribute_columns.iter().any(|(_, k)| k == key) {
                return Err(Error::Header(format!("column `{h}` appears twice")));
            }
            attribute_columns.push((i, key.to_owned()));
            continue;
        }
        let Some(col) = COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(h)) else {
            return Err(Error::Header(format!(
                "unknown column `{h}` (expected some of {}, or {ATTRIBUTE_PREFIX}<key>)",
                COLUMNS.join(", ")
            )));
        };
        if index[col].replace(i).is_some() {
            return Err(Error::Header(format!("column `{h}` appears twice")));
        }
    }
    let mut parsed = Parsed::default();
    let mut seen = HashSet::new();
    let mut rows = 0;
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                if let csv::ErrorKind::UnequalLengths { .. } = e.kind() {
                    rows += 1;
                    parsed.errors.push(RowError {
                        row: line,
                        field: "row".to_owned(),
                        message: format!("expected {} fields like the header", headers.len()),
                    });
                    continue;
                }
                return Err(Error::Csv {
                    line,
                    message: e.to_string(),
                });
            }
        };
        rows += 1;
        let line = record.position().map_or(0, csv::Position::line);
        let get = |col: usize| index[col].and_then(|i| record.get(i)).unwrap_or("");
        let mut errors = Vec::new();
        let identities = parse_identities(get(3), line, &mut errors);
        let raw = ContactInput {
            display_name: Some(get(0).to_owned()),
            email: Some(get(1).to_owned()),
            phone: Some(get(2).to_owned()),
            identities,
        };
        // An empty cell is no attribute (the API refuses empty values anyway).
        let pairs = attribute_columns.iter().filter_map(|(i, key)| {
            let value = record.get(*i).unwrap_or("");
            (!value.is_empty()).then(|| (key.clone(), value.to_owned()))
        });
        let attributes = validate_attributes(line, ATTRIBUTE_PREFIX, pairs, &mut errors);
        push_row(&mut parsed, &mut seen, line, raw, attributes, errors);
    }
    if rows == 0 {
        return Err(Error::Empty);
    }
    Ok(parsed)
}

/// Parses and validates a JSON array.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Parsed, Error> {
    let items: Vec<serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| Error::Json(e.to_string()))?;
    if items.is_empty() {
        return Err(Error::Empty);
    }
    let mut parsed = Parsed::default();
    let mut seen = HashSet::new();
    for (i, mut item) in items.into_iter().enumerate() {
        let row = i as u64 + 1;
        let mut errors = Vec::new();
        let attributes = match item.as_object_mut().and_then(|o| o.remove("attributes")) {
            None | Some(serde_json::Value::Null) => Attributes::new(),
            Some(value) => match serde_json::from_value::<Attributes>(value) {
                Ok(pairs) => validate_attributes(row, "attributes.", pairs, &mut errors),
                Err(e) => {
                    errors.push(RowError {
                        row,
                        field: "attributes".to_owned(),
                        message: format!("expected an object of text values: {e}"),
                    });
                    Attributes::new()
                }
            },
        };
        match serde_json::from_value::<ContactInput>(item) {
            Ok(raw) => push_row(&mut parsed, &mut seen, row, raw, attributes, errors),
            Err(e) => parsed.errors.push(RowError {
                row,
                field: "row".to_owned(),
                message: e.to_string(),
            }),
        }
    }
    Ok(parsed)
}

fn parse_identities(text: &str, row: u64, errors: &mut Vec<RowError>) -> Vec<ContactIdentity> {
    let mut out = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((channel, identity)) = part.split_once(':') else {
            errors.push(RowError {
                row,
                field: "identities".to_owned(),
                message: format!("`{part}` is not CHANNEL:identity"),
            });
            continue;
        };
        match channel.trim().to_ascii_uppercase().parse::<ChannelType>() {
            Ok(channel) => out.push(ContactIdentity {
                channel,
                identity: identity.trim().to_owned(),
            }),
            Err(e) => errors.push(RowError {
                row,
                field: "identities".to_owned(),
                message: e.to_string(),
            }),
        }
    }
    out
}

/// Checks each attribute on its own with the API's rules, so that every bad key of a row is
/// named (`field` = `prefix` + key), and the count.
fn validate_attributes(
    row: u64,
    prefix: &str,
    pairs: impl IntoIterator<Item = (String, String)>,
    errors: &mut Vec<RowError>,
) -> Attributes {
    let mut out = Attributes::new();
    for (key, value) in pairs {
        let one = Attributes::from([(key.clone(), value)]);
        match attributes::check(&one) {
            Ok(()) => out.extend(one),
            Err(e) => errors.push(RowError {
                row,
                field: format!("{prefix}{key}"),
                message: e.to_string(),
            }),
        }
    }
    if out.len() > MAX_ATTRIBUTES {
        errors.push(RowError {
            row,
            field: "attributes".to_owned(),
            message: attributes::AttributeError::TooMany(out.len()).to_string(),
        });
    }
    out
}

fn push_row(
    parsed: &mut Parsed,
    seen: &mut HashSet<(ChannelType, String)>,
    row: u64,
    raw: ContactInput,
    attributes: Attributes,
    mut errors: Vec<RowError>,
) {
    let input = validate(row, raw, &mut errors);
    for ident in &input.identities {
        if !seen.insert((ident.channel, ident.identity.clone())) {
            errors.push(RowError {
                row,
                field: "identities".to_owned(),
                message: format!(
                    "{}:{} appears in an earlier row",
                    ident.channel, ident.identity
                ),
            });
        }
    }
    if errors.is_empty() {
        parsed.valid.push((row, input, attributes));
    } else {
        parsed.errors.extend(errors);
    }
}

/// Validates and normalizes one contact: trims, drops empty fields, checks the e-mail address,
/// reduces the phone number to digits, checks identities.
pub(crate) fn validate(row: u64, raw: ContactInput, errors: &mut Vec<RowError>) -> ContactInput {
    let mut err = |field: &str, message: String| {
        errors.push(RowError {
            row,
            field: field.to_owned(),
            message,
        });
    };
    let clean = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let display_name = clean(raw.display_name);
    if display_name
        .as_ref()
        .is_some_and(|n| n.chars().count() > 200)
    {
        err("display_name", "longer than 200 characters".to_owned());
    }
    let email = clean(raw.email);
    if let Some(e) = &email
        && !valid_email(e)
    {
        err("email", format!("`{e}` is not an e-mail address"));
    }
    let phone = match clean(raw.phone) {
        None => None,
        Some(p) => match normalize_phone(&p) {
            Some(d) if (6..=15).contains(&d.len()) => Some(d),
            _ => {
                err(
                    "phone",
                    format!("`{p}` is not a phone number (6 to 15 digits, E.164)"),
                );
                None
            }
        },
    };
    let mut identities = Vec::new();
    for ident in raw.identities {
        let identity = ident.identity.trim().to_owned();
        if identity.is_empty() || identity.len() > 256 {
            err(
                "identities",
                format!("{} identity must be 1 to 256 characters", ident.channel),
            );
        } else if identity.starts_with("anonymized:") {
            err(
                "identities",
                "`anonymized:` identities are reserved".to_owned(),
            );
        } else {
            identities.push(ContactIdentity {
                channel: ident.channel,
                identity,
            });
        }
    }
    if display_name.is_none() && email.is_none() && phone.is_none() && identities.is_empty() {
        err(
            "row",
            "no display_name, email, phone or identities".to_owned(),
        );
    }
    ContactInput {
        display_name,
        email,
        phone,
        identities,
    }
}

fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    e.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !e.chars().any(char::is_whitespace)
}

/// Contacts as CSV (`id`, `display_name`, `email`, `phone`, `identities`, `created_at`,
/// `anonymized_at`, then one `attr:<key>` column per attribute key any contact has, in key
/// order, empty where a contact lacks it); the import reads the same columns back (it ignores
/// none: strip `id` and the timestamps first).
pub(crate) fn to_csv(contacts: &[ContactDetails]) -> String {
    let keys: BTreeSet<&str> = contacts
        .iter()
        .flat_map(|c| c.attributes.keys().map(String::as_str))
        .collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = [
        "id",
        "display_name",
        "email",
        "phone",
        "identities",
        "created_at",
        "anonymized_at",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(keys.iter().map(|k| format!("{ATTRIBUTE_PREFIX}{k}")));
    let _ = w.write_record(header);
    for c in contacts {
        let identities = c
            .identities
            .iter()
            .map(|i| format!("{}:{}", i.channel, i.identity))
            .collect::<Vec<_>>()
            .join(";");
        let created_at = c.created_at.to_rfc3339();
        let anonymized_at = c.anonymized_at.map(|t| t.to_rfc3339()).unwrap_or_default();
        let fields = [
            c.id.as_str(),
            c.display_name.as_deref().unwrap_or(""),
            c.email.as_deref().unwrap_or(""),
            c.phone.as_deref().unwrap_or(""),
            &identities,
            &created_at,
            &anonymized_at,
        ]
        .into_iter()
        .chain(
            keys.iter()
                .map(|k| c.attributes.get(*k).map_or("", String::as_str)),
        );
        let _ = w.write_record(fields);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_are_validated_one_by_one() {
        let csv = "display_name,email,phone,identities\n\
                   Alice,alice@example.com,+46 70 000 0001,WHATSAPP:46700000001\n\
                   Bob,not-an-email,,\n\
                   ,,12,\n\
                   ,,,\n\
                   Carol,,,FAX:1\n\
                   Dave,,,WHATSAPP:46700000001\n";
        let p = parse_csv(csv.as_bytes()).unwrap();
        assert_eq!(p.valid.len(), 1);
        assert_eq!(p.valid[0].0, 2);
        assert_eq!(p.valid[0].1.phone.as_deref(), Some("46700000001"));
        let errs: Vec<(u64, &str)> = p.errors.iter().map(|e| (e.row, e.field.as_str())).collect();
        assert_eq!(
            errs,
            vec![
                (3, "email"),
                (4, "phone"),
                (4, "row"),
                (5, "row"),
                (6, "identities"),
                (7, "identities")
            ]
        );
    }

    #[test]
    fn a_bad_header_refuses_the_file() {
        assert!(matches!(
            parse_csv(b"name,mail\nA,b\n"),
            Err(Error::Header(m)) if m.contains("`name`")
        ));
        assert_eq!(parse_csv(b"display_name\n"), Err(Error::Empty));
    }

    #[test]
    fn short_csv_rows_are_row_errors() {
        let p = parse_csv(b"display_name,email\nA,a@b.c\nB\n").unwrap();
        assert_eq!(p.valid.len(), 1);
        assert_eq!(p.errors[0].row, 3);
    }

    #[test]
    fn json_rows_are_validated_one_by_one() {
        let json = r#"[{"display_name":"A","identities":[{"channel":"SMS","identity":"467"}]},
                       {"display_name":"B","nickname":"b"},
                       {"email":"x"}]"#;
        let p = parse_json(json.as_bytes()).unwrap();
        assert_eq!(p.valid.len(), 1);
        assert_eq!(p.errors.len(), 2);
        assert_eq!((p.errors[0].row, p.errors[0].field.as_str()), (2, "row"));
        assert!(p.errors[0].message.contains("nickname"));
        assert_eq!((p.errors[1].row, p.errors[1].field.as_str()), (3, "email"));
        assert!(matches!(parse_json(b"{}"), Err(Error::Json(_))));
    }

    #[test]
    fn attribute_columns_are_validated_per_key_and_line() {
        let long = "v".repeat(201);
        let csv = format!(
            "display_name,attr:tier,attr:crm.id\n\
             Ann,gold,\n\
             Bob,{long},\"a\nb\"\n\
             Cid,, x \n"
        );
        let p = parse_csv(csv.as_bytes()).unwrap();
        /// `(line, name, attributes)`
        type Row<'a> = (u64, &'a str, Vec<(&'a str, &'a str)>);
        let valid: Vec<Row> = p
            .valid
            .iter()
            .map(|(row, input, attrs)| {
                (
                    *row,
                    input.display_name.as_deref().unwrap(),
                    attrs
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            valid,
            vec![
                (2, "Ann", vec![("tier", "gold")]),
                // The quoted newline makes Bob's record two lines long: Cid is on line 5.
                (5, "Cid", vec![("crm.id", " x ")]),
            ]
        );
        let errs: Vec<(u64, &str)> = p.errors.iter().map(|e| (e.row, e.field.as_str())).collect();
        assert_eq!(errs, vec![(3, "attr:tier"), (3, "attr:crm.id")]);
        assert!(p.errors[0].message.contains("`tier`"));
    }

    #[test]
    fn a_bad_attribute_column_refuses_the_file() {
        for (header, needle) in [
            ("display_name,attr:Tier", "attribute key `Tier`"),
            ("display_name,attr:", "attribute key ``"),
            ("display_name,attr:tier,ATTR:tier", "appears twice"),
        ] {
            let csv = format!("{header}\nA,b,c\n");
            match parse_csv(csv.as_bytes()) {
                Err(Error::Header(m)) => assert!(m.contains(needle), "{m}"),
                other => panic!("{header}: {other:?}"),
            }
        }
    }

    #[test]
    fn too_many_attributes_are_a_row_error() {
        let keys: Vec<String> = (0..=MAX_ATTRIBUTES).map(|i| format!("attr:k{i}")).collect();
        let values = vec!["v"; keys.len()];
        let csv = format!(
            "display_name,{}\nAnn,{}\n",
            keys.join(","),
            values.join(",")
        );
        let p = parse_csv(csv.as_bytes()).unwrap();
        assert!(p.valid.is_empty());
        assert_eq!(
            (p.errors[0].row, p.errors[0].field.as_str()),
            (2, "attributes")
        );
    }

    #[test]
    fn json_rows_carry_attributes() {
        let json = r#"[{"display_name":"A","attributes":{"tier":"gold"}},
                       {"display_name":"B","attributes":{"Tier":"x","ok":""}},
                       {"display_name":"C","attributes":["tier"]}]"#;
        let p = parse_json(json.as_bytes()).unwrap();
        assert_eq!(p.valid.len(), 1);
        assert_eq!(p.valid[0].2.get("tier").map(String::as_str), Some("gold"));
        let errs: Vec<(u64, &str)> = p.errors.iter().map(|e| (e.row, e.field.as_str())).collect();
        assert_eq!(
            errs,
            vec![
                (2, "attributes.Tier"),
                (2, "attributes.ok"),
                (3, "attributes")
            ]
        );
    }

    #[test]
    fn export_reads_back_through_import() {
        let c = ContactDetails {
            id: "c1".into(),
            display_name: Some("Ann, \"Jr\"".into()),
            email: Some("ann@example.com".into()),
            phone: Some("46700000009".into()),
            identities: vec![ContactIdentity {
                channel: ChannelType::Sms,
                identity: "46700000009".into(),
            }],
            attributes: [
                ("tier".to_owned(), " gold, \"plus\"; x=y ".to_owned()),
                ("crm.id".to_owned(), "42".to_owned()),
            ]
            .into(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            anonymized_at: None,
        };
        // A second contact without attributes: empty cells, which import as none.
        let plain = ContactDetails {
            id: "c2".into(),
            display_name: Some("Plain".into()),
            identities: Vec::new(),
            attributes: Default::default(),
            ..c.clone()
        };
        let csv = to_csv(&[c.clone(), plain]);
        assert!(csv.starts_with(
            "id,display_name,email,phone,identities,created_at,anonymized_at,attr:crm.id,attr:tier\n"
        ));
        // Keep only the importable columns.
        let mut r = csv::Reader::from_reader(csv.as_bytes());
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record([
            "display_name",
            "email",
            "phone",
            "identities",
            "attr:crm.id",
            "attr:tier",
        ])
        .unwrap();
        for rec in r.records() {
            let rec = rec.unwrap();
            w.write_record([&rec[1], &rec[2], &rec[3], &rec[4], &rec[7], &rec[8]])
                .unwrap();
        }
        let p = parse_csv(&w.into_inner().unwrap()).unwrap();
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.valid[0].1.display_name.as_deref(), Some("Ann, \"Jr\""));
        assert_eq!(p.valid[0].2, c.attributes);
        assert!(p.valid[1].2.is_empty());
    }
}
