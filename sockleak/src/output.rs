//! Writing results: stdout lines that stop quietly on a closed pipe, and atomic report files.

use std::{
    fs,
    io::{self, IsTerminal, Write},
    path::Path,
};

/// The reader went away (`sockleak ... | head`): stop without a report or an error.
#[derive(Debug)]
pub struct Closed;

pub fn stdout_is_tty() -> bool {
    io::stdout().is_terminal()
}

pub fn print(text: &str) -> Result<(), Closed> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(Closed),
        // Other stdout errors cannot be reported anywhere useful either.
        _ => Ok(()),
    }
}

/// Writes `text` to `path` via a temporary file in the same directory and a rename, so a
/// reader never sees half a report.
pub fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.json");
        super::write_atomic(&p, "one").unwrap();
        super::write_atomic(&p, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        assert!(super::write_atomic(&d.path().join("no/such/dir/x"), "x").is_err());
    }
}
