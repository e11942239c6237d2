//! The agent's own life: killed with SIGKILL it leaves nothing behind and a new one
//! starts at once; a second agent on a held interface says who holds it.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use pathwatch::lab::netns::{veth, wait_for};
use pathwatch_tests::{
    TempDir, bin,
    netns::{ifindex_in, ipv4_only},
    privileged,
    proc::{Proc, agent},
    procfs::{BpfFd, bpf_fds, bpf_object_exists, shown_attached, tree, watched},
};

use super::{agent_with, pair, queries, second_link, summary_of, u};

#[test]
fn kill_9_leaves_no_link_program_map_or_pin_and_a_new_agent_starts_at_once() {
    if !privileged("kill_9_leaves_no_link_program_map_or_pin_and_a_new_agent_starts_at_once") {
        return;
    }
    let dir = TempDir::new("flt1");
    let p = pair(1);
    let (a1, a1_ip, b1_ip) = second_link(&p, 1);
    let pins_before = tree(Path::new("/sys/fs/bpf"));
    let args = ["run", "-i", &p.a_if, "-i", &a1];
    let mut first = agent_with(&p.a, &[], &args, &dir.0, "first");
    let (i0, i1) = (ifindex_in(&p.a, &p.a_if), ifindex_in(&p.a, &a1));
    let held = bpf_fds(first.pid());
    assert!(watched(first.pid(), i0) && watched(first.pid(), i1), "xdp and tcx links on both interfaces: {held:?}");
    let mut ids: Vec<(&str, u32)> = Vec::new();
    for f in &held {
        match f {
            BpfFd::Link(_, l, prog, _) => ids.extend([("link", *l), ("prog", *prog)]),
            BpfFd::Prog(prog) => ids.push(("prog", *prog)),
            BpfFd::Map(m, _, _) => ids.push(("map", *m)),
        }
    }
    ids.sort();
    ids.dedup();
    assert!(ids.iter().any(|(w, _)| *w == "map") && ids.iter().any(|(w, _)| *w == "prog"), "{held:?}");

    first.signal(libc::SIGKILL);
    assert_eq!(first.wait(Duration::from_secs(5)), Some(-1), "kill -9");
    let gone = wait_for(Duration::from_secs(5), || {
        ids.iter().all(|(w, id)| !bpf_object_exists(w, *id))
            && shown_attached(&p.a, &p.a_if).is_empty()
            && shown_attached(&p.a, &a1).is_empty()
    });
    let left: Vec<_> = ids.iter().filter(|(w, id)| bpf_object_exists(w, *id)).collect();
    assert!(
        gone,
        "after kill -9: still there: {left:?}; {:?} {:?}",
        shown_attached(&p.a, &p.a_if),
        shown_attached(&p.a, &a1)
    );
    let pins_after = tree(Path::new("/sys/fs/bpf"));
    let new_pins: Vec<_> = pins_after.iter().filter(|x| !pins_before.contains(x)).collect();
    assert!(new_pins.is_empty(), "new entries under /sys/fs/bpf: {new_pins:?}");
    eprintln!(
        "kill -9: {} bpf objects ({ids:?}) all released; /sys/fs/bpf unchanged ({} entries)",
        ids.len(),
        pins_after.len()
    );

    // A new agent on the same interfaces, at once.
    let t0 = Instant::now();
    let mut second = agent_with(&p.a, &[], &args, &dir.0, "second");
    let took = t0.elapsed();
    assert!(watched(second.pid(), i0) && watched(second.pid(), i1), "{:?}", bpf_fds(second.pid()));
    assert!(!second.stderr().contains("error"), "{}", second.logs());
    eprintln!("the new agent was watching {} ms after it started", took.as_millis());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    queries(p.b.name(), p.b_ip, p.a_ip, "k9.test", 2, Duration::ZERO);
    queries(p.b.name(), b1_ip, a1_ip, "k9.test", 3, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(second.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", second.logs());
    let human = second.stdout();
    let summary = human.lines().find(|l| l.starts_with("summary: ")).unwrap_or_else(|| panic!("no summary:\n{human}"));
    assert!(summary.contains("dns_query 5"), "{summary}");
    assert!(shown_attached(&p.a, &p.a_if).is_empty() && shown_attached(&p.a, &a1).is_empty(), "detached after SIGTERM");
}

// ---------------------------------------------------------------------------------
// Two agents on one interface.

#[test]
fn a_second_agent_on_the_same_interface_exits_2_naming_the_holder() {
    if !privileged("a_second_agent_on_the_same_interface_exits_2_naming_the_holder") {
        return;
    }
    let dir = TempDir::new("flt2");
    let p = pair(2);
    // A decoy: an agent started earlier (a lower PID) in another namespace, on an
    // interface with the same ifindex. An ifindex alone does not name the holder.
    let c = ipv4_only("pwt-flt2-c");
    veth(&c, "f2c0", &p.b, "f2b9").unwrap();
    let decoy_dir = dir.0.join("decoy");
    std::fs::create_dir(&decoy_dir).unwrap();
    let decoy = agent(&c, &["run", "-i", "f2c0"], &decoy_dir);
    assert_eq!(ifindex_in(&c, "f2c0"), ifindex_in(&p.a, &p.a_if), "the decoy's interface has another ifindex");
    let json = dir.0.join("first.json");
    let mut first = agent(&p.a, &["run", "-i", &p.a_if, "--json", json.to_str().unwrap()], &dir.0);
    let links = bpf_fds(first.pid());

    let mut second = Proc::spawn(&p.a, &[], &bin(), &["run", "-i", &p.a_if], &dir.0, "second");
    let code = second.wait(Duration::from_secs(20));
    let err = second.stderr();
    eprintln!("the second agent: {}", err.trim());
    assert_eq!(code, Some(2), "{}", second.logs());
    let holder = format!("held by pid {} (pathwatch)", first.pid());
    assert!(err.contains(&p.a_if) && err.contains(&holder), "stderr does not say {holder:?}:\n{err}");
    assert!(!err.contains(&format!("pid {} ", decoy.pid())), "named the decoy in another namespace:\n{err}");
    assert!(second.stdout().trim().is_empty(), "{}", second.logs());

    // The first is untouched and counts on.
    assert!(first.running(), "{}", first.logs());
    assert_eq!(bpf_fds(first.pid()), links, "the first agent's links changed");
    queries(p.b.name(), p.b_ip, p.a_ip, "busy.test", 5, Duration::from_millis(10));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(first.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", first.logs());
    let s = summary_of(&std::fs::read_to_string(&json).unwrap());
    assert_eq!(u(&s["interfaces"][&p.a_if]["ingress"]["packets"]["dns"]), 5, "{s}");
    assert_eq!(u(&s["events"]["dns_query"]), 5, "{s}");
    assert!(shown_attached(&p.a, &p.a_if).is_empty(), "detached after SIGTERM");
}
