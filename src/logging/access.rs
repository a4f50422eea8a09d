//! The access log: one line per HTTP request, at the target [`ACCESS_TARGET`], with
//! at most [`ACCESS_LINES_PER_SECOND`] lines a second for the whole process (the rest
//! are counted and reported), and every line made printable so that a request cannot
//! forge a second line.

use std::borrow::Cow;
use std::fmt;
use std::mem;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Target of the access lines, so an operator can silence them on their own with
/// `RUST_LOG=info,threadcast::access=off`.
pub const ACCESS_TARGET: &str = "threadcast::access";

/// Access lines written per second at most, for the whole process. A person reads far
/// fewer, and a page load is only a handful of requests, so normal traffic fits; a
/// flood costs at most 20 short lines a second (about 200 MB a day). It also stays far
/// under journald's default rate limit (10 000 lines in 30 s), which once reached
/// drops *every* line of the service, the errors that matter included.
pub const ACCESS_LINES_PER_SECOND: u32 = 20;

/// The window [`ACCESS_LINES_PER_SECOND`] counts in.
const ACCESS_WINDOW: Duration = Duration::from_secs(1);

/// The access limiter of the whole process, shared by every thread.
static ACCESS_LIMITER: AccessLimiter = AccessLimiter::new(ACCESS_LINES_PER_SECOND);

/// Logs one access line at info under target "threadcast::access", unless more than
/// ACCESS_LINES_PER_SECOND lines were logged in the current second; suppressed lines
/// are counted and reported in one line ("N access lines suppressed") when logging resumes.
pub fn access(line: fmt::Arguments<'_>) {
    // Access logging turned off: nothing to count either.
    if !log::log_enabled!(target: ACCESS_TARGET, log::Level::Info) {
        return;
    }
    access_with(&ACCESS_LIMITER, Instant::now(), line, |text| {
        log::info!(target: ACCESS_TARGET, "{text}");
    });
}

/// [`access`] with its limiter, clock and output passed in, so tests can watch it.
fn access_with(
    limiter: &AccessLimiter,
    now: Instant,
    line: fmt::Arguments<'_>,
    mut write: impl FnMut(&str),
) {
    if let Admit::Log { suppressed_before } = limiter.admit(now) {
        if suppressed_before > 0 {
            write(&format!("{suppressed_before} access lines suppressed"));
        }
        write(&printable(&line.to_string()));
    }
}

/// The line with control characters escaped (`\n` → `\\n`): access lines carry text a
/// client chose (paths, room names), and a newline in it could forge a log line.
fn printable(line: &str) -> Cow<'_, str> {
    if !line.chars().any(char::is_control) {
        return Cow::Borrowed(line);
    }
    let mut escaped = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// Lets through at most a fixed number of lines per one-second window and counts the
/// rest. A tiny mutex: it is held for a few comparisons, far less than writing the line.
#[derive(Debug)]
pub struct AccessLimiter {
    /// Lines admitted per window.
    per_second: u32,
    /// The current window and the count of lines dropped.
    window: Mutex<Window>,
}

/// The state of one window of [`AccessLimiter`].
#[derive(Debug)]
struct Window {
    /// When the current window began; `None` before the first line.
    started: Option<Instant>,
    /// Lines let through in the current window.
    admitted: u32,
    /// Lines dropped since the last one let through, not yet reported.
    suppressed: u64,
}

/// What [`AccessLimiter::admit`] decided about one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Write the line, after a line reporting this many suppressed ones if not 0.
    Log {
        /// Lines dropped since the last line written.
        suppressed_before: u64,
    },
    /// Drop the line; it has been counted.
    Suppress,
}

impl AccessLimiter {
    /// A limiter that admits `per_second` lines per second. `const`, so the process's
    /// limiter can be a plain `static`.
    pub const fn new(per_second: u32) -> Self {
        AccessLimiter {
            per_second,
            window: Mutex::new(Window {
                started: None,
                admitted: 0,
                suppressed: 0,
            }),
        }
    }

    /// Decides about one line arriving at `now`. A window starts with the first line
    /// after the previous one ended, so a quiet server never has a window open.
    pub fn admit(&self, now: Instant) -> Admit {
        // A panic cannot happen while the lock is held, but if one ever did, the
        // counters are still usable: keep logging rather than panic in every thread.
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let expired = window
            .started
            .is_none_or(|start| now.saturating_duration_since(start) >= ACCESS_WINDOW);
        if expired {
            window.started = Some(now);
            window.admitted = 0;
        }
        if window.admitted < self.per_second {
            window.admitted += 1;
            Admit::Log {
                suppressed_before: mem::take(&mut window.suppressed),
            }
        } else {
            window.suppressed += 1;
            Admit::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_admits_a_window_s_worth_then_counts_the_rest() {
        let limiter = AccessLimiter::new(3);
        let t0 = Instant::now();
        let first = Admit::Log {
            suppressed_before: 0,
        };
        for _ in 0..3 {
            assert_eq!(limiter.admit(t0), first);
        }
        for ms in [0, 500, 999] {
            assert_eq!(
                limiter.admit(t0 + Duration::from_millis(ms)),
                Admit::Suppress
            );
        }
        // The next window: the first line carries the count of the dropped ones.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            limiter.admit(t1),
            Admit::Log {
                suppressed_before: 3
            }
        );
        assert_eq!(limiter.admit(t1), first);
    }

    #[test]
    fn access_reports_suppressed_lines_when_logging_resumes() {
        let limiter = AccessLimiter::new(ACCESS_LINES_PER_SECOND);
        let t0 = Instant::now();
        let mut written = Vec::new();
        for i in 0..50 {
            access_with(&limiter, t0, format_args!("GET /{i}"), |l| {
                written.push(l.to_string())
            });
        }
        let admitted = ACCESS_LINES_PER_SECOND as usize;
        assert_eq!(written.len(), admitted);
        assert_eq!(written.last().unwrap(), &format!("GET /{}", admitted - 1));

        written.clear();
        let t1 = t0 + ACCESS_WINDOW;
        access_with(&limiter, t1, format_args!("GET /late"), |l| {
            written.push(l.to_string())
        });
        assert_eq!(written, ["30 access lines suppressed", "GET /late"]);
    }

    #[test]
    fn access_lines_cannot_forge_a_second_line() {
        assert_eq!(printable("GET /room"), "GET /room");
        assert_eq!(
            printable("GET /x\nINFO [threadcast] forged\u{1b}[2J"),
            "GET /x\\nINFO [threadcast] forged\\u{1b}[2J"
        );
    }
}
