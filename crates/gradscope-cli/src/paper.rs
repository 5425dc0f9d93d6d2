//! `gradscope lab <paper>`: runs a paper lab and prints its claims beside our measurements.

use anyhow::{anyhow, bail, Result};
use gradscope::lab::papers::{self, claims_text, Paper, PaperLab, KEYS};

use crate::{progress_bars, split_kv, RunFailed};

pub(crate) fn lab_paper(paper: &Paper, args: &[&str]) -> Result<()> {
    let mut lab = PaperLab::default();
    for arg in args {
        let (k, v) = split_kv(arg)?;
        if let (Some(own), true) = (paper.own_data, papers::is_data_key(k)) {
            bail!(
                "'{arg}': `gradscope lab {}` trains on {own}; {k}= does not apply",
                paper.name
            );
        }
        if !lab.set(k, v).map_err(|e| anyhow!(e))? {
            let keys: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
            bail!(
                "unknown key '{k}' in '{arg}'; `gradscope lab {}` accepts: {}",
                paper.name,
                keys.join(", ")
            );
        }
    }
    println!("{} — {}", paper.name, paper.cite);
    let out = (paper.run)(&lab, &mut progress_bars())?;
    println!("\n{}", claims_text(&out.claims));
    for v in &out.runs {
        if let Some(reason) = &v.history.stopped {
            println!("{}: stopped: {reason}", v.name);
        }
    }
    println!("report: {}", out.report.display());
    println!(
        "per-run probe records: {}/<variant>/probe.jsonl (gradscope diagnose <folder>)",
        out.dir.display()
    );
    let (agreed, all) = (out.agreed(), out.claims.len());
    if all == 0 {
        return Err(RunFailed(format!("{}: no claim could be measured", paper.name)).into());
    }
    println!(
        "{}: our measurements agree with {agreed} of the paper's {all} claims on {} (where and why they differ: docs/labs/{}.md)",
        paper.name, out.data, paper.name
    );
    Ok(())
}
