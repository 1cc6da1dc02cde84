//! What the console's browser tests need besides the venv's usual tools:
//! Debian's Chromium ([`crate::chromium`]) and Playwright for Python from
//! `tests/requirements-browser.txt` (exact pins; `playwright install` is
//! never run, Playwright drives the system Chromium).

use std::path::PathBuf;

use anyhow::Result;

use crate::{
    chromium,
    venv::{self, Venv},
    workspace::Workspace,
};

const REQUIREMENTS: &str = "tests/requirements-browser.txt";

#[derive(Debug, Clone)]
pub struct Browser {
    pub chromium: PathBuf,
}

pub fn prepare(workspace: &Workspace, venv: &Venv) -> Result<Browser> {
    let chromium = chromium::ensure()?;
    venv::install(venv, &workspace.root.join(REQUIREMENTS))?;
    Ok(Browser { chromium })
}
