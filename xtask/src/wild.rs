//! `cargo xtask wild`: assembles the wild corpus (tests/wild/README.md) from its
//! recipe, `tests/wild/SOURCES.tsv`, into a directory (default `target/wild`, or
//! `$PATHWATCH_WILD`). The captures belong to other projects and are never committed
//! here; each is taken from a snapshot of its repository already on this machine
//! (`/work/.mirror/<owner>+<name>/`, fetched by the session's fetch tool), or copied
//! from a directory that already holds the files, and checked against its sha256.
//! Nothing here touches the network: a repository not on disk is named as missing.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::sh;

/// The corpora assembled from recipes of real public captures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Corpus {
    /// `tests/wild`: traffic pathwatch was not built from, for precision.
    Wild,
    /// `tests/formats`: every encapsulation and link type replay reads, with tshark's counts.
    Formats,
}

impl Corpus {
    fn name(self) -> &'static str {
        match self {
            Corpus::Wild => "wild",
            Corpus::Formats => "formats",
        }
    }

    /// The environment variable naming its directory.
    fn env(self) -> &'static str {
        match self {
            Corpus::Wild => "PATHWATCH_WILD",
            Corpus::Formats => "PATHWATCH_FORMATS",
        }
    }
}

/// Arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Which corpus.
    #[arg(long, value_enum, default_value = "wild")]
    pub(crate) corpus: Corpus,
    /// Where to put the corpus (default `$PATHWATCH_WILD` or `$PATHWATCH_FORMATS`, else
    /// `target/wild` or `target/formats`).
    #[arg(long)]
    pub(crate) into: Option<PathBuf>,
    /// A directory already holding corpus files (by file name), tried before the
    /// snapshots; `../shared/pcaps/wild` (or `formats`) is tried too when it exists.
    #[arg(long)]
    pub(crate) from: Vec<PathBuf>,
    /// Where the repository snapshots are (default `$PATHWATCH_MIRROR`, else
    /// `/work/.mirror`).
    #[arg(long)]
    pub(crate) mirror: Option<PathBuf>,
}

/// The recipe.
pub fn recipe() -> PathBuf {
    recipe_of(Corpus::Wild)
}

/// The recipe of `corpus`.
fn recipe_of(corpus: Corpus) -> PathBuf {
    sh::workspace_root().join("tests").join(corpus.name()).join("SOURCES.tsv")
}

/// The ground truth.
pub fn ground_truth_path() -> PathBuf {
    sh::workspace_root().join("tests/wild/GROUND-TRUTH.tsv")
}

/// The rows of a tab-separated table with a header line, as (column, value) pairs;
/// blank lines and `#` lines skipped, short rows padded with empty values.
pub fn read_tsv(path: &Path) -> Result<Vec<Vec<(String, String)>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_tsv(&text))
}

fn parse_tsv(text: &str) -> Vec<Vec<(String, String)>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
    let Some(header) = lines.next() else { return Vec::new() };
    let header: Vec<&str> = header.split('\t').collect();
    lines
        .map(|l| {
            let values = l.split('\t').chain(std::iter::repeat(""));
            header.iter().zip(values).map(|(h, v)| (h.to_string(), v.to_string())).collect()
        })
        .collect()
}

/// The value of column `name` in `row` ("" when absent).
pub fn col<'a>(row: &'a [(String, String)], name: &str) -> &'a str {
    row.iter().find(|(h, _)| h == name).map(|(_, v)| v.as_str()).unwrap_or("")
}

/// Where the corpus is looked for, in order (as the tests look): `$PATHWATCH_WILD`,
/// `../shared/pcaps/wild` beside the clone, `target/wild`.
pub fn corpus_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(d) = std::env::var_os("PATHWATCH_WILD").filter(|d| !d.is_empty()) {
        out.push(PathBuf::from(d));
    }
    out.push(sh::workspace_root().join("../shared/pcaps/wild"));
    out.push(sh::target_dir().join("wild"));
    out
}

/// The first candidate directory holding at least one capture.
pub fn corpus_dir() -> Option<PathBuf> {
    corpus_candidates().into_iter().find(|d| {
        std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
    })
}

/// The git directory of a snapshot: the first directory under `base` (at most three
/// levels down, e.g. `repo` or `repo/.git`) holding both `HEAD` and `objects`.
pub fn git_dir(base: &Path) -> Option<PathBuf> {
    let mut level = vec![base.to_path_buf()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for d in level {
            if d.join("HEAD").is_file() && d.join("objects").is_dir() {
                return Some(d);
            }
            let mut subdirs: Vec<PathBuf> = std::fs::read_dir(&d)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "objects" && n != "refs"))
                .collect();
            subdirs.sort();
            next.extend(subdirs);
        }
        level = next;
    }
    None
}

/// The command that turns the blob at `path` into the capture (by its suffix, as the
/// recipe was made), or `None` when the blob is the capture.
fn decompressor(path: &str) -> Option<Vec<&'static str>> {
    if path.ends_with(".tgz") || path.ends_with(".tar.gz") {
        Some(vec!["tar", "-xzO"])
    } else if path.ends_with(".gz") {
        Some(vec!["gzip", "-dc"])
    } else if path.ends_with(".xz") {
        Some(vec!["xz", "-dc"])
    } else {
        None
    }
}

