//! A SyncSource's reasons: what its `Ready` condition, its Events and the `reconcile_errors`
//! metric label say (see [`crate::kernel::Reason`]).

use std::fmt;

/// Stable reasons (CamelCase): people and tools match on them, so a name never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    // The `Ready` condition's reasons.
    SourceReady,
    SourceExists,
    InvalidSpec,
    Unauthorized,
    Forbidden,
    DatabaseNotFound,
    RateLimited,
    ServerError,
    Timeout,
    ConnectionFailed,
    InvalidResponse,
    MissingCredentials,
    Replacing,
    Paused,
    SourceMissing,
    SourceMismatch,
    // Events beyond the condition's transitions.
    Replaced,
    Adopted,
    Retained,
    Recreated,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::SourceReady => "SourceReady",
            Reason::SourceExists => "SourceExists",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::DatabaseNotFound => "DatabaseNotFound",
            Reason::RateLimited => "RateLimited",
            Reason::ServerError => "ServerError",
            Reason::Timeout => "Timeout",
            Reason::ConnectionFailed => "ConnectionFailed",
            Reason::InvalidResponse => "InvalidResponse",
            Reason::MissingCredentials => "MissingCredentials",
            Reason::Replacing => "Replacing",
            Reason::Paused => "Paused",
            Reason::SourceMissing => "SourceMissing",
            Reason::SourceMismatch => "SourceMismatch",
            Reason::Replaced => "Replaced",
            Reason::Adopted => "Adopted",
            Reason::Retained => "Retained",
            Reason::Recreated => "Recreated",
        }
    }
}

impl crate::kernel::Reason for Reason {
    fn as_str(self) -> &'static str {
        Reason::as_str(self)
    }

    fn is_about_credentials(self) -> bool {
        matches!(
            self,
            Reason::MissingCredentials | Reason::Unauthorized | Reason::Forbidden
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn every_reason_reads_as_its_camel_case_name() {
        // The Debug form is the variant's name: the wire name must be exactly that.
        let all = [
            Reason::SourceReady,
            Reason::SourceExists,
            Reason::InvalidSpec,
            Reason::Unauthorized,
            Reason::Forbidden,
            Reason::DatabaseNotFound,
            Reason::RateLimited,
            Reason::ServerError,
            Reason::Timeout,
            Reason::ConnectionFailed,
            Reason::InvalidResponse,
            Reason::MissingCredentials,
            Reason::Replacing,
            Reason::Paused,
            Reason::SourceMissing,
            Reason::SourceMismatch,
            Reason::Replaced,
            Reason::Adopted,
            Reason::Retained,
            Reason::Recreated,
        ];
        for reason in all {
            assert_eq!(reason.as_str(), format!("{reason:?}"));
            assert_eq!(reason.to_string(), reason.as_str());
        }
    }
}
