//! Optimizer choice as a switch.

use std::fmt;
use std::str::FromStr;

use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer, SgdConfig};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Plain SGD.
    Sgd,
    /// SGD with classical momentum 0.9 (no dampening), as PyTorch's `SGD(momentum=0.9)`.
    Momentum,
    /// Adam (β 0.9/0.999, ε 1e-8).
    Adam,
    /// AdamW with decoupled weight decay 0.01.
    Adamw,
}

impl OptimizerKind {
    pub const ALL: [OptimizerKind; 4] = [
        OptimizerKind::Sgd,
        OptimizerKind::Momentum,
        OptimizerKind::Adam,
        OptimizerKind::Adamw,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Momentum => "momentum",
            OptimizerKind::Adam => "adam",
            OptimizerKind::Adamw => "adamw",
        }
    }

    pub fn build(self) -> ModuleOptimizer {
        match self {
            OptimizerKind::Sgd => SgdConfig::new().init(),
            OptimizerKind::Momentum => SgdConfig::new()
                .with_momentum(Some(MomentumConfig {
                    momentum: 0.9,
                    dampening: 0.0,
                    nesterov: false,
                }))
                .init(),
            OptimizerKind::Adam => AdamConfig::new().with_epsilon(1e-8).init(),
            OptimizerKind::Adamw => AdamWConfig::new()
                .with_epsilon(1e-8)
                .with_weight_decay(0.01)
                .init(),
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        OptimizerKind::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| format!("unknown optimizer '{s}'; accepted: sgd, momentum, adam, adamw"))
    }
}
