//! Asking for a password at the terminal: the one piece of password handling the library
//! leaves to the front end (`holdfast_policy::runtime::PasswordChain` resolves the rest).

use std::io::IsTerminal;

/// Read a password from the terminal without echo; `Ok(None)` without a terminal.
pub fn ask(message: &str) -> Result<Option<String>, String> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    rpassword::prompt_password(message)
        .map(Some)
        .map_err(|e| e.to_string())
}
