//! The real Kubernetes control plane of `scripts/kube-up.sh` (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler on 127.0.0.1) for tests, and [`Kubelet`], a stand-in
//! for the one component it lacks: a node that runs the pods the scheduler binds to it as local
//! processes of our own binaries and reports them through the pods/status API, so that the real
//! Job controller judges Jobs from real exit codes.
//!
//! The control plane is found through `MEMQ_TEST_KUBECONFIG` (scripts/test.sh sets it); without
//! it the first test runs `scripts/kube-up.sh` (idempotent: it reuses a running control plane).
//! Every test works in a namespace of its own ([`Cluster::namespace`]) whose pods can only be
//! scheduled to that test's node: the API server runs the PodNodeSelector admission plugin and
//! each namespace carries the node selector `memq.test/node=<namespace>`, so tests run in
//! parallel without running each other's pods. A test node is also tainted
//! `memq.test/node=<namespace>:NoSchedule`, tolerated only by its namespace's pods
//! (PodTolerationRestriction's default tolerations), so that the pods of other namespaces
//! (the real node's, `scripts/kube-up.sh --node`) are never bound to it.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Node, Pod, Secret, ServiceAccount,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use parking_lot::Mutex;
use queue_server::testing::eventually;
use serde_json::{Value, json};
use tokio::sync::watch;

/// Label of a test node, and the node selector of its namespace.
pub const NODE_LABEL: &str = "memq.test/node";

/// The name of the real node of `scripts/kube-up.sh --node`.
pub const REAL_NODE: &str = "memq-node";

/// The admin kubeconfig of the control plane: `MEMQ_TEST_KUBECONFIG`, or what
/// `scripts/kube-up.sh` prints after starting (or finding) one.
pub fn admin_kubeconfig() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(path) = std::env::var_os("MEMQ_TEST_KUBECONFIG").filter(|p| !p.is_empty()) {
            return PathBuf::from(path);
        }
        let script = repo_root().join("scripts/kube-up.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run scripts/kube-up.sh");
        assert!(
            out.status.success(),
            "scripts/kube-up.sh failed ({}); run it by hand to see why",
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        let path = last
            .strip_prefix("export KUBECONFIG=")
            .unwrap_or_else(|| panic!("kube-up.sh's last line is not the export: {last:?}"));
        PathBuf::from(path)
    })
    .clone()
}

/// kubectl of the control plane's release, which kube-up.sh links beside the kubeconfig;
/// the one on PATH otherwise.
pub fn kubectl_path() -> PathBuf {
    let beside = admin_kubeconfig().with_file_name("kubectl");
    if beside.exists() {
        beside
    } else {
        PathBuf::from("kubectl")
    }
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Where cargo put the workspace's binaries: beside `queue-server`. `consumer` and `producer`
/// are built by `cargo build --workspace` (and by `cargo nextest run --workspace`).
pub fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_queue-server"))
        .parent()
        .expect("binary directory")
        .to_path_buf();
    for bin in ["consumer", "producer"] {
        assert!(
            dir.join(bin).is_file(),
            "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does, before its tests)",
            dir.join(bin).display()
        );
    }
    dir
}

/// The control plane, as its admin.
#[derive(Clone)]
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
    /// `https://127.0.0.1:PORT`.
    pub api_url: String,
}

impl Cluster {
    /// Connects to the control plane (starting it if nobody has).
    pub async fn connect() -> Self {
        let kubeconfig = admin_kubeconfig();
        let raw = Kubeconfig::read_from(&kubeconfig).expect("read the admin kubeconfig");
        let cluster = raw.clusters[0].cluster.clone().expect("a cluster entry");
        let api_url = cluster.server.clone().expect("its server");
        let config = kube::Config::from_custom_kubeconfig(raw, &KubeConfigOptions::default())
            .await
            .expect("a client config from the admin kubeconfig");
        let client = kube::Client::try_from(config).expect("a Kubernetes client");
        Self {
            kubeconfig,
            client,
            api_url,
        }
    }

