//! Optimizer choice as a switch.

use crate::choice::choice;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer, SgdConfig};

choice! {
    /// The optimizer.
    pub enum OptimizerKind ("optimizer") {
        /// Plain SGD.
        Sgd = "sgd",
        /// SGD with classical momentum 0.9 (no dampening), as PyTorch's `SGD(momentum=0.9)`.
        Momentum = "momentum",
        /// Adam (β 0.9/0.999, ε 1e-8).
        Adam = "adam",
        /// AdamW with decoupled weight decay 0.01.
        Adamw = "adamw",
    }
}

impl OptimizerKind {
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
