//! The systemd unit and the logrotate snippet, as systemd-analyze and logrotate see
//! them.

use std::{collections::BTreeSet, path::Path, time::Duration};

use pathwatch_tests::{
    TempDir, deploy_file,
    tools::{run, run_env, tool, which},
};

use super::read;

/// `Key=Value` lines of a unit file (comments and sections left out).
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn systemd_unit_verifies() {
    let test = "systemd_unit_verifies";
    let path = deploy_file("systemd/pathwatch.service");
    let unit = read(&path);
    let d = directives(&unit);
    let get = |k: &str| d.iter().filter(|(key, _)| key == k).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    let one = |k: &str| {
        let v = get(k);
        assert_eq!(v.len(), 1, "{k}= should be set once: {v:?}");
        v[0].clone()
    };
    let words = |s: String| s.split_whitespace().map(str::to_string).collect::<BTreeSet<_>>();
    let caps = words("CAP_BPF CAP_NET_ADMIN CAP_PERFMON".into());
    assert_eq!(words(one("AmbientCapabilities")), caps);
    assert_eq!(words(one("CapabilityBoundingSet")), caps);
    assert_eq!(words(one("RestrictAddressFamilies")), words("AF_UNIX AF_INET AF_INET6 AF_NETLINK".into()));
    for (k, v) in [
        ("User", "pathwatch"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("LogsDirectory", "pathwatch"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("EnvironmentFile", "-/etc/default/pathwatch"),
        ("LimitMEMLOCK", "infinity"),
    ] {
        assert_eq!(one(k), v, "{k}=");
    }
    let exec = one("ExecStart");
    assert!(
        exec.starts_with(
            "/usr/local/bin/pathwatch run -i ${PATHWATCH_INTERFACES} --config /etc/pathwatch/pathwatch.toml \
             --metrics 127.0.0.1:9464 --json /var/log/pathwatch/findings.jsonl"
        ),
        "ExecStart={exec}"
    );
    // Settings that would hide or detach what BPF, BTF, netlink and XDP attach need.
    for k in ["ProtectKernelTunables", "PrivateDevices", "PrivateNetwork", "PrivateUsers"] {
        for v in get(k) {
            assert!(!matches!(v.as_str(), "yes" | "true" | "on" | "1"), "{k}={v} would break BPF or XDP attach");
        }
    }
    assert!(get("ProcSubset").iter().all(|v| v != "pid"), "ProcSubset=pid hides /proc/sys");

    let Some(analyze) = tool(test, "systemd-analyze", "systemd") else { return };
    // /usr/local/bin/pathwatch is not installed here: verify a copy that runs `true`,
    // so that what remains to complain about is the unit's own content.
    let dir = TempDir::new("systemd-unit");
    let bin = "/usr/local/bin/pathwatch";
    let copy = if Path::new(bin).exists() {
        unit.clone()
    } else {
        let t = which("true").expect("true");
        unit.replace(&format!("ExecStart={bin}"), &format!("ExecStart={}", t.display()))
    };
    let tmp_unit = dir.0.join("pathwatch.service");
    std::fs::write(&tmp_unit, copy).expect("write unit copy");
    let unit_arg = tmp_unit.to_str().expect("utf-8 path");
    let out = run_env(
        &analyze,
        &["verify", "--man=no", unit_arg],
        &dir.0,
        &[("SYSTEMD_LOG_LEVEL", "notice"), ("LC_ALL", "C")],
        Duration::from_secs(120),
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    let problems: Vec<&str> = all.lines().filter(|l| l.contains("pathwatch")).collect();
    for l in all.lines().filter(|l| !l.contains("pathwatch") && !l.trim().is_empty()) {
        eprintln!("note (not about this unit): {l}");
    }
    assert!(out.ok() && problems.is_empty(), "systemd-analyze verify complains about the unit:\n{}", out.text());

    // The hardening, scored by systemd itself (0 = locked down, 10 = exposed).
    let sec = run_env(
        &analyze,
        &["security", "--offline=yes", "--threshold=40", "--no-pager", unit_arg],
        &dir.0,
        &[("LC_ALL", "C")],
        Duration::from_secs(120),
    );
    let overall = format!("{}{}", sec.stdout, sec.stderr);
    let overall = overall.lines().find(|l| l.contains("Overall exposure level")).unwrap_or("").to_string();
    assert!(sec.ok(), "systemd-analyze security: exposure above 4.0 or an error:\n{}", sec.text());
    println!("systemd-analyze verify: clean; security: {}", overall.trim());
}

#[test]
fn logrotate_snippet_is_valid() {
    let test = "logrotate_snippet_is_valid";
    let text = read(&deploy_file("systemd/pathwatch.logrotate"));
    let active: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    assert!(
        !active.iter().any(|l| l.starts_with("copytruncate")),
        "copytruncate must not be used: the agent reopens on SIGHUP"
    );
    assert!(
        active.iter().any(|l| l.starts_with("systemctl reload pathwatch")),
        "postrotate must reload pathwatch (SIGHUP)"
    );
    assert!(active.iter().any(|l| l.starts_with("/var/log/pathwatch/")), "must rotate /var/log/pathwatch/");
    let Some(logrotate) = tool(test, "logrotate", "logrotate") else { return };
    // logrotate insists on a config owned by the user running it and not writable by
    // others: use a fresh copy.
    let dir = TempDir::new("logrotate");
    let conf = dir.0.join("pathwatch");
    std::fs::write(&conf, &text).expect("write logrotate copy");
    let state = dir.0.join("state");
    let out = run(
        &logrotate,
        &["-d", "-s", state.to_str().unwrap(), conf.to_str().unwrap()],
        &dir.0,
        Duration::from_secs(60),
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    let errors: Vec<&str> = all.lines().filter(|l| l.to_lowercase().contains("error")).collect();
    assert!(out.ok() && errors.is_empty(), "logrotate -d:\n{}", out.text());
    assert!(all.contains("rotating pattern: /var/log/pathwatch/*.jsonl"), "logrotate -d:\n{}", out.text());
}
