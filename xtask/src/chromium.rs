//! Headless Chromium for the console's browser tests: Debian's `chromium`
//! package, which Playwright drives through `executable_path` (Playwright
//! never downloads a browser here). When it is missing and the run is root,
//! it is installed with apt-get; otherwise the run fails and says which
//! command to run.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

use crate::workspace::run_checked;

/// Where Debian's package puts it, then the PATH.
const CANDIDATES: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser"];
const INSTALL_HINT: &str = "apt-get update && apt-get install -y chromium fonts-liberation";

/// The Chromium binary, installed first when missing and running as root.
pub fn ensure() -> Result<PathBuf> {
    if let Some(found) = find() {
        println!("    {}", found.display());
        return Ok(found);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        bail!(
            "Chromium is missing: the console's browser tests need Debian's `chromium` package. \
             Install it as root: `sudo sh -c '{INSTALL_HINT}'`, then run `cargo xtask test` again"
        );
    }
    println!("    Chromium is missing; installing Debian's chromium package with apt-get");
    run_checked(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update (for Chromium)",
    )?;
    run_checked(
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "chromium",
                "fonts-liberation",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("apt-get install chromium (or run `{INSTALL_HINT}` by hand)"),
    )?;
    match find() {
        Some(found) => Ok(found),
        None => bail!("apt-get installed chromium, but no chromium binary is on the PATH"),
    }
}

fn find() -> Option<PathBuf> {
    for candidate in CANDIDATES {
        let path = PathBuf::from(candidate);
        if path.is_file() {
            return Some(path);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
}