    /// Runs kubectl as the admin; what it did.
    pub async fn kubectl_output(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("run kubectl")
    }

    /// Runs kubectl as the admin; its stdout, or its stderr as the error.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = self.kubectl_output(args).await;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Like [`Cluster::kubectl`], and panics on failure.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        self.kubectl(args).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// The control plane with its real node (`scripts/kube-up.sh --node`, started here unless
    /// node `memq-node` is Ready already).
    pub async fn with_node() -> Self {
        let cluster = Self::connect().await;
        if !cluster.node_ready().await {
            let run = cluster
                .kubeconfig
                .parent()
                .expect("the control plane's directory");
            let status = tokio::process::Command::new("bash")
                .arg(repo_root().join("scripts/kube-up.sh"))
                .arg("--node")
                .env("MEMQ_KUBE_RUN", run)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .status()
                .await
                .expect("run scripts/kube-up.sh --node");
            assert!(
                status.success(),
                "scripts/kube-up.sh --node failed ({status}); it said why above"
            );
            assert!(cluster.node_ready().await, "node {REAL_NODE} is not Ready");
        }
        cluster
    }

    /// Whether the real node is registered and Ready.
    pub async fn node_ready(&self) -> bool {
        let Ok(Some(node)) = Api::<Node>::all(self.client.clone())
            .get_opt(REAL_NODE)
            .await
        else {
            return false;
        };
        node.status
            .and_then(|s| s.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }

    /// A fresh namespace `<prefix>-<random>`, whose pods only go to the node of the same name,
    /// ready for pods (its `default` ServiceAccount exists). Deleted when the guard drops.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        self.create_namespace(prefix, true).await
    }

    /// A fresh namespace as a user makes one (`kubectl create namespace`): its pods go to the
    /// real node. Deleted when the guard drops.
    pub async fn plain_namespace(&self, prefix: &str) -> TestNamespace {
        self.create_namespace(prefix, false).await
    }

    async fn create_namespace(&self, prefix: &str, test_node: bool) -> TestNamespace {
        // The ULID's last 10 characters are random; its first 10 are the time.
        let id = ulid::Ulid::new().to_string().to_lowercase();
        let name = format!("{prefix}-{}", &id[id.len() - 10..]);
        let annotations = if test_node {
            json!({
                "scheduler.alpha.kubernetes.io/node-selector": format!("{NODE_LABEL}={name}"),
                "scheduler.alpha.kubernetes.io/defaultTolerations":
                    json!([test_node_taint(&name)]).to_string(),
            })
        } else {
            json!({})
        };
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "labels": {"memq.test/suite": "kube"},
                "annotations": annotations,
            }
        }))
        .unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create the test namespace");
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &name);
        eventually(
            Duration::from_secs(30),
            "the namespace's default ServiceAccount (made by the controller-manager)",
            || async {
                accounts
                    .get_opt("default")
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|_| ())
                    .ok_or_else(|| "not yet".to_string())
            },
        )
        .await;
        TestNamespace {
            name,
            kubeconfig: self.kubeconfig.clone(),
        }
    }

    /// A kubeconfig file (in `dir`) that authenticates with only a token of ServiceAccount
    /// `account` in `namespace` (scripts/kube-sa-kubeconfig.sh: `kubectl create token`).
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        account: &str,
        dir: &Path,
    ) -> PathBuf {
        let path = dir.join(format!("{account}.kubeconfig"));
        let out = tokio::process::Command::new("bash")
            .arg(repo_root().join("scripts/kube-sa-kubeconfig.sh"))
            .arg(&self.kubeconfig)
            .args([namespace, account])
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("run scripts/kube-sa-kubeconfig.sh");
        assert!(
            out.status.success(),
            "scripts/kube-sa-kubeconfig.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        path
    }
}

/// A namespace of one test, deleted (in the background) when dropped.
pub struct TestNamespace {
    pub name: String,
    kubeconfig: PathBuf,
}

