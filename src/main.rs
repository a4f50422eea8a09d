//! The `threadcast` binary: flags → `Config`, logger, start, wait for SIGINT or
//! SIGTERM, shut down gracefully. SIGHUP reloads the TLS certificate and key.

use std::process::ExitCode;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use threadcast::Server;
use threadcast::config::{self, Invocation};

/// Exit status for a bad command line, as is customary for usage errors.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    // `args_os` and `var_os`, not `args` and `var`: those panic on (or hide) text that is
    // not UTF-8, which `parse_args` reports as a usage error instead.
    let command = config::parse_args(std::env::args_os().skip(1), |name| std::env::var_os(name));
    let (config, log_spec) = match command {
        Ok(Invocation::Run(config, log_spec)) => (*config, log_spec),
        Ok(Invocation::Help) => {
            print!("{}", config::help());
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Token(order)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            println!("{}", order.mint(now));
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version) => {
            println!("threadcast {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("threadcast: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(e) = log_spec.install() {
        eprintln!("threadcast: cannot start logging: {e}");
    }
    run(config)
}

/// Starts the server and serves until SIGINT or SIGTERM, then shuts it down.
fn run(config: config::Config) -> ExitCode {
    // Memory the budget gives back must leave the process too, and each connection
    // needs a descriptor: use all the operating system allows us.
    if let Some(files) = threadcast::prepare_process() {
        log::debug!("open files limit: {files}");
    }
    // Register the handlers before starting, so a signal that arrives during start-up
    // is not lost; the main thread then just waits for one.
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    for signal in signals.forever() {
        if signal == SIGHUP {
            reload(&server);
            continue;
        }
        let name = if signal == SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        log::info!("received {name}, shutting down");
        break;
    }
    server.shutdown();
    ExitCode::SUCCESS
}

/// SIGHUP: `systemctl reload`, or certbot's deploy hook after a renewal.
fn reload(server: &threadcast::ServerHandle) {
    match server.reload_tls() {
        Ok(true) => {}
        Ok(false) => log::info!("received SIGHUP: nothing to reload (no --tls-cert)"),
        Err(e) => log::error!("received SIGHUP: {e}; still serving the previous certificate"),
    }
}
