//! An enqueue body of any bytes, as `batch=lines` (with and without keepEmpty) and `batch=json`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_server::http::batch::{BatchKind, check_invariants};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the item size limit; the rest is the body (the server refuses
    // non-UTF-8 bodies before parsing).
    let Some((&limit, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let max = [0, 1, 3, 16, 1 << 20][usize::from(limit) % 5];
    for kind in [
        BatchKind::Lines { keep_empty: false },
        BatchKind::Lines { keep_empty: true },
        BatchKind::Json,
    ] {
        check_invariants(kind, text, max);
    }
});
