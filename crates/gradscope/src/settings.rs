//! `key=value` settings, each declared once: its name, type, default, help line, validation and
//! yaml form come from one row of a [`settings!`](crate::settings!) table, which generates the
//! struct, its `Default`, `set`, `get`, `to_yaml` and the table of [`Spec`]s that `help` prints.
//!
//! The value parsers ([`Value`]) and range checks ([`at_least`], [`fraction`], …) are shared by
//! detection and the labs, so the same word means the same thing, with the same message, everywhere.

use std::fmt::Display;

/// A command that reads settings (per-command help lists only its own keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Train,
    Val,
    Predict,
    Export,
}

impl Command {
    /// The command's word on the command line.
    pub fn word(self) -> &'static str {
        match self {
            Command::Train => "train",
            Command::Val => "val",
            Command::Predict => "predict",
            Command::Export => "export",
        }
    }
}

/// Shorthands for the command sets of a setting.
pub const ALL: &[Command] = &[Command::Train, Command::Val, Command::Predict];
pub const TRAIN: &[Command] = &[Command::Train];
pub const TRAIN_VAL: &[Command] = &[Command::Train, Command::Val];
pub const VAL_PREDICT: &[Command] = &[Command::Val, Command::Predict];
pub const PREDICT: &[Command] = &[Command::Predict];
pub const EXPORT: &[Command] = &[Command::Export];
/// `model=`, which every command reads.
pub const EVERY: &[Command] = &[
    Command::Train,
    Command::Val,
    Command::Predict,
    Command::Export,
];

/// One declared setting, for help and error messages.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub name: &'static str,
    pub help: &'static str,
    pub commands: &'static [Command],
}

/// What was wrong with a `key=value` word.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingError {
    #[error("{key}={value}: {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
    #[error("unknown argument '{key}'{}; `gradscope help {command}` lists every key", suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default())]
    Unknown {
        key: String,
        suggestion: Option<String>,
        command: &'static str,
    },
    #[error("'{word}': expected key=value (e.g. epochs=10); see `gradscope help {command}`")]
    NotKeyValue { word: String, command: &'static str },
}

/// A setting's value type: parsed from the command line or args.yaml, written back in the same
/// form (so `parse(show(x)) == x`).
pub trait Value: Sized {
    /// The value of `v`, or what was expected instead.
    fn parse(v: &str) -> Result<Self, String>;
    /// The form `parse` reads back.
    fn show(&self) -> String;
}

