//! `Sensitive<T>`: the one type for secret values, key material and credentials.
//! Its `Debug` is redacted, it is zeroized on drop, and it has no `Serialize`;
//! reading it takes an explicit `expose()`.

use std::fmt;
use zeroize::Zeroize;

/// A value that must never be logged, printed or serialized by accident.
pub struct Sensitive<T: Zeroize>(T);

impl<T: Zeroize> Sensitive<T> {
    /// Wraps a sensitive value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// Borrows the value; every call site is a deliberate disclosure.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> Drop for Sensitive<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sensitive([redacted])")
    }
}

impl<T: Zeroize + Clone> Clone for Sensitive<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl From<String> for Sensitive<String> {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<Vec<u8>> for Sensitive<Vec<u8>> {
    fn from(value: Vec<u8>) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_value() {
        let s = Sensitive::new(String::from("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}
