//! What gets logged: the `RUST_LOG` / `--log-level` grammar ([`LogSpec`]), installing
//! the logger, and the access log ([`access()`]) that cannot be flooded by a client.
//!
//! One rule overrides every setting here: **secrets are never logged, at any level.**
//! That is why tungstenite is never allowed above `debug` (see [`TUNGSTENITE_CEILING`]).

use std::str::FromStr;

use log::LevelFilter;
use simple_logger::SimpleLogger;

mod access;

pub use access::{ACCESS_LINES_PER_SECOND, access};

/// Log level when neither `--log-level` nor `RUST_LOG` says otherwise (see
/// [`crate::config::LogSpec`] for the grammar of both).
pub const DEFAULT_LOG_LEVEL: log::LevelFilter = log::LevelFilter::Info;

/// This crate's own log targets start with its name (`threadcast::hub`, …); a bare
/// level in a spec applies to them. Taken from Cargo so a rename cannot leave it stale.
const OWN_CRATE: &str = env!("CARGO_CRATE_NAME");

/// The most a bare level gives the dependency crates (tiny_http, rustls, tungstenite…).
/// Their debug and trace lines are written for their own developers and would bury
/// ours: `RUST_LOG=trace` should show threadcast's trace lines, not rustls's handshake
/// internals. Naming a crate (`rustls=debug`) still lifts it.
const DEPENDENCY_CEILING: LevelFilter = LevelFilter::Info;

/// The crate whose level is capped, and every target that starts with its name.
const TUNGSTENITE: &str = "tungstenite";

/// The highest level tungstenite may log at, even when a spec names it at `trace`.
/// Its trace lines print whole frames, payloads included, and with
/// `--auth first-message` the first payload *is* the token; its debug lines print only
/// close frames. Secrets are never logged at any level, so trace is out of reach.
pub const TUNGSTENITE_CEILING: LevelFilter = LevelFilter::Debug;

/// What to log: a level for everything, and levels for named modules or crates.
///
/// Written as in env_logger's `RUST_LOG`, comma-separated: a bare `LEVEL` (for
/// threadcast's own modules) and `MODULE=LEVEL` (for one module or crate and
/// everything under it). `debug`, `threadcast=debug,tungstenite=warn`,
/// `info,threadcast::hub=trace`; an empty spec means the default, `info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSpec {
    /// Level of every target no module entry matches: the dependency crates.
    default: LevelFilter,
    /// Module (or crate) name and its level; a target takes the level of the longest
    /// name it starts with, as simple_logger decides.
    modules: Vec<(String, LevelFilter)>,
}

impl Default for LogSpec {
    /// `info` for everything: what an empty `RUST_LOG` means.
    fn default() -> Self {
        LogSpec::build(None, Vec::new())
    }
}

impl FromStr for LogSpec {
    type Err = String;

    /// Parses `RUST_LOG` or `--log-level`. The error explains the grammar.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut bare = None;
        let mut named: Vec<(String, LevelFilter)> = Vec::new();
        // Empty directives are skipped, so `debug,` and `` are fine, as in env_logger.
        for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once('=') {
                None => bare = Some(parse_level(directive)?),
                Some((module, level)) => {
                    let module = parse_module(module.trim())?;
                    let level = parse_level(level.trim())?;
                    // A module named twice gets its last level, as in env_logger.
                    named.retain(|(m, _)| *m != module);
                    named.push((module, level));
                }
            }
        }
        Ok(LogSpec::build(bare, named))
    }
}

impl LogSpec {
    /// Turns what the spec said into levels: the bare level for threadcast (unless it
    /// is named), at most [`DEPENDENCY_CEILING`] for the rest, tungstenite capped.
    fn build(bare: Option<LevelFilter>, mut modules: Vec<(String, LevelFilter)>) -> Self {
        let own = bare.unwrap_or(DEFAULT_LOG_LEVEL);
        if !modules.iter().any(|(m, _)| m == OWN_CRATE) {
            modules.push((OWN_CRATE.to_string(), own));
        }
        let spec = LogSpec {
            default: own.min(DEPENDENCY_CEILING),
            modules,
        };
        spec.with_tungstenite_capped()
    }

