//! `gradscope train device=0,1`: the processes of data-parallel training. The process the user
//! started is rank 0; it starts one more `gradscope train` with the same words per further
//! device, told its rank through `GRADSCOPE_REPLICA`, and they train together over loopback.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use gradscope::detect::args::DetectArgs;
use gradscope::detect::train::{TrainEvent, Trainer};
use gradscope::train::replicas::{Group, ENV};

/// The other replicas' processes; killed if rank 0 leaves early.
pub struct Replicas {
    children: Vec<(usize, Child)>,
}

impl Replicas {
    /// Waits for every replica to finish; one that failed is an error with what it said.
    pub fn finish(mut self) -> Result<()> {
        for (rank, child) in &mut self.children {
            let status = child.wait().context("waiting for a replica")?;
            if !status.success() {
                anyhow::bail!("replica {rank} failed: {}", said(child));
            }
        }
        self.children.clear();
        Ok(())
    }
}

impl Replicas {
    /// What the replicas that failed said (after rank 0 lost one), waiting a moment for them to
    /// end.
    pub fn failures(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (rank, child) in &mut self.children {
            for _ in 0..40 {
                match child.try_wait() {
                    Ok(Some(status)) if !status.success() => {
                        out.push(format!("replica {rank} failed ({status}): {}", said(child)));
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                    _ => break,
                }
            }
        }
        out
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for (rank, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
            let scratch = gradscope::detect::parallel::scratch(child.id(), *rank);
            let _ = std::fs::remove_dir_all(scratch);
        }
    }
}

/// What a replica wrote to its standard error (its last line, the reason it stopped).
fn said(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(e) = child.stderr.as_mut() {
        let _ = e.read_to_string(&mut text);
    }
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .to_string()
}

/// Rank 0: starts ranks 1 … world−1 with the same `words`, waits until they have joined, and
/// makes its trainer.
pub fn start<'o>(
    a: &DetectArgs,
    words: &[&str],
    on: &'o mut dyn FnMut(TrainEvent),
) -> Result<(Trainer<'o>, Replicas)> {
    gradscope::detect::parallel::check(a)?;
    let world = a.device.count();
    let listener =
        TcpListener::bind("127.0.0.1:0").context("opening a loopback port for the replicas")?;
    let address = listener.local_addr()?.to_string();
    let exe = std::env::current_exe().context("finding this program to start the replicas")?;
    let mut replicas = Replicas {
        children: Vec::new(),
    };
    for rank in 1..world {
        let child = Command::new(&exe)
            .arg("train")
            .args(words)
            .env(ENV, Group::env_value(rank, world, &address))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting replica {rank} ({})", exe.display()))?;
        replicas.children.push((rank, child));
    }
    let mut alive = || {
        for (rank, child) in &mut replicas.children {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("replica {rank} exited ({status}): {}", said(child)));
            }
        }
        Ok(())
    };
    let group = Group::host(&listener, world, Duration::from_secs(120), &mut alive)?;
    on(TrainEvent::Info(format!(
        "data-parallel: {world} replicas (device={}), {} images each per iteration; rank 0 validates and writes the run",
        a.device.show(),
        a.batch / world
    )));
    Ok((Trainer::replica(a, group, on)?, replicas))
}

/// A replica of rank > 0 (its rank in `GRADSCOPE_REPLICA`): trains silently beside rank 0 and
/// leaves nothing behind.
pub fn run_replica(a: &DetectArgs, group: Group) -> Result<()> {
    let scratch = gradscope::detect::parallel::scratch(std::process::id(), group.rank());
    let mut quiet = |_: TrainEvent| {};
    let result = Trainer::replica(a, group, &mut quiet).and_then(Trainer::run);
    let _ = std::fs::remove_dir_all(&scratch);
    result?;
    Ok(())
}
