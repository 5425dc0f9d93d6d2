//! `key=value` settings of a model and its training, shared by the CLI and by lab variants.

use crate::nn::mlp::MlpConfig;
use crate::settings::{positive_number, whole};
use crate::train::{ClipNorm, TrainConfig};

/// Keys accepted for a network and its training, with what each takes.
pub const KEYS: &[(&str, &str)] = &[
    ("depth", "number of linear layers including the head, ≥ 2"),
    ("width", "units per hidden layer, ≥ 1"),
    (
        "act",
        "sigmoid | tanh | relu | leaky_relu | silu | gelu | softsign | linear",
    ),
    ("init", "default | xavier | he | lecun | orthogonal"),
    ("norm", "none | batch | layer"),
    (
        "gain",
        "weight-scale multiplier of the init, > 0 (1 = the scheme's own)",
    ),
    ("residual", "true | false"),
    (
        "zero_init",
        "true | false (start residual branches at zero)",
    ),
    ("optimizer", "sgd | momentum | adam | adamw"),
    ("lr", "learning rate > 0"),
    ("batch", "batch size ≥ 1"),
    ("epochs", "epochs ≥ 1"),
    ("seed", "integer ≥ 0"),
    (
        "clip_norm",
        "global gradient-norm threshold > 0, auto (5 × running median norm), or none",
    ),
    ("clip_value", "per-element gradient bound > 0, or none"),
    (
        "nan_recovery",
        "non-finite steps in a row to recover from (restore, halve lr, skip), 0 = off",
    ),
];

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub model: MlpConfig,
    pub train: TrainConfig,
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    crate::settings::value(key, v, crate::settings::any)
}

fn parse_opt_pos(key: &str, v: &str) -> Result<Option<f64>, String> {
    if v == "none" || v == "off" {
        Ok(None)
    } else {
        positive_number(key, v).map(Some)
    }
}

/// The training keys every lab shares (optimizer, lr, batch, epochs, clipping, NaN recovery).
/// `Ok(false)` when `key` is not one of them.
pub(crate) fn set_train(train: &mut TrainConfig, key: &str, v: &str) -> Result<bool, String> {
    match key {
        "optimizer" => {
            train.optimizer = v
                .parse()
                .map_err(|e: String| format!("optimizer={v}: {e}"))?
        }
        "lr" => train.lr = positive_number(key, v)?,
        "batch" => train.batch = whole(key, v, 1)?,
        "epochs" => train.epochs = whole(key, v, 1)?,
        "clip_norm" => {
            train.clip_norm = match v {
                "auto" => Some(ClipNorm::Auto),
                _ => parse_opt_pos(key, v)?.map(ClipNorm::Fixed),
            }
        }
        "nan_recovery" => train.nan_recovery = whole(key, v, 0)?,
        "clip_value" => train.clip_value = parse_opt_pos(key, v)?,
        _ => return Ok(false),
    }
    Ok(true)
}

impl Settings {
    /// Applies one setting. `Ok(false)` when `key` is not a setting of this kind (so a caller
    /// can try its own keys), `Err` when the key is known but the value is not acceptable.
    /// Whether `pairs` are all settings of a run and change `self` (a remedy the run already
    /// follows is no remedy).
    pub fn changed_by(&self, pairs: &[(String, String)]) -> bool {
        let mut s = self.clone();
        pairs.iter().all(|(k, v)| s.set(k, v) == Ok(true)) && s != *self
    }

    pub fn set(&mut self, key: &str, v: &str) -> Result<bool, String> {
        match key {
            "depth" => self.model.depth = whole(key, v, 2)?,
            "width" => self.model.width = whole(key, v, 1)?,
            "act" => self.model.act = v.parse().map_err(|e: String| format!("act={v}: {e}"))?,
            "init" => self.model.init = v.parse().map_err(|e: String| format!("init={v}: {e}"))?,
            "norm" => self.model.norm = v.parse().map_err(|e: String| format!("norm={v}: {e}"))?,
            "residual" => self.model.residual = parse_bool(key, v)?,
            "zero_init" => self.model.zero_init = parse_bool(key, v)?,
            "gain" => self.model.gain = positive_number(key, v)?,
            "seed" => {
                let s = v
                    .parse::<u64>()
                    .map_err(|_| format!("seed={v}: expected a whole number ≥ 0"))?;
                self.model.seed = s;
                self.train.seed = s;
            }
            _ => return set_train(&mut self.train, key, v),
        }
        Ok(true)
    }

    /// The settings that define a run, as `key=value` words.
    pub fn describe(&self) -> String {
        let m = &self.model;
        let t = &self.train;
        let opt = |x: Option<f64>| x.map_or("none".to_string(), |v| v.to_string());
        let clip = match t.clip_norm {
            None => "none".to_string(),
            Some(ClipNorm::Auto) => "auto".to_string(),
            Some(ClipNorm::Fixed(c)) => c.to_string(),
        };
        let bias = m
            .bias_std
            .map_or(String::new(), |s| format!(" (biases N(0, {s}²))"));
        format!(
            "depth={} width={} act={} init={} gain={} norm={} residual={} zero_init={} optimizer={} lr={} batch={} epochs={} seed={} clip_norm={} clip_value={} nan_recovery={}{bias}",
            m.depth, m.width, m.act, m.init, m.gain, m.norm, m.residual, m.zero_init, t.optimizer, t.lr, t.batch, t.epochs, m.seed,
            clip, opt(t.clip_value), t.nan_recovery
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Settings {
        Settings {
            model: MlpConfig::new(4, 2),
            train: TrainConfig::default(),
        }
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_accepted() {
        let mut st = s();
        let e = st.set("depth", "-3").unwrap_err();
        assert!(e.contains("depth=-3") && e.contains("≥ 2"), "{e}");
        let e = st.set("act", "foo").unwrap_err();
        assert!(e.contains("act=foo") && e.contains("sigmoid"), "{e}");
        assert!(st.set("lr", "nan").is_err());
        assert!(st.set("lr", "0").is_err());
        assert_eq!(st.set("colour", "red"), Ok(false));
        assert_eq!(st, s(), "failed settings must not change anything");
    }

    #[test]
    fn settings_round_trip_through_describe() {
        let mut a = s();
        for kv in [
            "act=tanh",
            "init=xavier",
            "norm=layer",
            "residual=true",
            "lr=0.05",
            "clip_norm=2",
        ] {
            let (k, v) = kv.split_once('=').unwrap();
            assert_eq!(a.set(k, v), Ok(true));
        }
        let mut b = s();
        for kv in a.describe().split(' ') {
            let (k, v) = kv.split_once('=').unwrap();
            assert_eq!(b.set(k, v), Ok(true), "{kv}");
        }
        assert_eq!(a, b);
    }
}
