//! The SQL statement splitter: any text, no panic; statements are in order, inside the
//! text and on char boundaries.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sql) = std::str::from_utf8(data)
        && let Ok(statements) = flightplan::migrate::split::split(sql)
    {
        let mut end = 0;
        for s in &statements {
            assert!(s.span.start >= end && s.span.end <= sql.len());
            assert!(sql.is_char_boundary(s.span.start) && sql.is_char_boundary(s.span.end));
            end = s.span.end;
        }
    }
});