impl std::ops::Deref for TestNamespace {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// What the kubelet stand-in knows about the pods it runs, for tests to act on.
#[derive(Default)]
struct Running {
    /// Pod name -> process id of its container now.
    pids: HashMap<String, u32>,
    /// Pod name -> log file.
    logs: HashMap<String, PathBuf>,
}

struct Ctx {
    client: kube::Client,
    namespace: String,
    node: String,
    bin_dir: PathBuf,
    log_dir: PathBuf,
    /// `host:port` of a Service -> the loopback `host:port` that serves it.
    services: Vec<(String, String)>,
    running: Mutex<Running>,
}

/// A node named after the test's namespace, kept Ready, that runs every pod the scheduler binds
/// to it: its init containers one after the other, each to exit 0 (again after a failure unless
/// `restartPolicy: Never`), then the first container's command and args (`/usr/local/bin/X` is
/// our binary X), each as a local process with the pod's env (values, Secret and ConfigMap keys,
/// the downward API's name and namespace), `HOSTNAME` the pod's name, its Secret volumes as
/// files in a directory of the pod's own, and every `//SERVICE:PORT` and Secret volume mount
/// path in args and env replaced by the loopback address that serves it or by that directory. It
/// reports Running, restarts the container as the pod's `restartPolicy` says (counting
/// `restartCount`), reports Succeeded or Failed with the exit code, and on deletion stops the
/// process and removes the pod. No images, no isolation: test code only.
pub struct Kubelet {
    ctx: Arc<Ctx>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    _logs: tempfile::TempDir,
}

impl Kubelet {
    /// Registers the node for `namespace` (cordoned if `unschedulable`) and starts running its
    /// pods; `services` maps `SERVICE:PORT` to the loopback `HOST:PORT` serving it.
    pub async fn start(
        cluster: &Cluster,
        namespace: &str,
        services: &[(&str, String)],
        unschedulable: bool,
    ) -> Self {
        let logs = tempfile::tempdir().expect("pod log directory");
        let ctx = Arc::new(Ctx {
            client: cluster.client.clone(),
            namespace: namespace.to_string(),
            node: namespace.to_string(),
            bin_dir: bin_dir(),
            log_dir: logs.path().to_path_buf(),
            services: services
                .iter()
                .map(|(s, target)| (format!("//{s}"), format!("//{target}")))
                .collect(),
            running: Mutex::new(Running::default()),
        });
        register_node(&ctx, unschedulable).await;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(sync_loop(ctx.clone(), stopped));
        Self {
            ctx,
            stop,
            task: Some(task),
            _logs: logs,
        }
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.ctx.node
    }

    /// Cordons (`true`) or uncordons the node, as `kubectl cordon` does.
    pub async fn set_unschedulable(&self, unschedulable: bool) {
        Api::<Node>::all(self.ctx.client.clone())
            .patch(
                &self.ctx.node,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": unschedulable}})),
            )
            .await
            .expect("cordon or uncordon the test node");
    }

    /// The pods whose container runs now.
    pub fn running_pods(&self) -> Vec<String> {
        let mut pods: Vec<String> = self.ctx.running.lock().pids.keys().cloned().collect();
        pods.sort();
        pods
    }

