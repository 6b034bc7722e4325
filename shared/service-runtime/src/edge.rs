//! The edge of every service: bad request fields become `INVALID_ARGUMENT` with BadRequest
//! field violations, database failures become `UNAVAILABLE` or `INTERNAL`, and page tokens
//! stay opaque.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Collects every bad field of a request, so a client learns about all of them at once.
#[derive(Debug, Default)]
pub struct FieldViolations {
    violations: Vec<(String, String)>,
}

impl FieldViolations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is wrong, and why.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations.push((field.into(), description.into()));
    }

    /// Runs a parser; on failure records the violation and returns `None`.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                self.add(field, err.to_string());
                None
            }
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// `INVALID_ARGUMENT` listing every violation.
    pub fn into_status(self) -> Status {
        let message = self
            .violations
            .iter()
            .map(|(f, d)| format!("{f}: {d}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut details = ErrorDetails::new();
        for (field, description) in &self.violations {
            details.add_bad_request_violation(field.clone(), description.clone());
        }
        Status::with_error_details(Code::InvalidArgument, message, details)
    }

    /// `Ok(value)` when there were no violations, else the status.
    pub fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, Status> {
        if !self.is_empty() {
            return Err(self.into_status());
        }
        value()
            .ok_or_else(|| Status::internal("a field parsed without a violation but has no value"))
    }
}

/// A single-field `INVALID_ARGUMENT`.
pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    let mut v = FieldViolations::new();
    v.add(field, description);
    v.into_status()
}

/// A database failure as a status: `UNAVAILABLE` when the database cannot be reached,
/// `INTERNAL` otherwise. The cause is logged, never sent.
pub fn database_status(err: sqlx::Error) -> Status {
    match event_store::Error::from_sqlx(err) {
        event_store::Error::Unavailable(source) => {
            tracing::warn!(error = %source, "database unavailable");
            Status::unavailable("the database is unavailable; retry later")
        }
        other => {
            tracing::error!(error = ?other, "database query failed");
            Status::internal("internal error")
        }
    }
}

/// Page tokens are opaque to clients: the hex of a short text the service chose.
pub fn encode_page_token(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The text inside a page token, or `None` if it is not one this service made.
pub fn decode_page_token(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) || token.len() > 512 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Cuts a page fetched with one row more than `size` (that row says another page follows)
/// and returns the next page's token, made from the page's last row; empty on the last page.
pub fn split_page<T>(rows: &mut Vec<T>, size: i64, token: impl Fn(&T) -> String) -> String {
    let size = usize::try_from(size).unwrap_or(0);
    if rows.len() <= size {
        return String::new();
    }
    rows.truncate(size);
    rows.last().map(token).unwrap_or_default()
}
