//! `cargo xtask manifests OUT`: renders every kustomization under `manifests/` and checks what
//! needs no schema:
//! - the Role `queue-server-jobs` grants exactly the calls the server makes
//!   (`queue_server::kube::RBAC_VERBS`), bound to the ServiceAccount `queue-server`, and nothing
//!   cluster-wide exists;
//! - every pod template (the consumer Job template kept in a ConfigMap included) is hardened:
//!   non-root, read-only root, no privilege escalation, capabilities dropped, seccomp, requests
//!   and limits, a fixed image tag.
//!
//! It writes the rendered files and the embedded objects to `OUT`, and lists them in
//! `OUT/validate.list` (`LABEL<TAB>FILE` per line) for the schema validation that
//! `scripts/check-manifests.sh` runs on them. Prints one `PASS`/`FAIL` line per check; fails if
//! any check does.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

/// The Role the server's ServiceAccount is bound to.
const ROLE: &str = "queue-server-jobs";
/// The ConfigMap and key that hold the consumer Job template.
const TEMPLATE: (&str, &str) = ("consumer-job-template", "job-template.yaml");
const WORKLOADS: [&str; 6] = [
    "ReplicaSet",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "Pod",
];

/// One rendered kustomization.
struct Rendered {
    docs: Vec<Value>,
    /// (ConfigMap, key, object) for each object kept as YAML in a ConfigMap.
    embedded: Vec<(String, String, Value)>,
}

/// Runs the checks; `Ok(false)` when one failed.
pub fn run(out: &Path) -> anyhow::Result<bool> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let dirs = kustomizations(Path::new("manifests"))?;
    if dirs.is_empty() {
        bail!("no kustomization found under manifests/");
    }
    let mut failed = 0;
    let mut report = |ok: bool, what: String| {
        println!("{}  {what}", if ok { "PASS" } else { "FAIL" });
        if !ok {
            failed += 1;
        }
    };
    let mut list = String::new();
    for dir in &dirs {
        let dir = dir.display().to_string();
        let rendered = match render(&dir) {
            Ok(r) => r,
            Err(e) => {
                report(false, format!("render {dir}: {e:#}"));
                continue;
            }
        };
        report(
            true,
            format!("render {dir}: {} objects", rendered.docs.len()),
        );
        let stem = dir.replace('/', "_");
        let file = out.join(format!("rendered-{stem}.yaml"));
        // Custom resources (KEDA's) have no schema among Kubernetes' own: the real API server
        // checks them against their CRDs (queue-server/tests/real_kube.rs).
        let (custom, builtin): (Vec<Value>, Vec<Value>) =
            rendered.docs.iter().cloned().partition(is_custom_resource);
        write_docs(&file, &builtin)?;
        writeln!(list, "{dir}\t{}", file.display())?;
        if !custom.is_empty() {
            let kinds: Vec<&str> = custom.iter().filter_map(|d| d["kind"].as_str()).collect();
            report(
                true,
                format!(
                    "{dir}: {} left to the API server's CRD schemas (tests/real_kube.rs)",
                    kinds.join(", ")
                ),
            );
        }
        for (n, (cm, key, obj)) in rendered.embedded.iter().enumerate() {
            let file = out.join(format!("embedded-{stem}-{n}-{cm}-{key}"));
            write_docs(&file, std::slice::from_ref(obj))?;
            writeln!(list, "{dir} ConfigMap {cm} key {key}\t{}", file.display())?;
        }
        let has_template = rendered
            .embedded
            .iter()
            .any(|(cm, key, _)| (cm.as_str(), key.as_str()) == TEMPLATE);
        report(
            has_template,
            format!(
                "{dir}: the consumer Job template (ConfigMap {}, key {})",
                TEMPLATE.0, TEMPLATE.1
            ),
        );
        let errors = rbac(&rendered.docs);
        report(
            errors.is_empty(),
            format!(
                "rbac {dir}: {}",
                summary(&errors, "Role {ROLE} grants exactly RBAC_VERBS")
            ),
        );
        let (count, errors) = hardening(&rendered);
        let ok = errors.is_empty() && count > 0;
        let what = if count == 0 {
            "no pod templates found".to_string()
        } else {
            summary(&errors, &format!("{count} pod templates hardened"))
        };
        report(ok, format!("hardening {dir}: {what}"));
    }
    std::fs::write(out.join("validate.list"), list)?;
    Ok(failed == 0)
}

fn summary(errors: &[String], ok: &str) -> String {
    if errors.is_empty() {
        ok.replace("{ROLE}", ROLE)
    } else {
        format!("\n      {}", errors.join("\n      "))
    }
}

