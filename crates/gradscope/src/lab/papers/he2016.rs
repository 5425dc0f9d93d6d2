//! He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR), Figs. 1
//! and 4: plain networks with BatchNorm get a *higher training error* as they get deeper — the
//! degradation problem — although their gradients are healthy (BatchNorm keeps the signals'
//! scale; §4.1 "we argue that this optimization difficulty is unlikely to be caused by vanishing
//! gradients"); the same depths with residual connections do not degrade.

use super::{final_loss, net, probe_every, training, Claim, Paper, PaperLab, PaperOutcome, Setup};
use crate::activation::Activation;
use crate::diagnose::Verdict;
use crate::lab::mlp::{LabError, LabEvent, Variant, VariantOutcome};
use crate::lab::settings::Settings;
use crate::nn::init::Init;
use crate::nn::mlp::NormKind;
use crate::report::panels::{self, Panel, Series};
use crate::train::OptimizerKind;

pub const PAPER: Paper = Paper {
    name: "he2016",
    cite: "He et al. 2016, Deep residual learning for image recognition",
    claim: "plain nets train worse as they deepen, with healthy gradients; residual nets do not",
    own_data: None,
    run,
};

fn depths(lab: &PaperLab) -> Vec<usize> {
    if lab.quick {
        vec![8, 20, 32]
    } else {
        vec![8, 20, 32, 56]
    }
}

fn variant(lab: &PaperLab, depth: usize, residual: bool) -> Variant {
    let (width, epochs) = if lab.quick { (64, 15) } else { (128, 40) };
    let mut model = net(depth, width, Activation::Relu, Init::He, lab.seed);
    model.norm = NormKind::Batch;
    model.residual = residual;
    // each residual branch starts at zero (Goyal et al. 2017): our one-layer branches have no
    // BatchNorm at their output, unlike the paper's blocks, and without it the 56-layer net
    // diverges at this learning rate
    model.zero_init = residual;
    let train = training(OptimizerKind::Momentum, 0.01, 64, epochs, lab.seed);
    let kind = if residual { "residual" } else { "plain" };
    Variant {
        name: format!("{kind} {depth}"),
        settings: Settings { model, train },
    }
}

fn run(lab: &PaperLab, on: &mut dyn FnMut(LabEvent)) -> Result<PaperOutcome, LabError> {
    let setup = Setup::new(lab, PAPER.name)?;
    let probe = probe_every(5);
    let bench = setup.bench(&probe);
    let all: Vec<Variant> = [false, true]
        .into_iter()
        .flat_map(|r| depths(lab).into_iter().map(move |d| (d, r)))
        .map(|(d, r)| variant(lab, d, r))
        .collect();
    let mut out = bench.train_all(&all, on)?;
    for i in name_the_degradation(&mut out) {
        out[i].write_run_json(&setup.all.name)?;
    }
    let claims = claims(&out);
    figure(&out, &setup.dir.join("fig4.png"))?;
    let m = &all[0].settings;
    let intro = format!(
        "Dense ReLU networks of {:?} linear layers (width {}), He init, BatchNorm before every ReLU; plain, or with a residual connection around every hidden layer after the first (pre-activation form: h + W·ReLU(BN(h)), each branch starting at zero); SGD with momentum 0.9 at lr {}, batch {}, {} epochs on {}. The paper: conv nets of 18/34 layers on ImageNet and 20–110 on CIFAR-10. The training loss is the mean over the last epoch's batches.",
        depths(lab),
        m.model.width,
        m.train.lr,
        m.train.batch,
        m.train.epochs,
        setup.data_text()
    );
    setup.finish(
        &PAPER,
        &intro,
        claims,
        out.into_iter().map(Into::into).collect(),
        &[(
            "fig4.png",
            "Their Figs. 1 and 4 from our runs: training loss of plain and residual nets by depth, and the plain nets' gradient per layer",
        )],
    )
}

/// Adds to each plain net's diagnosis, where its gradients are healthy but it trains worse than
/// the shallowest plain net, that this is the degradation problem: an optimisation problem.
/// The indices of the runs it added to.
fn name_the_degradation(out: &mut [VariantOutcome]) -> Vec<usize> {
    let Some(shallow) = out.iter().find(|o| !o.settings.model.residual) else {
        return Vec::new();
    };
    let (depth0, loss0) = (shallow.settings.model.depth, final_loss(shallow));
    let mut named = Vec::new();
    for (i, o) in out.iter_mut().enumerate() {
        let (loss, depth) = (final_loss(o), o.settings.model.depth);
        let degraded = !o.settings.model.residual && depth > depth0 && loss > 2.0 * loss0;
        if let Some(d) = o
            .diagnosis
            .as_mut()
            .filter(|d| degraded && d.verdict == Verdict::Healthy)
        {
            d.evidence.push(format!(
                "optimisation problem, not vanishing gradients: training loss {loss:.3} against {loss0:.3} for the {depth0}-layer plain net, with gradients that reach every layer (the degradation problem of He et al. 2016; residual connections are the remedy)"
            ));
            named.push(i);
        }
    }
    named
}

