//! `notbetrieb import`: towns, services, offices and referrals from CSV or JSON files.

use anyhow::{Result, bail};

use crate::store::Store;

pub async fn run(_store: &Store, _files: &[std::path::PathBuf]) -> Result<()> {
    bail!("import is not implemented yet")
}
