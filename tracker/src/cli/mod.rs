//! The operator's command line: `saga-tracker sagas …`, `saga-tracker dlq …`,
//! `saga-tracker doctor` and `saga-tracker completions`.
//!
//! These commands are for a person at a terminal (and for scripts through `--json` /
//! `--ndjson` and exit codes). `sagas` talks to a running tracker's REST API only, so it works
//! from a laptop with an API key; `dlq` talks to Kafka with the tracker's own `[kafka]`
//! settings (the same `--config` file and `TRACKER_*` variables), because the dead-letter
//! topic is not served by the API; `doctor` checks both sides.
//!
//! [`output`] decides colours (off when stdout is not a terminal, with `NO_COLOR`, or with
//! `--color never`) and draws tables and progress bars; [`api`] is the HTTP client.

pub mod api;
pub mod dlq;
pub mod doctor;
pub mod kafka;
pub mod output;
pub mod sagas;

pub use api::ApiArgs;
pub use output::{ColorChoice, Output};

/// Ends an operator command the way a command-line tool should: on error, `error: …` with
/// its causes on one line on stderr and exit code 1 — no `Debug` dump or backtrace (even
/// with `RUST_BACKTRACE` set), since the reader is a person at a terminal or a script.
/// Usage errors never get here: clap reports them itself with exit code 2.
pub fn exit_on_error(result: anyhow::Result<()>) -> ! {
    match result {
        Ok(()) => std::process::exit(0),
        // The reader went away (`… | head`): not a failure of the command.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1)
        }
    }
}
