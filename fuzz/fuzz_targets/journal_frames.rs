//! A journal segment of any bytes through the record decoder. Half the inputs are taken as
//! record payloads, cut at each `|FRAME|`, and framed with a true length and checksum first,
//! so that the fuzzer reaches the record decoder itself and not only the checksum check.
#![no_main]

use libfuzzer_sys::fuzz_target;

const CUT: &[u8] = b"|FRAME|";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        queue_server::store::journal::check_invariants(rest);
        return;
    }
    let mut segment = Vec::new();
    let mut payload = rest;
    loop {
        let (this, next) = match payload.windows(CUT.len()).position(|w| w == CUT) {
            Some(at) => (&payload[..at], Some(&payload[at + CUT.len()..])),
            None => (payload, None),
        };
        segment.extend_from_slice(&(this.len() as u32).to_le_bytes());
        segment.extend_from_slice(&crc32fast::hash(this).to_le_bytes());
        segment.extend_from_slice(this);
        match next {
            Some(next) => payload = next,
            None => break,
        }
    }
    queue_server::store::journal::check_invariants(&segment);
});
