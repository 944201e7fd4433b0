//! What every kind's reasons have in common: a stable CamelCase name that the `Ready`
//! condition, an Event and the metric labels all say, so a dashboard, `kubectl get` and
//! `kubectl events` name an outcome the same way. Each kind has its own enum of them.

use std::fmt::{Debug, Display};

pub trait Reason: Copy + Debug + Display + PartialEq + Send + Sync + 'static {
    /// The wire name: people and tools match on it, so it never changes.
    fn as_str(self) -> &'static str;

    /// Waiting on credentials: the object is woken by a change of its token Secret.
    fn is_about_credentials(self) -> bool;
}

/// Declares a kind's reason enum: its variants, each read as its own name (so a wire name is
/// what the code calls it, and cannot drift from it), `ALL`, `Display`, and [`Reason`] with the
/// variants that wait on credentials.
macro_rules! reasons {
    (
        $(#[$doc:meta])*
        pub enum $name:ident { $($variant:ident),+ $(,)? }
        about_credentials: $($credentials:ident)|+
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// Every reason, in declaration order.
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant)),+
                }
            }
        }

        impl $crate::kernel::Reason for $name {
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }

            fn is_about_credentials(self) -> bool {
                matches!(self, $($name::$credentials)|+)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use reasons;
