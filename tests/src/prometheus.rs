//! Talking to a real Prometheus: the configuration the tests give it (one scrape job
//! `pathwatch`, every second, the deployed rules loaded) and its HTTP API (instant
//! queries, the loaded rules). Who runs the server is the test's business: the ops
//! tests start one in the agent's namespace, the deploy tests one beside a stand-in
//! exporter.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::http::{get, get_in, url_encode};

/// A Prometheus configuration: scrape job `pathwatch` at `target` every second (1 s
/// timeout), rules from `rule_file` evaluated every second.
pub fn config(rule_file: &Path, target: SocketAddr) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: pathwatch\n    static_configs:\n      - targets: ['{target}']\n",
        rule_file.display()
    )
}

/// The deployed alert and recording rules (`deploy/prometheus/pathwatch-rules.yml`).
pub fn rules_file() -> PathBuf {
    crate::deploy_file("prometheus/pathwatch-rules.yml")
}

/// The HTTP API of a Prometheus listening on `addr`, reached from this thread's
/// namespace or from inside a named one.
pub struct Api {
    ns: Option<String>,
    addr: SocketAddr,
}

impl Api {
    /// A Prometheus reachable from here.
    pub fn at(addr: SocketAddr) -> Api {
        Api { ns: None, addr }
    }

    /// A Prometheus reachable from inside namespace `ns`.
    pub fn in_netns(ns: &str, addr: SocketAddr) -> Api {
        Api { ns: Some(ns.to_string()), addr }
    }

    fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        match &self.ns {
            Some(ns) => get_in(ns, self.addr, path),
            None => get(self.addr, path),
        }
    }

    /// Whether `/-/ready` answers 200.
    pub fn ready(&self) -> bool {
        matches!(self.get("/-/ready"), Ok((200, _)))
    }

    /// `/api/v1/PATH`, parsed; panics when it does not answer JSON.
    pub fn api(&self, path: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/{path}")).unwrap_or_else(|e| panic!("GET /api/v1/{path}: {e}"));
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET /api/v1/{path}: HTTP {status}, not JSON ({e}): {body}"))
    }

    /// An instant query: the whole answer, its status for the caller to check.
    pub fn query(&self, expr: &str) -> Value {
        self.api(&format!("query?query={}", url_encode(expr)))
    }

    /// An instant query that must succeed: its result vector (a scalar or string
    /// result as the one element); the panic names `what` and the error.
    pub fn results(&self, what: &str, expr: &str) -> Vec<Value> {
        let v = self.query(expr);
        assert_eq!(v["status"], "success", "{what}: the query\n    {expr}\nfails on Prometheus: {v}");
        match &v["data"]["result"] {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        }
    }

    /// The value of an instant query that must succeed with exactly one sample.
    pub fn value(&self, expr: &str) -> f64 {
        let v = self.query(expr);
        assert_eq!(v["status"], "success", "{expr}: {v}");
        let r = v["data"]["result"].as_array().unwrap_or_else(|| panic!("{expr}: {v}"));
        assert_eq!(r.len(), 1, "{expr}: expected one sample: {v}");
        r[0]["value"][1].as_str().unwrap().parse().unwrap()
    }

    /// Every rule of every group Prometheus loaded (`/api/v1/rules`).
    pub fn rules(&self) -> Vec<Value> {
        let v = self.api("rules");
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}
