//! Control-channel text messages (what a client sends after key-method-2).
#![no_main]
use bulwark_worker::proto::push::{extract_messages, parse_client_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for m in extract_messages(data) {
        if let Ok(m) = m {
            let _ = parse_client_message(m);
        }
    }
});
