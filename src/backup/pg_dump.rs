//! `pg_dump` backups for any PostgreSQL: custom-format archives in a directory, verified
//! by a full read, and a restore that brings the database back to exactly the archive's
//! state in one transaction.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::{Backup, Label, Provider, Restored};
use crate::db::DatabaseUrl;
use crate::error::Error;

/// Archive names: `flightplan-backup-<UTC timestamp>[-<sha>].dump`.
const FILE_PREFIX: &str = "flightplan-backup-";
const FILE_SUFFIX: &str = ".dump";

/// Everything the pg_dump provider needs, resolved from flags, environment and file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: DatabaseUrl,
    libpq: Libpq,
    pub dir: PathBuf,
    /// The whole dump or restore, connection included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

/// How the client programs connect: the URL without its password (it is visible in the
/// process list), and the password through `PGPASSWORD`.
#[derive(Clone)]
struct Libpq {
    url: String,
    password: Option<String>,
}

impl std::fmt::Debug for Libpq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Libpq({})", self.url)
    }
}

impl Settings {
    /// `raw` is the validated `DATABASE_URL`; `url` its parsed form.
    pub fn new(
        raw: &str,
        url: DatabaseUrl,
        dir: PathBuf,
        timeout: Duration,
    ) -> Result<Settings, Error> {
        let mut u = url::Url::parse(raw)
            .map_err(|e| Error::usage(format!("DATABASE_URL is not a valid URL: {e}")))?;
        let password = u.password().map(percent_decode);
        let _ = u.set_password(None);
        // The same rule as every other connection of flightplan (db.rs): no plain text to
        // a remote host, and `prefer` means `require` there.
        let host = u.host_str().unwrap_or("").to_ascii_lowercase();
        let local = host.is_empty()
            || host == "localhost"
            || host.starts_with("127.")
            || host == "[::1]"
            || host.starts_with('/');
        let sslmode = u
            .query_pairs()
            .find(|(k, _)| k == "sslmode")
            .map(|(_, v)| v.to_ascii_lowercase());
        if !local && matches!(sslmode.as_deref(), None | Some("prefer")) {
            let kept: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| k != "sslmode")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            u.query_pairs_mut()
                .clear()
                .extend_pairs(kept)
                .append_pair("sslmode", "require");
        }
        // Absolute, so the path a backup reports is where it is wherever it is read.
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Ok(Settings {
            url,
            libpq: Libpq {
                url: u.to_string(),
                password,
            },
            dir,
            timeout,
            connect_timeout: Duration::from_secs(30),
        })
    }

    /// A client program with the connection's environment.
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        if let Some(p) = &self.libpq.password {
            c.env("PGPASSWORD", p);
        }
        c.env("PGAPPNAME", "flightplan")
            .env(
                "PGCONNECT_TIMEOUT",
                self.connect_timeout.as_secs().max(2).to_string(),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Removes the password from a client program's message.
    fn scrub(&self, text: &str) -> String {
        match &self.libpq.password {
            Some(p) if p.len() >= 4 => text.replace(p.as_str(), "***"),
            _ => text.to_string(),
        }
    }
}

/// The client programs of one PostgreSQL version.
#[derive(Debug, Clone)]
struct Tools {
    pg_dump: PathBuf,
    pg_restore: PathBuf,
    psql: PathBuf,
    major: u32,
}

