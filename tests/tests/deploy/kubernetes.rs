//! The Kubernetes manifests, validated against the 1.30 schemas and read for what
//! the agent needs (capabilities, mounts, probes, its configuration).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use pathwatch_tests::{
    deploy_file,
    tools::{apt_install, run, tool},
};
use serde_json::Value;

/// The effective user id.
fn euid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The target directory (where cargo put this test executable).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // <target>/<profile>/deps/deploy-<hash>
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// A Python venv under the target directory with kubernetes-validate (and PyYAML),
/// made on first use. None when the test is skipped.
fn validate_venv(test: &str) -> Option<PathBuf> {
    // One per user: a venv points at its creator's interpreter, which another user
    // may not be allowed to run.
    let venv = target_dir().join(format!("deploy-venv-uid{}", euid()));
    let kv = venv.join("bin/kubernetes-validate");
    let works = |kv: &Path| run(kv.to_str().unwrap(), &["--version"], Path::new("/"), Duration::from_secs(60)).ok();
    if works(&kv) {
        return Some(venv);
    }
    let python = tool(test, "python3", "python3")?;
    let _ = std::fs::remove_dir_all(&venv);
    let venv_arg = venv.to_str().expect("utf-8 target path");
    let mut made = run(&python, &["-m", "venv", venv_arg], Path::new("/"), Duration::from_secs(300));
    if !made.ok() && euid() == 0 {
        // Debian's python3 keeps venv (ensurepip) in a package of its own.
        apt_install(&["python3-venv"]);
        let _ = std::fs::remove_dir_all(&venv);
        made = run(&python, &["-m", "venv", venv_arg], Path::new("/"), Duration::from_secs(300));
    }
    assert!(made.ok(), "cannot create a Python venv for kubernetes-validate at {venv_arg}:\n{}", made.text());
    let pip = venv.join("bin/pip");
    let out = run(
        pip.to_str().unwrap(),
        &["install", "--quiet", "--disable-pip-version-check", KUBERNETES_VALIDATE],
        Path::new("/"),
        Duration::from_secs(900),
    );
    assert!(
        out.ok() && works(&kv),
        "kubernetes-validate could not be installed (pip install {KUBERNETES_VALIDATE} into {venv_arg}; \
         PyPI must be reachable):\n{}",
        out.text()
    );
    Some(venv)
}