fn claims(out: &[VariantOutcome]) -> Vec<Claim> {
    let (plain, res): (Vec<&VariantOutcome>, Vec<&VariantOutcome>) =
        out.iter().partition(|o| !o.settings.model.residual);
    let (Some(p_first), Some(p_last), Some(r_first), Some(r_last)) =
        (plain.first(), plain.last(), res.first(), res.last())
    else {
        return Vec::new();
    };
    let losses = |v: &[&VariantOutcome]| {
        v.iter()
            .map(|o| format!("{} {:.3}", o.settings.model.depth, final_loss(o)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rising = plain
        .windows(2)
        .all(|w| final_loss(w[1]) > final_loss(w[0]));
    let deepest = p_last.settings.model.depth;
    let diag = p_last.diagnosis.as_ref();
    let verdict = diag.map_or(Verdict::NonFinite, |d| d.verdict);
    let first_last = diag.map_or(f64::NAN, |d| d.first_last_end);
    let healthy_grads = !matches!(
        verdict,
        Verdict::Vanishing | Verdict::Exploding | Verdict::NonFinite
    ) && (0.1..=100.0).contains(&first_last);
    vec![
        Claim {
            claim: "plain nets degrade: the deeper, the higher the training error".into(),
            paper: "34-layer plain above 18-layer on ImageNet, 56 above 20 on CIFAR-10, in training error (Figs. 1, 4)".into(),
            ours: format!("training loss by depth: {}", losses(&plain)),
            agree: rising && plain.len() >= 2,
        },
        Claim {
            claim: format!("the {deepest}-layer plain net's gradients are healthy: an optimisation problem, not vanishing"),
            paper: "BN keeps forward and backward signals at a healthy scale; the difficulty is not vanishing gradients (§4.1)".into(),
            ours: format!(
                "probe verdict: {verdict}; ‖∂L/∂h‖ first ÷ last hidden layer at the end {first_last:.2}; yet training loss {:.3} vs {:.3} at {} layers — an optimisation problem",
                final_loss(p_last),
                final_loss(p_first),
                p_first.settings.model.depth
            ),
            agree: healthy_grads && final_loss(p_last) > final_loss(p_first),
        },
        Claim {
            claim: format!("residual connections remove the degradation at {deepest} layers"),
            paper: "ResNet-34 well below plain-34 in training error (Fig. 4)".into(),
            ours: format!(
                "training loss at {deepest} layers: residual {:.3}, plain {:.3}",
                final_loss(r_last),
                final_loss(p_last)
            ),
            // a quarter of the plain net's or less
            agree: final_loss(r_last) <= 0.25 * final_loss(p_last),
        },
        Claim {
            claim: "deeper residual nets train better than shallower ones".into(),
            paper: "ResNet-34 below ResNet-18 in training error (Fig. 4, right)".into(),
            ours: format!("training loss by depth: {}", losses(&res)),
            agree: final_loss(r_last) < final_loss(r_first),
        },
    ]
}

fn figure(out: &[VariantOutcome], path: &std::path::Path) -> Result<(), LabError> {
    let curves = |residual: bool| -> Vec<Series> {
        out.iter()
            .filter(|o| o.settings.model.residual == residual)
            .map(|o| Series {
                name: format!("{} layers", o.settings.model.depth),
                points: o
                    .history
                    .epochs
                    .iter()
                    .map(|e| (e.epoch as f64 + 1.0, e.train_loss))
                    .collect(),
                ..Series::default()
            })
            .collect()
    };
    let grads = out
        .iter()
        .filter(|o| !o.settings.model.residual)
        .map(|o| Series {
            name: format!("{} layers", o.settings.model.depth),
            points: o.records.last().map_or_else(Vec::new, |r| {
                r.layers
                    .iter()
                    .filter(|l| l.name.starts_with("layers."))
                    .enumerate()
                    .map(|(i, l)| (i as f64, l.grad_h.norm))
                    .collect()
            }),
            ..Series::default()
        })
        .collect();
    let panels_v = [
        Panel {
            caption: "plain".into(),
            x_desc: "epoch".into(),
            y_desc: "training loss".into(),
            series: curves(false),
            log_y: true,
            log_x: false,
        },
        Panel {
            caption: "residual".into(),
            x_desc: "epoch".into(),
            y_desc: "training loss".into(),
            series: curves(true),
            log_y: true,
            log_x: false,
        },
        Panel {
            caption: "plain, last probed step: gradient per hidden layer".into(),
            x_desc: "hidden layer".into(),
            y_desc: "‖∂L/∂h‖".into(),
            series: grads,
            log_y: true,
            log_x: false,
        },
    ];
    panels::grid(
        path,
        "He et al. 2016, Figs. 1 and 4 — plain vs residual, by depth",
        &panels_v,
        3,
        (520, 420),
    )?;
    Ok(())
}
