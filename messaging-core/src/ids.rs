//! Unique ids and oslo-style timestamps, without extra dependencies.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static STATE: (RandomState, Cell<u64>) = (RandomState::new(), Cell::new(0));
}

/// 128 random-looking bits, unique within the process (SipHash of a per-thread
/// counter under per-thread random keys).
pub(crate) fn random_u128() -> u128 {
    STATE.with(|(keys, counter)| {
        let n = counter.get();
        counter.set(n.wrapping_add(1));
        let mut a = keys.build_hasher();
        a.write_u64(n);
        a.write_u8(1);
        let mut b = keys.build_hasher();
        b.write_u64(n);
        b.write_u8(2);
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    })
}

/// A uuid4-shaped hex id without dashes, like oslo's `_msg_id` and `_unique_id`.
pub fn hex_id() -> String {
    format!("{:032x}", uuid4_bits())
}

/// A uuid4 with dashes, like oslo's notification `message_id`.
pub fn uuid4() -> String {
    let hex = hex_id();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn uuid4_bits() -> u128 {
    let bits = random_u128();
    // version 4, variant 10
    (bits & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62)
}

/// The current UTC time as oslo writes notification timestamps:
/// `2026-11-25 16:29:49.450261` (space separator, microseconds, no zone).
pub fn utc_timestamp() -> String {
    format_timestamp(SystemTime::now())
}

pub(crate) fn format_timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_match_oslo_format() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_624_189_450_261);
        assert_eq!(format_timestamp(t), "2026-11-25 16:29:49.450261");
        assert_eq!(format_timestamp(UNIX_EPOCH), "1970-01-01 00:00:00.000000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&format_timestamp(leap)[..10], "2000-02-29");
    }

    #[test]
    fn ids_are_unique_and_uuid4_shaped() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| hex_id()).collect();
        assert_eq!(ids.len(), 10_000);
        let u = uuid4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }
}