    /// Applies [`TUNGSTENITE_CEILING`] to every entry for tungstenite or its modules,
    /// and adds an entry for tungstenite itself, so a shorter name that happens to
    /// match it (`tung=trace`, `t=trace`) cannot lift it either.
    fn with_tungstenite_capped(mut self) -> Self {
        let inherited = self.level_for(TUNGSTENITE);
        for (module, level) in &mut self.modules {
            if module.starts_with(TUNGSTENITE) {
                *level = (*level).min(TUNGSTENITE_CEILING);
            }
        }
        if !self.modules.iter().any(|(m, _)| m == TUNGSTENITE) {
            let level = inherited.min(TUNGSTENITE_CEILING);
            self.modules.push((TUNGSTENITE.to_string(), level));
        }
        self
    }

    /// The level a log line with this target is let through at: that of the longest
    /// module name the target starts with, else the default. The same rule
    /// simple_logger applies, so tests can check what the logger will do.
    pub fn level_for(&self, target: &str) -> LevelFilter {
        self.modules
            .iter()
            .filter(|(module, _)| target.starts_with(module.as_str()))
            .max_by_key(|(module, _)| module.len())
            .map_or(self.default, |(_, level)| *level)
    }

    /// The highest level anything may log at. The `log` macros compare against this
    /// global maximum before they ask the logger, so it must cover every module:
    /// `threadcast=debug` needs `Debug` here even though the default is `Info`.
    pub fn max_level(&self) -> LevelFilter {
        self.modules
            .iter()
            .map(|(_, level)| *level)
            .fold(self.default, Ord::max)
    }

    /// Installs this spec as the process's logger (standard error, simple_logger).
    /// Fails only if a logger was installed before.
    pub fn install(&self) -> Result<(), log::SetLoggerError> {
        // `init` also sets `log::max_level` to the highest of these levels, the same
        // value as `self.max_level()`, so `threadcast=debug` lets debug lines through.
        self.logger().init()
    }

    /// The logger this spec describes, not yet installed.
    fn logger(&self) -> SimpleLogger {
        let mut logger = SimpleLogger::new().with_level(self.default);
        for (module, level) in &self.modules {
            logger = logger.with_module_level(module, *level);
        }
        logger
    }
}

/// `off`, `error`, `warn`, `info`, `debug` or `trace`, in any case.
fn parse_level(word: &str) -> Result<LevelFilter, String> {
    word.parse().map_err(|_| {
        format!(
            "'{word}' is not a level (off|error|warn|info|debug|trace) \
             nor MODULE=LEVEL, like info,threadcast::hub=debug"
        )
    })
}

/// A module path as Rust writes log targets: `threadcast`, `threadcast::hub`.
fn parse_module(name: &str) -> Result<String, String> {
    let is_path = !name.is_empty()
        && name
            .split("::")
            .all(|part| !part.is_empty() && part.chars().all(is_ident_char));
    if is_path {
        Ok(name.to_string())
    } else {
        Err(format!(
            "'{name}' is not a module like threadcast or threadcast::hub"
        ))
    }
}

