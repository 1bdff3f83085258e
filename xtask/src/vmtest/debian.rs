//! Debian's own kernels, and the host tools to boot them, through a private apt state
//! (sources list, package lists and cache under target/vmtest/apt): the host's apt
//! configuration is never written, and the suites the kernels come from (bullseye,
//! bookworm-security, bookworm-backports) are added for these downloads only.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};

use crate::util::{output, run};

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Where each kernel series comes from (the bookworm keyring also signs bullseye).
const SUITES: &[(&str, &str)] = &[
    ("debian", "bookworm"),
    ("debian", "bookworm-updates"),
    ("debian-security", "bookworm-security"),
    ("debian", "bookworm-backports"),
    ("debian", "bullseye"),
    ("debian-security", "bullseye-security"),
];
/// Package lists older than this are fetched again: security suites drop old kernel ABIs.
const LISTS_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

pub struct Apt {
    dir: PathBuf,
}

impl Apt {
    pub fn new(dir: &Path) -> Result<Apt> {
        for d in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(d))
                .with_context(|| format!("creating {}", dir.join(d).display()))?;
        }
        if !Path::new(KEYRING).exists() {
            bail!("{KEYRING} is missing: `apt-get install debian-archive-keyring`");
        }
        let sources: String = SUITES
            .iter()
            .map(|(archive, suite)| {
                format!("deb [signed-by={KEYRING}] http://deb.debian.org/{archive} {suite} main\n")
            })
            .collect();
        std::fs::write(dir.join("sources.list"), sources)?;
        Ok(Apt {
            dir: dir.to_path_buf(),
        })
    }

    fn opts(&self) -> Vec<String> {
        let d = self.dir.display();
        [
            format!("Dir::Etc::sourcelist={d}/sources.list"),
            "Dir::Etc::sourceparts=-".into(),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}/cache"),
            "Dir::Cache::pkgcache=".into(),
            "Dir::Cache::srcpkgcache=".into(),
            // No AppStream metadata or translations: package lists only.
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
            "Acquire::Languages=none".into(),
            "APT::Sandbox::User=root".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.args(self.opts()).env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    /// Fetches the package lists unless they are recent.
    pub fn update(&self) -> Result<()> {
        let stamp = self.dir.join("updated");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .is_ok_and(|age| age < LISTS_MAX_AGE)
            });
        if fresh {
            return Ok(());
        }
        run(self.cmd("apt-get").args(["-qq", "update"]))?;
        std::fs::write(&stamp, b"")?;
        Ok(())
    }

    /// Installs host packages (`backports`: from bookworm-backports).
    pub fn install(&self, pkgs: &[&str], backports: bool) -> Result<()> {
        if pkgs.is_empty() {
            return Ok(());
        }
        self.update()?;
        let mut c = self.cmd("apt-get");
        c.args(["install", "-y", "-qq", "--no-install-recommends"]);
        if backports {
            c.args(["-t", "bookworm-backports"]);
        }
        run(c.args(pkgs))
    }

    /// `apt-cache show` of a package in every suite.
    fn show(&self, pkg: &str) -> Result<String> {
        let out = self
            .cmd("apt-cache")
            .args(["show", pkg])
            .output()
            .context("running apt-cache")?;
        if !out.status.success() {
            bail!(
                "apt-cache show {pkg}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Downloads and unpacks the newest Debian kernel of a series ("6.1") into `kernels/`,
    /// unless it is there; returns the unpacked tree and the kernel release.
    pub fn kernel(&self, series: &str, kernels: &Path) -> Result<(PathBuf, String)> {
        self.update()?;
        let show = self.show("linux-image-amd64")?;
        let Some(abi) = newest_abi(&show, series) else {
            bail!(
                "no Debian kernel {series}: the suites searched ({}) offer {}",
                SUITES
                    .iter()
                    .map(|(_, s)| *s)
                    .collect::<Vec<_>>()
                    .join(", "),
                series_offered(&show).join(", ")
            );
        };
        let release = abi.trim_start_matches("linux-image-").to_string();
        let tree = kernels.join(&release);
        if !tree
            .join("boot")
            .join(format!("vmlinuz-{release}"))
            .exists()
        {
            let debs = self.dir.join("debs");
            std::fs::create_dir_all(&debs)?;
            // The unsigned image: the same vmlinuz and modules as the signed one.
            let pkg = format!("{abi}-unsigned");
            run(self
                .cmd("apt-get")
                .args(["-qq", "download", &pkg])
                .current_dir(&debs))?;
            let deb = std::fs::read_dir(&debs)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
                })
                .with_context(|| format!("{pkg} was not downloaded"))?;
            let tmp = kernels.join(format!("{release}.partial"));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp)?;
            run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))?;
            std::fs::rename(&tmp, &tree)?;
            let _ = std::fs::remove_file(&deb);
        }
        Ok((tree, release))
    }
}

