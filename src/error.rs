//! The one error type every command returns: what failed, where, what to do next, and
//! which exit code it means.

use serde::Serialize;

/// Exit code 1 (it ran and something failed) or 2 (bad usage or input, nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Failure,
    Usage,
}

/// An error with the context a user needs to act on it.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    #[serde(skip)]
    pub kind: Kind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// SQLSTATE for database errors, the vendor's error code for API errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Error {
    fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            hint: None,
            file: None,
            line: None,
            column: None,
            code: None,
            request_id: None,
        }
    }

    /// Something found by trying: exit 1.
    pub fn failure(message: impl Into<String>) -> Error {
        Error::new(Kind::Failure, message)
    }

    /// Bad usage, configuration or input, found before anything changed: exit 2.
    pub fn usage(message: impl Into<String>) -> Error {
        Error::new(Kind::Usage, message)
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    pub fn file(mut self, file: impl Into<String>) -> Error {
        self.file = Some(file.into());
        self
    }

    pub fn line(mut self, line: u32) -> Error {
        self.line = Some(line);
        self
    }

    pub fn column(mut self, column: u32) -> Error {
        self.column = Some(column);
        self
    }

    pub fn code(mut self, code: impl Into<String>) -> Error {
        self.code = Some(code.into());
        self
    }

    pub fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::Failure => 1,
            Kind::Usage => 2,
        }
    }

    /// `file:line:col` when known.
    pub fn location(&self) -> Option<String> {
        let file = self.file.as_ref()?;
        Some(match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
            (Some(l), None) => format!("{file}:{l}"),
            _ => file.clone(),
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
