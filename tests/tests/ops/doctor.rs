//! `pathwatch doctor` as root, in a namespace of its own: the host can run the agent,
//! and doctor says whether the drop program can too (BTF, the `kfree_skb` tracepoint
//! and offsets, the verifier), or what findings lose without it.

use std::path::Path;

use pathwatch::lab::netns::NetNs;
use pathwatch_tests::{bin, privileged};

/// Doctor's line for check `what` (`STATUS  WHAT  FOUND`), if it printed one.
fn check_line<'a>(out: &'a str, what: &str) -> Option<&'a str> {
    out.lines().find(|l| l.get(6..).is_some_and(|rest| rest.split("  ").next() == Some(what)))
}

#[test]
fn doctor_says_whether_the_drop_program_can_run() {
    if !privileged("doctor_says_whether_the_drop_program_can_run") {
        return;
    }
    let ns = NetNs::new("pwt-ops8-a").unwrap();
    let out = ns.cmd(bin().to_str().unwrap()).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(0), "doctor as root:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("pathwatch can run here."), "{text}");
    let drop = check_line(&text, "drop program").unwrap_or_else(|| panic!("no drop program line:\n{text}"));
    let btf = check_line(&text, "BTF").unwrap_or_else(|| panic!("no BTF line:\n{text}"));
    if Path::new("/sys/kernel/btf/vmlinux").exists() || std::env::var_os("PATHWATCH_REQUIRE_BPF").is_some() {
        assert!(btf.starts_with("ok "), "{btf}");
        assert!(
            drop.starts_with("ok ") && drop.contains("kfree_skb tracepoint") && drop.contains("passes the verifier"),
            "{drop}"
        );
    } else {
        // Not a failure: the agent runs without it, and says what that costs.
        assert!(btf.starts_with("warn") && drop.starts_with("warn"), "{btf}\n{drop}");
        assert!(drop.contains("dropped_here: \"unknown\""), "{drop}");
        assert!(text.contains("fix: build the kernel with CONFIG_DEBUG_INFO_BTF=y"), "{text}");
    }
}
