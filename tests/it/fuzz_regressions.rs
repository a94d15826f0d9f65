//! The fuzz targets of fuzz/ (cargo-fuzz, run by scripts/fuzz), replayed by `cargo test`:
//! every crash input scripts/fuzz ever found (CRASHES), then a bounded random test over
//! mutated seeds with a fixed-seed PRNG, so the properties are checked on every build even
//! where nightly and cargo-fuzz are missing. Deterministic: same inputs every run.

use std::path::Path;

/// Inputs that once crashed a target, as (target, input). Add scripts/fuzz's artifacts here.
const CRASHES: &[(&str, &[u8])] = &[
    // None found yet by the bounded runs; these are the shapes that broke peers' lexers.
    ("split", b"$a$ unterminated $b$ ; $a"),
    ("split", b"/* /* nested */ ; */ SELECT 1;--"),
    ("split", b"E'\\\\';'"),
    ("split", "SELECT '\u{feff}é';\u{0};".as_bytes()),
    ("config", b"[env]\n\"\" = {}\n[[smoke.check]]\n"),
    ("config", b"[migrate]\nlock_wait = 1e400\n"),
    ("config", b"[deploy]\nmax_unavailable = nan\n"),
    ("dotenv", b"A=\"\\"),
    ("dotenv", b"export\nexport =\n'\n"),
];

/// The properties each fuzz target asserts (see fuzz/fuzz_targets/*.rs).
fn check(target: &str, data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match target {
        "split" => {
            if let Ok(statements) = flightplan::migrate::split::split(text) {
                let mut end = 0;
                for s in &statements {
                    assert!(s.span.start >= end && s.span.end <= text.len(), "{text:?}");
                    assert!(
                        text.is_char_boundary(s.span.start) && text.is_char_boundary(s.span.end)
                    );
                    end = s.span.end;
                }
            }
        }
        "config" => {
            if let Err(e) = flightplan::config::parse(text, Path::new("flightplan.toml")) {
                assert_eq!(e.exit_code(), 2, "{text:?}: {}", e.message);
            }
        }
        "dotenv" => {
            if let Err(e) = flightplan::preflight::dotenv::parse(text, ".env") {
                assert_eq!(e.exit_code(), 2, "{text:?}: {}", e.message);
            }
        }
        other => panic!("unknown target {other}"),
    }
}

#[test]
fn crash_inputs_stay_fixed() {
    for (target, input) in CRASHES {
        check(target, input);
    }
}

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens that matter to each grammar, spliced in by the mutator.
const TOKENS: &[&str] = &[
    "'",
    "\"",
    "$$",
    "$a$",
    "$a",
    "--",
    "/*",
    "*/",
    ";",
    "\n",
    "\r\n",
    "\\",
    "E'",
    "U&'",
    "--> statement-breakpoint",
    "BEGIN;",
    "COMMIT;",
    "-- no-transaction\n",
    "=",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "#",
    "export ",
    "${",
    "}",
    "\u{feff}",
    "é",
    "\u{0}",
    "\t",
    " ",
    "[migrate]\n",
    "[env.X]\n",
    "dir = ",
    "lock_wait = \"",
    "true",
    "1e3",
    "\"\"\"",
    "'''",
];

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<Vec<u8>> = Vec::new();
    let (dir, ext) = match target {
        "split" => ("examples/secure2send/migrations", "sql"),
        "config" => ("examples/secure2send", "toml"),
        _ => ("examples/secure2send", "env"),
    };
    if let Ok(rd) = std::fs::read_dir(root.join(dir)) {
        let mut paths: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(ext) || (target == "dotenv" && name.contains(".env")) {
                out.push(std::fs::read(&p).unwrap());
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(root.join("fuzz/seeds").join(target)) {
        let mut paths: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        out.extend(paths.iter().map(|p| std::fs::read(p).unwrap()));
    }
    out.push(Vec::new());
    out
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(v.len() + 1);
        match rng.below(5) {
            0 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                v.splice(at..at, t.iter().copied());
            }
            1 if !v.is_empty() => {
                let end = (at + rng.below(64)).min(v.len());
                v.drain(at.min(end)..end);
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            3 => v.truncate(at),
            _ => {
                // Duplicate a slice: repeated quotes and comment openers.
                let end = (at + rng.below(32)).min(v.len());
                let piece = v[at.min(end)..end].to_vec();
                v.splice(at..at, piece);
            }
        }
    }
    v
}

#[test]
fn random_mutations_of_the_seeds_hold_every_property() {
    let mut total = 0;
    for (i, target) in ["split", "config", "dotenv"].into_iter().enumerate() {
        let seeds = seeds(target);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
        for n in 0..20_000 {
            let seed = &seeds[n % seeds.len()];
            let input = mutate(&mut rng, seed);
            let caught = std::panic::catch_unwind(|| check(target, &input));
            if caught.is_err() {
                panic!(
                    "{target} failed on a mutated input (add it to CRASHES): {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
            total += 1;
        }
    }
    eprintln!("FAULTS: fuzz regression inputs={total}");
}
