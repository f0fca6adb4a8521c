//! Secrets whose `Debug` is masked, so that a derived `Debug` on a config never prints them.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A value that must not appear in logs. There is deliberately no `Display` and no `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The one way to read the value; grep for it to audit every use.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Secret)
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Config {
            secret: Secret<String>,
        }
        let c = Config { secret: Secret::new("whsec_live_abc".into()) };
        let shown = format!("{c:?} {:?}", c.secret);
        assert!(!shown.contains("whsec_live_abc"), "{shown}");
        assert!(shown.contains("***"));
        assert_eq!(c.secret.expose(), "whsec_live_abc");
    }
}
