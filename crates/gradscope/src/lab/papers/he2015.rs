//! He, Zhang, Ren & Sun 2015, "Delving deep into rectifiers" (ICCV), §2.2 and Fig. 3: with
//! ReLU, Xavier init (Var(w) = 1/n) halves the variance of the backward signal at every layer,
//! so a 30-layer net stalls; He init (Var(w) = 2/n) keeps it, and the same net converges. At 22
//! layers both converge, He earlier.

use super::{
    final_loss, final_metric, net, probe_every, steps_to, training, Claim, Paper, PaperLab,
    PaperOutcome, Setup,
};
use crate::activation::Activation;
use crate::lab::mlp::{LabError, LabEvent, Variant, VariantOutcome};
use crate::lab::settings::Settings;
use crate::nn::init::Init;
use crate::report::panels::{self, Panel, Series};
use crate::train::OptimizerKind;

pub const PAPER: Paper = Paper {
    name: "he2015",
    cite: "He et al. 2015, Delving deep into rectifiers",
    claim: "a 30-layer ReLU net converges from He init and stalls from Xavier init",
    own_data: None,
    run,
};

/// The two depths of their Fig. 3.
const DEPTHS: [usize; 2] = [22, 30];

fn variant(lab: &PaperLab, depth: usize, init: Init) -> Variant {
    let (width, epochs) = if lab.quick { (128, 20) } else { (256, 40) };
    let model = net(depth, width, Activation::Relu, init, lab.seed);
    let train = training(OptimizerKind::Momentum, 0.005, 32, epochs, lab.seed);
    let name = match init {
        Init::He => "He",
        _ => "Xavier",
    };
    Variant {
        name: format!("{depth} layers, {name}"),
        settings: Settings { model, train },
    }
}

fn run(lab: &PaperLab, on: &mut dyn FnMut(LabEvent)) -> Result<PaperOutcome, LabError> {
    let setup = Setup::new(lab, PAPER.name)?;
    let probe = probe_every(5);
    let bench = setup.bench(&probe);
    let all: Vec<Variant> = DEPTHS
        .iter()
        .flat_map(|&d| [variant(lab, d, Init::Xavier), variant(lab, d, Init::He)])
        .collect();
    let out = bench.train_all(&all, on)?;
    let chance = (setup.all.classes as f64).ln();
    let claims = claims(&out, chance);
    figure(&out, chance, &setup.dir.join("fig3.png"))?;
    let intro = format!(
        "ReLU networks of 22 and 30 linear layers (width {}), Xavier init (uniform, Var = 2/(fan_in+fan_out), i.e. 1/n for the square hidden layers) against He init (normal, Var = 2/fan_in), SGD with momentum 0.9 at lr {}, batch {}, {} epochs on {}. The paper trained 22- and 30-layer conv nets on ImageNet; the mechanism it explains — the variance of the backward signal multiplied by ½·n·Var[w] at every layer — is the same in a dense ReLU net.",
        all[0].settings.model.width,
        all[0].settings.train.lr,
        all[0].settings.train.batch,
        all[0].settings.train.epochs,
        setup.data_text()
    );
    setup.finish(
        &PAPER,
        &intro,
        claims,
        out.into_iter().map(Into::into).collect(),
        &[(
            "fig3.png",
            "Their Fig. 3 from our runs: training loss per epoch, and the gradient reaching each layer at init against theory",
        )],
    )
}

/// ‖∂L/∂h‖ at every hidden layer at the first probed step (init), first layer first.
fn init_profile(o: &VariantOutcome) -> Vec<f64> {
    o.records.first().map_or_else(Vec::new, |r| {
        r.layers
            .iter()
            .filter(|l| l.name.starts_with("layers."))
            .map(|l| l.grad_h.norm)
            .collect()
    })
}

/// First hidden layer's ‖∂L/∂h‖ over the last's at init, and what theory says: ReLU halves
/// E(φ'²), so each layer multiplies the squared norm by χ₁ = ½·n·Var(w) (Xavier 1/n: ½; He 2/n:
/// 1) over the `hidden − 1` layers between them.
fn ratio_and_theory(o: &VariantOutcome) -> (f64, f64) {
    let p = init_profile(o);
    let measured = match (p.first(), p.last()) {
        (Some(a), Some(b)) if *b > 0.0 => a / b,
        _ => f64::NAN,
    };
    let chi1: f64 = if o.settings.model.init == Init::He {
        1.0
    } else {
        0.5
    };
    let transitions = p.len().saturating_sub(1) as f64;
    (measured, chi1.powf(transitions / 2.0))
}

