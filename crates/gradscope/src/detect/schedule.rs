//! The learning-rate schedule and the plan of a run: optimizer choice (`auto`), accumulation to
//! the nominal batch, weight-decay scaling, and warmup of learning rates, momentum and
//! accumulation, as the reference trainer does them.

use crate::detect::args::DetectArgs;
use crate::detect::optimize::optimizer::DetOptimizer;

/// Linear or cosine learning-rate factor at `epoch` (lf in the reference trainer).
pub fn lr_factor(epoch: usize, epochs: usize, lrf: f64, cos: bool) -> f64 {
    let x = epoch as f64 / epochs.max(1) as f64;
    if cos {
        ((1.0 - (x * std::f64::consts::PI).cos()) / 2.0) * (lrf - 1.0) + 1.0
    } else {
        (1.0 - x).max(0.0) * (1.0 - lrf) + lrf
    }
}

fn interp(x: f64, x1: f64, y0: f64, y1: f64) -> f64 {
    if x1 <= 0.0 {
        return y1;
    }
    let t = (x / x1).clamp(0.0, 1.0);
    y0 + (y1 - y0) * t
}

/// The optimizer a run trains with, its initial learning rate and momentum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    pub adamw: bool,
    pub muon: bool,
    pub lr0: f64,
    pub momentum: f64,
}

impl Choice {
    /// The optimizer of `args` for a run with `nc` classes: a named one with the run's `lr0`
    /// (its default when unset) and momentum; `auto`, as Ultralytics' does, MuSGD at 0.01 for a
    /// `long` run (more than 10 000 iterations), else AdamW at 0.002·5/(4 + nc) (6 decimals),
    /// momentum 0.9 either way.
    pub fn of(args: &DetectArgs, nc: usize, long: bool) -> Self {
        let (adamw, muon, lr0, momentum) = match args.optimizer {
            DetOptimizer::Auto if long => (false, true, 0.01, 0.9),
            DetOptimizer::Auto => {
                let lr = (0.002 * 5.0 / (4.0 + nc as f64) * 1e6).round() / 1e6;
                (true, false, lr, 0.9)
            }
            DetOptimizer::Sgd => (false, false, args.lr0.unwrap_or(0.01), args.momentum),
            DetOptimizer::Musgd => (false, true, args.lr0.unwrap_or(0.01), args.momentum),
            DetOptimizer::Adamw => (true, false, args.lr0.unwrap_or(0.001), args.momentum),
        };
        Choice {
            adamw,
            muon,
            lr0,
            momentum,
        }
    }

    /// The optimizer by name: what `optimizer=auto` resolved to, in the key's own values.
    pub fn optimizer(&self) -> DetOptimizer {
        match (self.adamw, self.muon) {
            (true, _) => DetOptimizer::Adamw,
            (false, true) => DetOptimizer::Musgd,
            (false, false) => DetOptimizer::Sgd,
        }
    }
}

/// The optimizer, learning rates and step counts of a run, fixed at set-up.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) imgsz: usize,
    pub(crate) batch: usize,
    /// Iterations per epoch.
    pub(crate) nb: usize,
    /// Nominal batch.
    pub(crate) nbs: usize,
    /// Iterations per optimizer step after warmup.
    pub(crate) accumulate: usize,
    pub(crate) weight_decay: f64,
    pub(crate) adamw: bool,
    pub(crate) muon: bool,
    pub(crate) lr0: f64,
    pub(crate) momentum: f64,
    /// Warmup iterations.
    pub(crate) nw: usize,
    pub(crate) warmup_bias_lr: f64,
}

impl Plan {
    /// The optimizer this run trains with.
    pub(crate) fn choice(&self) -> Choice {
        Choice {
            adamw: self.adamw,
            muon: self.muon,
            lr0: self.lr0,
            momentum: self.momentum,
        }
    }

    pub(crate) fn new(args: &DetectArgs, images: usize, nc: usize) -> Self {
        // the nominal batch size counts for accumulation and decay even when the set is smaller
        let batch = args.batch.max(1);
        let nb = images.div_ceil(batch);
        let nbs = args.nbs.max(1);
        let nominal = ((nbs as f64 / batch as f64).round() as usize).max(1);
        let weight_decay = args.weight_decay * (batch * nominal) as f64 / nbs as f64;
        // never more iterations per step than the run has: a short run still steps
        let accumulate = nominal.min(nb * args.epochs).max(1);
        let iterations = (images as f64 / batch.max(nbs) as f64).ceil() as usize * args.epochs;
        let Choice {
            adamw,
            muon,
            lr0,
            momentum,
        } = Choice::of(args, nc, iterations > 10_000);
        // warmup leaves at least the last epoch for regular training
        let warmup_epochs = args.warmup_epochs.min(args.epochs.saturating_sub(1) as f64);
        let nw = if warmup_epochs > 0.0 {
            (warmup_epochs * nb as f64).round() as usize
        } else {
            0
        };
        // auto starts the bias warmup at zero; Adam's β₁ has no warmup (it is not a momentum)
        let warmup_bias_lr = if args.optimizer == DetOptimizer::Auto {
            0.0
        } else {
            args.warmup_bias_lr
        };
        Plan {
            imgsz: args.imgsz,
            batch,
            nb,
            nbs,
            accumulate,
            weight_decay,
            adamw,
            muon,
            lr0,
            momentum,
            nw,
            warmup_bias_lr,
        }
    }

