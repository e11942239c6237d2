//! The command line itself: help, version, usage errors and exit codes.

use std::process::Command;

fn pathwatch(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pathwatch")).args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn help_lists_every_command() {
    let (code, out, _) = pathwatch(&["--help"]);
    assert_eq!(code, 0);
    for cmd in ["run", "replay", "lab", "doctor", "config"] {
        assert!(out.contains(cmd), "{cmd} missing from --help:\n{out}");
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(pathwatch(&["replay"]).0, 2, "replay needs a file");
    assert_eq!(pathwatch(&["run"]).0, 2, "run needs -i");
    assert_eq!(pathwatch(&["frobnicate"]).0, 2);
}

#[test]
fn missing_capture_is_an_input_error_naming_the_file() {
    let (code, _, err) = pathwatch(&["replay", "/nonexistent/x.pcap"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/x.pcap"), "{err}");
}

#[test]
fn default_config_round_trips_through_config_check() {
    let (code, text, _) = pathwatch(&["config", "default"]);
    assert_eq!(code, 0);
    let dir = std::env::temp_dir().join(format!("pw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("d.toml");
    std::fs::write(&f, text).unwrap();
    assert_eq!(pathwatch(&["config", "check", f.to_str().unwrap()]).0, 0);
    std::fs::write(&f, "[dns]\ntimeout_s = -1\n").unwrap();
    let (code, _, err) = pathwatch(&["config", "check", f.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("d.toml:2:13"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
