//! Progress in input bytes: an indicatif bar (bytes, rate, ETA) on a terminal, plain lines every 5 % otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    total: u64,
    done: AtomicU64,
    last_pct: AtomicU64,
    last_print: Mutex<Option<Instant>>,
    start: Instant,
}

impl Progress {
    pub fn new(total: u64, enabled: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = (enabled && tty).then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        Progress {
            bar,
            plain: enabled && !tty,
            total,
            done: AtomicU64::new(0),
            last_pct: AtomicU64::new(0),
            last_print: Mutex::new(None),
            start: Instant::now(),
        }
    }

    pub fn add(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if let Some(b) = &self.bar {
            b.set_position(done);
        } else if self.plain && self.total > 0 {
            let pct = done * 100 / self.total;
            let step = pct / 5 * 5;
            // A line per 5 %, at most one every 2 s (always the last), so logs stay short.
            let mut last = self.last_print.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.map_or(true, |t| t.elapsed().as_secs_f64() >= 2.0) || done >= self.total;
            if step > self.last_pct.load(Ordering::Relaxed) && due {
                self.last_pct.store(step, Ordering::Relaxed);
                *last = Some(Instant::now());
                let secs = self.start.elapsed().as_secs_f64().max(1e-9);
                let rate = done as f64 / secs;
                let eta = (self.total - done.min(self.total)) as f64 / rate.max(1.0);
                eprintln!(
                    "progress: {step:3}% {:.2}/{:.2} GB, {:.1} MB/s, ETA {:.0} s",
                    done as f64 / 1e9,
                    self.total as f64 / 1e9,
                    rate / 1e6,
                    eta
                );
            }
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