/// The paper's claims against the runs `out` (22 Xavier, 22 He, 30 Xavier, 30 He).
fn claims(out: &[VariantOutcome], chance: f64) -> Vec<Claim> {
    let [x22, h22, x30, h30] = out else {
        return Vec::new();
    };
    let epochs = x30.history.epochs.len();
    let mut c = vec![
        Claim {
            claim: "30 layers, Xavier init: does not learn".into(),
            paper: "stalls: the error does not go down (Fig. 3, right)".into(),
            ours: format!(
                "training loss {:.3} after {epochs} epochs (chance: ln C = {chance:.3})",
                final_loss(x30),
            ),
            // still within 10% of the loss of a net that learnt nothing
            agree: final_loss(x30) >= 0.9 * chance,
        },
        Claim {
            claim: "30 layers, He init: converges".into(),
            paper: "converges (Fig. 3, right)".into(),
            ours: format!(
                "training loss {:.3} after {epochs} epochs, val accuracy {:.3}",
                final_loss(h30),
                final_metric(&h30.history)
            ),
            // below half of chance
            agree: final_loss(h30) <= 0.5 * chance,
        },
    ];
    let (sx, sh) = (
        steps_to(&x22.history, 0.5 * chance),
        steps_to(&h22.history, 0.5 * chance),
    );
    let show = |s: Option<usize>| s.map_or("never".to_string(), |s| format!("step {s}"));
    c.push(Claim {
        claim: "22 layers: both converge, He init earlier".into(),
        paper: "both converge; He starts reducing the error earlier (Fig. 3, left)".into(),
        ours: format!(
            "loss below ½·ln C: He at {}, Xavier at {}; final {:.3} / {:.3}",
            show(sh),
            show(sx),
            final_loss(h22),
            final_loss(x22)
        ),
        agree: matches!((sh, sx), (Some(h), Some(x)) if h <= x),
    });
    for (o, init) in [(x30, "Xavier"), (h30, "He")] {
        let (m, t) = ratio_and_theory(o);
        c.push(Claim {
            claim: format!("30 layers, {init}: gradient at the first hidden layer ÷ at the last, at init"),
            paper: format!(
                "the backward signal's variance × ½·n·Var[w] per layer: {} (= {t:.2e} in norm over these layers)",
                if init == "He" { "×1, kept" } else { "×½, vanishing" }
            ),
            ours: format!("{m:.2e}"),
            // within a factor 4 of theory: finite-width fluctuations at width 64–256
            agree: (m / t).log10().abs() <= 4f64.log10(),
        });
    }
    c
}

/// Their Fig. 3 (loss per epoch, 22 and 30 layers) and the gradient per layer at init with
/// theory's line.
fn figure(out: &[VariantOutcome], chance: f64, path: &std::path::Path) -> Result<(), LabError> {
    let init_name = |o: &VariantOutcome| {
        if o.settings.model.init == Init::He {
            "He"
        } else {
            "Xavier"
        }
    };
    let mut panels_v = Vec::new();
    for depth in DEPTHS {
        let mut series: Vec<Series> = out
            .iter()
            .filter(|o| o.settings.model.depth == depth)
            .map(|o| Series {
                name: init_name(o).into(),
                points: o
                    .history
                    .epochs
                    .iter()
                    .map(|e| (e.epoch as f64 + 1.0, e.train_loss))
                    .collect(),
                ..Series::default()
            })
            .collect();
        let epochs = out[0].history.epochs.len().max(2) as f64;
        series.push(Series {
            name: "chance (ln C)".into(),
            points: vec![(1.0, chance), (epochs, chance)],
            dashed: true,
            ..Series::default()
        });
        panels_v.push(Panel {
            caption: format!("{depth} layers"),
            x_desc: "epoch".into(),
            y_desc: "training loss".into(),
            series,
            log_y: false,
            log_x: false,
        });
    }
    let mut grads = Vec::new();
    for o in out.iter().filter(|o| o.settings.model.depth == DEPTHS[1]) {
        let p = init_profile(o);
        let last = p.last().copied().unwrap_or(f64::NAN);
        let (_, t) = ratio_and_theory(o);
        let per_layer = t.powf(1.0 / (p.len().max(2) - 1) as f64);
        let n = p.len();
        grads.push(Series {
            name: init_name(o).into(),
            points: p.iter().enumerate().map(|(i, &g)| (i as f64, g)).collect(),
            ..Series::default()
        });
        grads.push(Series {
            name: "theory: ‖∂L/∂h‖ × √(½·n·Var[w]) per layer".into(),
            points: (0..n)
                .map(|i| (i as f64, last * per_layer.powi((n - 1 - i) as i32)))
                .collect(),
            dashed: true,
            ..Series::default()
        });
    }
    panels_v.push(Panel {
        caption: format!("{} layers at init: gradient per hidden layer", DEPTHS[1]),
        x_desc: "hidden layer".into(),
        y_desc: "‖∂L/∂h‖".into(),
        series: grads,
        log_y: true,
        log_x: false,
    });
    panels::grid(
        path,
        "He et al. 2015, Fig. 3 — ReLU, Xavier vs He init",
        &panels_v,
        3,
        (520, 420),
    )?;
    Ok(())
}
