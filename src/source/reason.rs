//! A SyncSource's reasons: what its `Ready` condition, its Events and the `reconcile_errors`
//! metric label say (see [`crate::kernel::Reason`]).

crate::kernel::reason::reasons! {
    /// Stable reasons (CamelCase): people and tools match on them, so a name never changes.
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
        ConnectionNotReady,
        ConnectionNotPermitted,
        ConnectionChanged,
        Replacing,
        Paused,
        SourceMissing,
        SourceMismatch,
        // spec.sync.publishTo: a ConfigMap of that name exists and is not this object's
        // (condition `Published` and a Warning Event).
        PublishConflict,
        // spec.sync.keepCollections: old collections deleted (Normal Event), or a delete that
        // failed (Warning Event; tried again).
        CollectionsPruned,
        CollectionPruneFailed,
        // Events beyond the condition's transitions.
        Replaced,
        Adopted,
        Retained,
        Recreated,
        RetainedOnCrdDeletion,
    }
    about_credentials: MissingCredentials | Unauthorized | Forbidden
}

#[cfg(test)]
mod tests {
    use super::Reason;
    use crate::kernel::Reason as _;

    #[test]
    fn reasons_read_as_their_names_and_three_wait_on_credentials() {
        assert_eq!(Reason::ALL.len(), 27);
        assert_eq!(Reason::SourceReady.as_str(), "SourceReady");
        assert_eq!(Reason::DatabaseNotFound.to_string(), "DatabaseNotFound");
        let waiting: Vec<_> = Reason::ALL
            .iter()
            .filter(|r| r.is_about_credentials())
            .collect();
        assert_eq!(
            waiting,
            [
                &Reason::Unauthorized,
                &Reason::Forbidden,
                &Reason::MissingCredentials
            ]
        );
    }
}