/// The directories under `root` that hold a kustomization, sorted.
fn kustomizations(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.file_name().is_some_and(|n| {
                n == "kustomization.yaml" || n == "kustomization.yml" || n == "Kustomization"
            }) {
                found.push(dir.clone());
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

fn render(dir: &str) -> anyhow::Result<Rendered> {
    let output = Command::new("kubectl")
        .args(["kustomize", dir])
        .output()
        .context("run kubectl (needed to render the kustomizations; no cluster is needed)")?;
    if !output.status.success() {
        bail!(
            "kubectl kustomize {dir}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8(output.stdout).context("kubectl's output is not UTF-8")?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).context("parse the rendered YAML")?;
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    let mut embedded = Vec::new();
    for doc in docs.iter().filter(|d| d["kind"] == "ConfigMap") {
        let cm = doc["metadata"]["name"].as_str().unwrap_or_default();
        let Some(data) = doc["data"].as_object() else {
            continue;
        };
        for (key, text) in data {
            if !(key.ends_with(".yaml") || key.ends_with(".yml")) {
                continue;
            }
            let objects: Vec<Value> = serde_saphyr::from_multiple(text.as_str().unwrap_or(""))
                .with_context(|| format!("parse ConfigMap {cm} key {key}"))?;
            for mut obj in objects {
                if obj.get("apiVersion").is_none() || obj.get("kind").is_none() {
                    continue;
                }
                // The schema check reports by name; the API server takes generateName alone,
                // so the copy under test gets a stand-in name.
                let meta = &mut obj["metadata"];
                if meta.get("name").is_none()
                    && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
                {
                    meta["name"] = Value::String(format!("{prefix}validate"));
                }
                embedded.push((cm.to_string(), key.clone(), obj));
            }
        }
    }
    Ok(Rendered { docs, embedded })
}

/// Writes objects as JSON documents (JSON is YAML) to `file`.
fn write_docs(file: &Path, docs: &[Value]) -> anyhow::Result<()> {
    let mut text = String::new();
    for doc in docs {
        text.push_str("---\n");
        text.push_str(&serde_json::to_string_pretty(doc)?);
        text.push('\n');
    }
    std::fs::write(file, text).with_context(|| format!("write {}", file.display()))
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// What is wrong with the RBAC objects, if anything.
fn rbac(docs: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    let named = |kind: &str, name: &str| {
        docs.iter()
            .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .collect::<Vec<_>>()
    };
    let roles = named("Role", ROLE);
    if roles.len() != 1 {
        return vec![format!("expected one Role {ROLE}, found {}", roles.len())];
    }
    let mut granted = BTreeSet::new();
    for (i, rule) in roles[0]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let extra: Vec<&String> = rule
            .as_object()
            .into_iter()
            .flat_map(|r| r.keys())
            .filter(|k| !matches!(k.as_str(), "apiGroups" | "resources" | "verbs"))
            .collect();
        if !extra.is_empty() {
            errors.push(format!(
                "rule {i} has {extra:?}: only apiGroups, resources and verbs are expected"
            ));
        }
        for group in strs(&rule["apiGroups"]) {
            for resource in strs(&rule["resources"]) {
                for verb in strs(&rule["verbs"]) {
                    if !granted.insert((group, resource, verb)) {
                        errors.push(format!("granted twice: {group}/{resource} {verb}"));
                    }
                }
            }
        }
    }
    let used: BTreeSet<(&str, &str, &str)> =
        queue_server::kube::RBAC_VERBS.iter().copied().collect();
    for (g, r, v) in granted.difference(&used) {
        errors.push(format!(
            "granted but never used by the server: {g}/{r} {v} (queue_server::kube::RBAC_VERBS)"
        ));
    }
    for (g, r, v) in used.difference(&granted) {
        errors.push(format!("used by the server but not granted: {g}/{r} {v}"));
    }
    for d in docs {
        if d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding" {
            errors.push(format!(
                "unexpected cluster-wide {} {}",
                d["kind"], d["metadata"]["name"]
            ));
        }
    }
    let bound = docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" && d["roleRef"]["name"] == ROLE)
        .flat_map(|b| b["subjects"].as_array().into_iter().flatten())
        .any(|s| s["kind"] == "ServiceAccount" && s["name"] == "queue-server");
    if !bound {
        errors.push(format!(
            "no RoleBinding binds Role {ROLE} to ServiceAccount queue-server"
        ));
    }
    errors
}

/// An object of a custom resource (an API group outside Kubernetes' own, e.g. `keda.sh`).
fn is_custom_resource(doc: &Value) -> bool {
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    match api.split_once('/') {
        None => false,
        Some((group, _)) => !group.ends_with(".k8s.io") && group.contains('.'),
    }
}

/// The pod specs of a workload object.
fn pod_spec(doc: &Value) -> Option<&Value> {
    let kind = doc["kind"].as_str()?;
    if kind == "CronJob" {
        return Some(&doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]);
    }
    if kind == "ScaledJob" {
        return Some(&doc["spec"]["jobTargetRef"]["template"]["spec"]);
    }
    if !WORKLOADS.contains(&kind) {
        return None;
    }
    Some(if kind == "Pod" {
        &doc["spec"]
    } else {
        &doc["spec"]["template"]["spec"]
    })
}

/// How many pod templates there are, and what is wrong with them.
fn hardening(rendered: &Rendered) -> (usize, Vec<String>) {
    let objects = rendered
        .docs
        .iter()
        .chain(rendered.embedded.iter().map(|(_, _, o)| o));
    let mut errors = Vec::new();
    let mut count = 0;
    for doc in objects {
        let Some(pod) = pod_spec(doc) else { continue };
        count += 1;
        let meta = &doc["metadata"];
        let name = meta["name"].as_str().or(meta["generateName"].as_str());
        let at_pod = format!(
            "{}/{}",
            doc["kind"].as_str().unwrap_or("?"),
            name.unwrap_or("?")
        );
        let psc = &pod["securityContext"];
        let containers = pod["containers"]
            .as_array()
            .into_iter()
            .chain(pod["initContainers"].as_array())
            .flatten();
        for c in containers {
            let at = format!("{at_pod} container {}", c["name"].as_str().unwrap_or("?"));
            let csc = &c["securityContext"];
            // A container's setting wins over the pod's.
            let either = |key: &str| {
                csc.get(key)
                    .or(psc.get(key))
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            if either("runAsNonRoot") != Value::Bool(true) {
                errors.push(format!("{at}: runAsNonRoot is not true"));
            }
            if either("runAsUser").as_u64().is_none_or(|uid| uid == 0) {
                errors.push(format!("{at}: runAsUser is not a non-zero uid"));
            }
            if either("seccompProfile")["type"] != "RuntimeDefault" {
                errors.push(format!("{at}: seccompProfile is not RuntimeDefault"));
            }
            if csc["allowPrivilegeEscalation"] != Value::Bool(false) {
                errors.push(format!("{at}: allowPrivilegeEscalation is not false"));
            }
            if csc["readOnlyRootFilesystem"] != Value::Bool(true) {
                errors.push(format!("{at}: readOnlyRootFilesystem is not true"));
            }
            if !strs(&csc["capabilities"]["drop"]).contains(&"ALL") {
                errors.push(format!("{at}: capabilities do not drop ALL"));
            }
            for part in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    if c["resources"][part].get(resource).is_none() {
                        errors.push(format!("{at}: no resources.{part}.{resource}"));
                    }
                }
            }
            let image = c["image"].as_str().unwrap_or("");
            let last = image.rsplit('/').next().unwrap_or("");
            if !last.contains(':') || image.ends_with(":latest") {
                errors.push(format!("{at}: image {image:?} has no fixed tag"));
            }
        }
    }
    (count, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(yaml: &str) -> Vec<Value> {
        serde_saphyr::from_multiple(yaml).unwrap()
    }

    const BINDING: &str = "kind: RoleBinding
metadata: {name: b}
roleRef: {name: queue-server-jobs}
subjects: [{kind: ServiceAccount, name: queue-server}]
";

    #[test]
    fn the_role_must_grant_exactly_what_the_server_uses() {
        let exact = format!(
            "kind: Role
metadata: {{name: queue-server-jobs}}
rules:
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, get, list, delete]
- apiGroups: ['']
  resources: [pods]
  verbs: [list]
---
{BINDING}"
        );
        assert_eq!(rbac(&docs(&exact)), Vec::<String>::new());
        let more = exact.replace("verbs: [list]", "verbs: [list, watch]");
        assert_eq!(
            rbac(&docs(&more)),
            ["granted but never used by the server: /pods watch (queue_server::kube::RBAC_VERBS)"]
        );
        let fewer = exact.replace("create, get, list, delete", "create, list, delete");
        assert_eq!(
            rbac(&docs(&fewer)),
            ["used by the server but not granted: batch/jobs get"]
        );
        let unbound = exact.replace("name: queue-server}]", "name: other}]");
        assert_eq!(rbac(&docs(&unbound)).len(), 1);
    }

    #[test]
    fn a_pod_template_without_hardening_is_named_with_each_gap() {
        let rendered = Rendered {
            docs: docs(
                "kind: Job
metadata: {name: j}
spec:
  template:
    spec:
      containers:
      - name: c
        image: memq:latest
",
            ),
            embedded: Vec::new(),
        };
        let (count, errors) = hardening(&rendered);
        assert_eq!(count, 1);
        assert_eq!(errors.len(), 11, "{errors:#?}");
        assert!(errors.iter().all(|e| e.starts_with("Job/j container c: ")));
    }
}
