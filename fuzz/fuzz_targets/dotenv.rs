//! The env-file parser: any text, no panic; an error is a usage error (exit 2).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(e) = flightplan::preflight::dotenv::parse(text, ".env")
    {
        assert_eq!(e.exit_code(), 2);
    }
});