    /// SIGKILLs the container of pod `name`, as an OOM kill or a node fault would; false if it
    /// does not run.
    pub fn kill(&self, name: &str) -> bool {
        let Some(pid) = self.ctx.running.lock().pids.get(name).copied() else {
            return false;
        };
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Every pod's output so far, for failure messages.
    pub fn logs(&self) -> String {
        let files: BTreeMap<String, PathBuf> = self
            .ctx
            .running
            .lock()
            .logs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut text = String::new();
        for (pod, file) in files {
            let log = std::fs::read_to_string(&file).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            text.push_str(&format!("--- pod {pod} (last {} lines)\n", tail.len()));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Stops every container and removes the node.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let _ = Api::<Node>::all(self.ctx.client.clone())
            .delete(&self.ctx.node, &DeleteParams::default())
            .await;
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        // Processes are killed on drop of their handles (kill_on_drop); the node goes with a
        // synchronous kubectl, as no runtime may be left to delete it.
        if self.task.is_some() {
            let _ = std::process::Command::new(kubectl_path())
                .arg("--kubeconfig")
                .arg(admin_kubeconfig())
                .args(["delete", "node", &self.ctx.node, "--wait=false"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// The taint of the test node `node`, which only its namespace's pods tolerate.
fn test_node_taint(node: &str) -> Value {
    json!({"key": NODE_LABEL, "operator": "Equal", "value": node, "effect": "NoSchedule"})
}

async fn register_node(ctx: &Ctx, unschedulable: bool) {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {
            "name": ctx.node,
            "labels": {
                NODE_LABEL: ctx.node,
                "kubernetes.io/hostname": ctx.node,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            }
        },
        "spec": {"unschedulable": unschedulable, "taints": [test_node_taint(&ctx.node)]}
    }))
    .unwrap();
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("register the test node");
    report_node_ready(ctx)
        .await
        .expect("report the test node Ready");
    // The TaintNodesByCondition admission plugin taints a new node not-ready; lifted at once
    // rather than when the node lifecycle controller next looks.
    nodes
        .patch(
            &ctx.node,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [test_node_taint(&ctx.node)]}})),
        )
        .await
        .expect("lift the test node's not-ready taint");
}

async fn report_node_ready(ctx: &Ctx) -> Result<(), kube::Error> {
    let now = now();
    let status = json!({"status": {
        "capacity": {"cpu": "16", "memory": "32Gi", "pods": "110"},
        "allocatable": {"cpu": "16", "memory": "32Gi", "pods": "110"},
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "memq-rs test kubelet is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now
        }],
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": ctx.node}
        ],
        "nodeInfo": {
            "architecture": "amd64", "bootID": "", "containerRuntimeVersion": "memq-test://0",
            "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "v1.34.4",
            "machineID": "", "operatingSystem": "linux", "osImage": "memq-rs test node",
            "systemUUID": ""
        }
    }});
    Api::<Node>::all(ctx.client.clone())
        .patch_status(&ctx.node, &PatchParams::default(), &Patch::Merge(status))
        .await
        .map(|_| ())
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Every 200 ms: start a task for each new pod bound to the node, tell the tasks of pods
/// being deleted; every 10 s: report the node Ready again, the heartbeat without which the node
/// lifecycle controller would take it for lost. Ends (stopping every pod task) when `stop`
/// turns true.
async fn sync_loop(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let params = ListParams::default().fields(&format!("spec.nodeName={}", ctx.node));
    let mut tasks: HashMap<String, (watch::Sender<bool>, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    // Pods whose container this kubelet ran to its end: never run again, whatever the API says.
    let mut ended: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut heartbeat = tokio::time::Instant::now();
    loop {
        if heartbeat.elapsed() >= Duration::from_secs(10) {
            heartbeat = tokio::time::Instant::now();
            // A missed beat is made up by the next one.
            let _ = report_node_ready(&ctx).await;
        }
        if let Ok(list) = pods.list(&params).await {
            for pod in list.items {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let deleting = pod.metadata.deletion_timestamp.is_some();
                if let Some((tell, _)) = tasks.get(&uid) {
                    if deleting {
                        let _ = tell.send(true);
                    }
                    continue;
                }
                let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
                if ended.contains(&uid) || matches!(phase.as_deref(), Some("Succeeded" | "Failed"))
                {
                    // Finished before this kubelet (re)started: nothing to run.
                    if deleting {
                        tokio::spawn(remove_pod(ctx.clone(), pod));
                    }
                    continue;
                }
                let (tell, told) = watch::channel(deleting);
                let task = tokio::spawn(run_pod(ctx.clone(), pod, told));
                tasks.insert(uid, (tell, task));
            }
        }
        tasks.retain(|uid, (_, task)| {
            let finished = task.is_finished();
            if finished {
                ended.insert(uid.clone());
            }
            !finished
        });
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    for (tell, task) in tasks.into_values() {
        let _ = tell.send(true);
        let _ = task.await;
    }
}

/// The container's program and args, and env, as the pod asks, with Services resolved.
async fn container_command(
    ctx: &Ctx,
    pod: &Pod,
    c: &Container,
) -> Result<(PathBuf, Vec<String>, Vec<(String, String)>), String> {
    let command = c
        .command
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or("the test kubelet needs an explicit command (it has no images)")?;
    let program = Path::new(&command[0])
        .file_name()
        .map(|name| ctx.bin_dir.join(name))
        .filter(|p| p.is_file())
        .ok_or_else(|| format!("no binary {} in {}", command[0], ctx.bin_dir.display()))?;
    let mut args: Vec<String> = command[1..].to_vec();
    args.extend(c.args.clone().unwrap_or_default());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut env = vec![
        (
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_default(),
        ),
        ("HOSTNAME".to_string(), name.clone()),
    ];
    for var in c.env.iter().flatten() {
        if let Some(value) = &var.value {
            env.push((var.name.clone(), value.clone()));
            continue;
        }
        let Some(from) = &var.value_from else {
            env.push((var.name.clone(), String::new()));
            continue;
        };
        let value = if let Some(r) = &from.secret_key_ref {
            let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ctx.namespace)
                .get_opt(&r.name)
                .await
                .map_err(|e| e.to_string())?;
            let value = secret.and_then(|s| s.data).and_then(|d| {
                d.get(&r.key)
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            });
            match (value, r.optional.unwrap_or(false)) {
                (Some(v), _) => Some(v),
                (None, true) => None,
                (None, false) => return Err(format!("secret {} key {} not found", r.name, r.key)),
            }
        } else if let Some(r) = &from.config_map_key_ref {
            let map = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ctx.namespace)
                .get_opt(&r.name)
                .await
                .map_err(|e| e.to_string())?;
            let value = map
                .and_then(|m| m.data)
                .and_then(|d| d.get(&r.key).cloned());
            match (value, r.optional.unwrap_or(false)) {
                (Some(v), _) => Some(v),
                (None, true) => None,
                (None, false) => {
                    return Err(format!("configmap {} key {} not found", r.name, r.key));
                }
            }
        } else if let Some(f) = &from.field_ref {
            Some(match f.field_path.as_str() {
                "metadata.name" => name.clone(),
                "metadata.namespace" => ctx.namespace.clone(),
                "spec.nodeName" => ctx.node.clone(),
                "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
                other => {
                    return Err(format!(
                        "field {other} is not supported by the test kubelet"
                    ));
                }
            })
        } else {
            return Err(format!(
                "env {} has a source the test kubelet does not support",
                var.name
            ));
        };
        if let Some(value) = value {
            env.push((var.name.clone(), value));
        }
    }
    let mounts = secret_volumes(ctx, pod, c).await?;
    let resolve = |text: &str| {
        let mut text = text.to_string();
        for (service, target) in &ctx.services {
            text = text.replace(service.as_str(), target);
        }
        for (mount_path, dir) in &mounts {
            text = text.replace(mount_path.as_str(), dir);
        }
        text
    };
    let args = args.iter().map(|a| resolve(a)).collect();
    let env = env.into_iter().map(|(k, v)| (k, resolve(&v))).collect();
    Ok((program, args, env))
}

