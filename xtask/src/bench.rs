//! `cargo xtask bench [kernel|flood|replay|consumer|memory|precision] [--json]`: the
//! benchmarks, measured side by side in one run on this machine, and `BENCHMARKS.md`
//! rewritten with the figures, the date and the command when all of them ran.
//!
//! The measuring is done by the `pathwatch-bench` binary (`tests/bench`: it needs the
//! agent's library and the kernel programs); this command builds it beside the release
//! `pathwatch` it runs, runs each benchmark with `--json`, shows its table, and writes
//! the report. `precision` is measured here, with the release `pathwatch` on the wild
//! corpus ([`crate::precision`]); it rewrites only its own section of the report, and
//! a full run carries that section over (or measures it again when the corpus is
//! assembled).

use std::{fmt::Write as _, process::Command, time::Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{precision, setup, sh};

/// The benchmarks, in report order.
pub const ALL: [&str; 6] = ["kernel", "flood", "replay", "consumer", "memory", "drops"];

/// What `which` may name: the benchmarks and `precision`.
const CHOICES: [&str; 7] = ["kernel", "flood", "replay", "consumer", "memory", "drops", "precision"];

/// Arguments.
#[derive(clap::Args)]
pub struct Args {
    /// One benchmark (all of them, and BENCHMARKS.md rewritten, when omitted).
    #[arg(value_parser = CHOICES)]
    pub(crate) which: Option<String>,
    /// Print each benchmark's JSON object on standard output.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs the benchmarks.
pub fn run(args: &Args) -> Result<()> {
    setup::run()?;
    sh::run("bench:", sh::cargo().args(["build", "--release", "-p", "pathwatch", "-p", "pathwatch-bench"]))?;
    if args.which.as_deref() == Some("precision") {
        return run_precision(args.json);
    }
    let bin = sh::target_dir().join("release/pathwatch-bench");
    let which: Vec<&str> = match &args.which {
        Some(w) => vec![w.as_str()],
        None => ALL.to_vec(),
    };
    let started = Instant::now();
    let mut results = Vec::new();
    for w in &which {
        let t = Instant::now();
        eprintln!("bench: {w}");
        let out =
            Command::new(&bin).args([w, "--json"]).output().with_context(|| format!("running {}", bin.display()))?;
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            bail!("{w} benchmark failed ({})", out.status);
        }
        let value: Value = serde_json::from_slice(&out.stdout).with_context(|| format!("{w}: not one JSON object"))?;
        if args.json {
            println!("{value}");
        }
        eprintln!("bench: {w} took {}", sh::fmt_duration(t.elapsed()));
        results.push((*w, value));
    }
    if args.which.is_none() {
        let path = sh::workspace_root().join("BENCHMARKS.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let mut doc = report(&results, started.elapsed().as_secs_f64());
        if let Some(section) = precision::existing_section(&old) {
            doc = precision::splice(&doc, &section);
        }
        std::fs::write(&path, doc)?;
        if crate::wild::corpus_dir().is_some() {
            run_precision(args.json)?;
        }
        eprintln!("bench: wrote {} ({} in all)", path.display(), sh::fmt_duration(started.elapsed()));
    }
    Ok(())
}

/// `precision`: the release `pathwatch` on the wild corpus, its table shown and its
/// section of BENCHMARKS.md rewritten.
fn run_precision(json: bool) -> Result<()> {
    let t = Instant::now();
    eprintln!("bench: precision");
    let value = precision::measure(&sh::target_dir().join("release/pathwatch"))?;
    if json {
        println!("{value}");
    }
    let date = sh::capture("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let section = precision::section(&value, &date);
    eprint!("{section}");
    let path = sh::workspace_root().join("BENCHMARKS.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, precision::splice(&doc, &section))?;
    eprintln!("bench: precision took {}; wrote its section of {}", sh::fmt_duration(t.elapsed()), path.display());
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn met(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

/// BENCHMARKS.md from the figures.
pub fn report(results: &[(&str, Value)], secs: f64) -> String {
    let mut o = String::new();
    let date = sh::capture("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let _ = writeln!(o, "# pathwatch benchmarks\n");
    let _ =
        writeln!(o, "Measured {} on {} with `cargo xtask bench` ({secs:.0} s for all six).", date.trim(), machine());
    let _ = writeln!(o, "Every figure is measured side by side with its peer or baseline in the same run;");
    let _ = writeln!(o, "the machine is shared, so ratios matter more than absolute numbers. Rerun one");
    let _ = writeln!(o, "benchmark with `cargo xtask bench kernel|flood|replay|consumer|memory|drops [--json]`.\n");
    for (name, v) in results {
        match *name {
            "kernel" => {
                let base = f(&v["baseline_ns"]);
                let _ = writeln!(o, "## Kernel cost per packet\n");
                let _ = writeln!(
                    o,
                    "BPF_PROG_TEST_RUN through `pathwatch_xdp`, {} repeats, minimum of {} runs, beside an XDP program that only returns XDP_PASS (**{base:.0} ns**). Evented kinds are measured with a thread draining the ring buffer (reservations failed: {}).\n",
                    v["repeats"], v["rounds"], v["ringbuf_full"]
                );
                let _ = writeln!(o, "| packet | ns/packet | over XDP_PASS | goal | met |\n|---|---:|---:|---:|---|");
                // The goals of the line-rate issue, as the benchmark judged them:
                // non-matching +10, in-order bulk TCP +20, evented floor_event + 20.
                let goals = &v["goals_over_baseline_ns"];
                let goal_cells = |k: &str, over: f64| match goals.get(k).and_then(Value::as_f64) {
                    Some(g) => (format!("+{g:.0}"), met(over <= g).to_string()),
                    None => ("-".into(), "-".into()),
                };
                for (k, ns) in v["ns"].as_object().into_iter().flatten() {
                    let over = f(ns) - base;
                    let (goal, ok) = goal_cells(k, over);
                    let _ = writeln!(o, "| {k} | {:.0} | +{over:.0} | {goal} | {ok} |", f(ns));
                }
                for (k, ns) in v["extra_ns"].as_object().into_iter().flatten() {
                    let over = f(ns) - base;
                    let (goal, ok) = goal_cells(k, over);
                    let _ = writeln!(o, "| {k} (extra) | {:.0} | +{over:.0} | {goal} | {ok} |", f(ns));
                }
                for (k, ns) in v["floor_ns"].as_object().into_iter().flatten() {
                    let _ = writeln!(o, "| {k} (floor) | {:.0} | +{:.0} | - | - |", f(ns), f(ns) - base);
                }
                let _ = writeln!(
                    o,
                    "\nExtras: `tcp_large_df_retransmit` repeats one 1500-byte DF segment, a retransmission (an event) every time; `l2_only_arp` and `l3_only_ipv4_gre` stop the header walk after Ethernet and after IPv4, so the rows from `floor_count` up to `tcp_nonmatch` show what each layer adds; `tcp_bulk_inorder` is a bulk transfer as Linux sends it on a 1500-byte LAN, in-order 1460-byte DF segments of one flow, each looked up and updated in the flow cache, no event. Its segments all differ, so they run one per call ({} single runs, minimum) beside the same segment without DF one per call; the difference (what the flow cache adds) is added to `tcp_nonmatch`. `tcp_bulk_inorder_single_over_pass` is the older measure, the single-run minimum less XDP_PASS's: it also charges what a single call costs any program beyond a pass (its code and maps cold after the syscall).\n\nFloors (programs loaded only by the benchmark, run on the TCP frame): `floor_count` reads the interface's counter slot and adds to one per-CPU counter, with no header walk: the least any program that counts per interface pays. `floor_event` does the same, then reserves a small ring-buffer record, stamps it with the coarse clock, writes its first 64 bytes and submits it without a wakeup: the least any evented packet pays. Non-matching kinds cost their floor_count plus the header walk; evented kinds their floor_event plus the header walk and the event's contents.\n",
                    v["single_runs"]
                );
                let tc_base = f(&v["tc_baseline_ns"]);
                let _ = writeln!(
                    o,
                    "\nTC egress: the same frames through `pathwatch_tc`, as packets this host sends (so evented kinds raise their event), beside a classifier that only returns TC_ACT_OK (**{tc_base:.0} ns**; a test run at TC builds a socket buffer, which XDP's does not), with the same goals over it: the evented kinds' over the TC `floor_event`, the same floor program as a classifier (what reporting a socket buffer costs at TC).\n"
                );
                let _ = writeln!(o, "| packet | ns/packet | over TC_ACT_OK | goal | met |\n|---|---:|---:|---:|---|");
                let tc_goals = &v["tc_goals_over_baseline_ns"];
                for (k, ns) in v["tc_ns"].as_object().into_iter().flatten() {
                    let over = f(ns) - tc_base;
                    let (goal, ok) = match tc_goals.get(k).and_then(Value::as_f64) {
                        Some(g) => (format!("+{g:.0}"), met(over <= g).to_string()),
                        None => ("-".into(), "-".into()),
                    };
                    let _ = writeln!(o, "| tc_{k} | {:.0} | {over:+.0} | {goal} | {ok} |", f(ns));
                }
                for (k, ns) in v["tc_floor_ns"].as_object().into_iter().flatten() {
                    let _ = writeln!(o, "| tc_{k} (floor) | {:.0} | {:+.0} | - | - |", f(ns), f(ns) - tc_base);
                }
                let _ = writeln!(o);
            }
            "flood" => {
                let _ = writeln!(o, "## Live flood on veth\n");
                let _ = writeln!(
                    o,
                    "DNS-shaped UDP (sendmmsg) from one namespace to another for {} s; every packet is a DNS query, so every packet raises an event. Delivered = datagrams that reached the receiver's UDP layer (InDatagrams + RcvbufErrors), so the reader's speed does not count. Each setup ran {} times, interleaved; its best round is shown. \"XDP_PASS only\" attaches a program that does nothing, in the same mode: the cost of the attach mode itself (native XDP on veth moves the receive path to veth's NAPI poll).\n",
                    v["secs"], v["rounds"]
                );
                let _ = writeln!(
                    o,
                    "| setup | sent | delivered | packets/s | vs no agent | vs XDP_PASS, same mode | counted | lost events / kernel drops |\n|---|---:|---:|---:|---:|---:|---:|---|"
                );
                let none = f(&v["none"]["pps"]);
                for (k, label) in [
                    ("none", "no agent"),
                    ("xdp_pass_native", "XDP_PASS only, native"),
                    ("xdp_pass_skb", "XDP_PASS only, skb"),
                    ("native", "pathwatch, native XDP"),
                    ("skb", "pathwatch, skb XDP"),
                    ("tcpdump", "tcpdump -w /dev/null 'udp port 53'"),
                ] {
                    let r = &v[k];
                    let counted = match r.get("counted_every_packet_every_round") {
                        Some(Value::Bool(true)) => format!("{} (= sent, every round)", r["counted_dns"]),
                        Some(_) => format!("{} (**not** every packet)", r["counted_dns"]),
                        None => "-".into(),
                    };
                    let lost = r
                        .get("events_lost_all_rounds")
                        .or_else(|| r.get("dropped_by_kernel"))
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into());
                    let vs_pass = r
                        .get("pps_vs_xdp_pass")
                        .map(|x| format!("{:+.1} %", (f(x) - 1.0) * 100.0))
                        .unwrap_or_else(|| "-".into());
                    let _ = writeln!(
                        o,
                        "| {label} | {} | {} | {:.0} | {:+.1} % | {vs_pass} | {counted} | {lost} |",
                        r["sent"],
                        r["delivered"],
                        f(&r["pps"]),
                        (f(&r["pps"]) / none - 1.0) * 100.0
                    );
                }
                if let Some(n) = v["native"]["drops_here"].as_u64() {
                    let _ = writeln!(
                        o,
                        "\nIn its best native round pathwatch's drop program counted {n} packets dropped in the receiver's namespace (its socket buffer full, mostly): each ran the drop program (\"Drop program\" below), which packets that reach the socket do not."
                    );
                }
                let _ = writeln!(
                    o,
                    "\nConsumer: events lost at each offered event rate (pathwatch native XDP):\n\n| offered events/s | sent/s | lost |\n|---:|---:|---:|"
                );
                let consumer: Vec<&Value> = v["consumer"].as_array().into_iter().flatten().collect();
                for c in &consumer {
                    let _ = writeln!(o, "| {} | {:.0} | {} |", c["offered"], f(&c["sent_per_s"]), c["events_lost"]);
                }
                match consumer.iter().find(|c| c["events_lost"].as_u64().unwrap_or(0) > 0) {
                    Some(c) => {
                        let _ = writeln!(
                            o,
                            "\nThe consumer stops keeping up at {} events/s offered ({:.0}/s sent).",
                            c["offered"],
                            f(&c["sent_per_s"])
                        );
                    }
                    None => {
                        let top = consumer.iter().map(|c| f(&c["sent_per_s"])).fold(0.0, f64::max);
                        let _ = writeln!(
                            o,
                            "\nNo offered rate lost an event: one sender here tops out at {top:.0} events/s, below what the consumer sustains alone (\"Userspace consumer\" below), so the rate at which the live consumer stops keeping up is above anything this machine can offer it."
                        );
                    }
                }
                let pct = |k: &str, of: &str| (f(&v[k]["pps"]) / f(&v[of]["pps"]) - 1.0) * 100.0;
                let worst = pct("native", "xdp_pass_native").min(pct("skb", "xdp_pass_skb"));
                let _ = writeln!(
                    o,
                    "\nGoal, pathwatch costs <= 5 % of packets/s: native {:+.1} % vs no agent, {:+.1} % vs XDP_PASS native; skb {:+.1} % vs no agent, {:+.1} % vs XDP_PASS skb: {}.\n",
                    pct("native", "none"),
                    pct("native", "xdp_pass_native"),
                    pct("skb", "none"),
                    pct("skb", "xdp_pass_skb"),
                    met(worst >= -5.0)
                );
                stall_section(&mut o, &v["stalls"]);
            }
            "replay" => {
                let ratio = f(&v["ratio"]);
                let _ = writeln!(
                    o,
                    "## Replay\n\n`pathwatch replay` vs `tshark -r FILE -Y 'dns || dtls || icmp'` on the same generated capture of {} mixed frames, each pinned to one core (CPU time).\n",
                    v["frames"]
                );
                let _ = writeln!(o, "| tool | packets/s | goal | met |\n|---|---:|---|---|");
                let _ = writeln!(
                    o,
                    "| pathwatch replay | {:.2} M | >= 3 M | {} |",
                    f(&v["replay_pps"]) / 1e6,
                    met(f(&v["replay_pps"]) >= 3e6)
                );
                let _ = writeln!(o, "| tshark | {:.0} k | | |", f(&v["tshark_pps"]) / 1e3);
                let _ = writeln!(o, "| ratio | {ratio:.0}x | >= 20x | {} |\n", met(ratio >= 20.0));
            }
            "consumer" => {
                let r = f(&v["events_per_s"]);
                let _ = writeln!(
                    o,
                    "## Userspace consumer\n\nRing-buffer records decoded and fed through the counters and every detector on one core (CPU time), findings built once per 1024-event drain as `run` does: **{:.2} M events/s** (goal >= 2 M: {}).\n",
                    r / 1e6,
                    met(r >= 2e6)
                );
            }
            "memory" => {
                let (n, fl) = (f(&v["names_peak_rss_mib"]), f(&v["flows_peak_rss_mib"]));
                let _ = writeln!(
                    o,
                    "## Memory\n\nPeak RSS with the default caps, each in a fresh process:\n\n| after | peak RSS | budget | met |\n|---|---:|---:|---|"
                );
                let _ = writeln!(o, "| 1 M distinct DNS names | {n:.1} MiB | 128 MiB | {} |", met(n <= 128.0));
                let _ =
                    writeln!(o, "| 1 M distinct flows (DTLS + TCP) | {fl:.1} MiB | 128 MiB | {} |", met(fl <= 128.0));
                for r in v["replay"].as_array().into_iter().flatten() {
                    let (rss, mb) = (f(&r["peak_rss_mib"]), f(&r["bytes"]) / 1e6);
                    let what = r["capture"].as_str().unwrap_or("?");
                    let _ = writeln!(
                        o,
                        "| `pathwatch replay` of a {mb:.0} MB capture ({what}), read as a stream | {rss:.1} MiB | 48 MiB | {} |",
                        met(rss <= 48.0)
                    );
                }
                let _ = writeln!(o);
            }
            "drops" => {
                let _ = writeln!(
                    o,
                    "## Drop program\n\nThe drop program on `kfree_skb`, attached by the real agent on a gateway namespace, under three streams of {} packets/s for {} s each from a client namespace; runs and run time from the kernel's own accounting (`kernel.bpf_stats_enabled`), less an idle period of the same length ({} runs: drops elsewhere on the host, which the program leaves at once). A packet that is not dropped never runs it.\n\n| stream | packets | program runs | ns a run |\n|---|---:|---:|---:|",
                    v["pps"], v["secs"], v["idle_runs"]
                );
                for s in v["streams"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        o,
                        "| {} | {} | {} | {:.0} |",
                        s["stream"].as_str().unwrap_or("?"),
                        s["packets"],
                        s["runs"],
                        f(&s["ns_per_run"])
                    );
                }
                let _ = writeln!(o);
            }
            _ => {}
        }
    }
    o
}

/// A tool's name in the report, from its key in the flood benchmark's `stalls`.
fn tool_label(key: &str) -> String {
    match key.strip_prefix("tcpdump_b") {
        Some(kib) => format!("tcpdump -B {kib}"),
        None => key.to_string(),
    }
}

/// What starved the observer, from its key (`stop_250ms`, `hogs_2`).
fn starve_label(key: &str, stalls: &Value) -> String {
    if let Some(ms) = key.strip_prefix("stop_").and_then(|k| k.strip_suffix("ms")) {
        return match stalls.as_u64() {
            Some(1) => format!("stopped {ms} ms, once"),
            _ => format!("stopped {ms} ms, {stalls} times"),
        };
    }
    match key.strip_prefix("hogs_") {
        Some(n) => format!("{n} CPU hogs, no stall"),
        None => key.to_string(),
    }
}

/// The flood benchmark's starved-observer rows: one line per way of starving, one
/// column per observer, and the stall at which each first lost.
fn stall_section(o: &mut String, v: &Value) {
    let rows: Vec<&Value> = v["rows"].as_array().into_iter().flatten().collect();
    if rows.is_empty() {
        return;
    }
    let mut tools: Vec<&str> = Vec::new();
    let mut starves: Vec<&str> = Vec::new();
    for r in &rows {
        let (t, s) = (r["tool"].as_str().unwrap_or("?"), r["starve"].as_str().unwrap_or("?"));
        if !tools.contains(&t) {
            tools.push(t);
        }
        if !starves.contains(&s) {
            starves.push(s);
        }
    }
    let ring_mib = f(&v["ring_bytes"]) / (1 << 20) as f64;
    let _ = writeln!(
        o,
        "### Starved consumer\n\nDNS queries at {} events/s for {} s while the observer is stopped (SIGSTOP) for the time shown, resumed (SIGCONT), given {} ms to catch up and stopped again while the flood lasts, as the stall fault test does; or while {} busy loops share the cores with everything (the sender too, so less is sent). pathwatch runs with its defaults (a {ring_mib:.0} MiB ring buffer); tcpdump writes `udp port 53` to /dev/null with its default buffer, and with `-B`, as much memory as pathwatch's ring buffer. pathwatch's losses are its own counts by source (ringbuf / queue / undecodable); tcpdump's are the packets sent that it did not capture, its own \"dropped by kernel\" in brackets. A flood whose sender fell short of 95 % of the rate (a busy machine) ran again, up to 3 times; the try that sent the most is shown.\n",
        v["rate"], v["secs"], v["settle_ms"], v["hogs"]
    );
    let mut head = format!("| starved by | sent/s ({}) |", tool_label(tools[0]));
    let mut rule = "|---|---:|".to_string();
    for t in &tools {
        head += &format!(" {}: lost of sent |", tool_label(t));
        rule += "---:|";
    }
    let _ = writeln!(o, "{head}\n{rule}");
    let mut exact = true;
    for s in &starves {
        let of = |t: &str| rows.iter().find(|r| r["tool"] == t && r["starve"] == *s);
        let first = of(tools[0]).copied().unwrap_or(&Value::Null);
        let mut line = format!("| {} | {:.0} |", starve_label(s, &first["stalls"]), f(&first["sent_per_s"]));
        for t in &tools {
            let Some(r) = of(t) else {
                line += " - |";
                continue;
            };
            let why = match r.get("lost_by_source") {
                Some(b) => {
                    exact &= r["unaccounted"] == 0 && r["counted"] == r["sent"];
                    format!("{} / {} / {}", b["ringbuf"], b["queue"], b["undecodable"])
                }
                None => format!("{}", r["dropped_by_kernel"]),
            };
            let lost = r["lost"].as_u64().unwrap_or(0);
            let shown = if lost > 0 { format!("**{lost}**") } else { "0".into() };
            line += &format!(" {shown} of {} ({why}) |", r["sent"]);
        }
        let _ = writeln!(o, "{line}");
    }
    let firsts: Vec<String> = tools
        .iter()
        .map(|t| match (v["first_loss_ms"][*t].as_u64(), v["unjudged_from_ms"][*t].as_u64()) {
            (Some(ms), _) => format!("{} at a {ms} ms stall", tool_label(t)),
            (None, Some(ms)) => format!("{} not judged from {ms} ms (the flood fell short of the rate)", tool_label(t)),
            (None, None) => format!("{} at none of them", tool_label(t)),
        })
        .collect();
    let _ = writeln!(o, "\nFirst loss: {}.", firsts.join("; "));
    let _ = writeln!(
        o,
        "pathwatch's kernel counted every packet sent, and every event it counted was read or counted lost: {}.",
        if exact { "yes" } else { "**no**" }
    );
    let verdict = match rows.iter().find(|r| r["tool"] == "pathwatch" && r["starve"] == "stop_250ms") {
        None => "not measured".to_string(),
        // A sender slowed by a busy machine offers fewer events than the goal's rate:
        // no loss then proves nothing.
        Some(r) if f(&r["sent_per_s"]) < 0.95 * f(&v["rate"]) => format!(
            "not judged: the sender reached only {:.0} events/s (rerun `cargo xtask bench flood` on a quieter machine)",
            f(&r["sent_per_s"])
        ),
        Some(r) => met(r["lost"] == 0).to_string(),
    };
    let _ =
        writeln!(o, "\nGoal, the defaults ride out a 250 ms stall at 250 k events/s with no event lost: {verdict}.\n");
}
