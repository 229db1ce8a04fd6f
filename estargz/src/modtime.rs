//! RFC 3339 timestamps for the TOC `modtime` field, to and from Unix seconds (no date crate).

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (what Go's `time.RFC3339` gives in UTC).
pub fn format_rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let second_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Parses an RFC 3339 timestamp (fractional seconds dropped, offsets applied) to Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let frac_len = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if frac_len == 0 {
            return None;
        }
        rest = &rest[1 + frac_len..];
    }
    let offset = parse_offset(rest)?;
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

fn parse_offset(rest: &[u8]) -> Option<i64> {
    match rest {
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let minutes = digits(&[*h1, *h2])? * 60 + digits(&[*m1, *m2])?;
            let secs = minutes * 60;
            Some(if *sign == b'-' { -secs } else { secs })
        }
        _ => None,
    }
}

fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

// Howard Hinnant's days-from-civil algorithms (proleptic Gregorian calendar).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_times() {
        let cases = [
            ("epoch", 0, "1970-01-01T00:00:00Z"),
            ("leap day", 951_782_400, "2000-02-29T00:00:00Z"),
            ("recent", 1_700_000_000, "2023-11-14T22:13:20Z"),
            ("before epoch", -1, "1969-12-31T23:59:59Z"),
        ];
        for (name, secs, text) in cases {
            assert_eq!(format_rfc3339(secs), text, "{name}");
            assert_eq!(parse_rfc3339(text), Some(secs), "{name}");
        }
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let cases = [
            ("fraction", "2023-11-14T22:13:20.999Z", Some(1_700_000_000)),
            (
                "plus offset",
                "2023-11-14T23:13:20+01:00",
                Some(1_700_000_000),
            ),
            (
                "minus offset",
                "2023-11-14T21:13:20-01:00",
                Some(1_700_000_000),
            ),
            ("garbage", "yesterday", None),
            ("no zone", "2023-11-14T22:13:20", None),
            ("bad month", "2023-13-14T22:13:20Z", None),
        ];
        for (name, text, want) in cases {
            assert_eq!(parse_rfc3339(text), want, "{name}");
        }
    }

    proptest::proptest! {
        #[test]
        fn round_trips(secs in -62_135_596_800i64..253_402_300_799i64) {
            proptest::prop_assert_eq!(parse_rfc3339(&format_rfc3339(secs)), Some(secs));
        }
    }
}