impl Value for usize {
    fn parse(v: &str) -> Result<Self, String> {
        v.parse().map_err(|_| "expected a whole number".into())
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Value for u64 {
    fn parse(v: &str) -> Result<Self, String> {
        v.parse().map_err(|_| "expected a whole number ≥ 0".into())
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Value for i64 {
    fn parse(v: &str) -> Result<Self, String> {
        v.parse().map_err(|_| "expected a whole number".into())
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Value for f64 {
    fn parse(v: &str) -> Result<Self, String> {
        match v.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err("expected a finite number".into()),
        }
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Value for f32 {
    fn parse(v: &str) -> Result<Self, String> {
        f64::parse(v).map(|x| x as f32)
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Value for bool {
    fn parse(v: &str) -> Result<Self, String> {
        match v {
            "true" | "True" | "1" | "yes" => Ok(true),
            "false" | "False" | "0" | "no" => Ok(false),
            _ => Err("expected true or false".into()),
        }
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Value for String {
    fn parse(v: &str) -> Result<Self, String> {
        if v.is_empty() {
            Err("expected a value".into())
        } else {
            Ok(v.to_string())
        }
    }
    fn show(&self) -> String {
        self.clone()
    }
}

/// `none`, `null` (yaml) or `None` (Python) for an unset optional value.
impl<T: Value> Value for Option<T> {
    fn parse(v: &str) -> Result<Self, String> {
        match v {
            "none" | "None" | "null" | "~" => Ok(None),
            _ => T::parse(v).map(Some).map_err(|e| format!("{e}, or none")),
        }
    }
    fn show(&self) -> String {
        self.as_ref().map_or_else(|| "null".into(), T::show)
    }
}

/// One value parsed and checked, with the error in the `key=value: expected …` form (for
/// settings that are not in a [`settings!`](crate::settings!) table, such as the labs').
pub fn value<T: Value>(
    key: &str,
    v: &str,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<T, String> {
    T::parse(v)
        .and_then(|x| check(&x).map(|_| x))
        .map_err(|e| format!("{key}={v}: {e}"))
}

/// A whole number ≥ `min`.
pub fn whole(key: &str, v: &str, min: usize) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|n| *n >= min)
        .ok_or_else(|| format!("{key}={v}: expected a whole number ≥ {min}"))
}

/// A finite number > 0.
pub fn positive_number(key: &str, v: &str) -> Result<f64, String> {
    value(key, v, |x: &f64| positive(*x))
}

/// `x` to 3 significant digits, printed without float noise (0.000133, not 0.00013300000000000001).
pub fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let p = 10f64.powi(2 - x.abs().log10().floor() as i32);
    (x * p).round() / p
}

/// No check beyond the type.
pub fn any<T>(_: &T) -> Result<(), String> {
    Ok(())
}

/// `x ≥ min`.
pub fn at_least<T: PartialOrd + Display + Copy>(x: T, min: T) -> Result<(), String> {
    if x >= min {
        Ok(())
    } else {
        Err(format!("expected a number ≥ {min}"))
    }
}

/// `x > 0`.
pub fn positive(x: f64) -> Result<(), String> {
    if x > 0.0 {
        Ok(())
    } else {
        Err("expected a number > 0".into())
    }
}

/// `0 ≤ x ≤ 1` (probabilities, gains and fractions, as Ultralytics checks them).
pub fn fraction(x: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&x) {
        Ok(())
    } else {
        Err("expected a fraction between 0.0 and 1.0".into())
    }
}

/// The key of `keys` closest to `key` by edit distance, when close enough to be a typo.
pub fn did_you_mean<'a>(key: &str, keys: impl IntoIterator<Item = &'a str>) -> Option<String> {
    keys.into_iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len().max(key.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_string())
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A yaml scalar for `v` (quoted when it holds yaml syntax).
pub fn yaml_scalar(v: &str) -> String {
    if v.is_empty() || v.contains([':', '#', ' ', '\'', '"', '[', ']', '{', '}', ',']) {
        format!("'{}'", v.replace('\'', "''"))
    } else {
        v.to_string()
    }
}

/// Splits `key=value` words, for a command (named in the errors).
pub fn split_words(words: &[String], command: Command) -> Result<Vec<(&str, &str)>, SettingError> {
    words
        .iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| SettingError::NotKeyValue {
                    word: w.clone(),
                    command: command.word(),
                })
        })
        .collect()
}

/// Declares a settings struct from one row per setting:
///
/// ```
/// use gradscope::settings::{at_least, Command, TRAIN};
///
/// gradscope::settings! {
///     /// The struct's doc.
///     pub struct Args {
///         /// epochs to train, ≥ 1
///         epochs: usize = 100, |x| at_least(*x, 1), TRAIN;
///     }
/// }
///
/// let mut a = Args::default();
/// a.set("epochs", "3", Command::Train).unwrap();
/// assert_eq!(a.epochs, 3);
/// let e = a.set("epochs", "0", Command::Train).unwrap_err();
/// assert!(e.to_string().contains("epochs"), "{e}");
/// let e = a.set("epoch", "3", Command::Train).unwrap_err();
/// assert!(e.to_string().contains("did you mean 'epochs'"), "{e}");
/// ```
///
/// Each row gives the field's doc (its help line), type ([`Value`]), default, check (a closure
/// `fn(&T) -> Result<(), String>` saying what is expected) and the commands that read it.
#[macro_export]
macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                #[doc = $help:literal]
                $field:ident : $ty:ty = $default:expr, $check:expr, $cmds:expr;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $( #[doc = $help] pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $name {
            /// Every setting, in declaration order.
            pub const SPECS: &'static [$crate::settings::Spec] = &[
                $( $crate::settings::Spec {
                    name: stringify!($field),
                    help: $help,
                    commands: $cmds,
                }, )*
            ];

            /// Applies one `key=value` after checking it; nothing changes on an error.
            pub fn set(
                &mut self,
                key: &str,
                v: &str,
                command: $crate::settings::Command,
            ) -> Result<(), $crate::settings::SettingError> {
                let bad = |expected: String| $crate::settings::SettingError::Invalid {
                    key: key.to_string(),
                    value: v.to_string(),
                    expected,
                };
                match key {
                    $( stringify!($field) => {
                        let x = <$ty as $crate::settings::Value>::parse(v).map_err(&bad)?;
                        let check: fn(&$ty) -> Result<(), String> = $check;
                        check(&x).map_err(&bad)?;
                        self.$field = x;
                        Ok(())
                    } )*
                    _ => Err($crate::settings::SettingError::Unknown {
                        key: key.to_string(),
                        suggestion: $crate::settings::did_you_mean(
                            key,
                            Self::SPECS.iter().map(|s| s.name),
                        ),
                        command: command.word(),
                    }),
                }
            }

            /// A setting's value in the form `set` reads back.
            pub fn get(&self, key: &str) -> Option<String> {
                match key {
                    $( stringify!($field) => {
                        Some($crate::settings::Value::show(&self.$field))
                    } )*
                    _ => None,
                }
            }

            /// Every setting as yaml, one `key: value` per line, in declaration order.
            pub fn to_yaml(&self) -> String {
                let mut s = String::new();
                $(
                    s.push_str(stringify!($field));
                    s.push_str(": ");
                    s.push_str(&$crate::settings::yaml_scalar(
                        &$crate::settings::Value::show(&self.$field),
                    ));
                    s.push('\n');
                )*
                s
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::settings! {
        /// A test table.
        pub struct Demo {
            /// epochs ≥ 1
            epochs: usize = 3, |x| at_least(*x, 1), TRAIN;
            /// a probability
            p: f64 = 0.5, |x| fraction(*x), ALL;
            /// a label with spaces
            label: String = "a b: c".into(), any, ALL;
            /// optional
            lr: Option<f64> = None, |x| x.map_or(Ok(()), positive), TRAIN;
        }
    }

    #[test]
    fn set_checks_and_names_what_is_expected() {
        let mut d = Demo::default();
        d.set("epochs", "7", Command::Train).unwrap();
        assert_eq!(d.epochs, 7);
        let e = d.set("epochs", "0", Command::Train).unwrap_err();
        assert_eq!(e.to_string(), "epochs=0: expected a number ≥ 1");
        let e = d.set("p", "7", Command::Train).unwrap_err();
        assert!(e.to_string().contains("between 0.0 and 1.0"), "{e}");
        assert!(d.set("p", "nan", Command::Train).is_err());
        assert_eq!(d.epochs, 7, "a failed set changes nothing");
        let e = d.set("epoch", "2", Command::Train).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown argument 'epoch' (did you mean 'epochs'?); `gradscope help train` lists every key"
        );
        let e = d.set("colour", "2", Command::Val).unwrap_err();
        assert!(!e.to_string().contains("did you mean"), "{e}");
    }

    #[test]
    fn yaml_round_trips_every_value() {
        let mut d = Demo::default();
        d.set("lr", "0.25", Command::Train).unwrap();
        let yaml = d.to_yaml();
        assert!(yaml.contains("label: 'a b: c'\n"), "{yaml}");
        let back: yaml_rust2::Yaml =
            yaml_rust2::YamlLoader::load_from_str(&yaml).unwrap()[0].clone();
        let mut e = Demo {
            epochs: 1,
            p: 0.0,
            label: "x".into(),
            lr: None,
        };
        for spec in Demo::SPECS {
            let v = match &back[spec.name] {
                yaml_rust2::Yaml::String(s) | yaml_rust2::Yaml::Real(s) => s.clone(),
                yaml_rust2::Yaml::Integer(i) => i.to_string(),
                yaml_rust2::Yaml::Null => "null".into(),
                other => panic!("{other:?}"),
            };
            e.set(spec.name, &v, Command::Train).unwrap();
        }
        assert_eq!(d, e);
        assert_eq!(e.get("lr").as_deref(), Some("0.25"));
        assert_eq!(e.get("nope"), None);
        assert_eq!(Option::<f64>::parse("None"), Ok(None));
    }

    #[test]
    fn suggestions_are_typos_only() {
        let keys = ["epochs", "lr0", "imgsz", "batch", "device"];
        assert_eq!(did_you_mean("epoch", keys), Some("epochs".into()));
        assert_eq!(did_you_mean("lr", keys), Some("lr0".into()));
        assert_eq!(did_you_mean("imsz", keys), Some("imgsz".into()));
        assert_eq!(did_you_mean("colour", keys), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