/// `pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)` → 15.
fn parse_major(version: &str) -> Option<u32> {
    let rest = version.split(')').nth(1).unwrap_or(version);
    let number = rest.split_whitespace().next()?;
    number
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Picks the client programs for a server: the `pg_dump` on PATH when it is new enough,
/// else the newest installed version that is, else an error that says what to install.
/// `candidates` are (bin dir, major version), PATH's first.
fn choose(server_major: u32, candidates: &[(PathBuf, u32)]) -> Result<usize, Error> {
    if let Some((_, m)) = candidates.first()
        && *m >= server_major
    {
        return Ok(0);
    }
    if let Some((i, _)) = candidates
        .iter()
        .enumerate()
        .filter(|(_, (_, m))| *m >= server_major)
        .max_by_key(|(_, (_, m))| *m)
    {
        return Ok(i);
    }
    let found = candidates
        .iter()
        .map(|(d, m)| format!("{m} ({})", d.join("pg_dump").display()))
        .collect::<Vec<_>>()
        .join(", ");
    Err(if candidates.is_empty() {
        Error::failure("pg_dump was not found on PATH")
            .hint(format!(
                "install the PostgreSQL {server_major} client programs (Debian: apt-get install postgresql-client-{server_major})"
            ))
    } else {
        Error::failure(format!(
            "pg_dump {found} is older than the server (PostgreSQL {server_major}); pg_dump cannot dump a newer server"
        ))
        .hint(format!(
            "install the PostgreSQL {server_major} client programs (Debian: postgresql-client-{server_major} from apt.postgresql.org) \
             or put a pg_dump {server_major} or newer first on PATH"
        ))
    })
}

impl Tools {
    /// Finds `pg_dump`, `pg_restore` and `psql` of one version, at least `server_major`.
    async fn find(server_major: u32) -> Result<Tools, Error> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(path) = std::env::var_os("PATH")
            && let Some(d) = std::env::split_paths(&path).find(|d| d.join("pg_dump").is_file())
        {
            dirs.push(d);
        }
        // Debian and Ubuntu install each major version side by side.
        if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
            let mut more: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|d| d.join("pg_dump").is_file())
                .collect();
            more.sort();
            dirs.extend(more);
        }
        let mut candidates = Vec::new();
        for d in dirs {
            let out = Command::new(d.join("pg_dump"))
                .arg("--version")
                .stdin(Stdio::null())
                .output()
                .await;
            if let Ok(o) = out
                && o.status.success()
                && let Some(m) = parse_major(&String::from_utf8_lossy(&o.stdout))
            {
                candidates.push((d, m));
            }
        }
        let i = choose(server_major, &candidates)?;
        let (dir, major) = candidates.swap_remove(i);
        let tools = Tools {
            pg_dump: dir.join("pg_dump"),
            pg_restore: dir.join("pg_restore"),
            psql: dir.join("psql"),
            major,
        };
        for p in [&tools.pg_restore, &tools.psql] {
            if !p.is_file() {
                return Err(Error::failure(format!(
                    "{} is missing next to {}",
                    p.display(),
                    tools.pg_dump.display()
                ))
                .hint("install the whole PostgreSQL client package (pg_dump, pg_restore, psql)"));
            }
        }
        Ok(tools)
    }
}

/// The provider: archives of one database in one directory.
pub struct PgDump {
    s: Settings,
}

impl PgDump {
    pub fn new(s: Settings) -> PgDump {
        PgDump { s }
    }

    /// The server's major version (`server_version_num` 150020 → 15).
    async fn server_major(&self) -> Result<u32, Error> {
        let mut conn = self.s.url.connect(self.s.connect_timeout).await?;
        let num: String = sqlx::query_scalar("SELECT current_setting('server_version_num')")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| crate::migrate::ledger::sql_error("reading the server's version", &e))?;
        let _ = conn.close().await;
        num.trim()
            .parse::<u32>()
            .map(|n| n / 10000)
            .map_err(|_| Error::failure(format!("the server reports version `{num}`")))
    }

    /// Runs a client program to the end within the deadline; its stderr on failure.
    async fn run(&self, mut cmd: Command, what: &str) -> Result<(), Error> {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let out = match tokio::time::timeout(self.s.timeout, cmd.output()).await {
            Err(_) => {
                return Err(Error::failure(format!(
                    "{what} did not finish within {:?}",
                    self.s.timeout
                ))
                .hint("raise [backup] timeout"));
            }
            Ok(Err(e)) => return Err(Error::failure(format!("cannot run {what}: {e}"))),
            Ok(Ok(o)) => o,
        };
        if out.status.success() {
            return Ok(());
        }
        Err(Error::failure(format!(
            "{what} failed ({}): {}",
            out.status,
            self.s.scrub(&last_lines(&out.stderr))
        )))
    }

    /// A non-empty archive that reads to its end: `pg_restore --list` only reads the table
    /// of contents and misses a truncated data section, a full read to /dev/null does not.
    async fn verify(&self, tools: &Tools, path: &Path) -> Result<u64, Error> {
        let size = tokio::fs::metadata(path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if size == 0 {
            return Err(Error::failure(format!(
                "the archive {} is empty",
                path.display()
            )));
        }
        let mut cmd = Command::new(&tools.pg_restore);
        cmd.arg("--file=/dev/null")
            .arg(path)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        self.run(cmd, &format!("reading {} back", path.display()))
            .await
            .map_err(|e| {
                e.hint(
                    "the archive is damaged or incomplete; take a new backup (and check the disk)",
                )
            })?;
        Ok(size)
    }

    fn backup_at(&self, path: &Path, size: Option<u64>) -> Backup {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let created_at = name
            .strip_prefix(FILE_PREFIX)
            .and_then(|rest| super::stamp_to_rfc3339(rest.get(..16)?));
        Backup {
            provider: "pg_dump",
            id: name.clone(),
            name,
            parent: Some(self.s.url.database().to_string()),
            parent_lsn: None,
            created_at,
            size,
            path: Some(path.display().to_string()),
            blocked: None,
        }
    }
}

