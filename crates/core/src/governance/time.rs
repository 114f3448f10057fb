//! Date-times as policy rules see them: ISO 8601 text in UTC.

use crate::clock::{civil_from_days, days_from_civil};

/// `2026-12-05T03:00:00.0000000Z`, the form `utcNow()` gives.
pub fn iso(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.0000000Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Unix seconds of `YYYY-MM-DD[THH:MM[:SS[.f…]]][Z|±HH:MM]`.
pub fn parse(text: &str) -> Option<i64> {
    let t = text.trim();
    let b = t.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let s = t.get(from..from + len)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    if b.len() < 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, mo, d) * 86_400;
    let mut rest = t.get(10..)?;
    if let Some(r) = rest.strip_prefix(['T', 't', ' ']) {
        let h = r.get(0..2)?.parse::<i64>().ok()?;
        let mi = r.get(3..5)?.parse::<i64>().ok()?;
        if r.get(2..3) != Some(":") || h > 23 || mi > 59 {
            return None;
        }
        secs += h * 3600 + mi * 60;
        rest = r.get(5..)?;
        if let Some(r) = rest.strip_prefix(':') {
            let s = r.get(0..2)?.parse::<i64>().ok()?;
            if s > 60 {
                return None;
            }
            secs += s;
            rest = r.get(2..)?;
            if let Some(r) = rest.strip_prefix('.') {
                rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
            }
        }
    }
    match rest {
        "" | "Z" | "z" => Some(secs),
        off => {
            let sign = match off.get(0..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let oh = off.get(1..3)?.parse::<i64>().ok()?;
            let om = off.get(4..6).map_or(Some(0), |m| m.parse().ok())?;
            Some(secs - sign * (oh * 3600 + om * 60))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_offsets() {
        assert_eq!(parse(&iso(1_764_900_000)), Some(1_764_900_000));
        assert_eq!(parse("1970-01-02"), Some(86_400));
        assert_eq!(parse("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse("2026-13-01"), None);
        assert_eq!(parse("not a date"), None);
    }
}
