//! What the console's tests need besides the venv's usual tools: Debian's
//! Chromium ([`crate::chromium`]), Playwright for Python from
//! `tests/requirements-browser.txt` (exact pins; `playwright install` is
//! never run, Playwright drives the system Chromium), and one venv each for
//! the LangChain and Agno client snippets, whose `mcp` pins conflict.

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
    /// Python of `.venv-langchain` (tests/requirements-langchain.txt).
    pub langchain_python: PathBuf,
    /// Python of `.venv-agno` (tests/requirements-agno.txt).
    pub agno_python: PathBuf,
}

pub fn prepare(workspace: &Workspace, venv: &Venv) -> Result<Browser> {
    let chromium = chromium::ensure()?;
    venv::install(venv, &workspace.root.join(REQUIREMENTS))?;
    let langchain_python = venv::ensure_named(
        workspace,
        ".venv-langchain",
        &workspace.root.join("tests/requirements-langchain.txt"),
    )?;
    let agno_python = venv::ensure_named(
        workspace,
        ".venv-agno",
        &workspace.root.join("tests/requirements-agno.txt"),
    )?;
    Ok(Browser {
        chromium,
        langchain_python,
        agno_python,
    })
}

impl Browser {
    /// The environment the console's tests read these from.
    pub fn set_env(&self, command: &mut std::process::Command) {
        command
            .env("KEYGATE_CHROMIUM", &self.chromium)
            .env("KEYGATE_LANGCHAIN_PYTHON", &self.langchain_python)
            .env("KEYGATE_AGNO_PYTHON", &self.agno_python);
    }
}
