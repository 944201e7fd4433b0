//! A SyncRun's reasons: what its `Ready` condition, its Events and the `reconcile_errors` metric
//! label say (see [`crate::kernel::Reason`]).

crate::kernel::reason::reasons! {
    /// Stable reasons (CamelCase): people and tools match on them, so a name never changes.
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
        ConnectionNotReady,
        ConnectionNotPermitted,
        ConnectionChanged,
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
        RetainedOnCrdDeletion,
    }
    about_credentials: MissingCredentials | Unauthorized | Forbidden
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn reasons_read_as_their_names() {
        assert_eq!(Reason::ALL.len(), 23);
        assert_eq!(Reason::RunFailed.as_str(), "RunFailed");
        assert_eq!(Reason::WaitingForSource.to_string(), "WaitingForSource");
    }
}
