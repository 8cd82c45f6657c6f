//! `saga-tracker sagas search|show|export`: the REST API for a person at a terminal.

use super::{ApiArgs, Output};

#[derive(Debug, clap::Subcommand)]
pub enum SagasCommand {
    /// Search sagas (placeholder; being written).
    Search,
}

pub async fn run(_command: SagasCommand, _api: ApiArgs, _out: Output) -> anyhow::Result<()> {
    anyhow::bail!("`sagas` is not written yet")
}
