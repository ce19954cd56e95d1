//! Standard output that survives a closed pipe (`holdfast ls … | head`): `println!` panics
//! when the reader is gone; `outln!` ends the process quietly instead, with exit code 141
//! (128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe), and reports any
//! other write error once.

use std::io::Write;

/// Write one line to standard output.
pub fn line(args: std::fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|_| out.write_all(b"\n")) {
        fail(e);
    }
}

fn fail(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("error: writing to standard output: {e}");
    std::process::exit(crate::exit::ERROR as i32);
}

/// Flush standard output (at exit), with the same handling.
pub fn flush() {
    if let Err(e) = std::io::stdout().flush() {
        fail(e);
    }
}

/// `println!` for standard output that ends quietly when the reader has gone.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($t:tt)*) => {
        $crate::output::line(format_args!($($t)*))
    };
}