/// Runs `argv` with `input` on stdin, returning stdout.
fn filter(argv: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", argv[0]))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    if !out.status.success() {
        bail!("{} failed: {}", argv.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

/// The sha256 of a file, hex (with `sha256sum`).
fn sha256(path: &Path) -> Option<String> {
    let out = Command::new("sha256sum").arg(path).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success().then(|| text.split_whitespace().next().unwrap_or("").to_string())
}

/// One capture from its snapshot: the blob at `commit:path`, decompressed, cut.
fn extract(git: &Path, commit: &str, path: &str, cut: &str, out: &Path) -> Result<()> {
    let blob = Command::new("git")
        .env("GIT_NO_LAZY_FETCH", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args(["-c", "protocol.allow=never", "--git-dir"])
        .arg(git)
        .args(["show", &format!("{commit}:{path}")])
        .output()
        .context("cannot start git")?;
    if !blob.status.success() {
        bail!("git show {commit}:{path}: {}", String::from_utf8_lossy(&blob.stderr).trim());
    }
    let bytes = match decompressor(path) {
        Some(argv) => filter(&argv, &blob.stdout)?,
        None => blob.stdout,
    };
    if cut.trim().is_empty() {
        std::fs::write(out, bytes)?;
        return Ok(());
    }
    let whole = out.with_extension("whole");
    std::fs::write(&whole, bytes)?;
    let status = Command::new("editcap").args(cut.split_whitespace()).arg(&whole).arg(out).status();
    let _ = std::fs::remove_file(&whole);
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => bail!("editcap {cut} failed ({s})"),
        Err(e) => bail!("cannot run editcap (apt-get install wireshark-common): {e}"),
    }
}

/// Assembles the corpus.
pub fn run(args: &Args) -> Result<()> {
    let (name, recipe) = (args.corpus.name(), recipe_of(args.corpus));
    let into = args
        .into
        .clone()
        .or_else(|| std::env::var_os(args.corpus.env()).filter(|d| !d.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| sh::target_dir().join(name));
    let mirror = args
        .mirror
        .clone()
        .or_else(|| std::env::var_os("PATHWATCH_MIRROR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/work/.mirror"));
    let mut from = args.from.clone();
    let shared = sh::workspace_root().join("../shared/pcaps").join(name);
    if shared.is_dir() && shared.canonicalize().ok() != into.canonicalize().ok() {
        from.push(shared);
    }
    let rows = read_tsv(&recipe)?;
    if rows.is_empty() {
        bail!("{} has no rows", recipe.display());
    }
    std::fs::create_dir_all(&into).with_context(|| format!("creating {}", into.display()))?;
    let (mut present, mut copied, mut extracted) = (0, 0, 0);
    let mut missing_repos: Vec<String> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for row in &rows {
        let (file, repo, sha) = (col(row, "file"), col(row, "repo"), col(row, "sha256"));
        let out = into.join(file);
        if sha256(&out).as_deref() == Some(sha) {
            present += 1;
            continue;
        }
        if let Some(src) = from.iter().map(|d| d.join(file)).find(|p| sha256(p).as_deref() == Some(sha)) {
            std::fs::copy(&src, &out).with_context(|| format!("copying {}", src.display()))?;
            copied += 1;
            continue;
        }
        let Some(git) = git_dir(&mirror.join(repo.replace('/', "+"))) else {
            if !missing_repos.iter().any(|r| r == repo) {
                missing_repos.push(repo.to_string());
            }
            failed.push(format!("{file}: repository {repo} not fetched"));
            continue;
        };
        let result = extract(&git, col(row, "commit"), col(row, "path"), col(row, "cut"), &out).and_then(|()| {
            match sha256(&out) {
                Some(got) if got == sha => Ok(()),
                got => bail!("sha256 {} is not the recipe's {sha}", got.unwrap_or_default()),
            }
        });
        match result {
            Ok(()) => extracted += 1,
            Err(e) => {
                let _ = std::fs::remove_file(&out);
                failed.push(format!("{file}: {e:#}"));
            }
        }
    }
    println!(
        "{name}: {} of {} captures in {} ({present} already there, {copied} copied, {extracted} extracted from snapshots)",
        present + copied + extracted,
        rows.len(),
        into.display()
    );
    if !missing_repos.is_empty() {
        println!("{name}: repositories not fetched (fetch each with the session's fetch tool, then rerun):");
        for r in &missing_repos {
            println!("  github:{r}");
        }
    }
    let failed_other: Vec<&String> = failed.iter().filter(|f| !f.ends_with("not fetched")).collect();
    if !failed_other.is_empty() {
        println!("{name}: failed:");
        for f in &failed_other {
            println!("  {f}");
        }
    }
    if !failed.is_empty() {
        bail!("{} of {} captures could not be assembled", failed.len(), rows.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_rows_are_read_by_header() {
        let rows = parse_tsv("file\trepo\tcut\n# note\n\na.pcap\tz/z\n");
        assert_eq!(rows.len(), 1);
        assert_eq!((col(&rows[0], "file"), col(&rows[0], "cut"), col(&rows[0], "x")), ("a.pcap", "", ""));
    }

    #[test]
    fn decompressor_follows_the_suffix() {
        assert_eq!(decompressor("a/evidence08.pcap.tgz"), Some(vec!["tar", "-xzO"]));
        assert_eq!(decompressor("b.pcap.gz"), Some(vec!["gzip", "-dc"]));
        assert_eq!(decompressor("c.pcap.xz"), Some(vec!["xz", "-dc"]));
        assert_eq!(decompressor("d.pcapng"), None);
    }

    #[test]
    fn git_dir_is_found_below_the_snapshot() {
        let base = std::env::temp_dir().join(format!("xtask-wild-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        assert_eq!(git_dir(&base), None);
        let git = base.join("repo/.git");
        std::fs::create_dir_all(git.join("objects")).unwrap();
        std::fs::create_dir_all(base.join("repo/src")).unwrap();
        assert_eq!(git_dir(&base), None, "HEAD missing");
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        assert_eq!(git_dir(&base), Some(git));
        let _ = std::fs::remove_dir_all(&base);
    }
}
