//! What every stage binary shares, so they all behave the same under a terminal, `make` or a
//! workflow scheduler:
//!
//! * [`LogArgs`]: `-v`/`-vv` for more, `-q` for errors only, `--log-format json` for machine
//!   readable logs on stderr. Quiet by default (warnings and a one-line summary).
//! * [`progress_bar`]: a bar on stderr when it is a terminal and not `-q`/JSON; hidden otherwise.
//! * [`main`]: a stage binary's whole `main`: parse the flags, set up logging, [`run`].
//! * [`run`]: runs a stage, prints the error chain as `error: ...` and maps it to exit code 1
//!   (2 is clap's usage error), never a panic message for a bad input. On Ctrl-C, SIGTERM or
//!   SIGHUP it removes the stage's scratch ([`sd_data::scratch`]) before dying of the signal.
//! * [`args`]: flag groups several stages share (image input, optimiser and schedule).

pub mod args;

use std::process::ExitCode;

use clap::{Args, FromArgMatches, Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Logging flags, flattened into every binary's arguments.
#[derive(Debug, Clone, Args, Default)]
pub struct LogArgs {
    /// More output: -v info, -vv debug, -vvv trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Errors only, no progress bar.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log format on stderr: text, or json (one object per line, for schedulers).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the global tracing subscriber. `RUST_LOG` overrides the level flags.
    pub fn init(&self) {
        // ONNX Runtime logs through `ort` at info level in volumes: one level quieter than ours.
        let level = match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "info,ort=warn",
            (false, 2) => "debug,ort=info",
            _ => "trace",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        let _ = match self.log_format {
            LogFormat::Text => builder.with_target(false).without_time().try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
    }

    /// Whether progress bars and human summaries should be shown.
    pub fn interactive(&self) -> bool {
        !self.quiet && self.log_format == LogFormat::Text
    }
}

/// A progress bar over `len` items with a rate, drawn only when `show` and stderr is a terminal.
pub fn progress_bar(len: u64, what: &str, show: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if show { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {per_sec:>10} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// The `main` of a stage binary: parses its flags (its `LogArgs` flattened in, as every
/// stage's are), sets up logging and runs `stage` with them.
pub fn main<A: Parser>(stage: impl FnOnce(&A) -> anyhow::Result<()>) -> ExitCode {
    restore_sigpipe();
    let matches = A::command().get_matches();
    let parsed = |m: &clap::ArgMatches| A::from_arg_matches(m).and_then(|a| Ok((a, LogArgs::from_arg_matches(m)?)));
    let (args, log) = parsed(&matches).unwrap_or_else(|e| e.exit());
    log.init();
    run(|| stage(&args))
}

/// Output into a closed pipe (`predict ... | head`) ends the process quietly, as for any Unix
/// tool, instead of Rust's default (SIGPIPE ignored), under which the next `println!` panics.
pub fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: signal(2) with the default action, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs a stage: on error prints `error: <context>: <cause>: ...` and returns exit code 1.
pub fn run(main: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    handle_signals(|_| {});
    match main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::debug!(error = ?err, "stage failed");
            eprintln!("error: {}", message(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by ": ", each cause left out when the message before it
/// already ends with it (errors that print their source, like `cannot read X: {source}`, would
/// otherwise show the OS error twice).
fn message(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain().map(|c| c.to_string()) {
        if !text.ends_with(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

/// On Ctrl-C, SIGTERM or SIGHUP: remove this process's scratch, run `before_exit(signal)`, then
/// die of the same signal. A signal's default action ends the process without destructors,
/// which would leave partial outputs and feature caches (gigabytes for `finetune`) behind; dying
/// of the signal afterwards means a parent (make, a scheduler, `pipeline`) sees exactly what it
/// would have seen. [`run`] installs it for every stage; `pipeline` passes a `before_exit` that
/// hands the signal on to its running stages and waits for them.
pub fn handle_signals(before_exit: fn(i32)) {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot install signal handlers: an interrupted stage may leave scratch behind");
                return;
            }
        };
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                sd_data::scratch::interrupt();
                before_exit(signal);
                die_of(signal);
            }
        });
    }
    #[cfg(not(unix))]
    let _ = before_exit;
}

/// Ends the process as `signal`'s default action does (exit code 128 + signal where that cannot
/// be emulated).
pub fn die_of(signal: i32) -> ! {
    #[cfg(unix)]
    let _ = signal_hook::low_level::emulate_default_handler(signal);
    std::process::exit(128 + signal)
}

/// Prints a one-line human summary on stdout unless quiet (schedulers read the JSON files).
pub fn summary(log: &LogArgs, line: impl std::fmt::Display) {
    if !log.quiet {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Like the stages' errors: the source in the message and as `source()`.
    #[derive(Debug)]
    struct Read(std::io::Error);

    impl std::fmt::Display for Read {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot read nope: {}", self.0)
        }
    }

    impl std::error::Error for Read {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let os = std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = anyhow::Error::new(Read(os)).context("split nope into o");
        assert_eq!(
            message(&err),
            format!("split nope into o: cannot read nope: {}", std::io::Error::from(std::io::ErrorKind::NotFound))
        );
        let err = anyhow::anyhow!("inner").context("outer");
        assert_eq!(message(&err), "outer: inner");
    }
}
