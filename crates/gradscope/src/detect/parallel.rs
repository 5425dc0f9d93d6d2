//! What data-parallel training (`device=0,1`, `device=cpu,cpu`) changes in the detection
//! trainer: each replica takes its share of every batch, the shares' gradients and loss items
//! are summed over the replicas ([`crate::train::replicas`]), and rank 0 alone validates,
//! writes the run folder and probes.
//!
//! A global batch `batch` over `world` replicas is `world` shares of `batch / world` images, the
//! very batches a one-device run with `batch / world` images per iteration would make, in the
//! same order and with the same augmentation. Summing their gradients is what that run's
//! accumulation does, so `device=cpu,cpu batch=16` trains the same parameters as `device=cpu
//! batch=8` with the same `nbs` (when the warmup, which counts iterations, is off and the
//! data fills the last batch). BatchNorm normalises each share by its own statistics, as
//! PyTorch's DDP does without SyncBatchNorm; the running statistics the EMA and validation
//! use are rank 0's.

use std::path::PathBuf;

use burn::optim::GradientsParams;
use burn::tensor::Device;

use crate::detect::args::DetectArgs;
use crate::detect::error::DetectError;
use crate::detect::input::dataset::epoch_order;
use crate::detect::objective::loss::LossItems;
use crate::train::replicas::Group;
use crate::yolo::model::Yolo;

/// Whether `args` can train on its several devices: the batch splits evenly, no resume (yet).
/// Checked before any replica starts.
pub fn check(args: &DetectArgs) -> Result<(), DetectError> {
    let world = args.device.count();
    if !args.batch.is_multiple_of(world) {
        return Err(DetectError::Args(format!(
            "batch={} does not split over {world} devices: use a multiple of {world}, e.g. batch={}",
            args.batch,
            args.batch.div_ceil(world) * world
        )));
    }
    if args.resume.is_some() {
        return Err(DetectError::Args(format!(
            "resume with several devices is not built yet: resume on one (device={}); the saved state is the same",
            args.device.part(0).show()
        )));
    }
    Ok(())
}

/// The replica's own settings: checked, and for ranks > 0 a scratch run folder of their own, no
/// probe, no plots, no validation (rank 0 does those).
pub(crate) fn replica_args(args: &DetectArgs, group: &Group) -> Result<DetectArgs, DetectError> {
    check(args)?;
    if args.device.count() != group.world() {
        return Err(DetectError::Args(format!(
            "device={} names {} devices but {} replicas run",
            args.device.show(),
            args.device.count(),
            group.world()
        )));
    }
    let mut a = args.clone();
    if group.rank() > 0 {
        a.project = scratch(std::process::id(), group.rank())
            .display()
            .to_string();
        a.name = "replica".into();
        a.exist_ok = true;
        a.probe = false;
        a.plots = false;
        a.val = false;
    }
    Ok(a)
}

/// Where replica `rank` > 0, process `pid`, keeps the run folder it must have and nobody reads
/// (removed when it ends, or by rank 0 when it dies).
pub fn scratch(pid: u32, rank: usize) -> PathBuf {
    std::env::temp_dir().join(format!("gradscope-replica-{pid}-{rank}"))
}

/// This replica's shares of one epoch's batches: (the share's place among the epoch's
/// `batch / world`-image batches, its images); empty where the data ran out.
pub(crate) fn shares(
    n: usize,
    batch: usize,
    group: Option<&Group>,
    seed: u64,
    epoch: usize,
) -> Vec<(usize, Vec<usize>)> {
    let (rank, world) = group.map_or((0, 1), |g| (g.rank(), g.world()));
    let order = epoch_order(n, batch / world, seed, epoch);
    let nb = n.div_ceil(batch.max(1));
    (0..nb)
        .map(|i| {
            let j = i * world + rank;
            (j, order.get(j).cloned().unwrap_or_default())
        })
        .collect()
}

/// One iteration over every replica: the mean loss of the replicas that had images (NaN when
/// any was not finite), the loss items summed, how many shares they came from, and the
/// instances.
pub(crate) struct Summed {
    pub loss: f64,
    pub items: LossItems,
    pub shares: usize,
    pub instances: usize,
    pub grads: GradientsParams,
}

/// Sums one iteration's gradients and loss items over the replicas.
pub(crate) fn sum(
    group: &mut Group,
    model: &Yolo,
    grads: GradientsParams,
    loss: Option<(f64, LossItems)>,
    instances: usize,
    device: &Device,
) -> Result<Summed, DetectError> {
    let (l, it) = loss.unwrap_or_default();
    let mut v = vec![
        if l.is_finite() { l } else { 0.0 },
        it.box_,
        it.cls,
        it.l1,
        it.assigned[0],
        it.assigned[1],
        it.assigned[2],
        loss.is_some() as u8 as f64,
        (loss.is_some() && !l.is_finite()) as u8 as f64,
        instances as f64,
    ];
    group.sum_f64(&mut v)?;
    let grads = group.sum_gradients(model, grads, device)?;
    let shares = v[7] as usize;
    Ok(Summed {
        loss: if v[8] > 0.0 {
            f64::NAN
        } else {
            v[0] / shares.max(1) as f64
        },
        items: LossItems {
            box_: v[1],
            cls: v[2],
            l1: v[3],
            assigned: [v[4], v[5], v[6]],
        },
        shares,
        instances: v[9] as usize,
        grads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two replicas' shares, side by side, are the one-device batches of half the size.
    #[test]
    fn shares_are_the_half_size_batches() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || Group::join(&address, 1, 2).unwrap());
        let host = Group::host(
            &listener,
            2,
            std::time::Duration::from_secs(20),
            &mut || Ok(()),
        )
        .unwrap();
        let other = t.join().unwrap();
        let one = shares(10, 2, None, 3, 1);
        let r0 = shares(10, 4, Some(&host), 3, 1);
        let r1 = shares(10, 4, Some(&other), 3, 1);
        assert_eq!(one.len(), 5);
        assert_eq!((r0.len(), r1.len()), (3, 3));
        assert_eq!(r0, vec![one[0].clone(), one[2].clone(), one[4].clone()]);
        assert_eq!(r1[..2], [one[1].clone(), one[3].clone()]);
        assert_eq!(r1[2], (5, vec![]), "the data ran out for rank 1");
    }
}
