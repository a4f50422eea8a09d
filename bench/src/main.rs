//! loadgen: the threadcast benchmark's load generator.
//!
//! One thread, non-blocking sockets on `mio`, a hand-written masked-frame
//! codec, so 10,000 client connections cost a few MiB and no threads.
//! Prints one JSON object per run on stdout; progress goes to stderr.
//!
//! Usage: loadgen MODE --addr HOST:PORT [--label NAME] [mode options]
//!   echo    --conns N --window W --size S --duration D [--warmup S]
//!   fanout  --subscribers N --rate R --size S --duration D [--room NAME]
//!   conns   --conns N --server-pid PID [--connect-rate R] [--settle S]
//!   idle    --conns N --server-pid PID --hold D [--connect-rate R]
//!   publish --publishers P --subscribers N --size S --duration D [--warmup W] [--room NAME]
//!   churn   --clients C --duration D [--size S] [--max-cycles N] [--cycle-timeout S] [--server-pid PID]
//!   rooms   --rooms R --members M --rate R --size S --duration D [--room-prefix P]
//! See bench/README.md for every field of the output.

mod churn;
mod conns;
mod echo;
mod fanout;
mod frame;
mod hist;
mod net;
mod procfs;
mod publish;
mod rooms;
mod util;

use std::net::SocketAddr;
use std::process::ExitCode;
use util::{now_ns, Opts, Report};

const USAGE: &str = "usage: loadgen (echo|fanout|conns|idle|publish|churn|rooms) --addr HOST:PORT [--label NAME] [options]; see bench/README.md";

fn main() -> ExitCode {
    now_ns(); // start the clock
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first().cloned() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let opts = match Opts::parse(&args[1..]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let fd_limit = procfs::raise_fd_limit();
    let label = opts.get_str("label", "");
    let addr_text = opts.get_str("addr", "");
    // Modes that need the server's pid read it themselves; here it only
    // gives the server's CPU time over the whole run.
    let server_pid = opts.get_str("server-pid", "");
    let server_cpu0 = procfs::proc_cpu_secs(&server_pid);
    let mut report = Report::default();
    report.str("mode", &mode).str("label", &label).str("addr", &addr_text).int("fd_limit", fd_limit);
    let result = addr_text
        .parse::<SocketAddr>()
        .map_err(|_| format!("--addr {addr_text:?} is not HOST:PORT"))
        .and_then(|addr| match mode.as_str() {
            "echo" => echo::run(addr, &opts, &mut report),
            "fanout" => fanout::run(addr, &opts, &mut report),
            "conns" => conns::run_conns(addr, &opts, &mut report),
            "idle" => conns::run_idle(addr, &opts, &mut report),
            "publish" => publish::run(addr, &opts, &mut report),
            "churn" => churn::run(addr, &opts, &mut report),
            "rooms" => rooms::run(addr, &opts, &mut report),
            other => Err(format!("unknown mode {other:?}")),
        });
    let code = match &result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            report.str("error", e);
            ExitCode::FAILURE
        }
    };
    report.num("loadgen_secs", now_ns() as f64 / 1e9);
    report.opt_num("loadgen_cpu_secs_total", procfs::proc_cpu_secs("self"));
    let server_cpu1 = procfs::proc_cpu_secs(&server_pid);
    report.opt_num("server_cpu_secs_total", server_cpu0.zip(server_cpu1).map(|(a, b)| b - a));
    println!("{}", report.line());
    code
}
