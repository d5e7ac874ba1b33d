//! Item and lease ids: ULIDs (48-bit millisecond time + 80 bits), time-ordered and unique across
//! restarts and replicas without coordination.

use std::fmt;

/// A ULID kept as two words (8-byte aligned, so an item stays small).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Id([u64; 2]);

impl Id {
    /// The millisecond timestamp the id was made at.
    pub fn timestamp_ms(self) -> u64 {
        self.0[0] >> 16
    }

    fn to_u128(self) -> u128 {
        (u128::from(self.0[0]) << 64) | u128::from(self.0[1])
    }

    fn from_u128(v: u128) -> Self {
        Id([(v >> 64) as u64, v as u64])
    }

    /// Parses the 26-character Crockford base32 form; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != ulid::ULID_LEN {
            return None;
        }
        ulid::Ulid::from_string(text)
            .ok()
            .map(|u| Self::from_u128(u.0))
    }
}

impl Id {
    /// The 26-character text form, written into `buf` (no formatter machinery: answers write
    /// one or two ids per request, and a batch answer thousands).
    pub fn encode(self, buf: &mut [u8; ulid::ULID_LEN]) -> &str {
        ulid::Ulid(self.to_u128()).array_to_str(buf)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ulid::ULID_LEN];
        f.write_str(self.encode(&mut buf))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

const RANDOM_BITS: u32 = 80;
const RANDOM_MASK: u128 = (1u128 << RANDOM_BITS) - 1;

/// Makes monotonic ULIDs: a random 80-bit start, then +1 per id, under a never-decreasing
/// millisecond prefix. One generator per queue, used under the queue's lock.
#[derive(Debug)]
pub struct IdGen {
    last_ms: u64,
    counter: u128,
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGen {
    /// A generator with a fresh random starting point.
    pub fn new() -> Self {
        Self {
            last_ms: 0,
            counter: ulid::Ulid::new().random(),
        }
    }

    /// The generator's position, to restore it with [`IdGen::from_state`].
    pub fn state(&self) -> (u64, u128) {
        (self.last_ms, self.counter)
    }

    /// A generator that continues exactly where [`IdGen::state`] was taken.
    pub fn from_state((last_ms, counter): (u64, u128)) -> Self {
        Self {
            last_ms,
            counter: counter & RANDOM_MASK,
        }
    }

    /// Bits of the counter that an id carries.
    pub const COUNTER_MASK: u128 = RANDOM_MASK;

    /// The id made last (the one [`IdGen::state`] stands at).
    pub fn last(&self) -> Id {
        Id::from_u128((u128::from(self.last_ms) << RANDOM_BITS) | (self.counter & RANDOM_MASK))
    }

    /// The next id at time `now_ms` (a clock that went back is treated as standing still).
    pub fn next(&mut self, now_ms: u64) -> Id {
        self.last_ms = self.last_ms.max(now_ms & ((1 << 48) - 1));
        self.counter = (self.counter + 1) & RANDOM_MASK;
        Id::from_u128((u128::from(self.last_ms) << RANDOM_BITS) | self.counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_keep_their_time() {
        let mut generator = IdGen::new();
        let id = generator.next(1_700_000_000_123);
        let text = id.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(Id::parse(&text), Some(id));
        assert_eq!(id.timestamp_ms(), 1_700_000_000_123);
    }

    #[test]
    fn ids_increase_even_when_the_clock_goes_back() {
        let mut generator = IdGen::new();
        let a = generator.next(2_000);
        let b = generator.next(2_000);
        let c = generator.next(1_000);
        let d = generator.next(3_000);
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
    }

    #[test]
    fn malformed_ids_do_not_parse() {
        for bad in [
            "",
            "x",
            "01ARZ3NDEKTSV4RRFFQ69G5FA",
            "01ARZ3NDEKTSV4RRFFQ69G5FAVV",
            "../etc/passwd",
        ] {
            assert_eq!(Id::parse(bad), None, "{bad}");
        }
    }
}
