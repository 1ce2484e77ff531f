//! The OpenVPN option lexer on arbitrary configuration text and single lines.
#![no_main]
use bulwark_config::lexer::{lex_source, Origin};
use bulwark_config::split_line;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lex_source(data, &Origin::CommandLine, true);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = split_line(s);
    }
});
