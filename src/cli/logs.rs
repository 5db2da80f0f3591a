//! Where log lines go: standard error, printed above the progress bars while `apply` shows them (so a log
//! line never breaks a bar), as indicatif's `suspend` does it.

use std::sync::{Mutex, PoisonError};

/// The bars on screen now, if any.
static BARS: Mutex<Option<indicatif::MultiProgress>> = Mutex::new(None);

/// Registers the bars log lines must be printed above (`None` when they are gone).
pub(super) fn set_bars(bars: Option<indicatif::MultiProgress>) {
    *BARS.lock().unwrap_or_else(PoisonError::into_inner) = bars;
}

/// A `tracing_subscriber` writer for standard error that steps around progress bars.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bars = BARS.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match bars {
            Some(bars) => bars.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}