/// Parses `apt-cache show linux-image-amd64`: the ABI package ("linux-image-6.1.0-57-amd64")
/// of the newest meta package whose version is in `series` ("6.1": 6.1.x).
pub fn newest_abi(show: &str, series: &str) -> Option<String> {
    let mut best: Option<(Vec<u64>, String)> = None;
    for para in show.split("\n\n") {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let (Some(version), Some(depends)) = (field("Version:"), field("Depends:")) else {
            continue;
        };
        if !version.starts_with(&format!("{series}.")) {
            continue;
        }
        let Some(abi) = depends
            .split([',', ' '])
            .find(|d| d.starts_with("linux-image-"))
        else {
            continue;
        };
        let key = version_key(&version);
        if best.as_ref().is_none_or(|(k, _)| key > *k) {
            best = Some((key, abi.to_string()));
        }
    }
    best.map(|(_, abi)| abi)
}

/// The series ("6.1") the meta package is offered in, for the error message.
fn series_offered(show: &str) -> Vec<String> {
    let mut v: Vec<String> = show
        .lines()
        .filter_map(|l| l.strip_prefix("Version:"))
        .filter_map(|v| {
            let mut it = v.trim().split('.');
            Some(format!("{}.{}", it.next()?, it.next()?))
        })
        .collect();
    v.sort_by_key(|s| version_key(s));
    v.dedup();
    v
}

/// Numeric parts of a Debian version ("6.12.95-1~bpo12+1" -> [6, 12, 95, 1, 12, 1]): enough
/// to order the kernels of one series.
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The installed version of a Debian package.
pub fn installed(pkg: &str) -> Option<String> {
    output("dpkg-query", &["-W", "-f=${Status} ${Version}", pkg]).and_then(|s| {
        s.strip_prefix("install ok installed ")
            .map(|v| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "Package: linux-image-amd64\nVersion: 6.1.192-3\nDepends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)\n\n\
        Package: linux-image-amd64\nVersion: 6.1.158-1\nDepends: linux-image-6.1.0-50-amd64 (= 6.1.158-1)\n\n\
        Package: linux-image-amd64\nVersion: 6.12.95-1~bpo12+1\nDepends: linux-image-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1)\n\n\
        Package: linux-image-amd64\nVersion: 5.10.262-1\nDepends: linux-image-5.10.0-46-amd64 (= 5.10.262-1)\n\n\
        Package: linux-image-amd64\nVersion: 5.10.237-1\nDepends: linux-image-5.10.0-32-amd64 (= 5.10.237-1)\n";

    #[test]
    fn the_newest_kernel_of_a_series() {
        assert_eq!(
            newest_abi(SHOW, "6.1").as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(
            newest_abi(SHOW, "6.12").as_deref(),
            Some("linux-image-6.12.95+deb12-amd64")
        );
        assert_eq!(
            newest_abi(SHOW, "5.10").as_deref(),
            Some("linux-image-5.10.0-46-amd64")
        );
        assert_eq!(newest_abi(SHOW, "6.6"), None);
        assert_eq!(series_offered(SHOW), vec!["5.10", "6.1", "6.12"]);
    }
}
