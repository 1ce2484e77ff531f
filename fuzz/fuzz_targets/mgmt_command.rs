//! Management interface input: line framing of raw socket bytes, then command tokenizing.
#![no_main]
use bulwark_mgmt::cmdline::{tokenize, LineFramer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut framer = LineFramer::new();
    let mut lines = Vec::new();
    for chunk in data.chunks(5) {
        framer.feed(chunk, &mut lines);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = tokenize(s);
    }
});
