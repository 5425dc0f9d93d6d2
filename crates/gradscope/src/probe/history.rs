//! What the probe remembers of a run: every record while there are few, then an evenly thinned
//! sample, so that memory stays bounded however long the run (a YOLO26n record holds 110–140 KB
//! in memory; a COCO-length run probes millions of steps). `probe.jsonl` keeps every record; the history is
//! what the diagnosis and the plots read.
//!
//! The rule: the records whose ordinal (0 for the first record pushed, 1 for the next, …) is a
//! multiple of the stride are kept, the stride starting at 1 and doubling whenever more than
//! `cap` records are held; the newest record and the first non-finite one are always kept as
//! well. So the first record (the run at init) is always there, the kept records are spread
//! evenly over the run (every window of it, the diagnosis's end window too, is sampled in
//! proportion), and a run with at most `cap` probed steps keeps all of them. The sample is a
//! function of the sequence of records alone: a resumed run, which pushes the records of its
//! `probe.jsonl` first, holds the same history as the run that never stopped.

use super::record::StepRecord;

/// A bounded, evenly thinned history of probe records (in push order).
#[derive(Clone, Debug)]
pub struct History {
    cap: usize,
    stride: usize,
    seen: usize,
    /// The ordinal of the first non-finite record, kept whatever the stride.
    pinned: Option<usize>,
    records: Vec<StepRecord>,
    ordinals: Vec<usize>,
}

impl Default for History {
    fn default() -> Self {
        History::new(History::DEFAULT_CAP)
    }
}

impl History {
    /// Records held at most (besides the newest and the first non-finite one) by default: enough
    /// for every plot's resolution and for medians over a tenth of the run.
    pub const DEFAULT_CAP: usize = 512;

    /// An empty history holding at most `cap` evenly spaced records (at least 8) besides the
    /// newest and the first non-finite one.
    pub fn new(cap: usize) -> Self {
        History {
            cap: cap.max(8),
            stride: 1,
            seen: 0,
            pinned: None,
            records: Vec::new(),
            ordinals: Vec::new(),
        }
    }

    /// Adds the next record (records come in step order).
    pub fn push(&mut self, record: StepRecord) {
        let ordinal = self.seen;
        self.seen += 1;
        if self.pinned.is_none() && record.nonfinite.is_some() {
            self.pinned = Some(ordinal);
        }
        // the previous newest stays only if the rule keeps it on its own
        if let Some(&last) = self.ordinals.last() {
            if !self.on_grid(last) {
                self.records.pop();
                self.ordinals.pop();
            }
        }
        self.records.push(record);
        self.ordinals.push(ordinal);
        // the grid's records plus at most the newest and the pinned one: the grid bounds them all
        while self.grid_len() > self.cap {
            self.stride *= 2;
            let newest = ordinal;
            let keep: Vec<bool> = self
                .ordinals
                .iter()
                .map(|&o| o == newest || self.on_grid(o))
                .collect();
            let mut k = keep.iter();
            self.records.retain(|_| *k.next().unwrap_or(&true));
            let mut k = keep.iter();
            self.ordinals.retain(|_| *k.next().unwrap_or(&true));
        }
    }

    /// Whether a record of this ordinal is kept once it is not the newest.
    fn on_grid(&self, ordinal: usize) -> bool {
        ordinal.is_multiple_of(self.stride) || self.pinned == Some(ordinal)
    }

    fn grid_len(&self) -> usize {
        self.ordinals
            .iter()
            .filter(|&&o| o.is_multiple_of(self.stride))
            .count()
    }

    /// The kept records, in step order.
    pub fn records(&self) -> &[StepRecord] {
        &self.records
    }

    /// The kept records.
    pub fn into_records(self) -> Vec<StepRecord> {
        self.records
    }

    /// How many records were pushed (kept or not).
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// The newest record.
    pub fn last(&self) -> Option<&StepRecord> {
        self.records.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{NonFinite, Phase};

    fn record(step: usize) -> StepRecord {
        StepRecord {
            step,
            epoch: 0,
            loss: step as f64,
            lr: 0.01,
            grad_norm: 1.0,
            layers: Vec::new(),
            other_params: Vec::new(),
            nonfinite: None,
        }
    }

    fn steps(h: &History) -> Vec<usize> {
        h.records().iter().map(|r| r.step).collect()
    }

    #[test]
    fn a_short_run_keeps_every_record() {
        let mut h = History::new(16);
        for s in 0..16 {
            h.push(record(s * 3));
        }
        assert_eq!(steps(&h), (0..16).map(|s| s * 3).collect::<Vec<_>>());
        assert_eq!(h.seen(), 16);
    }

    #[test]
    fn a_long_run_keeps_an_even_sample_with_the_first_and_the_newest() {
        let cap = 64;
        let mut h = History::new(cap);
        for n in 1..=100_000usize {
            h.push(record(n - 1));
            let s = steps(&h);
            assert!(s.len() <= cap + 2, "{n} pushed, {} kept", s.len());
            assert_eq!(s[0], 0);
            assert_eq!(*s.last().unwrap(), n - 1);
            assert!(s.windows(2).all(|w| w[0] < w[1]), "in order");
        }
        let s = steps(&h);
        // 100 000 records through a cap of 64: a stride of 2048, every kept gap equal but the
        // newest's
        let gaps: Vec<usize> = s.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(s.len() > cap / 2, "{} kept", s.len());
        assert!(
            gaps[..gaps.len() - 1].iter().all(|&g| g == gaps[0]),
            "{gaps:?}"
        );
        assert!(*gaps.last().unwrap() <= gaps[0]);
        // the last tenth of the run holds about a tenth of the sample
        let tail = s.iter().filter(|&&x| x >= 90_000).count();
        assert!(
            (s.len() / 10 - 1..=s.len() / 10 + 2).contains(&tail),
            "{tail} of {}",
            s.len()
        );
        assert_eq!(h.seen(), 100_000);
    }

    #[test]
    fn the_first_non_finite_record_is_never_thinned_away() {
        let mut h = History::new(16);
        for s in 0..5_000 {
            let mut r = record(s);
            if s >= 1_001 {
                r.nonfinite = Some(NonFinite {
                    phase: Phase::Forward,
                    layer: format!("l{s}"),
                    step: s,
                });
            }
            h.push(r);
        }
        let firsts: Vec<&str> = h
            .records()
            .iter()
            .filter_map(|r| r.nonfinite.as_ref().map(|n| n.layer.as_str()))
            .collect();
        assert_eq!(firsts.first(), Some(&"l1001"), "{firsts:?}");
        assert!(h.records().len() <= 18);
    }
}
