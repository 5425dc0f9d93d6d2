//! `choice!`: an enum of named options (`act=relu`, `init=he`, …) with its list of names,
//! `Display`, `FromStr` (whose error lists what is accepted) and serde names.

macro_rules! choice {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $var:ident = $s:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $s)] $var, )+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            pub fn name(self) -> &'static str {
                match self {
                    $($name::$var => $s,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
                    format!("unknown {} '{s}'; accepted: {}", $what, names.join(", "))
                })
            }
        }

        impl $crate::settings::Value for $name {
            fn parse(v: &str) -> Result<Self, String> {
                v.parse()
            }
            fn show(&self) -> String {
                self.name().to_string()
            }
        }
    };
}

pub(crate) use choice;
