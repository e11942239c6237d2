//! SIGHUP: the configuration reloaded without re-attaching, and the JSON file
//! reopened (logrotate). Settings fixed at start keep their running values.

use super::Shared;
use crate::{cli::RunArgs, config::Config, output::Output};

/// A new configuration reaches the kernel map, the detectors, the findings book and
/// the `stats` timer (the caller restarts it) without re-attaching; a bad file leaves
/// the old settings in place. What is fixed at start (the ring buffer and
/// kernel flow table sizes, the metrics address) keeps its running value, with a
/// notice naming each that changed in the file. The JSON file is reopened (logrotate).
pub fn reload(args: &RunArgs, config: &mut Config, shared: &Shared, out: &mut Output) {
    if let Err(e) = out.reopen() {
        out.error(&format!("error: SIGHUP: {e}; JSON lines keep going to the old file"));
    }
    let Some(path) = &args.output.config else {
        out.error("notice: SIGHUP: no --config file to reload; JSON output reopened");
        return;
    };
    let new = match Config::load(path) {
        Ok(new) => new,
        Err(e) => {
            out.error(&format!("error: SIGHUP: {e}; old settings kept"));
            return;
        }
    };
    let (applied, at_start) = settle_reload(config, new, args.metrics.is_some());
    // The kernel configuration is derived from the running ring size (wakeup_bytes).
    let kernel_result = shared.kernel.lock().expect("kernel lock").set_config(&applied.kernel_config());
    if let Err(e) = kernel_result {
        out.error(&format!("error: SIGHUP: {e}; old settings kept"));
        return;
    }
    shared.state.lock().expect("state lock").detectors.reconfigure(&applied);
    if !at_start.is_empty() {
        out.error(&format!(
            "notice: SIGHUP: {} changed in the file but apply only at the next start; running with the old value",
            at_start.join(", ")
        ));
    }
    *config = applied;
    out.error(&format!("notice: SIGHUP: reloaded {}", crate::printable::path(path)));
}

/// The configuration a reload runs with: `new`, except for the settings fixed at
/// start, which keep their `running` values; and the names of those the file changed.
/// `metrics_flag`: `--metrics` was given (it wins over `metrics.listen`).
fn settle_reload(running: &Config, mut new: Config, metrics_flag: bool) -> (Config, Vec<&'static str>) {
    let mut at_start = Vec::new();
    if new.kernel.ringbuf_bytes != running.kernel.ringbuf_bytes {
        at_start.push("kernel.ringbuf_bytes");
        new.kernel.ringbuf_bytes = running.kernel.ringbuf_bytes;
    }
    if new.pmtu.kernel_flow_entries != running.pmtu.kernel_flow_entries {
        at_start.push("pmtu.kernel_flow_entries");
        new.pmtu.kernel_flow_entries = running.pmtu.kernel_flow_entries;
    }
    if new.metrics.listen != running.metrics.listen {
        if !metrics_flag {
            at_start.push("metrics.listen");
        }
        new.metrics.listen = running.metrics.listen.clone();
    }
    (new, at_start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cap, RingBytes, Secs};

    #[test]
    fn a_reload_applies_run_time_settings_and_keeps_those_fixed_at_start() {
        let running = Config::default();
        let mut file = Config::default();
        file.output.report_interval_s = Secs(0.5);
        file.output.finding_interval_s = Secs(5.0);
        file.output.findings_cap = Cap(7);
        file.dns.timeout_s = Secs(1.0);
        file.kernel.ringbuf_bytes = RingBytes(1 << 25);
        file.pmtu.kernel_flow_entries = Cap(1024);
        file.metrics.listen = Some("9999".into());
        let (applied, at_start) = settle_reload(&running, file.clone(), false);
        assert_eq!(at_start, ["kernel.ringbuf_bytes", "pmtu.kernel_flow_entries", "metrics.listen"]);
        assert_eq!(applied.output, file.output, "[output] applies on SIGHUP");
        assert_eq!(applied.dns, file.dns);
        assert_eq!(applied.kernel.ringbuf_bytes, running.kernel.ringbuf_bytes);
        assert_eq!(applied.pmtu.kernel_flow_entries, running.pmtu.kernel_flow_entries);
        assert_eq!(applied.metrics.listen, None);
        // The kernel's wakeup threshold follows the ring it runs with, not the file's.
        assert_eq!(applied.kernel_config().wakeup_bytes, running.kernel_config().wakeup_bytes);
        // `--metrics` wins over metrics.listen: nothing to say about it.
        let (_, at_start) = settle_reload(&running, file, true);
        assert!(!at_start.contains(&"metrics.listen"), "{at_start:?}");
        let (_, at_start) = settle_reload(&running, Config::default(), false);
        assert!(at_start.is_empty());
    }
}
