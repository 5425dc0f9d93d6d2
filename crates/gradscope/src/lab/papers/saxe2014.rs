//! Saxe, McClelland & Ganguli 2014, "Exact solutions to the nonlinear dynamics of learning in
//! deep linear neural networks" (ICLR), and Pennington, Schoenholz & Ganguli 2017, "Resurrecting
//! the sigmoid in deep learning through dynamical isometry" (NeurIPS): with orthogonal weights a
//! deep linear network's input–output Jacobian has every singular value exactly 1 at any depth
//! ("dynamical isometry") and its learning time does not grow with depth, while scaled Gaussian
//! weights — the same mean squared singular value — spread the spectrum wider with every layer
//! and learn more slowly as depth grows. For tanh at the critical point (σ_w = 1, σ_b = 0)
//! orthogonal weights keep the spectrum near isometry; Gaussian ones do not.

use nalgebra::DMatrix;

use super::{
    net, percentile, probe_every, steps_to, training, Claim, Paper, PaperLab, PaperOutcome, Setup,
};
use crate::activation::Activation;
use crate::lab::mlp::{LabError, LabEvent, Variant, VariantOutcome};
use crate::lab::settings::Settings;
use crate::nn::init::Init;
use crate::nn::mlp::Mlp;
use crate::report::panels::{self, Panel, Series};
use crate::train::OptimizerKind;

pub const PAPER: Paper = Paper {
    name: "saxe2014",
    cite: "Saxe et al. 2014, Exact solutions to the nonlinear dynamics of learning in deep linear networks (with Pennington et al. 2017)",
    claim: "orthogonal init gives deep nets a Jacobian with singular values 1 and a learning time that does not grow with depth",
    own_data: None,
    run,
};

const WIDTH: usize = 64;

fn depths(lab: &PaperLab) -> Vec<usize> {
    if lab.quick {
        vec![4, 8, 16, 32]
    } else {
        vec![4, 8, 16, 32, 64]
    }
}

fn variant(lab: &PaperLab, depth: usize, act: Activation, init: Init) -> Variant {
    let mut model = net(depth, WIDTH, act, init, lab.seed);
    // σ_w = 1: the critical point of tanh with σ_b = 0 (orthogonal's own gain for tanh is 5/3)
    model.gain = if init == Init::Orthogonal {
        1.0 / act.gain()
    } else {
        1.0
    };
    let epochs = if lab.quick { 10 } else { 30 };
    let train = training(OptimizerKind::Sgd, 0.01, 32, epochs, lab.seed);
    let init_name = if init == Init::Orthogonal {
        "orthogonal"
    } else {
        "Gaussian"
    };
    Variant {
        name: format!("{act} {depth} {init_name}"),
        settings: Settings { model, train },
    }
}

/// The input–output Jacobian's singular values between the first hidden layer and the last,
/// at `samples` validation inputs (pooled): ∏ W_l·diag φ'(s_l) over the square hidden layers.
fn jacobian_spectrum(model: &Mlp, act: Activation, inputs: &[Vec<f32>]) -> Vec<f64> {
    let weights: Vec<(Vec<f32>, Vec<f32>, usize, usize)> = model
        .layers
        .iter()
        .map(|b| {
            let w = &b.linear.weight.val();
            let [fan_in, fan_out] = w.dims();
            let values = w.to_data().try_to_vec::<f32>().unwrap_or_default();
            let bias = b
                .linear
                .bias
                .as_ref()
                .map(|p| p.val().to_data().try_to_vec::<f32>().unwrap_or_default())
                .unwrap_or_else(|| vec![0.0; fan_out]);
            (values, bias, fan_in, fan_out)
        })
        .collect();
    let mut out = Vec::new();
    for x in inputs {
        let mut h: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut jac = DMatrix::<f64>::identity(WIDTH, WIDTH);
        for (l, (w, b, fan_in, fan_out)) in weights.iter().enumerate() {
            let wm = DMatrix::from_row_slice(
                *fan_in,
                *fan_out,
                &w.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            );
            let s: Vec<f64> = (0..*fan_out)
                .map(|j| (0..*fan_in).map(|i| h[i] * wm[(i, j)]).sum::<f64>() + b[j] as f64)
                .collect();
            if l > 0 {
                // row convention: h_l = φ(h_{l−1} W_l + b_l), so ∂h_l/∂h_{l−1} = W_l diag φ'(s_l)
                let d = DMatrix::from_diagonal(&nalgebra::DVector::from_iterator(
                    *fan_out,
                    s.iter().map(|&z| act.derivative(z)),
                ));
                jac = jac * wm * d;
            }
            h = s.iter().map(|&z| act.value(z)).collect();
        }
        out.extend(jac.singular_values().iter().copied());
    }
    out
}

/// A run with its Jacobian spectrum at init.
struct Measured {
    run: VariantOutcome,
    spectrum: Vec<f64>,
}

