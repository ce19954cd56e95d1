//! Running a system tool for a source driver (lvm2, btrfs-progs, thin-provisioning-tools,
//! mount): its standard output, or the command line and why it failed.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// A tool that could not run, or exited with a failure.
pub(crate) struct Failed {
    /// The command line.
    pub(crate) cmd: String,
    /// Its exit status and standard error, or why it did not start.
    pub(crate) why: String,
}

/// Run `args[0]` with the rest as arguments, standard input closed; its standard output.
/// `install` names the package to install when the tool is missing (`""`: none named).
pub(crate) fn run<S: AsRef<OsStr>>(args: &[S], install: &str) -> Result<String, Failed> {
    let cmd = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let Some((tool, rest)) = args.split_first() else {
        return Err(Failed {
            cmd,
            why: "no command given".into(),
        });
    };
    let o = Command::new(tool)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failed {
            cmd: cmd.clone(),
            why: if install.is_empty() {
                format!("cannot run it: {e}")
            } else {
                format!("cannot run it ({install}): {e}")
            },
        })?;
    if !o.status.success() {
        return Err(Failed {
            cmd,
            why: format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_failures_name_the_command() {
        assert_eq!(run(&["echo", "a b"], "").ok().unwrap(), "a b\n");
        let f = run(&["sh", "-c", "echo oops >&2; exit 3"], "")
            .err()
            .unwrap();
        assert_eq!(f.cmd, "sh -c echo oops >&2; exit 3");
        assert!(f.why.contains("3") && f.why.ends_with("oops"), "{}", f.why);
        let f = run(&["holdfast-no-such-tool"], "install it").err().unwrap();
        assert!(
            f.why.starts_with("cannot run it (install it): "),
            "{}",
            f.why
        );
    }
}
