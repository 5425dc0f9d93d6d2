//! The epoch's files written behind the training. Making a checkpoint's bytes and syncing them
//! to disk is most of what writing it costs (≈35 ms and ≈0.1 s for a YOLO26n resume state on our
//! machines, against ≈20 ms to copy its tensors out of the model), and the job thread need not
//! wait for it: [`Behind`] runs the writes it is handed on a thread of its own, one after another
//! in the order handed, so the files reach the disk in the order a serial trainer writes them
//! (weights, the results.csv row, then the resume state, the epoch's commit point) and each crash
//! point fires where it did. The trainer waits for them ([`Behind::wait`]) before it writes the
//! next epoch's files and before the run ends; a write that fails is returned there (the trainer
//! looks at [`Behind::failed`] every step), and the writes handed after it are not made.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::detect::error::DetectError;

/// One write: it owns what it writes.
type Job = Box<dyn FnOnce() -> Result<(), DetectError> + Send>;

enum Msg {
    Job(Job),
    /// Answered once every job handed before it has run, with the first error since the last
    /// answer.
    Barrier(Sender<Option<DetectError>>),
}

/// A writer thread for the epoch's files (see the module).
#[derive(Default)]
pub struct Behind {
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    /// The first error of a job run here (no writer thread) since the last wait.
    inline_error: Option<DetectError>,
    /// Set by the writer when a write fails, so that the trainer stops at its next step
    /// ([`Behind::failed`]) rather than after another epoch.
    failed: Arc<AtomicBool>,
}

impl Behind {
    /// Hands `job` to the writer; it runs after every job handed before it, unless one of those
    /// failed. Where no thread can be started, it runs here and now (and its error waits for
    /// [`Behind::wait`] all the same).
    pub fn write(&mut self, job: impl FnOnce() -> Result<(), DetectError> + Send + 'static) {
        let job: Job = Box::new(job);
        let job = match self.sender() {
            Some(tx) => match tx.send(Msg::Job(job)) {
                Ok(()) => return,
                // the thread is gone (a job panicked; `wait` says so): run it here
                Err(e) => match e.0 {
                    Msg::Job(job) => job,
                    Msg::Barrier(_) => return,
                },
            },
            None => job,
        };
        if self.inline_error.is_none() {
            self.inline_error = job().err();
        }
    }

    /// Whether a write has failed since the last [`Behind::wait`] (which returns its error): one
    /// atomic load, for every step.
    pub fn failed(&self) -> bool {
        self.inline_error.is_some() || self.failed.load(Ordering::Acquire)
    }

    /// Waits until every file handed so far is written; the first write that failed since the
    /// last wait, if any.
    pub fn wait(&mut self) -> Result<(), DetectError> {
        if let Some(e) = self.inline_error.take() {
            return Err(e);
        }
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        let (reply, answer) = channel();
        if tx.send(Msg::Barrier(reply)).is_err() {
            return Err(stopped());
        }
        // (a write may split its work over the pool this thread belongs to)
        let mut first: Option<DetectError> = None;
        crate::wait_helping(|| match answer.try_recv() {
            Ok(e) => {
                first = e;
                true
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => false,
            // the writer stopped without answering: a job panicked, its file maybe unwritten
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                first = Some(stopped());
                true
            }
        });
        // nothing is handed while this thread waits: the flag is the answer's
        self.failed.store(false, Ordering::Release);
        first.map_or(Ok(()), Err)
    }

    /// The channel to the writer thread, started on first use; None when it cannot be started.
    fn sender(&mut self) -> Option<&Sender<Msg>> {
        if self.tx.is_none() {
            let (tx, rx) = channel::<Msg>();
            let flag = Arc::clone(&self.failed);
            let thread = std::thread::Builder::new()
                .name("gradscope-writer".into())
                .spawn(move || {
                    let mut failed: Option<DetectError> = None;
                    for msg in rx {
                        match msg {
                            Msg::Job(job) if failed.is_none() => {
                                failed = job().err();
                                flag.store(failed.is_some(), Ordering::Release);
                            }
                            Msg::Job(_) => {}
                            Msg::Barrier(reply) => {
                                let _ = reply.send(failed.take());
                            }
                        }
                    }
                })
                .ok()?;
            (self.tx, self.thread) = (Some(tx), Some(thread));
        }
        self.tx.as_ref()
    }
}

/// The writer thread is gone: a job panicked, and the files after it may be unwritten.
fn stopped() -> DetectError {
    DetectError::Args(
        "the writer of the epoch's checkpoints stopped (see the panic above); the run resumes \
         from its last written epoch with resume=<run folder>"
            .into(),
    )
}

impl Drop for Behind {
    /// Finishes the files handed (a run that stops on an error still leaves its last epoch's
    /// files whole); their errors are lost with the run's own.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            crate::wait_helping(|| t.is_finished());
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn log_job(
        log: &Arc<Mutex<Vec<usize>>>,
        i: usize,
        fail: bool,
    ) -> impl FnOnce() -> Result<(), DetectError> + Send + 'static {
        let log = Arc::clone(log);
        move || {
            // slow enough that the writes are still going when the job thread moves on
            std::thread::sleep(std::time::Duration::from_millis(5));
            log.lock().unwrap().push(i);
            if fail {
                Err(DetectError::Args(format!("write {i} failed")))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn writes_run_in_order_and_a_failure_stops_the_rest_until_waited_for() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut w = Behind::default();
        for i in 0..4 {
            w.write(log_job(&log, i, false));
        }
        w.wait().unwrap();
        assert_eq!(*log.lock().unwrap(), [0, 1, 2, 3]);
        assert!(!w.failed());

        w.write(log_job(&log, 4, true));
        w.write(log_job(&log, 5, false));
        let err = w.wait().unwrap_err().to_string();
        assert!(err.contains("write 4 failed"), "{err}");
        // the write after the failed one was not made, and the error is reported once
        assert_eq!(log.lock().unwrap().last(), Some(&4));
        assert!(!w.failed());
        w.wait().unwrap();

        // the writer goes on after the error has been returned
        w.write(log_job(&log, 6, true));
        while !w.failed() {
            std::thread::yield_now();
        }
        assert!(w.wait().is_err());
        w.write(log_job(&log, 7, false));
        drop(w);
        // dropping the writer finishes what was handed
        assert_eq!(log.lock().unwrap().last(), Some(&7));
    }

    #[test]
    fn a_write_that_panics_is_an_error_not_a_silent_loss() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut w = Behind::default();
        w.write(|| panic!("a bug in a write"));
        w.write(log_job(&log, 1, false));
        let err = w.wait().unwrap_err().to_string();
        assert!(err.contains("stopped"), "{err}");
        // handed after the writer stopped: written here, on the caller's thread
        w.write(log_job(&log, 2, false));
        assert!(log.lock().unwrap().contains(&2));
    }
}