/// Creates the backup directory 0700 (with its missing parents). An existing directory is
/// left as it is, but one that others may read is named in a warning: it may be shared.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            "backup directory {} is readable by other users (mode {:o}); archives are 0600, \
             but consider `chmod 700 {}`",
            dir.display(),
            mode & 0o777,
            dir.display()
        );
    }
    Ok(())
}

/// An empty file only its owner may read and write (replacing a stale one).
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only when the file is created: tighten a file that already existed.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
}

impl Provider for PgDump {
    async fn create(&self, label: &Label) -> Result<Backup, Error> {
        let server = self.server_major().await?;
        let tools = Tools::find(server).await?;
        let dir = &self.s.dir;
        private_dir(dir).map_err(|e| {
            Error::failure(format!(
                "cannot create the backup directory {}: {e}",
                dir.display()
            ))
            .hint("set [backup] dir (or --dir) to a writable directory")
        })?;
        let name = label.unique(
            |s| format!("{FILE_PREFIX}{s}{FILE_SUFFIX}"),
            |n| dir.join(n).exists() || dir.join(format!("{n}.partial")).exists(),
        );
        let path = dir.join(&name);
        // Written under another name and renamed once verified: a file named like a backup
        // is always a complete one.
        let partial = dir.join(format!("{name}.partial"));
        tracing::info!(
            "dumping {} with pg_dump {} into {}",
            self.s.url,
            tools.major,
            path.display()
        );
        // The archive is a full copy of production: created 0600 before pg_dump opens it
        // (pg_dump truncates and keeps the mode), so it is never readable by others, not
        // even for the moment between its creation and a chmod.
        private_file(&partial).map_err(|e| {
            Error::failure(format!("cannot create {}: {e}", partial.display()))
                .hint("set [backup] dir (or --dir) to a writable directory")
        })?;
        let mut cmd = self.s.command(&tools.pg_dump);
        cmd.arg("--format=custom")
            .arg("--no-password")
            .arg(format!("--file={}", partial.display()))
            .arg(format!("--dbname={}", self.s.libpq.url));
        let done = async {
            self.run(cmd, "pg_dump").await.map_err(|e| {
                if e.message.contains("server version mismatch") {
                    e.hint(format!(
                        "install the PostgreSQL {server} client programs and put them first on PATH"
                    ))
                } else {
                    e.hint("check DATABASE_URL and that its user may read every table")
                }
            })?;
            let size = self.verify(&tools, &partial).await?;
            tokio::fs::rename(&partial, &path).await.map_err(|e| {
                Error::failure(format!(
                    "cannot rename {} to {}: {e}",
                    partial.display(),
                    path.display()
                ))
            })?;
            Ok::<u64, Error>(size)
        }
        .await;
        match done {
            Ok(size) => Ok(self.backup_at(&path, Some(size))),
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                Err(e)
            }
        }
    }

    async fn list(&self) -> Result<Vec<Backup>, Error> {
        let entries = match std::fs::read_dir(&self.s.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::failure(format!(
                    "cannot read the backup directory {}: {e}",
                    self.s.dir.display()
                )));
            }
        };
        let mut out = Vec::new();
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX) {
                let size = e.metadata().ok().map(|m| m.len());
                out.push(self.backup_at(&e.path(), size));
            }
        }
        super::newest_first(&mut out);
        Ok(out)
    }

    async fn find(&self, id: &str) -> Result<Backup, Error> {
        // An archive of the directory by name, or any archive by path.
        let in_dir = self.s.dir.join(id);
        let path = if Path::new(id).file_name().is_some_and(|n| n == id) && in_dir.is_file() {
            in_dir
        } else {
            PathBuf::from(id)
        };
        if !path.is_file() {
            return Err(Error::usage(format!(
                "no backup archive `{id}` (looked in {})",
                self.s.dir.display()
            ))
            .hint("`flightplan backup list` shows the archives; pass a name from it or a path"));
        }
        let size = std::fs::metadata(&path).ok().map(|m| m.len());
        Ok(self.backup_at(&path, size))
    }

    async fn restore(&self, backup: &Backup, _label: &Label) -> Result<Restored, Error> {
        let path = PathBuf::from(backup.path.clone().unwrap_or_else(|| backup.id.clone()));
        let server = self.server_major().await?;
        let tools = Tools::find(server).await?;
        // Read the whole archive before dropping anything.
        self.verify(&tools, &path).await?;
        tracing::info!(
            "restoring {} from {} (everything else in the database is dropped)",
            self.s.url,
            path.display()
        );
        tokio::time::timeout(self.s.timeout, self.replace(&tools, &path))
            .await
            .map_err(|_| {
                Error::failure(format!(
                    "the restore did not finish within {:?}; it was rolled back",
                    self.s.timeout
                ))
                .hint("raise [backup] timeout")
            })??;
        Ok(Restored {
            backup: backup.clone(),
            target: format!("database {}", self.s.url),
            preserved: None,
        })
    }

    async fn delete(&self, backup: &Backup) -> Result<(), Error> {
        let path = PathBuf::from(backup.path.clone().unwrap_or_else(|| backup.id.clone()));
        tokio::fs::remove_file(&path)
            .await
            .map_err(|e| Error::failure(format!("cannot delete {}: {e}", path.display())))
    }
}

