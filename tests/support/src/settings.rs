//! Sizes and seeds from the environment: `make reliability` and `make bench` scale their runs up
//! with these; `make test` runs at the defaults.

/// The numeric setting `name` from the environment; `default` when it is unset or not a number.
pub fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
