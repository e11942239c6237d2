//! `pathwatch-bench`: the benchmark runner behind `cargo xtask bench`.
//!
//! `pathwatch-bench kernel|flood|replay|consumer|memory [--json]` prints a table, or
//! one JSON object with `--json`. The hidden subcommands are the pieces the flood and
//! memory benchmarks run in their own processes.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use pathwatch::{
    bench::{consumer, flood, kernel, memory, replay},
    lab::netns::Daemon,
};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "pathwatch benchmarks (run through `cargo xtask bench`)")]
struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand)]
enum Which {
    /// Kernel ns/packet via BPF_PROG_TEST_RUN, beside an XDP_PASS baseline.
    Kernel {
        #[arg(long)]
        json: bool,
    },
    /// Live DNS-shaped flood on veth: no agent, pathwatch native/skb, tcpdump.
    Flood {
        #[arg(long)]
        json: bool,
        /// Seconds per flood.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
    /// `pathwatch replay` packets/s on one core vs tshark on the same file.
    Replay {
        #[arg(long)]
        json: bool,
        /// Frames in the generated capture.
        #[arg(long, default_value_t = 2_000_000)]
        frames: u32,
    },
    /// Events/s through decode, counters and detectors on one core.
    Consumer {
        #[arg(long)]
        json: bool,
        /// Events to feed.
        #[arg(long, default_value_t = 5_000_000)]
        events: usize,
    },
    /// Peak RSS after 1 M distinct names and after 1 M distinct flows.
    Memory {
        #[arg(long)]
        json: bool,
    },
    #[command(hide = true)]
    FloodSend {
        #[arg(long)]
        secs: f64,
        #[arg(long)]
        pps: Option<u64>,
    },
    #[command(hide = true)]
    FloodRecv {
        #[arg(long)]
        secs: f64,
    },
    /// Writes the replay benchmark's capture (for profiling).
    #[command(hide = true)]
    WriteCapture { path: PathBuf, frames: u32 },
    #[command(hide = true)]
    MemoryNames,
    #[command(hide = true)]
    MemoryFlows,
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe().expect("own path").with_file_name(name)
}

/// The table goes to standard output, or with `--json` to standard error while the
/// JSON object goes to standard output (`cargo xtask bench` keeps both).
fn print(json: bool, value: Value, table: Vec<String>) {
    for l in table {
        if json {
            eprintln!("{l}");
        } else {
            println!("{l}");
        }
    }
    if json {
        println!("{value}");
    }
}

fn main() -> ExitCode {
    match run(Args::parse().which) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Kernel { json } => {
            let b = kernel::run()?;
            print(json, b.to_json(), b.table());
        }
        Which::Consumer { json, events } => {
            let (rate, findings) = consumer::run(events);
            let goal = 2_000_000.0;
            print(
                json,
                json!({"events_per_s": rate.round(), "events": events, "findings": findings, "goal_events_per_s": goal}),
                vec![format!(
                    "consumer: {:.2} M events/s on one core ({events} events, {findings} finding prints); goal >= 2 M/s: {}",
                    rate / 1e6,
                    if rate >= goal { "met" } else { "NOT met" }
                )],
            );
        }
        Which::Memory { json } => {
            let me = std::env::current_exe()?;
            let measure = |sub: &str| -> anyhow::Result<u64> {
                let out = std::process::Command::new(&me).arg(sub).output()?;
                anyhow::ensure!(out.status.success(), "{sub}: {}", String::from_utf8_lossy(&out.stderr));
                Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
            };
            let names = measure("memory-names")?;
            let flows = measure("memory-flows")?;
            let mib = |k: u64| k as f64 / 1024.0;
            print(
                json,
                json!({"names_peak_rss_mib": mib(names), "flows_peak_rss_mib": mib(flows), "budget_mib": 128}),
                vec![
                    format!("peak RSS after 1 M distinct names: {:.1} MiB (budget 128 MiB)", mib(names)),
                    format!("peak RSS after 1 M distinct flows: {:.1} MiB (budget 128 MiB)", mib(flows)),
                ],
            );
        }
        Which::WriteCapture { path, frames } => replay::write_capture(&path, frames)?,
        Which::MemoryNames => {
            let (kib, d) = memory::names(1_000_000);
            eprintln!("tracked {:?}", d.tracked());
            println!("{kib}");
        }
        Which::MemoryFlows => {
            let (kib, d) = memory::flows(1_000_000);
            eprintln!("tracked {:?}", d.tracked());
            println!("{kib}");
        }
        Which::Replay { json, frames } => {
            let dir = std::env::temp_dir().join(format!("pathwatch-bench-replay-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let pcap = dir.join("mixed.pcap");
            replay::write_capture(&pcap, frames)?;
            let p = pcap.to_str().unwrap();
            let ours = replay::time_pinned(&sibling("pathwatch"), &["replay", p]);
            let tshark = replay::time_pinned(std::path::Path::new("tshark"), &["-r", p, "-Y", "dns || dtls || icmp"]);
            let _ = std::fs::remove_dir_all(&dir);
            let (ours, tshark) = (ours?, tshark?);
            let (pps, tpps) = (frames as f64 / ours, frames as f64 / tshark);
            print(
                json,
                json!({"frames": frames, "replay_s": ours, "replay_pps": pps.round(), "tshark_s": tshark, "tshark_pps": tpps.round(), "ratio": pps / tpps}),
                vec![
                    format!(
                        "pathwatch replay: {frames} frames in {ours:.2} s = {:.2} M packets/s (one core; goal >= 3 M/s)",
                        pps / 1e6
                    ),
                    format!("tshark -Y 'dns || dtls || icmp': {tshark:.2} s = {:.0} k packets/s", tpps / 1e3),
                    format!("ratio: {:.1}x (goal >= 20x)", pps / tpps),
                ],
            );
        }
        Which::FloodSend { secs, pps } => {
            let dst = format!("{}:53", flood::RX_ADDR).parse()?;
            println!("{}", flood::send(dst, secs, pps)?);
        }
        Which::FloodRecv { secs } => {
            let bind = format!("{}:53", flood::RX_ADDR).parse()?;
            println!("{}", flood::receive(bind, secs)?);
        }
        Which::Flood { json, secs } => {
            let (value, table) = flood_all(secs)?;
            print(json, value, table);
        }
    }
    Ok(())
}

/// Every flood configuration, side by side.
fn flood_all(secs: f64) -> anyhow::Result<(Value, Vec<String>)> {
    let bench = std::env::current_exe()?;
    let agent = sibling("pathwatch");
    let tb = flood::testbed()?;
    let dir = std::env::temp_dir().join(format!("pathwatch-bench-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut table = Vec::new();
    let mut out = serde_json::Map::new();

    let base = flood::flood(&tb, &bench, secs, None)?;
    table.push(format!(
        "no agent:          sent {:>9}, delivered {:>9} = {:>8.0} pps",
        base.sent,
        base.delivered,
        base.pps()
    ));
    out.insert("none".into(), json!({"sent": base.sent, "delivered": base.delivered, "pps": base.pps()}));

    for mode in ["native", "skb"] {
        let json_file = dir.join(format!("{mode}.json"));
        let log = dir.join(format!("{mode}.log"));
        let mut a: Daemon = tb.rx.spawn(
            "pathwatch",
            agent.to_str().unwrap(),
            &["run", "-i", "fl1", "--xdp-mode", mode, "--no-egress", "--json", json_file.to_str().unwrap()],
            Some(&log),
        )?;
        anyhow::ensure!(
            flood::wait_log(&log, "watching"),
            "agent did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let f = flood::flood(&tb, &bench, secs, None)?;
        std::thread::sleep(Duration::from_millis(500));
        a.stop(libc::SIGTERM, Duration::from_secs(20));
        let summary: Value = std::fs::read_to_string(&json_file)?
            .lines()
            .last()
            .map(serde_json::from_str)
            .transpose()?
            .unwrap_or_default();
        let dns = summary["interfaces"]["fl1"]["ingress"]["packets"]["dns"].as_u64().unwrap_or(0);
        let lost = summary["events"]["events_lost"].as_u64().unwrap_or(0);
        let queries = summary["events"]["dns_query"].as_u64().unwrap_or(0);
        table.push(format!(
            "pathwatch {mode:<7}: sent {:>9}, delivered {:>9} = {:>8.0} pps ({:+.1} % vs no agent); counted {dns} DNS packets ({}), {queries} query events, {lost} lost",
            f.sent,
            f.delivered,
            f.pps(),
            (f.pps() / base.pps() - 1.0) * 100.0,
            if dns == f.sent { "= sent".to_string() } else { format!("sent {}", f.sent) }
        ));
        out.insert(mode.into(), json!({"sent": f.sent, "delivered": f.delivered, "pps": f.pps(), "counted_dns": dns, "query_events": queries, "events_lost": lost, "pps_vs_none": f.pps() / base.pps()}));
    }

    let log = dir.join("tcpdump.log");
    let mut t =
        tb.rx.spawn("tcpdump", "tcpdump", &["-i", "fl1", "-n", "-w", "/dev/null", "udp port 53"], Some(&log))?;
    anyhow::ensure!(flood::wait_log(&log, "listening on"), "tcpdump did not start");
    let f = flood::flood(&tb, &bench, secs, None)?;
    t.stop(libc::SIGINT, Duration::from_secs(10));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let dropped = text
        .lines()
        .find(|l| l.contains("dropped by kernel"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    table.push(format!(
        "tcpdump -w /dev/null: sent {:>9}, delivered {:>9} = {:>8.0} pps ({:+.1} % vs no agent); dropped by kernel {dropped}",
        f.sent,
        f.delivered,
        f.pps(),
        (f.pps() / base.pps() - 1.0) * 100.0
    ));
    out.insert("tcpdump".into(), json!({"sent": f.sent, "delivered": f.delivered, "pps": f.pps(), "dropped_by_kernel": dropped, "pps_vs_none": f.pps() / base.pps()}));

    // At which event rate does the consumer stop keeping up?
    let mut keeps_up = Vec::new();
    for rate in [50_000u64, 100_000, 200_000, 400_000, 800_000] {
        let json_file = dir.join(format!("rate{rate}.json"));
        let log = dir.join(format!("rate{rate}.log"));
        let mut a = tb.rx.spawn(
            "pathwatch",
            agent.to_str().unwrap(),
            &["run", "-i", "fl1", "--no-egress", "--json", json_file.to_str().unwrap()],
            Some(&log),
        )?;
        anyhow::ensure!(flood::wait_log(&log, "watching"), "agent did not start");
        let f = flood::flood(&tb, &bench, secs, Some(rate))?;
        std::thread::sleep(Duration::from_millis(500));
        a.stop(libc::SIGTERM, Duration::from_secs(20));
        let summary: Value = std::fs::read_to_string(&json_file)?
            .lines()
            .last()
            .map(serde_json::from_str)
            .transpose()?
            .unwrap_or_default();
        let lost = summary["events"]["events_lost"].as_u64().unwrap_or(0);
        let achieved = f.sent as f64 / secs;
        table.push(format!("consumer at {rate:>7} events/s offered ({achieved:>8.0} sent/s): {lost} events lost"));
        keeps_up.push(json!({"offered": rate, "sent_per_s": achieved, "events_lost": lost}));
    }
    out.insert("consumer".into(), Value::Array(keeps_up));
    let _ = std::fs::remove_dir_all(&dir);
    Ok((Value::Object(out), table))
}