    /// With `optimizer=auto`, the settings the user gave that auto ignores (`lr0`, `momentum`),
    /// as the warning Ultralytics gives, with the words that would apply them.
    pub(crate) fn auto_ignored(&self, args: &DetectArgs) -> Option<String> {
        let mut ignored = Vec::new();
        if let Some(l) = args.lr0 {
            ignored.push(format!("lr0={l}"));
        }
        if args.momentum != DetectArgs::default().momentum {
            ignored.push(format!("momentum={}", args.momentum));
        }
        if args.optimizer != DetOptimizer::Auto || ignored.is_empty() {
            return None;
        }
        let chose = self.choice().optimizer();
        Some(format!(
            "optimizer=auto ignores {} (as Ultralytics does): it chose {chose} with lr0 {} and momentum {}; to train with your values name the optimizer, e.g. optimizer={chose} {}",
            ignored.join(" and "),
            self.lr0,
            self.momentum,
            ignored.join(" ")
        ))
    }

    pub(crate) fn describe(&self) -> String {
        let name = if self.adamw {
            "AdamW"
        } else if self.muon {
            "MuSGD (Muon + SGD on conv weights, Nesterov)"
        } else {
            "SGD (Nesterov)"
        };
        format!(
            "optimizer: {name} (lr0 {}, momentum {}) with groups: weights (decay {:.2e}), norm weights and biases (no decay); batch {}, nominal batch {} (accumulate {}), {} iterations per epoch",
            self.lr0, self.momentum, self.weight_decay, self.batch, self.nbs, self.accumulate, self.nb
        )
    }

    /// Accumulation, per-group learning rates (weights, norm weights, biases) and momentum at
    /// iteration `ni` with schedule factor `lf`: ramped during warmup, then fixed.
    pub(crate) fn at(&self, ni: usize, lf: f64, args: &DetectArgs) -> (usize, [f64; 3], f64) {
        if ni <= self.nw && self.nw > 0 {
            let (x, x1) = (ni as f64, self.nw as f64);
            let acc = (interp(x, x1, 1.0, self.accumulate as f64).round() as usize).max(1);
            let lr_w = interp(x, x1, 0.0, self.lr0 * lf);
            let lr_b = interp(x, x1, self.warmup_bias_lr, self.lr0 * lf);
            let m = if self.adamw {
                self.momentum
            } else {
                interp(x, x1, args.warmup_momentum, self.momentum)
            };
            (acc, [lr_w, lr_w, lr_b], m)
        } else {
            (self.accumulate, [self.lr0 * lf; 3], self.momentum)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lr0=` with `optimizer=auto` warns, and the words the warning gives train at that rate.
    #[test]
    fn auto_says_what_it_ignores_and_how_to_apply_it() {
        use crate::settings::Command;
        let parse = |w: &[&str]| {
            let words: Vec<String> = w.iter().map(|s| s.to_string()).collect();
            DetectArgs::parse(DetectArgs::default(), &words, Command::Train).unwrap()
        };
        let auto = parse(&["lr0=0.01"]);
        let plan = Plan::new(&auto, 100, 1);
        assert_eq!(plan.lr0, 0.002, "auto's own rate for one class");
        let warning = plan.auto_ignored(&auto).expect("a warning");
        let (_, fix) = warning.split_once("e.g. ").unwrap();
        let applied = parse(&fix.split_whitespace().collect::<Vec<_>>());
        assert_eq!(Plan::new(&applied, 100, 1).lr0, 0.01, "{fix}");
        assert!(Plan::new(&parse(&[]), 100, 1)
            .auto_ignored(&parse(&[]))
            .is_none());
        let sgd = parse(&["optimizer=SGD", "lr0=0.01"]);
        assert!(Plan::new(&sgd, 100, 1).auto_ignored(&sgd).is_none());
    }

    #[test]
    fn lr_schedules() {
        assert_eq!(lr_factor(0, 10, 0.01, false), 1.0);
        assert!((lr_factor(10, 10, 0.01, false) - 0.01).abs() < 1e-12);
        assert!((lr_factor(5, 10, 0.01, true) - 0.505).abs() < 1e-12);
        assert_eq!(interp(50.0, 100.0, 0.1, 0.01), 0.055);
    }
}
