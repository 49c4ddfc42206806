//! AD's wire formats: binary SIDs and GUIDs, generalized time, and RFC 4515 filter escaping.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use uuid::Uuid;

/// Escapes a string assertion value for an LDAP filter (RFC 4515 section 3): `*`, `(`, `)`, `\`
/// and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`. Everything else, UTF-8 included, is sent as is.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a binary assertion value: every byte as `\hh`.
pub fn escape_filter_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for byte in bytes {
        out.push_str(&format!("\\{byte:02x}"));
    }
    out
}

/// objectGUID as stored: the first three fields little-endian (Microsoft's GUID layout).
pub fn guid_to_bytes(guid: &Uuid) -> [u8; 16] {
    guid.to_bytes_le()
}

pub fn guid_from_bytes(bytes: &[u8]) -> Option<Uuid> {
    let bytes: [u8; 16] = bytes.try_into().ok()?;
    Some(Uuid::from_bytes_le(bytes))
}

/// Binary SID (MS-DTYP 2.4.2.2): revision, sub-authority count, 48-bit big-endian identifier
/// authority, then each sub-authority as a little-endian u32.
pub fn sid_to_bytes(sid: &str) -> Option<Vec<u8>> {
    let (authority, subs) = remedy_policies::identity::sid_parts(sid)?;
    let mut out = Vec::with_capacity(8 + 4 * subs.len());
    out.push(1);
    out.push(subs.len() as u8);
    out.extend_from_slice(&authority.to_be_bytes()[2..]);
    for sub in subs {
        out.extend_from_slice(&sub.to_le_bytes());
    }
    Some(out)
}

pub fn sid_from_bytes(bytes: &[u8]) -> Option<String> {
    let (&revision, rest) = bytes.split_first()?;
    let (&count, rest) = rest.split_first()?;
    if revision != 1 || count == 0 || count > 15 || rest.len() != 6 + 4 * usize::from(count) {
        return None;
    }
    let mut authority = [0u8; 8];
    authority[2..].copy_from_slice(&rest[..6]);
    let mut sid = format!("S-1-{}", u64::from_be_bytes(authority));
    for chunk in rest[6..].chunks_exact(4) {
        let sub = u32::from_le_bytes(chunk.try_into().ok()?);
        sid.push('-');
        sid.push_str(&sub.to_string());
    }
    Some(sid)
}

/// Generalized time as AD writes it (`20261125024920.0Z`): `YYYYMMDDHHMMSS`, optional fraction,
/// `Z`. Offsets other than Z are not used by AD and are refused.
pub fn parse_generalized_time(text: &str) -> Option<DateTime<Utc>> {
    let body = text.strip_suffix('Z')?;
    let (whole, fraction) = match body.split_once(['.', ',']) {
        Some((whole, fraction)) => (whole, fraction),
        None => (body, ""),
    };
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| whole[range].parse::<u32>().ok();
    let date = NaiveDate::from_ymd_opt(number(0..4)? as i32, number(4..6)?, number(6..8)?)?;
    let nanos = if fraction.is_empty() {
        0
    } else {
        let digits: String = fraction.chars().chain(std::iter::repeat('0')).take(9).collect();
        digits.parse().ok()?
    };
    let time = NaiveTime::from_hms_nano_opt(number(8..10)?, number(10..12)?, number(12..14)?, nanos)?;
    Some(Utc.from_utc_datetime(&NaiveDateTime::new(date, time)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_escaped_per_rfc4515() {
        assert_eq!(escape_filter_value("a*b(c)d\\e\0f"), "a\\2ab\\28c\\29d\\5ce\\00f");
        assert_eq!(escape_filter_value("jürgen@example.com"), "jürgen@example.com");
        assert_eq!(escape_filter_bytes(&[0x00, 0x2a, 0xff]), "\\00\\2a\\ff");
    }

    #[test]
    fn guid_uses_the_mixed_endian_layout() {
        let guid = Uuid::parse_str("772c0b59-1d93-4e56-a928-25e5790df1bd").unwrap();
        // Read back from the test DC as base64 WQssd5MdVk6pKCXleQ3xvQ==.
        let stored = [0x59, 0x0b, 0x2c, 0x77, 0x93, 0x1d, 0x56, 0x4e, 0xa9, 0x28, 0x25, 0xe5, 0x79, 0x0d, 0xf1, 0xbd];
        assert_eq!(guid_to_bytes(&guid), stored);
        assert_eq!(guid_from_bytes(&stored), Some(guid));
        assert_eq!(guid_from_bytes(&stored[1..]), None);
    }

    #[test]
    fn sids_round_trip() {
        // AQUAAAAAAAUVAAAAEahNRZgKUvl+iIgkVAQAAA== from the test DC.
        let stored = [
            1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 0x11, 0xa8, 0x4d, 0x45, 0x98, 0x0a, 0x52, 0xf9, 0x7e, 0x88, 0x88,
            0x24, 0x54, 0x04, 0, 0,
        ];
        let sid = sid_from_bytes(&stored).unwrap();
        assert_eq!(sid, "S-1-5-21-1162717201-4182903448-612927614-1108");
        assert_eq!(sid_to_bytes(&sid).unwrap(), stored);
        assert_eq!(sid_to_bytes("S-1-5-32-544").unwrap(), [1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0]);
        assert_eq!(sid_from_bytes(&stored[..10]), None);
        assert_eq!(sid_to_bytes("S-1-5"), None);
    }

    #[test]
    fn generalized_time() {
        let at = parse_generalized_time("20261125024920.0Z").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-25T02:49:20+00:00");
        let fractional = parse_generalized_time("20261125024920.25Z").unwrap();
        assert_eq!(fractional.timestamp_subsec_millis(), 250);
        assert_eq!(parse_generalized_time("20261125024920Z"), Some(at));
        for bad in
            ["20261125024920.0", "2026112502492Z", "20261325024920.0Z", "2026112502492x.0Z", "20261125024920+0100"]
        {
            assert_eq!(parse_generalized_time(bad), None, "{bad}");
        }
    }
}
