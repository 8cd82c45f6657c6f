//! `saga-tracker doctor`: checks configuration, database, Kafka and the API, and says what
//! is wrong in words. Exits non-zero when anything is.

use super::{ApiArgs, Output};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

/// Returns whether every check passed (the caller turns `false` into exit code 1).
pub async fn run(
    _args: DoctorArgs,
    _config: Option<&std::path::Path>,
    _api: ApiArgs,
    _out: Output,
) -> anyhow::Result<bool> {
    anyhow::bail!("`doctor` is not written yet")
}
