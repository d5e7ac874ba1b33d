//! A producer argument of any text through the brace-range expander.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|arg: &str| {
    producer::expand::check_invariants(arg);
});