/// The Secret volumes `c` mounts (other volumes are not mounted), written as files (each key,
/// or each of `items`, at its path) under a directory of the pod's own: the mount paths and those directories, longest mount
/// path first, for [`container_command`] to map paths in args and env. Written again at every
/// start, as the Secret is then. A missing Secret (or key) fails the start unless `optional`.
async fn secret_volumes(
    ctx: &Ctx,
    pod: &Pod,
    c: &Container,
) -> Result<Vec<(String, String)>, String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    let mut mounts = Vec::new();
    for mount in c.volume_mounts.iter().flatten() {
        // Other kinds of volume (emptyDir, configMap, ...) are not mounted, as before.
        let Some((volume, source)) = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .and_then(|v| Some((v, v.secret.as_ref()?)))
        else {
            continue;
        };
        if mount.sub_path.is_some() {
            return Err(format!(
                "volumeMount {}: no subPath in the test kubelet",
                mount.name
            ));
        }
        let secret_name = source.secret_name.clone().unwrap_or_default();
        let optional = source.optional.unwrap_or(false);
        let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ctx.namespace)
            .get_opt(&secret_name)
            .await
            .map_err(|e| e.to_string())?;
        let data = match (secret, optional) {
            (Some(s), _) => s.data.unwrap_or_default(),
            (None, true) => BTreeMap::new(),
            (None, false) => return Err(format!("secret {secret_name} not found")),
        };
        let files: Vec<(String, String)> = match &source.items {
            Some(items) => items
                .iter()
                .map(|i| (i.key.clone(), i.path.clone()))
                .collect(),
            None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
        };
        let dir = ctx.log_dir.join("volumes").join(&name).join(&volume.name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for (key, path) in files {
            let Some(value) = data.get(&key) else {
                if optional {
                    continue;
                }
                return Err(format!("secret {secret_name} key {key} not found"));
            };
            // Swapped in whole, as the kubelet does: a reader never sees half a file.
            let target = dir.join(&path);
            let next = dir.join(format!(".{}.next", path.replace('/', "_")));
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&next, &value.0).map_err(|e| e.to_string())?;
            std::fs::rename(&next, &target).map_err(|e| e.to_string())?;
        }
        mounts.push((
            mount.mount_path.trim_end_matches('/').to_string(),
            dir.display().to_string(),
        ));
    }
    mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    Ok(mounts)
}

