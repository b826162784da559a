//! Small shared helpers.

use std::time::{SystemTime, UNIX_EPOCH};

/// serde for `Duration` as integer milliseconds (config files say `*_ms`-style numbers).
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// serde for `Option<Duration>` as optional integer milliseconds.
pub mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it): header timestamps
/// and broadcast latency, the only places the protocol reads the wall clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Declares a closed set of metric label values: a fieldless enum, its `label()` and `ALL`, all
/// from one list, so that pre-created label sets (a family shows every value at 0 from the start)
/// cannot miss a variant.
///
/// ```
/// syncnet_proto::label_enum! {
///     /// Where a reply buffer came from.
///     pub enum Source {
///         Reused => "reused",
///         Fresh => "fresh",
///     }
/// }
/// assert_eq!(Source::ALL.iter().map(|s| s.label()).collect::<Vec<_>>(), ["reused", "fresh"]);
/// ```
#[macro_export]
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident => $label:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The metric label value.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }
    };
}
