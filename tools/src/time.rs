//! RFC 3339 timestamps (`2026-11-26T12:00:00Z`, `…T12:00:00.250+02:00`) to ms since the
//! epoch, without a date-time dependency.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn num(s: &str, what: &str, range: std::ops::RangeInclusive<i64>) -> Result<i64, String> {
    let v: i64 = s
        .parse()
        .map_err(|_| format!("{what} {s:?} is not a number"))?;
    if !range.contains(&v) {
        return Err(format!("{what} {v} is out of range"));
    }
    Ok(v)
}

/// Parses an RFC 3339 date-time into milliseconds since the Unix epoch.
pub fn parse_rfc3339_ms(input: &str) -> Result<i64, String> {
    let bad =
        |why: String| format!("{input:?} is not an RFC 3339 time like 2026-11-26T12:00:00Z: {why}");
    let (date, rest) = input
        .split_once(['T', 't', ' '])
        .ok_or_else(|| bad("no 'T' between date and time".into()))?;
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, day] = d[..] else {
        return Err(bad("date must be YYYY-MM-DD".into()));
    };
    let (y, mo, day) = (
        num(y, "year", 0..=9999).map_err(bad)?,
        num(mo, "month", 1..=12).map_err(bad)?,
        num(day, "day", 1..=31).map_err(bad)?,
    );
    let (clock, offset_min) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = rest
            .rfind(['+', '-'])
            .ok_or_else(|| bad("missing Z or ±HH:MM offset".into()))?;
        let (c, off) = rest.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..]
            .split_once(':')
            .ok_or_else(|| bad("offset must be ±HH:MM".into()))?;
        (
            c,
            sign * (num(oh, "offset hours", 0..=23).map_err(bad)? * 60
                + num(om, "offset minutes", 0..=59).map_err(bad)?),
        )
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let t: Vec<&str> = hms.split(':').collect();
    let [h, mi, s] = t[..] else {
        return Err(bad("time must be HH:MM:SS".into()));
    };
    let (h, mi, s) = (
        num(h, "hour", 0..=23).map_err(bad)?,
        num(mi, "minute", 0..=59).map_err(bad)?,
        num(s, "second", 0..=60).map_err(bad)?,
    );
    let ms = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(3).collect();
        let scale = 10i64.pow(3 - digits.len() as u32);
        num(&digits, "fraction", 0..=999).map_err(bad)? * scale
    };
    let days = days_from_civil(y, mo, day);
    Ok((((days * 24 + h) * 60 + mi) * 60 + s) * 1000 + ms - offset_min * 60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_and_refuses_the_rest() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339_ms("2023-11-14T22:13:20Z"),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2023-11-14T23:13:20.5+01:00"),
            Ok(1_700_000_000_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2023-11-14T21:13:20.123-01:00"),
            Ok(1_700_000_000_123)
        );
        for bad in [
            "yesterday",
            "2023-11-14",
            "2023-13-01T00:00:00Z",
            "2023-11-14T25:00:00Z",
            "2023-11-14T10:00:00",
        ] {
            assert!(parse_rfc3339_ms(bad).is_err(), "{bad}");
        }
    }
}
