//! A journal segment of any bytes through the record decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    queue_server::store::journal::check_invariants(data);
});
