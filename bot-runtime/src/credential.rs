//! A secret the operator may rotate: the current value and, for a window
//! after a rotation, the previous one. Compared in constant time; never printed.

use subtle::ConstantTimeEq;

/// Which value a caller presented (its audit actor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Current,
    Previous,
}

#[derive(Clone, Default)]
pub struct Accepted {
    current: String,
    /// The value before the last rotation and when it stops (Unix seconds).
    previous: Option<(String, i64)>,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Accepted(…)")
    }
}

impl Accepted {
    /// `previous` counts only with its end time: a previous value without one
    /// (a half-edited Secret) is not accepted.
    pub fn new(current: String, previous: Option<String>, until: Option<&str>) -> Self {
        let until = until.and_then(|t| t.trim().parse::<i64>().ok());
        Self {
            current,
            previous: previous.zip(until).filter(|(p, _)| !p.is_empty()),
        }
    }

    pub fn current(&self) -> &str {
        &self.current
    }

    /// Which value `presented` is, at `now` (Unix seconds). An empty current
    /// value matches nothing.
    pub fn check(&self, presented: &str, now: i64) -> Option<Which> {
        let same = |v: &str| !v.is_empty() && bool::from(presented.as_bytes().ct_eq(v.as_bytes()));
        if same(&self.current) {
            return Some(Which::Current);
        }
        match &self.previous {
            Some((previous, until)) if now < *until && same(previous) => Some(Which::Previous),
            _ => None,
        }
    }

    pub fn check_now(&self, presented: &str) -> Option<Which> {
        self.check(presented, chrono::Utc::now().timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_value_counts_until_its_window_ends() {
        let a = Accepted::new("new".into(), Some("old".into()), Some("100"));
        assert_eq!(a.check("new", 500), Some(Which::Current));
        assert_eq!(a.check("old", 99), Some(Which::Previous));
        assert_eq!(a.check("old", 100), None);
        assert_eq!(a.check("", 0), None);
        assert_eq!(a.check("ne", 0), None);
    }

    #[test]
    fn a_previous_value_without_an_end_or_an_empty_current_matches_nothing() {
        let a = Accepted::new("".into(), Some("old".into()), None);
        assert_eq!(a.check("", 0), None);
        assert_eq!(a.check("old", 0), None);
        assert_eq!(format!("{a:?}"), "Accepted(…)");
    }
}