/// Characters of a Rust identifier as they appear in log targets (crate names use `_`).
fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;
    use LevelFilter::{Debug, Info, Off, Trace, Warn};

    fn spec(text: &str) -> LogSpec {
        text.parse()
            .unwrap_or_else(|e| panic!("'{text}' should parse: {e}"))
    }

    #[test]
    fn an_empty_spec_means_info_for_everything() {
        for text in ["", " ", ",", "info"] {
            let s = spec(text);
            assert_eq!(s, LogSpec::default(), "'{text}'");
            assert_eq!(s.level_for("threadcast::hub"), Info);
            assert_eq!(s.level_for("tiny_http"), Info);
            assert_eq!(s.max_level(), Info);
        }
    }

    #[test]
    fn a_bare_level_is_for_threadcast_and_dependencies_stay_at_info() {
        let s = spec("debug");
        assert_eq!(s.level_for("threadcast"), Debug);
        assert_eq!(s.level_for("threadcast::ws::connection"), Debug);
        assert_eq!(s.level_for("tiny_http"), Info);
        assert_eq!(s.level_for("rustls::client"), Info);
        assert_eq!(spec("TRACE").level_for("threadcast::hub"), Trace);
    }

    #[test]
    fn a_bare_level_below_info_lowers_dependencies_too() {
        let s = spec("warn");
        assert_eq!(s.level_for("threadcast::hub"), Warn);
        assert_eq!(s.level_for("tiny_http"), Warn);
        assert_eq!(spec("off").max_level(), Off);
    }

    #[test]
    fn named_modules_get_their_own_level_and_the_longest_name_wins() {
        let s = spec("info,threadcast::hub=trace");
        assert_eq!(s.level_for("threadcast::hub"), Trace);
        assert_eq!(s.level_for("threadcast::http"), Info);

        let s = spec("threadcast=debug,tiny_http=warn");
        assert_eq!(s.level_for("threadcast::http::sse"), Debug);
        assert_eq!(s.level_for("tiny_http"), Warn);
        assert_eq!(s.level_for("rustls"), Info);

        // Named beats bare whatever the order; the last of two names wins.
        let s = spec(
            "threadcast=warn, trace ,threadcast::http::poll=info,threadcast::http::poll=debug",
        );
        assert_eq!(s.level_for("threadcast::hub"), Warn);
        assert_eq!(s.level_for("threadcast::http::poll"), Debug);
    }

    #[test]
    fn max_level_covers_every_module_so_the_log_macros_let_lines_through() {
        assert_eq!(spec("threadcast=debug").max_level(), Debug);
        assert_eq!(spec("warn,threadcast::hub=trace").max_level(), Trace);
        assert_eq!(spec("warn").max_level(), Warn);
    }

    #[test]
    fn tungstenite_is_never_above_debug_because_its_trace_lines_print_payloads() {
        for text in [
            "tungstenite=trace",
            "trace,tungstenite=trace",
            "tungstenite::protocol=trace",
            "tung=trace",
            "t=trace",
        ] {
            let frames = spec(text).level_for("tungstenite::protocol::frame");
            assert_eq!(frames, Debug, "{text}");
        }
        assert_eq!(spec("tungstenite=warn").level_for("tungstenite"), Warn);
        assert_eq!(spec("trace").level_for("tungstenite::protocol"), Info);
    }

    #[test]
    fn the_installed_logger_decides_as_level_for_says() {
        use log::{Level, Log, Metadata};
        let targets = [
            "threadcast",
            "threadcast::hub",
            "threadcast::access",
            "tiny_http",
            "tungstenite",
            "tungstenite::protocol::frame",
        ];
        for text in [
            "",
            "debug",
            "warn",
            "trace,t=trace",
            "threadcast::hub=trace",
        ] {
            let s = spec(text);
            let logger = s.logger();
            assert_eq!(logger.max_level(), s.max_level(), "'{text}'");
            for target in targets {
                for level in [Level::Error, Level::Info, Level::Debug, Level::Trace] {
                    let line = Metadata::builder().target(target).level(level).build();
                    let expected = level <= s.level_for(target);
                    assert_eq!(logger.enabled(&line), expected, "'{text}' {target} {level}");
                }
            }
        }
    }

    #[test]
    fn bad_specs_are_refused_with_the_grammar() {
        for (text, expected) in [
            ("loud", "'loud' is not a level"),
            ("threadcast=loud", "'loud' is not a level"),
            ("=debug", "'' is not a module"),
            ("thread-cast=debug", "'thread-cast' is not a module"),
            ("threadcast:::hub=debug", "is not a module"),
            ("info/regex", "is not a level"),
        ] {
            let e = text.parse::<LogSpec>().unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn own_crate_is_the_first_part_of_this_module_s_path() {
        assert_eq!(module_path!().split("::").next(), Some(OWN_CRATE));
    }
}