/// The life of one pod on the node: run, restart as its policy says, report, and on deletion
/// stop and remove it.
async fn run_pod(ctx: Arc<Ctx>, pod: Pod, mut deleting: watch::Receiver<bool>) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let container = spec.containers[0].clone();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let grace = Duration::from_secs(
        spec.termination_grace_period_seconds
            .unwrap_or(30)
            .clamp(0, 5) as u64,
    );
    let reporter = PodStatus {
        pods: Api::namespaced(ctx.client.clone(), &ctx.namespace),
        name: name.clone(),
        container: container.name.clone(),
        started: now(),
    };
    let log_path = ctx.log_dir.join(format!("{name}.log"));
    ctx.running
        .lock()
        .logs
        .insert(name.clone(), log_path.clone());
    let (program, args, env) = match container_command(&ctx, &pod, &container).await {
        Ok(c) => c,
        Err(why) => {
            let _ = std::fs::write(&log_path, format!("test kubelet: cannot run: {why}\n"));
            reporter
                .send("Failed", 0, Some((128, "ContainerCannotRun")), &why)
                .await;
            until_deleting(&mut deleting).await;
            remove_pod(ctx.clone(), pod).await;
            return;
        }
    };
    match run_init_containers(&ctx, &pod, &policy, &log_path, &mut deleting).await {
        Init::Done => {}
        Init::Failed(why) => {
            reporter
                .send("Failed", 0, Some((1, "InitContainerFailed")), &why)
                .await;
            until_deleting(&mut deleting).await;
            remove_pod(ctx.clone(), pod).await;
            return;
        }
        Init::Deleting => {
            remove_pod(ctx.clone(), pod).await;
            return;
        }
    }
    let mut restarts = 0i32;
    loop {
        if *deleting.borrow() {
            break;
        }
        let spawned = spawn_container(&program, &args, &env, &log_path);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                reporter
                    .send(
                        "Failed",
                        restarts,
                        Some((128, "ContainerCannotRun")),
                        &e.to_string(),
                    )
                    .await;
                break;
            }
        };
        if let Some(pid) = child.id() {
            ctx.running.lock().pids.insert(name.clone(), pid);
        }
        reporter.send("Running", restarts, None, "").await;
        let status = tokio::select! {
            status = child.wait() => status.ok(),
            _ = until_deleting(&mut deleting) => {
                // As a kubelet: SIGTERM, the grace period (at most 5 s here), then SIGKILL.
                if let Some(pid) = child.id() {
                    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
                }
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                ctx.running.lock().pids.remove(&name);
                break;
            }
        };
        ctx.running.lock().pids.remove(&name);
        let code = status.map_or(128, |s| {
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9))
        });
        let restart = match policy.as_str() {
            "Always" => true,
            "OnFailure" => code != 0,
            _ => false,
        };
        if !restart {
            let (phase, reason) = if code == 0 {
                ("Succeeded", "Completed")
            } else {
                ("Failed", "Error")
            };
            reporter
                .send(phase, restarts, Some((code, reason)), "")
                .await;
            break;
        }
        restarts += 1;
        // The kubelet's crash-loop back-off, shortened: 100 ms doubling up to 3 s.
        let pause = Duration::from_millis(100 * (1u64 << restarts.min(5) as u64))
            .min(Duration::from_secs(3));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = until_deleting(&mut deleting) => break,
        }
    }
    if *deleting.borrow() {
        remove_pod(ctx.clone(), pod).await;
    }
}

