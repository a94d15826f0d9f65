//! The GitHub Actions file commands: step outputs (GITHUB_OUTPUT) and the job summary
//! (GITHUB_STEP_SUMMARY).

use std::io::Write;
use std::path::Path;

use crate::error::Error;

/// Appends outputs in the runner's multi-line form (`name<<DELIM … DELIM`), with a random
/// delimiter a value cannot contain, as actions/toolkit does.
pub fn write_outputs(path: &Path, outputs: &[(&str, String)]) -> Result<(), Error> {
    let mut text = String::new();
    for (name, value) in outputs {
        let delim = loop {
            let d = format!(
                "ghadelimiter_{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            );
            if !value.contains(&d) {
                break d;
            }
        };
        text.push_str(&format!("{name}<<{delim}\n{value}\n{delim}\n"));
    }
    append(path, &text, "GITHUB_OUTPUT")
}

/// Appends Markdown to the job summary.
pub fn append_summary(path: &Path, markdown: &str) -> Result<(), Error> {
    append(path, markdown, "GITHUB_STEP_SUMMARY")
}

fn append(path: &Path, text: &str, what: &str) -> Result<(), Error> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::failure(format!("cannot open {what} file {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::failure(format!("cannot write {what} file {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_use_a_delimiter_absent_from_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        write_outputs(
            &p,
            &[
                ("status", "SUCCESS".into()),
                ("migrations-applied", "a.sql\nb.sql".into()),
            ],
        )
        .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("status<<ghadelimiter_"));
        let delim = lines[0].split("<<").nth(1).unwrap();
        assert_eq!(lines[1], "SUCCESS");
        assert_eq!(lines[2], delim);
        assert_eq!(&lines[4..6], &["a.sql", "b.sql"]);
    }
}
