//! Where passwords come from: HOLDFAST_PASSWORD, a file, a command, or a terminal prompt.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cli::Global;

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// The repository password.
pub fn password(g: &Global, confirm: bool) -> Result<String> {
    if let Ok(p) = std::env::var("HOLDFAST_PASSWORD") {
        return Ok(p);
    }
    if let Some(f) = &g.password_file {
        return read_file(f);
    }
    if let Some(cmd) = &g.password_command {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running password command {cmd:?}"))?;
        if !out.status.success() {
            bail!("password command {cmd:?} failed with {}", out.status);
        }
        return Ok(first_line(&String::from_utf8_lossy(&out.stdout)));
    }
    prompt("repository password: ", confirm)
}

/// A new password for `key add` / `key passwd`.
pub fn new_password(file: Option<&Path>) -> Result<String> {
    if let Ok(p) = std::env::var("HOLDFAST_NEW_PASSWORD") {
        return Ok(p);
    }
    if let Some(f) = file {
        return read_file(f);
    }
    prompt("new password: ", true)
}

fn read_file(f: &Path) -> Result<String> {
    let s = std::fs::read_to_string(f)
        .with_context(|| format!("reading password file {}", f.display()))?;
    Ok(first_line(&s))
}

fn prompt(msg: &str, confirm: bool) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("no password given: set HOLDFAST_PASSWORD, HOLDFAST_PASSWORD_FILE or HOLDFAST_PASSWORD_COMMAND (no terminal to ask on)");
    }
    let p = rpassword::prompt_password(msg).context("reading the password")?;
    if confirm {
        let again = rpassword::prompt_password("again: ").context("reading the password")?;
        if again != p {
            bail!("the passwords differ");
        }
    }
    if p.is_empty() {
        bail!("an empty password is not allowed");
    }
    Ok(p)
}