impl Measured {
    fn depth(&self) -> usize {
        self.run.settings.model.depth
    }
    fn act(&self) -> Activation {
        self.run.settings.model.act
    }
    fn orthogonal(&self) -> bool {
        self.run.settings.model.init == Init::Orthogonal
    }
    /// How many decades the middle 90% of the singular values span: log10(95th ÷ 5th
    /// percentile); 0 is an isometry.
    fn decades(&self) -> f64 {
        (percentile(&self.spectrum, 95.0) / percentile(&self.spectrum, 5.0)).log10()
    }
    /// Steps until the mean loss of 10 steps falls below `level` (None: never).
    fn learning_time(&self, level: f64) -> Option<usize> {
        steps_to(&self.run.history, level)
    }
}

/// Whether a spread of `d` decades is past what double precision resolves (or not finite).
fn beyond_precision(d: f64) -> bool {
    !d.is_finite() || d > 15.0
}

/// Decades as text: beyond 15 the smallest singular values are below double precision's
/// resolution of the largest, and the count is a lower bound.
fn show_decades(d: f64) -> String {
    if !beyond_precision(d) {
        format!("{d:.2}")
    } else {
        "> 15 (below double precision)".into()
    }
}

/// The loss level that defines learning time: half of chance, ½·ln C.
fn level(classes: usize) -> f64 {
    0.5 * (classes as f64).ln()
}

fn run(lab: &PaperLab, on: &mut dyn FnMut(LabEvent)) -> Result<PaperOutcome, LabError> {
    let setup = Setup::new(lab, PAPER.name)?;
    let probe = probe_every(10);
    let bench = setup.bench(&probe);
    let inputs: Vec<Vec<f32>> = (0..8)
        .map(|i| {
            let f = setup.val.features;
            setup.val.x[i * f..(i + 1) * f].to_vec()
        })
        .collect();
    let mut all = Vec::new();
    for act in [Activation::Linear, Activation::Tanh] {
        for init in [Init::Lecun, Init::Orthogonal] {
            for d in depths(lab) {
                all.push(variant(lab, d, act, init));
            }
        }
    }
    let mut out = Vec::new();
    for (i, v) in all.iter().enumerate() {
        let act = v.settings.model.act;
        let mut spectrum = Vec::new();
        let run = bench.train(v, (i, all.len()), on, &mut |e, m| {
            if e == 0 {
                spectrum = jacobian_spectrum(m, act, &inputs);
            }
        })?;
        out.push(Measured { run, spectrum });
    }
    let lvl = level(setup.all.classes);
    let claims = claims(&out, lvl);
    figure(&out, lvl, &setup.dir.join("isometry.png"))?;
    let intro = format!(
        "Deep linear and tanh networks of {:?} linear layers, {WIDTH} units wide, weights Gaussian N(0, 1/fan_in) or orthogonal, both at σ_w = 1 (tanh's critical point with σ_b = 0) and zero biases; plain SGD at lr {}, batch {}, {} epochs on {}. The Jacobian is ∂h_L/∂h_1 across the square hidden layers at init, at 8 validation inputs (singular values pooled). Learning time: steps until the training loss (mean of 10 steps) falls below ½·ln C = {lvl:.3}. Saxe et al. trained deep linear nets on MNIST and synthetic data; Pennington et al. tanh nets of depth 200 on CIFAR-10.",
        depths(lab),
        all[0].settings.train.lr,
        all[0].settings.train.batch,
        all[0].settings.train.epochs,
        setup.data_text()
    );
    let runs = out.into_iter().map(|m| m.run.into()).collect();
    setup.finish(
        &PAPER,
        &intro,
        claims,
        runs,
        &[(
            "isometry.png",
            "Jacobian singular values at init by depth, and learning time by depth",
        )],
    )
}

fn of(out: &[Measured], act: Activation, orthogonal: bool) -> Vec<&Measured> {
    out.iter()
        .filter(|m| m.act() == act && m.orthogonal() == orthogonal)
        .collect()
}

