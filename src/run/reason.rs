//! A SyncRun's reasons: what its `Ready` condition, its Events and the `reconcile_errors` metric
//! label say (see [`crate::kernel::Reason`]).

use std::fmt;

/// Stable reasons (CamelCase): people and tools match on them, so a name never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    // The phases.
    Pending,
    Processing,
    Complete,
    RunFailed,
    Cancelled,
    // What keeps a run from going on.
    WaitingForSource,
    InvalidSpec,
    InvocationExists,
    MissingCredentials,
    Unauthorized,
    Forbidden,
    RateLimited,
    ServerError,
    Timeout,
    ConnectionFailed,
    InvalidResponse,
    Paused,
    // Events beyond the condition's transitions.
    Adopted,
    NotCancelled,
}

impl Reason {
    pub const ALL: [Reason; 19] = [
        Reason::Pending,
        Reason::Processing,
        Reason::Complete,
        Reason::RunFailed,
        Reason::Cancelled,
        Reason::WaitingForSource,
        Reason::InvalidSpec,
        Reason::InvocationExists,
        Reason::MissingCredentials,
        Reason::Unauthorized,
        Reason::Forbidden,
        Reason::RateLimited,
        Reason::ServerError,
        Reason::Timeout,
        Reason::ConnectionFailed,
        Reason::InvalidResponse,
        Reason::Paused,
        Reason::Adopted,
        Reason::NotCancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Pending => "Pending",
            Reason::Processing => "Processing",
            Reason::Complete => "Complete",
            Reason::RunFailed => "RunFailed",
            Reason::Cancelled => "Cancelled",
            Reason::WaitingForSource => "WaitingForSource",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::InvocationExists => "InvocationExists",
            Reason::MissingCredentials => "MissingCredentials",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::RateLimited => "RateLimited",
            Reason::ServerError => "ServerError",
            Reason::Timeout => "Timeout",
            Reason::ConnectionFailed => "ConnectionFailed",
            Reason::InvalidResponse => "InvalidResponse",
            Reason::Paused => "Paused",
            Reason::Adopted => "Adopted",
            Reason::NotCancelled => "NotCancelled",
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
        for reason in Reason::ALL {
            assert_eq!(reason.as_str(), format!("{reason:?}"));
            assert_eq!(reason.to_string(), reason.as_str());
        }
    }
}