/// How a pod's init containers ended.
enum Init {
    /// Each exited 0 (or there are none).
    Done,
    /// One failed under `restartPolicy: Never`, or could not run: why.
    Failed(String),
    /// The pod is being deleted.
    Deleting,
}

/// Runs the pod's init containers in order, as a kubelet does before the first container: each
/// until it exits 0, again after a failure (short back-off) unless the policy is `Never`. The pod
/// stays Pending meanwhile. Their output goes to the pod's log.
async fn run_init_containers(
    ctx: &Ctx,
    pod: &Pod,
    policy: &str,
    log_path: &Path,
    deleting: &mut watch::Receiver<bool>,
) -> Init {
    let spec = pod.spec.clone().unwrap_or_default();
    for container in spec.init_containers.iter().flatten() {
        let (program, args, env) = match container_command(ctx, pod, container).await {
            Ok(c) => c,
            Err(why) => {
                let why = format!("init container {}: {why}", container.name);
                let _ = std::fs::write(log_path, format!("test kubelet: cannot run: {why}\n"));
                return Init::Failed(why);
            }
        };
        let mut attempt = 0u32;
        loop {
            if *deleting.borrow() {
                return Init::Deleting;
            }
            let spawned = spawn_container(&program, &args, &env, log_path);
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) => return Init::Failed(format!("init container {}: {e}", container.name)),
            };
            let status = tokio::select! {
                status = child.wait() => status.ok(),
                _ = until_deleting(deleting) => {
                    let _ = child.kill().await;
                    return Init::Deleting;
                }
            };
            let code = status.map_or(128, |s| {
                s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9))
            });
            if code == 0 {
                break;
            }
            if policy == "Never" {
                return Init::Failed(format!("init container {} exited {code}", container.name));
            }
            attempt += 1;
            let pause =
                Duration::from_millis(100 * (1u64 << attempt.min(5))).min(Duration::from_secs(3));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = until_deleting(deleting) => return Init::Deleting,
            }
        }
    }
    Init::Done
}

/// Returns once the pod is being deleted (or its kubelet stops).
async fn until_deleting(deleting: &mut watch::Receiver<bool>) {
    // The guard wait_for answers is dropped here, never held across an await.
    let _ = deleting.wait_for(|d| *d).await;
}

/// Removes a pod being deleted, as the kubelet does once its containers stopped.
async fn remove_pod(ctx: Arc<Ctx>, pod: Pod) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let _ = pods
        .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
        .await;
}

/// Where one pod's status goes: the pod, its one container, when it started.
struct PodStatus {
    pods: Api<Pod>,
    name: String,
    container: String,
    started: String,
}

