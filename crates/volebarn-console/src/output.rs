//! What commands print: human text on stdout, or one JSON document with `--json`; notes and
//! progress bars on stderr, and progress bars only when stderr is a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::io::IsTerminal;

#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
}

impl Output {
    /// Prints `value` as JSON with `--json`, else the human text (skipped when empty).
    pub fn emit<T: Serialize + ?Sized>(&self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("volebarn: cannot print JSON: {e}"),
            }
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{}", text.trim_end_matches('\n'));
            }
        }
    }

    /// A note for a person (stderr); silent with `--json` or `-q`.
    pub fn note(&self, msg: impl AsRef<str>) {
        if !self.json && !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// A transfer progress bar (bytes, files, rate, ETA); hidden unless stderr is a terminal
    /// and the output is for a person.
    pub fn progress(&self, total_bytes: u64, total_files: u64) -> Progress {
        let visible = !self.json && !self.quiet && std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(
            Some(total_bytes),
            if visible {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {msg} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let p = Progress {
            bar,
            files_total: total_files,
            files_done: std::sync::atomic::AtomicU64::new(0),
        };
        p.show_files();
        p
    }
}

/// Bytes and files done out of a known total.
pub struct Progress {
    bar: ProgressBar,
    files_total: u64,
    files_done: std::sync::atomic::AtomicU64,
}

impl Progress {
    pub fn add_bytes(&self, n: u64) {
        self.bar.inc(n);
    }

    pub fn file_done(&self) {
        self.files_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.show_files();
    }

    fn show_files(&self) {
        let done = self.files_done.load(std::sync::atomic::Ordering::Relaxed);
        self.bar.set_message(format!("{done}/{} files", self.files_total));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    /// A bar dropped mid-way (an error, a finished sync pass) leaves no half-drawn line.
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl volebarn_client::TransferObserver for Progress {
    fn bytes(&self, n: u64) {
        self.add_bytes(n);
    }

    fn file_done(&self, _path: &str) {
        self.file_done();
    }
}
