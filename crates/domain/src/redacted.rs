//! A wrapper for protected health information and secrets: its `Debug` never shows the value,
//! so a PHI field can't leak through `{:?}` in a log line or an error.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A value that must not appear in logs. Serialises transparently (it is stored and sent on
/// purpose), but `Debug` prints `<redacted>`. It deliberately has no `Display`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    /// Wraps a sensitive value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself, for code that must store or show it to its owner.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value_but_serde_keeps_it() {
        let name = Redacted::new("Ada Lovelace".to_string());
        assert_eq!(format!("{name:?}"), "<redacted>");
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"Ada Lovelace\"");
    }
}
