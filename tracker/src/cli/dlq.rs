//! `saga-tracker dlq summary|show|replay`: the dead-letter topic, read and replayed with
//! the tracker's own Kafka settings.

use crate::config::Settings;

use super::Output;

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Counts by reason (placeholder; being written).
    Summary,
}

pub async fn run(_command: DlqCommand, _settings: Settings, _out: Output) -> anyhow::Result<()> {
    anyhow::bail!("`dlq` is not written yet")
}
