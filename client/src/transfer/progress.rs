//! Progress of a transfer: a bar with rate and ETA when stderr is a terminal
//! (`indicatif`), otherwise a plain line every few seconds, for logs and scripts.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::proto::human_size;
use crate::engine::now;

/// How often the plain form prints.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// Where progress goes.
pub enum Progress {
    /// Nothing shown (tests, `--quiet`).
    Hidden,
    /// A bar on a terminal.
    Bar(ProgressBar),
    /// Plain lines.
    Plain(Mutex<Plain>),
}

/// The plain form's state.
pub struct Plain {
    name: String,
    size: u64,
    done: u64,
    /// Bytes done when this transfer of the file started (a resume's offset).
    start_done: u64,
    started: Instant,
    last_print: Instant,
}

impl Progress {
    /// A bar when stderr is a terminal, else plain lines; nothing with `quiet`.
    pub fn for_stderr(quiet: bool) -> Self {
        if quiet {
            Self::Hidden
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            Self::Bar(bar)
        } else {
            let t = now();
            Self::Plain(Mutex::new(Plain {
                name: String::new(),
                size: 0,
                done: 0,
                start_done: 0,
                started: t,
                last_print: t,
            }))
        }
    }

    /// A file starts, `offset` of its `size` bytes already there.
    pub fn start_file(&self, name: &str, size: u64, offset: u64) {
        match self {
            Self::Hidden => {}
            Self::Bar(bar) => {
                bar.reset();
                bar.set_length(size);
                bar.set_position(offset);
                bar.set_message(name.to_owned());
            }
            Self::Plain(plain) => {
                let mut p = plain.lock().unwrap_or_else(|e| e.into_inner());
                let t = now();
                *p = Plain {
                    name: name.to_owned(),
                    size,
                    done: offset,
                    start_done: offset,
                    started: t,
                    last_print: t,
                };
                if offset > 0 {
                    eprintln!(
                        "{name}: resuming at {} of {}",
                        human_size(offset),
                        human_size(size)
                    );
                }
            }
        }
    }

    /// `n` more bytes went out or came in.
    pub fn advance(&self, n: u64) {
        match self {
            Self::Hidden => {}
            Self::Bar(bar) => bar.inc(n),
            Self::Plain(plain) => {
                let mut p = plain.lock().unwrap_or_else(|e| e.into_inner());
                p.done += n;
                let t = now();
                if t.duration_since(p.last_print) >= PLAIN_EVERY {
                    p.last_print = t;
                    eprintln!("{}", p.line(t));
                }
            }
        }
    }

    /// The current file is done.
    pub fn finish_file(&self) {
        match self {
            Self::Hidden => {}
            Self::Bar(bar) => bar.finish(),
            Self::Plain(plain) => {
                let p = plain.lock().unwrap_or_else(|e| e.into_inner());
                eprintln!("{}", p.line(now()));
            }
        }
    }
}

impl Plain {
    /// `name: 12.0 MB of 50.0 MB (24 %), 2.4 MB/s, ETA 16 s`.
    fn line(&self, t: Instant) -> String {
        let secs = t.duration_since(self.started).as_secs_f64().max(1e-3);
        let rate = (self.done - self.start_done) as f64 / secs;
        let percent = (self.done * 100).checked_div(self.size).unwrap_or(100);
        let eta = if rate > 0.0 {
            format!(
                "{:.0} s",
                (self.size - self.done.min(self.size)) as f64 / rate
            )
        } else {
            "?".to_owned()
        };
        format!(
            "{}: {} of {} ({percent} %), {}/s, ETA {eta}",
            self.name,
            human_size(self.done),
            human_size(self.size),
            human_size(rate as u64)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_line_says_rate_and_eta() {
        let t = now();
        let plain = Plain {
            name: "big.bin".into(),
            size: 50_000_000,
            done: 12_000_000,
            start_done: 2_000_000,
            started: t,
            last_print: t,
        };
        assert_eq!(
            plain.line(t + Duration::from_secs(5)),
            "big.bin: 12.0 MB of 50.0 MB (24 %), 2.0 MB/s, ETA 19 s"
        );
    }
}
