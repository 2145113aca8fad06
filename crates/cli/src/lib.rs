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
//! * [`paths`]: checks of what a path flag names (a file, a folder, the right artifact), with
//!   advice naming the right file or the stage that writes it; a wrong one is a [`UsageError`].

pub mod args;
pub mod paths;

use std::io::IsTerminal;

use std::process::ExitCode;

use clap::{Args, FromArgMatches, Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The `--help` section the logging flags are listed under, apart from the stage's options.
pub const LOGGING: &str = "Logging";

/// Logging flags, flattened into every binary's arguments.
#[derive(Debug, Clone, Args, Default)]
pub struct LogArgs {
    /// More output: -v info, -vv debug, -vvv trace [default: warnings and a summary line].
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = LOGGING)]
    pub verbose: u8,
    /// Errors only, no progress bar.
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = LOGGING)]
    pub quiet: bool,
    /// Log format on stderr: text (coloured on a terminal unless NO_COLOR is set), or json (one
    /// object per line, for schedulers).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, help_heading = LOGGING)]
    pub log_format: LogFormat,
}

/// Whether stderr gets colours: only on a terminal, and never with `NO_COLOR` set to anything
/// (<https://no-color.org>).
pub fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
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
        let builder =
            tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour());
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
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {rate:>8} eta {eta}")
            .expect("valid template")
            .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", rate(s.per_sec()));
            })
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// A rate as people read it: one decimal below 10, whole numbers above (`7.5`, `32`).
pub fn rate(per_second: f64) -> String {
    if per_second.is_finite() && per_second >= 10.0 { format!("{per_second:.0}") } else { format!("{per_second:.1}") }
}

/// `n` and the noun, plural unless `n` is 1: `1 epoch`, `2 epochs`, `0 images`, `3 copies`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        return format!("1 {noun}");
    }
    match noun.strip_suffix('y').filter(|stem| !stem.ends_with(['a', 'e', 'i', 'o', 'u'])) {
        Some(stem) => format!("{n} {stem}ies"),
        // Not `ch`: "epochs".
        None if noun.ends_with(['s', 'x']) || noun.ends_with("sh") => format!("{n} {noun}es"),
        None => format!("{n} {noun}s"),
    }
}

/// The `main` of a stage binary: parses its flags (its `LogArgs` flattened in, as every
/// stage's are), sets up logging and runs `stage` with them.
pub fn main<A: Parser>(stage: impl FnOnce(&A) -> anyhow::Result<()>) -> ExitCode {
    restore_sigpipe();
    let command = A::command();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = command.clone().get_matches_from(&argv);
    let parsed = |m: &clap::ArgMatches| A::from_arg_matches(m).and_then(|a| Ok((a, LogArgs::from_arg_matches(m)?)));
    let (args, log) = parsed(&matches).unwrap_or_else(|e| e.exit());
    log.init();
    warn_renamed(&command, &argv);
    run(|| stage(&args))
}

/// Warns about each old spelling used: a renamed flag keeps its old name as a hidden alias
/// (`#[arg(long = "augment", alias = "preset")]`), so scripts go on working, and says what to
/// write instead.
pub fn warn_renamed(command: &clap::Command, argv: &[std::ffi::OsString]) {
    for (old, new) in renamed(command, argv) {
        tracing::warn!("--{old} is now --{new}; the old spelling will go away");
    }
}

/// The hidden long aliases among `argv`'s flags (up to `--`), with the flag's name now.
fn renamed(command: &clap::Command, argv: &[std::ffi::OsString]) -> Vec<(String, String)> {
    let mut aliases = Vec::new();
    let mut walk = vec![command];
    while let Some(c) = walk.pop() {
        for arg in c.get_arguments() {
            let (Some(long), Some(hidden)) = (arg.get_long(), arg.get_aliases()) else { continue };
            aliases.extend(hidden.into_iter().map(|a| (a.to_string(), long.to_string())));
        }
        walk.extend(c.get_subcommands());
    }
    let mut used = Vec::new();
    for word in argv.iter().skip(1).map(|a| a.to_string_lossy()).take_while(|a| a != "--") {
        let Some(flag) = word.strip_prefix("--") else { continue };
        let flag = flag.split_once('=').map_or(flag, |(f, _)| f);
        if let Some(pair) = aliases.iter().find(|(old, _)| old == flag).filter(|p| !used.contains(*p)) {
            used.push(pair.clone());
        }
    }
    used
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

/// A usage error found after parsing: a path flag that names the wrong thing (a folder for a
/// file, images for features), a value the stage cannot take. Exit code 2, like clap's.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A [`UsageError`] as an `anyhow::Error`.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// Exit code 2 for an error with a [`UsageError`] in its chain, 1 for any other.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    if err.chain().any(|c| c.is::<UsageError>()) { ExitCode::from(2) } else { ExitCode::FAILURE }
}

/// Runs a stage: on error prints `error: <context>: <cause>: ...` and returns exit code 1 (2 for
/// a [`UsageError`]).
pub fn run(main: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    handle_signals(|_| {});
    match main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::debug!(error = ?err, "stage failed");
            eprintln!("error: {}", message(&err));
            exit_code(&err)
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
    fn rates_are_rounded_and_counts_agree_with_their_noun() {
        assert_eq!((rate(7.4920999831), rate(32.49), rate(0.0)), ("7.5".into(), "32".into(), "0.0".into()));
        assert_eq!(
            (count(1, "epoch"), count(2, "epoch"), count(0, "image")),
            ("1 epoch".into(), "2 epochs".into(), "0 images".into())
        );
        assert_eq!((count(3, "augmented copy"), count(2, "day")), ("3 augmented copies".into(), "2 days".into()));
        assert_eq!((count(2, "class"), count(1, "class")), ("2 classes".into(), "1 class".into()));
    }

    #[test]
    fn usage_errors_exit_2_anywhere_in_the_chain() {
        assert_eq!(exit_code(&usage("bad").context("loading")), ExitCode::from(2));
        assert_eq!(exit_code(&anyhow::anyhow!("failed")), ExitCode::FAILURE);
    }

    #[test]
    fn old_spellings_are_found_with_their_new_name() {
        #[derive(Parser)]
        struct Cli {
            /// New.
            #[arg(long = "augment", alias = "preset", visible_alias = "aug")]
            augment: Option<String>,
            /// Other.
            #[arg(long)]
            data: Option<String>,
        }
        let argv = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let c = <Cli as clap::CommandFactory>::command();
        assert_eq!(renamed(&c, &argv(&["x", "--preset=a", "--data", "d"])), [("preset".into(), "augment".into())]);
        assert!(renamed(&c, &argv(&["x", "--aug", "a", "--augment", "b", "--", "--preset"])).is_empty());
        assert!(Cli::try_parse_from(["x", "--preset", "finetune"]).unwrap().augment.is_some());
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