impl PodStatus {
    /// Reports the pod's phase and its container's state through pods/status.
    async fn send(
        &self,
        phase: &str,
        restarts: i32,
        terminated: Option<(i32, &str)>,
        message: &str,
    ) {
        let (pods, name, container, started) =
            (&self.pods, &self.name, &self.container, &self.started);
        let now = now();
        let running = terminated.is_none();
        let state = match terminated {
            None => json!({"running": {"startedAt": now}}),
            Some((code, reason)) => json!({"terminated": {
                "exitCode": code, "reason": reason, "message": message,
                "startedAt": started, "finishedAt": now
            }}),
        };
        let ready = if running { "True" } else { "False" };
        let condition = |type_: &str, status: &str| json!({"type": type_, "status": status, "lastTransitionTime": now});
        let status: Value = json!({"status": {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": started,
            "conditions": [
                condition("PodScheduled", "True"),
                condition("Initialized", "True"),
                condition("ContainersReady", ready),
                condition("Ready", ready),
            ],
            "containerStatuses": [{
                "name": container,
                "image": "memq-rs:0.1.0",
                "imageID": "",
                "ready": running,
                "started": running,
                "restartCount": restarts,
                "state": state,
            }],
        }});
        // A lost report of the end would leave the pod Running for good (and the sync loop would
        // run it again): try a few times.
        for attempt in 1..=5 {
            match pods
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                Ok(_) => return,
                Err(e) if attempt == 5 => {
                    eprintln!("test kubelet: cannot report pod {name} {phase}: {e}");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200 * attempt)).await,
            }
        }
    }
}

/// Starts one container's process with exactly `env`, its output appended to the pod's log.
fn spawn_container(
    program: &std::path::Path,
    args: &[String],
    env: &[(String, String)],
    log_path: &std::path::Path,
) -> std::io::Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("pod log file");
    tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log file handle"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
}

/// The objects a kustomization renders to, as JSON (kubectl's own kustomize, no server write).
pub async fn rendered(cluster: &Cluster, dir: &Path, ns: &str) -> Vec<Value> {
    let dir = dir.display().to_string();
    let text = cluster
        .kubectl_ok(&[
            "create",
            "--dry-run=client",
            "-o",
            "json",
            "-n",
            ns,
            "-k",
            &dir,
        ])
        .await;
    // One JSON document per object, one after the other.
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(|v| v.expect("kubectl's JSON"))
        .collect()
}

/// The pods of Job `job` in `ns`.
pub async fn job_pods(cluster: &Cluster, ns: &str, job: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(cluster.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Whether `job` has condition `type_` (Complete, Failed, ...) true.
pub fn condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Runs scripts/make-tokens.sh as the admin of `cluster` in namespace `ns`; what it said.
pub async fn make_tokens(cluster: &Cluster, ns: &str, extra: &[&str]) -> String {
    let (success, said) = run_make_tokens(cluster, ns, extra).await;
    assert!(success, "scripts/make-tokens.sh failed: {said}");
    said
}

/// Runs scripts/make-tokens.sh as [`make_tokens`] does; whether it exited 0, and what it said.
pub async fn run_make_tokens(cluster: &Cluster, ns: &str, extra: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("bash")
        .arg(repo_root().join("scripts/make-tokens.sh"))
        .args(["--namespace", ns])
        .args(extra)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("KUBECTL", kubectl_path())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run scripts/make-tokens.sh");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Key `key` of Secret `name` in `ns`, read through the API.
pub async fn secret_value(cluster: &Cluster, ns: &str, name: &str, key: &str) -> String {
    let secret = Api::<Secret>::namespaced(cluster.client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Secret {name}: {e}"));
    let data = secret.data.unwrap_or_default();
    let value = data
        .get(key)
        .unwrap_or_else(|| panic!("Secret {name} has no key {key}"));
    String::from_utf8(value.0.clone()).unwrap()
}
