//! Any bytes as the start of a journal segment or a snapshot, through the header parser of the
//! data directory's formats (`queue-server/src/store/journal/format.rs`). Half the inputs get
//! the segment magic in front, so that the fuzzer reaches the version, the options and the
//! checksum rather than stopping at the magic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_server::store::journal::format;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        format::check_invariants(rest);
        return;
    }
    let mut file = format::SEGMENT_MAGIC.to_vec();
    file.extend_from_slice(rest);
    format::check_invariants(&file);
});
