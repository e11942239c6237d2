//! What the binary prints for installing it: shell completions and the man page.

use std::{path::Path, process::Command};

use pathwatch_tests::{TempDir, bin, pathwatch};

#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = pathwatch(&["completions", shell]);
        assert_eq!(code, 0, "completions {shell}: {err}");
        assert!(!out.trim().is_empty(), "completions {shell}: empty");
        assert!(out.contains("pathwatch"), "completions {shell} never name pathwatch");
        if shell == "bash" {
            assert!(out.contains("complete ") && out.contains("_pathwatch"), "bash completion registers nothing");
        }
    }
    assert_eq!(pathwatch(&["completions", "nosuchshell"]).0, 2);

    let (code, man, err) = pathwatch(&["man"]);
    assert_eq!(code, 0, "man: {err}");
    // clap_mangen puts two string definitions (`.ie`/`.el .ds Aq`) before `.TH`.
    let th = man.lines().position(|l| l.starts_with(".TH pathwatch 1")).unwrap_or_else(|| panic!("no .TH:\n{man}"));
    assert!(
        th <= 2 && man.lines().take(th).all(|l| l.starts_with(".ie") || l.starts_with(".el")),
        "before .TH:\n{man}"
    );
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH SUBCOMMANDS"] {
        assert!(man.contains(section), "the man page has no {section}");
    }

    // Installed the documented way, into a scratch prefix.
    let dir = TempDir::new("ops7");
    let man1 = dir.0.join("share/man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    let page = man1.join("pathwatch.1");
    let sh = format!("'{}' man > '{}'", bin().display(), page.display());
    let st = Command::new("sh").args(["-c", &sh]).status().unwrap();
    assert!(st.success(), "{sh}");
    assert_eq!(std::fs::read_to_string(&page).unwrap(), man);
    if ["/usr/bin/man", "/bin/man"].iter().any(|p| Path::new(p).exists()) {
        let manpath = dir.0.join("share/man").display().to_string();
        for args in [vec!["-l", page.to_str().unwrap()], vec!["-M", manpath.as_str(), "pathwatch"]] {
            let out = Command::new("timeout")
                .arg("60")
                .arg("man")
                .args(&args)
                .env("MANPAGER", "cat")
                .env("PAGER", "cat")
                .env("MANWIDTH", "80")
                .env("LC_ALL", "C")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "man {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            assert!(
                text.contains("NAME") && text.contains("SYNOPSIS") && text.contains("pathwatch"),
                "man {args:?}:\n{text}"
            );
        }
    }
}