fn claims(out: &[Measured], lvl: f64) -> Vec<Claim> {
    let lin_o = of(out, Activation::Linear, true);
    let lin_g = of(out, Activation::Linear, false);
    let tanh_o = of(out, Activation::Tanh, true);
    let tanh_g = of(out, Activation::Tanh, false);
    let (Some(lo), Some(lg), Some(to), Some(tg)) =
        (lin_o.last(), lin_g.last(), tanh_o.last(), tanh_g.last())
    else {
        return Vec::new();
    };
    let deepest = lo.depth();
    let spreads = |v: &[&Measured]| {
        v.iter()
            .map(|m| format!("{} {}", m.depth(), show_decades(m.decades())))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let times = |v: &[&Measured]| {
        v.iter()
            .map(|m| {
                let t = m.learning_time(lvl);
                format!(
                    "{} {}",
                    m.depth(),
                    t.map_or("never".into(), |t| t.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (s_lo, s_hi) = (
        percentile(&lo.spectrum, 0.0),
        percentile(&lo.spectrum, 100.0),
    );
    // wider at every step in depth; once the spread is beyond double precision it can only be
    // bounded, not compared
    let gauss_rising = lin_g
        .windows(2)
        .all(|w| w[1].decades() > w[0].decades() || beyond_precision(w[0].decades()));
    let t = |m: &Measured| m.learning_time(lvl).map_or(f64::INFINITY, |t| t as f64);
    // not growing: the deepest within 2× of the shallowest
    let orth_flat = lin_o.first().is_some_and(|f| t(lo) <= 2.0 * t(f)) && t(lo).is_finite();
    let gauss_grows = lin_g.first().is_some_and(|f| t(lg) > 2.0 * t(f));
    vec![
        Claim {
            claim: format!("deep linear, orthogonal: every Jacobian singular value is 1, at {deepest} layers too"),
            paper: "orthogonal weights make a deep linear map an isometry at any depth (Saxe et al.; Pennington et al.)".into(),
            ours: format!("singular values from {s_lo:.4} to {s_hi:.4}"),
            agree: (s_lo - 1.0).abs() < 1e-3 && (s_hi - 1.0).abs() < 1e-3,
        },
        Claim {
            claim: "deep linear, Gaussian: the spectrum spreads wider with depth".into(),
            paper: "scaled Gaussian weights keep the mean squared singular value at 1 but spread the spectrum with depth (Saxe et al.)".into(),
            ours: format!("decades spanned by the middle 90% of singular values, by depth: {}", spreads(&lin_g)),
            agree: gauss_rising && lin_g.len() >= 2,
        },
        Claim {
            claim: format!("tanh at σ_w = 1: orthogonal stays near isometry, Gaussian does not ({deepest} layers)"),
            paper: "dynamical isometry is reachable with tanh and orthogonal weights, not with Gaussian ones (Pennington et al.)".into(),
            ours: format!(
                "decades spanned by the middle 90%: orthogonal {}, Gaussian {}",
                show_decades(to.decades()),
                show_decades(tg.decades())
            ),
            // near isometry: within one decade, and a third of Gaussian's span or less
            agree: to.decades() <= 1.0 && tg.decades() >= 3.0 * to.decades(),
        },
        Claim {
            claim: "deep linear, orthogonal: learning time does not grow with depth".into(),
            paper: "with orthogonal initial conditions a deep linear net's learning time is independent of depth (Saxe et al.)".into(),
            ours: format!("steps to loss < ½·ln C by depth: {}", times(&lin_o)),
            agree: orth_flat,
        },
        Claim {
            claim: "deep linear, Gaussian: learning time grows with depth".into(),
            paper: "with scaled random Gaussian initial conditions learning slows as depth grows (Saxe et al.)".into(),
            ours: format!("steps to loss < ½·ln C by depth: {} (orthogonal at {deepest}: {})", times(&lin_g), lo.learning_time(lvl).map_or("never".into(), |t| t.to_string())),
            // the deepest more than twice the shallowest
            agree: gauss_grows,
        },
    ]
}

fn figure(out: &[Measured], lvl: f64, path: &std::path::Path) -> Result<(), LabError> {
    let name = |m: &Measured| {
        format!(
            "{} {}",
            m.act(),
            if m.orthogonal() {
                "orthogonal"
            } else {
                "Gaussian"
            }
        )
    };
    let mut groups: Vec<(String, Vec<&Measured>)> = Vec::new();
    for m in out {
        match groups.iter_mut().find(|(n, _)| *n == name(m)) {
            Some((_, v)) => v.push(m),
            None => groups.push((name(m), vec![m])),
        }
    }
    let spectra = groups
        .iter()
        .map(|(n, v)| Series {
            name: n.clone(),
            points: v
                .iter()
                .map(|m| (m.depth() as f64, percentile(&m.spectrum, 50.0)))
                .collect(),
            band: v
                .iter()
                .map(|m| {
                    (
                        m.depth() as f64,
                        percentile(&m.spectrum, 5.0),
                        percentile(&m.spectrum, 95.0),
                    )
                })
                .collect(),
            dashed: false,
        })
        .collect();
    let times = groups
        .iter()
        .map(|(n, v)| Series {
            name: n.clone(),
            points: v
                .iter()
                .filter_map(|m| Some((m.depth() as f64, m.learning_time(lvl)? as f64)))
                .collect(),
            ..Series::default()
        })
        .collect();
    let panels_v = [
        Panel {
            caption: "Jacobian singular values at init (5/50/95th pct)".into(),
            x_desc: "layers".into(),
            y_desc: "singular value".into(),
            series: spectra,
            log_y: true,
            log_x: true,
        },
        Panel {
            caption: "learning time (steps to loss < ½·ln C)".into(),
            x_desc: "layers".into(),
            y_desc: "steps".into(),
            series: times,
            log_y: true,
            log_x: true,
        },
    ];
    panels::grid(
        path,
        "Saxe et al. 2014, Pennington et al. 2017 — orthogonal vs Gaussian init",
        &panels_v,
        2,
        (720, 440),
    )?;
    Ok(())
}
