//! The flightplan.toml parser: any text, no panic; an error is a usage error (exit 2).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(e) = flightplan::config::parse(text, std::path::Path::new("flightplan.toml"))
    {
        assert_eq!(e.exit_code(), 2);
    }
});