/// All YAML documents of `file`, as JSON (PyYAML in the venv).
fn yaml_docs(venv: &Path, file: &Path) -> Vec<Value> {
    let py = venv.join("bin/python");
    let out = run(
        py.to_str().unwrap(),
        &[
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
             json.dump(docs, sys.stdout)",
            file.to_str().unwrap(),
        ],
        Path::new("/"),
        Duration::from_secs(60),
    );
    assert!(out.ok(), "{}: not valid YAML:\n{}", file.display(), out.text());
    match serde_json::from_str(&out.stdout).expect("yaml as json") {
        Value::Array(a) => a,
        _ => unreachable!(),
    }
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in the manifests"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

#[test]
fn kubernetes_manifests_validate() {
    let test = "kubernetes_manifests_validate";
    let Some(venv) = validate_venv(test) else { return };
    let dir = deploy_file("kubernetes");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    files.sort();
    for want in ["namespace.yaml", "configmap.yaml", "daemonset.yaml", "servicemonitor.yaml", "kustomization.yaml"] {
        assert!(files.iter().any(|f| f == want), "deploy/kubernetes/{want} is missing");
    }
    // Kubernetes' own kinds against the 1.30 schemas, unknown fields rejected. The
    // Kustomization is no API object; the ServiceMonitor (a CRD) has no schema there and
    // is only warned about, while the Service beside it is validated.
    let manifests: Vec<&str> = files.iter().map(String::as_str).filter(|f| *f != "kustomization.yaml").collect();
    let kv = venv.join("bin/kubernetes-validate");
    let mut args = vec!["--strict", "-k", "1.30.0"];
    args.extend(manifests.iter().copied());
    let out = run(kv.to_str().unwrap(), &args, &dir, Duration::from_secs(300));
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(out.ok() && !all.contains("ERROR"), "kubernetes-validate --strict -k 1.30.0:\n{}", out.text());
    for res in ["namespace/pathwatch", "configmap/pathwatch-config", "daemonset/pathwatch", "service/pathwatch"] {
        assert!(all.contains(&format!("passed for resource {res} ")), "{res} was not validated:\n{all}");
    }
    println!("{}", all.trim());

    let mut docs = Vec::new();
    for f in &files {
        docs.extend(yaml_docs(&venv, &dir.join(f)));
    }

    // The kustomization lists exactly the manifests.
    let kustomization = find(&docs, "Kustomization");
    assert_eq!(kustomization["apiVersion"], "kustomize.config.k8s.io/v1beta1");
    let mut resources = strings(&kustomization["resources"]);
    resources.sort();
    let mut expected: Vec<String> = manifests.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(resources, expected, "kustomization.yaml resources");

    // The DaemonSet.
    let ds = find(&docs, "DaemonSet");
    assert_eq!(ds["metadata"]["namespace"], "pathwatch");
    let tmpl = &ds["spec"]["template"];
    let pod = &tmpl["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let ann = &tmpl["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9464");
    let c = &pod["containers"][0];
    let args = strings(&c["args"]);
    let joined = args.join(" ");
    assert!(joined.starts_with("run -i eth0 --metrics 0.0.0.0:9464 --json -"), "args: {joined}");
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    let set = |v: &Value| strings(v).into_iter().collect::<BTreeSet<_>>();
    assert_eq!(set(&sc["capabilities"]["add"]), BTreeSet::from(["BPF", "NET_ADMIN", "PERFMON"].map(String::from)));
    assert_eq!(set(&sc["capabilities"]["drop"]), BTreeSet::from(["ALL".to_string()]));
    assert_eq!(c["resources"]["requests"]["cpu"], "50m");
    assert_eq!(c["resources"]["requests"]["memory"], "64Mi");
    assert_eq!(c["resources"]["limits"]["memory"], "192Mi");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], 9464, "{probe}");
    }
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    let volumes = pod["volumes"].as_array().expect("volumes");
    for host in ["/sys/fs/bpf", "/sys/kernel/btf"] {
        let vol = volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == host)
            .unwrap_or_else(|| panic!("no hostPath volume for {host}"));
        let m = mounts.iter().find(|m| m["name"] == vol["name"]).unwrap_or_else(|| panic!("{host} not mounted"));
        assert_eq!(m["readOnly"], true, "{host} must be mounted read-only");
    }

    // The ConfigMap holds the file the DaemonSet passes to --config, and the agent's
    // own parser accepts it.
    let cm = find(&docs, "ConfigMap");
    let toml = cm["data"]["pathwatch.toml"].as_str().expect("ConfigMap data pathwatch.toml");
    if let Err(e) = pathwatch::config::Config::parse(toml, Path::new("configmap.yaml:pathwatch.toml")) {
        panic!("the ConfigMap's pathwatch.toml is rejected by the agent: {e}");
    }
    let config_arg = args.iter().position(|a| a == "--config").map(|i| args[i + 1].clone()).expect("--config in args");
    let cfg_vol = volumes.iter().find(|v| v["configMap"]["name"] == cm["metadata"]["name"]).expect("ConfigMap volume");
    let cfg_mount = mounts.iter().find(|m| m["name"] == cfg_vol["name"]).expect("ConfigMap mount");
    assert_eq!(config_arg, format!("{}/pathwatch.toml", cfg_mount["mountPath"].as_str().unwrap()));

    // The headless Service selects the agent pods; the ServiceMonitor selects the Service.
    let svc = find(&docs, "Service");
    assert_eq!(svc["spec"]["clusterIP"], "None", "the Service should be headless");
    let pod_labels = &tmpl["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().expect("Service selector") {
        assert_eq!(&pod_labels[k], v, "Service selector {k} does not match the pods");
    }
    let sm = find(&docs, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert!(
        sm["metadata"]["name"].is_string() && sm["metadata"]["namespace"] == "pathwatch",
        "ServiceMonitor metadata"
    );
    let endpoints = sm["spec"]["endpoints"].as_array().expect("ServiceMonitor spec.endpoints");
    assert!(!endpoints.is_empty(), "ServiceMonitor without endpoints");
    let port_names: Vec<&Value> =
        svc["spec"]["ports"].as_array().expect("Service ports").iter().map(|p| &p["name"]).collect();
    for ep in endpoints {
        assert!(port_names.contains(&&ep["port"]), "ServiceMonitor endpoint port {} is not a Service port", ep["port"]);
    }
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().expect("ServiceMonitor selector") {
        assert_eq!(&svc["metadata"]["labels"][k], v, "ServiceMonitor selector {k} does not match the Service");
    }
    // The job label is the Service's name: the up{job="pathwatch"} alerts rely on it.
    assert_eq!(svc["metadata"]["name"], "pathwatch");
    let ns = find(&docs, "Namespace");
    assert_eq!(ns["metadata"]["name"], "pathwatch");
}
