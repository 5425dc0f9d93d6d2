//! Localise a non-finite value: name the layer that *produced* it, not the ones downstream that
//! merely carried it on.
//!
//! Forward: layers run in order, so the producer is the first layer whose output holds a NaN/∞
//! (its input — the previous output, or the data — being finite). Backward: gradients run in
//! reverse order; layer k receives ∂L/∂h_k at its output and emits ∂L/∂h_{k−1} and ∂L/∂W_k. The
//! producer is the first layer, walking backwards, whose incoming ∂L/∂h_k is finite but whose
//! parameter gradients or outgoing ∂L/∂h_{k−1} are not.

use super::record::{GradStats, LayerRecord, NonFinite, Phase};

fn bad(g: &GradStats) -> bool {
    g.nan + g.inf > 0
}

pub fn find(
    step: usize,
    input_nonfinite: bool,
    loss: f64,
    layers: &[LayerRecord],
) -> Option<NonFinite> {
    let at = |phase, layer: &str| {
        Some(NonFinite {
            phase,
            layer: layer.to_string(),
            step,
        })
    };
    if input_nonfinite {
        return at(Phase::Input, "input");
    }
    if let Some(l) = layers.iter().find(|l| l.act.nan + l.act.inf > 0) {
        return at(Phase::Forward, &l.name);
    }
    if !loss.is_finite() {
        return at(Phase::Loss, "loss");
    }
    let last = layers.last()?;
    if bad(&last.grad_h) {
        return at(Phase::Loss, "loss");
    }
    for k in (0..layers.len()).rev() {
        let l = &layers[k];
        let outgoing_bad = k > 0 && bad(&layers[k - 1].grad_h);
        if !bad(&l.grad_h) && (l.has_nonfinite_params() || outgoing_bad) {
            return at(Phase::Backward, &l.name);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::record::{ActStats, ParamRecord};

    fn layer(name: &str, act_nan: usize, grad_nan: usize, param_nan: usize) -> LayerRecord {
        LayerRecord {
            name: name.into(),
            block: "dense".into(),
            act_fn: None,
            act: ActStats {
                nan: act_nan,
                ..Default::default()
            },
            grad_h: GradStats {
                nan: grad_nan,
                ..Default::default()
            },
            grad_w_norm: 0.0,
            w_norm: 1.0,
            update_ratio: 0.0,
            params: vec![ParamRecord {
                name: "weight".into(),
                shape: vec![1],
                grad_norm: 0.0,
                norm: 1.0,
                update_ratio: 0.0,
                grad_nan: param_nan,
                grad_inf: 0,
            }],
        }
    }

    #[test]
    fn forward_blames_the_first_non_finite_output() {
        let ls = [
            layer("a", 0, 1, 1),
            layer("b", 4, 1, 1),
            layer("c", 4, 1, 1),
        ];
        let nf = find(3, false, f64::NAN, &ls).unwrap();
        assert_eq!(
            (nf.phase, nf.layer.as_str(), nf.step),
            (Phase::Forward, "b", 3)
        );
    }

    #[test]
    fn backward_blames_the_layer_whose_output_gradient_was_finite() {
        // gradient non-finite below "c": a and b carry it, c made it
        let ls = [
            layer("a", 0, 1, 1),
            layer("b", 0, 1, 1),
            layer("c", 0, 0, 1),
            layer("d", 0, 0, 0),
        ];
        let nf = find(0, false, 1.0, &ls).unwrap();
        assert_eq!((nf.phase, nf.layer.as_str()), (Phase::Backward, "c"));
        assert!(find(0, false, 1.0, &[layer("a", 0, 0, 0)]).is_none());
    }

    #[test]
    fn input_and_loss() {
        let ls = [layer("a", 1, 0, 0)];
        assert_eq!(find(0, true, 1.0, &ls).unwrap().phase, Phase::Input);
        let ls = [layer("a", 0, 1, 1), layer("b", 0, 1, 1)];
        assert_eq!(find(0, false, 1.0, &ls).unwrap().phase, Phase::Loss);
    }
}