/// Runs first inside the restore's transaction: every schema (with everything in it:
/// tables, views, functions, types, extensions) and every large object goes, then an
/// empty `public` comes back with its owner, privileges and comment. `pg_restore --clean`
/// would only drop what the archive has, leaving behind whatever a migration created.
const PRELUDE: &str = r#"SET LOCAL client_min_messages = warning;
SET LOCAL lock_timeout = '60s';
DO $flightplan$
DECLARE
  s record;
  a record;
  pub_owner text;
  pub_acl aclitem[];
  pub_comment text;
BEGIN
  SELECT nspowner::regrole::text, nspacl, obj_description(oid, 'pg_namespace')
    INTO pub_owner, pub_acl, pub_comment
    FROM pg_namespace WHERE nspname = 'public';
  FOR s IN SELECT nspname FROM pg_namespace
           WHERE nspname NOT IN ('pg_catalog', 'information_schema')
             AND nspname NOT LIKE 'pg\_%'
  LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', s.nspname);
  END LOOP;
  PERFORM lo_unlink(oid) FROM pg_largeobject_metadata;
  IF pub_owner IS NOT NULL THEN
    EXECUTE format('CREATE SCHEMA public AUTHORIZATION %s', pub_owner);
    FOR a IN SELECT grantee, privilege_type, is_grantable FROM aclexplode(pub_acl) LOOP
      EXECUTE format('GRANT %s ON SCHEMA public TO %s%s', a.privilege_type,
        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
        CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    IF pub_comment IS NOT NULL THEN
      EXECUTE format('COMMENT ON SCHEMA public IS %L', pub_comment);
    END IF;
  END IF;
END
$flightplan$;
"#;

impl PgDump {
    /// `pg_restore --single-transaction -f -` piped into `psql`, with [`PRELUDE`] spliced
    /// in right after the script's `BEGIN;`: the drop and the restore commit together or
    /// not at all, so a failure leaves the database as it was.
    async fn replace(&self, tools: &Tools, archive: &Path) -> Result<(), Error> {
        let mut restore = Command::new(&tools.pg_restore);
        restore
            .arg("--single-transaction")
            .arg("--file=-")
            .arg(archive)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut psql = self.s.command(&tools.psql);
        psql.arg("--no-psqlrc")
            .arg("--no-password")
            .arg("--quiet")
            .arg("--set=ON_ERROR_STOP=1")
            .arg(format!("--dbname={}", self.s.libpq.url))
            .arg("--file=-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut restore = restore
            .spawn()
            .map_err(|e| Error::failure(format!("cannot run pg_restore: {e}")))?;
        let mut psql = psql
            .spawn()
            .map_err(|e| Error::failure(format!("cannot run psql: {e}")))?;
        let (Some(script), Some(mut sink)) = (restore.stdout.take(), psql.stdin.take()) else {
            return Err(Error::failure("cannot connect pg_restore to psql"));
        };
        let mut restore_err = restore.stderr.take();
        let mut psql_err = psql.stderr.take();
        let feed = async move {
            let mut script = BufReader::new(script);
            let mut line = Vec::new();
            let mut head = Vec::new();
            loop {
                line.clear();
                if script.read_until(b'\n', &mut line).await? == 0 {
                    // No BEGIN: send nothing, so nothing runs outside a transaction.
                    return Ok::<bool, std::io::Error>(false);
                }
                let text = String::from_utf8_lossy(&line);
                let t = text.trim();
                head.extend_from_slice(&line);
                if t == "BEGIN;" {
                    break;
                }
                if !(t.is_empty() || t.starts_with("--") || t.starts_with('\\')) {
                    return Ok(false);
                }
            }
            sink.write_all(&head).await?;
            sink.write_all(PRELUDE.as_bytes()).await?;
            tokio::io::copy_buf(&mut script, &mut sink).await?;
            sink.shutdown().await?;
            Ok(true)
        };
        let read_all = |s: Option<tokio::process::ChildStderr>| async move {
            let mut buf = Vec::new();
            if let Some(mut s) = s {
                let _ = s.read_to_end(&mut buf).await;
            }
            buf
        };
        let (fed, restore_stderr, psql_stderr) = tokio::join!(
            feed,
            read_all(restore_err.take()),
            read_all(psql_err.take())
        );
        let restore_status = restore.wait().await;
        let psql_status = psql.wait().await;
        let restored_ok = restore_status.as_ref().is_ok_and(|s| s.success());
        let psql_ok = psql_status.as_ref().is_ok_and(|s| s.success());
        match fed {
            Ok(true) if restored_ok && psql_ok => Ok(()),
            Ok(false) => Err(Error::failure(
                "pg_restore's script did not start with a transaction; nothing was run",
            )
            .hint(format!(
                "check the archive with `pg_restore --list {}`",
                archive.display()
            ))),
            _ if !psql_ok => Err(Error::failure(format!(
                "the restore failed and was rolled back; the database is unchanged: {}",
                self.s.scrub(&last_lines(&psql_stderr))
            ))
            .hint(
                "the restoring user must own the database's schemas (or be a superuser); stop the app first \
                 so no session holds locks",
            )),
            _ if !restored_ok => Err(Error::failure(format!(
                "pg_restore failed while reading {}; the restore was rolled back: {}",
                archive.display(),
                last_lines(&restore_stderr)
            ))),
            Err(e) => Err(Error::failure(format!(
                "the restore was interrupted ({e}); it was rolled back"
            ))),
            Ok(true) => Ok(()),
        }
    }
}

/// The last few lines of a program's stderr, for an error message.
fn last_lines(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(4);
    let tail = lines[start..].join(" / ");
    if tail.is_empty() {
        "no message".into()
    } else {
        tail
    }
}

/// `%XX` decoding of the URL's password (the `url` crate keeps it encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_major("pg_dump (PostgreSQL) 18beta1"), Some(18));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("garbage"), None);
    }

    #[test]
    fn a_pg_dump_older_than_the_server_is_refused_with_what_to_install() {
        let c = |d: &str, m| (PathBuf::from(d), m);
        assert_eq!(choose(15, &[c("/usr/bin", 16)]).unwrap(), 0);
        assert_eq!(
            choose(
                17,
                &[
                    c("/usr/bin", 15),
                    c("/a/16", 16),
                    c("/a/17", 17),
                    c("/a/18", 18)
                ]
            )
            .unwrap(),
            3
        );
        let e = choose(17, &[c("/usr/bin", 15)]).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(
            e.message.contains("older than the server (PostgreSQL 17)"),
            "{}",
            e.message
        );
        assert!(e.hint.unwrap().contains("postgresql-client-17"));
        assert!(choose(15, &[]).unwrap_err().message.contains("not found"));
    }

    #[test]
    fn the_password_stays_out_of_the_command_line() {
        let raw = "postgres://app:s%40cret-pw@db.example.org:5432/app";
        let s = Settings::new(
            raw,
            DatabaseUrl::parse(raw).unwrap(),
            PathBuf::from("b"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            s.libpq.url,
            "postgres://app@db.example.org:5432/app?sslmode=require"
        );
        assert_eq!(s.libpq.password.as_deref(), Some("s@cret-pw"));
        assert!(!format!("{s:?}").contains("cret"));
        assert_eq!(s.scrub("password s@cret-pw failed"), "password *** failed");
    }
}
