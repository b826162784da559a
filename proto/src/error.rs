//! The one error type of every validation (node config, fault sets, the `SyncNetwork` spec): the
//! dotted path of the rejected field and why. Validators name fields relative to themselves and
//! callers add their own prefix with [`FieldError::within`], so a path is written once, where the
//! field is.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path from the document root: `p2p.streams.high`, `partition.regions[1]`,
    /// `spec.faults[0].targets`. `body` is the whole document (it did not parse as an object).
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error seen from `parent`: `high` within `p2p.streams` is `p2p.streams.high`.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = join(parent, &self.field);
        self
    }
}

/// `a` + `b` as one path: `a.b`, or `a[0]` when `b` is an index.
pub fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ if b.starts_with('[') => format!("{a}{b}"),
        _ => format!("{a}.{b}"),
    }
}

/// `Err(FieldError)` when `bad`: the shape most checks take.
pub fn check(bad: bool, field: &str, message: impl Into<String>) -> Result<(), FieldError> {
    if bad {
        Err(FieldError::new(field, message))
    } else {
        Ok(())
    }
}

/// Names as Kubernetes accepts them in a label value, minus upper case: 1-63 of `a-z`, `0-9` and
/// `-`, not starting or ending in `-`. Regions (node config, fault sets, the spec) and spec names
/// take this shape.
pub fn validate_name(r: &str) -> Result<(), String> {
    let ok = !r.is_empty()
        && r.len() <= 63
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !r.starts_with('-')
        && !r.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{r:?} is not a valid name (1-63 of a-z, 0-9, '-', not starting or ending in '-')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_fields_and_indices() {
        let e = FieldError::new("high", "too low")
            .within("streams")
            .within("p2p");
        assert_eq!(e.field, "p2p.streams.high");
        assert_eq!(e.to_string(), "p2p.streams.high: too low");
        assert_eq!(
            FieldError::new("[1]", "x").within("peers").field,
            "peers[1]"
        );
        assert_eq!(FieldError::new("", "x").within("p2p").field, "p2p");
        assert!(check(false, "a", "b").is_ok());
        assert_eq!(check(true, "a", "b").unwrap_err().field, "a");
    }

    #[test]
    fn names_are_label_values() {
        assert!(validate_name("us-east-1").is_ok());
        for bad in ["", "-us", "us-", "US", "u s", &"a".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
