//! A connection's reasons: what its `Ready` condition, its Events and the metric labels say.

crate::kernel::reason::reasons! {
    /// Stable reasons (CamelCase): people and tools match on them, so a name never changes.
    pub enum Reason {
        Connected,
        InvalidUrl,
        InvalidSpec,
        CaBundleInvalid,
        MissingCredentials,
        Unauthorized,
        Forbidden,
        TlsFailed,
        Unreachable,
        Timeout,
        RateLimited,
        ServerError,
        InvalidResponse,
    }
    about_credentials: MissingCredentials | Unauthorized | Forbidden
}
