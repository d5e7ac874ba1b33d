//! The Kubernetes side against a real control plane (scripts/kube-up.sh: etcd, kube-apiserver
//! with RBAC and the default admission plugins, the controller-manager's Job, ServiceAccount
//! and garbage-collector controllers, the scheduler) and the test kubelet of
//! `kube_cluster::Kubelet`, which runs the pods bound to it as processes of our binaries:
//! - every kustomization applies server-side and reads back as written;
//! - the queue server's ServiceAccount may do exactly what the launcher and autoscaler call;
//! - the real `queue-server` binary, with only that ServiceAccount's token, launches, lists and
//!   deletes real Jobs whose pods really run consumers;
//! - refusals of the real API server answer what they are (403, 422, 503) and the server goes
//!   on serving queues;
//! - the autoscaler against real Pending pods, then running ones;
//! - the Secrets of scripts/make-tokens.sh with the server on its tokens file: the consumer
//!   token is refused an admin action; a rerun keeps the tokens; `--rotate` makes new ones and
//!   the server, taking the new file without a restart, accepts the old and the new alike (a
//!   second `--rotate` is refused) until `--retire-previous`, after which the old tokens answer
//!   401.
//!
//! The seed's walkthrough itself, the overlays and the dashboard's Jobs run in containers on a
//! real node: tests/real_node.rs and scripts/browser-test.sh.

mod kube_cluster;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use kube_cluster::{
    Cluster, Kubelet, job_pods, make_tokens, rendered, repo_root, run_make_tokens, secret_value,
};
use memq::{Autoscale, CreateJobRequest, QueueConfigPatch};
use queue_server::kube::RBAC_VERBS;
use queue_server::testing::{ServerProcess, eventually, metric};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_queue-server");
/// How long a state of the control plane may take to come about: the whole suite shares a
/// 2-core machine with these tests, and the consumers do real (keygen) work in debug builds.
const LIMIT: Duration = Duration::from_secs(180);

/// Applies the base's ServiceAccount, Role and RoleBinding in `ns`.
async fn apply_rbac(cluster: &Cluster, ns: &str) {
    let base = repo_root().join("manifests/base");
    let files: Vec<String> = ["serviceaccount.yaml", "role.yaml", "rolebinding.yaml"]
        .iter()
        .map(|f| base.join(f).display().to_string())
        .collect();
    let mut args = vec!["apply", "--server-side", "-n", ns];
    for f in &files {
        args.extend(["-f", f.as_str()]);
    }
    cluster.kubectl_ok(&args).await;
}

/// The set-up of a launcher test: a namespace with the base's RBAC, a directory for files, and
/// a kubeconfig holding only a token of ServiceAccount `account` (`queue-server` has the Role,
/// `default` has none).
struct Setup {
    cluster: Cluster,
    ns: kube_cluster::TestNamespace,
    dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

async fn setup(prefix: &str, account: &str) -> Setup {
    let cluster = Cluster::connect().await;
    let ns = cluster.namespace(prefix).await;
    apply_rbac(&cluster, &ns).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cluster
        .service_account_kubeconfig(&ns, account, dir.path())
        .await;
    Setup {
        cluster,
        ns,
        dir,
        kubeconfig,
    }
}

/// Where `live` differs from what `want` says (every field of `want` must be in `live` with
/// the same value; lists the same length, element by element). Paths of the differences.
fn differences(want: &Value, live: &Value, path: &str, out: &mut Vec<String>) {
    match (want, live) {
        (Value::Object(w), Value::Object(l)) => {
            for (key, value) in w {
                let here = format!("{path}.{key}");
                match l.get(key) {
                    Some(live) => differences(value, live, &here, out),
                    None => out.push(format!("{here}: missing")),
                }
            }
        }
        (Value::Array(w), Value::Array(l)) if w.len() == l.len() => {
            for (i, (w, l)) in w.iter().zip(l).enumerate() {
                differences(w, l, &format!("{path}[{i}]"), out);
            }
        }
        (w, l) if w == l => {}
        (w, l) => out.push(format!("{path}: file says {w}, API server has {l}")),
    }
}

/// `kind.version.group` of an object, as kubectl takes it.
fn resource_of(obj: &Value) -> String {
    let kind = obj["kind"].as_str().unwrap();
    match obj["apiVersion"].as_str().unwrap().split_once('/') {
        Some((group, version)) => format!("{kind}.{version}.{group}"),
        None => kind.to_string(),
    }
}

#[tokio::test]
async fn every_kustomization_applies_server_side_and_reads_back_as_written() {
    let cluster = Cluster::connect().await;
    let mut kustomizations: Vec<_> = std::fs::read_dir(repo_root().join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    kustomizations.sort();
    let names: Vec<String> = kustomizations
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["base", "durable", "keda", "redis", "tls"],
        "a new overlay: check it here too"
    );
    // The keda overlay's ScaledJob and TriggerAuthentication, and the tls overlay's
    // Certificates and Issuers: validated by the API server against KEDA's and cert-manager's
    // own CRDs.
    install_crds(&cluster, &KEDA_CRDS).await;
    install_crds(&cluster, &CERT_MANAGER_CRDS).await;

    for (dir, name) in kustomizations.iter().zip(&names) {
        let ns = cluster.namespace(&format!("manifests-{name}")).await;
        let applied = cluster
            .kubectl_ok(&[
                "apply",
                "--server-side",
                "--field-manager=memq-test",
                "-n",
                &ns,
                "-k",
                &dir.display().to_string(),
            ])
            .await;
        let objects = rendered(&cluster, dir, &ns).await;
        assert!(objects.len() >= 8, "{name}: {applied}");
        let mut kinds = Vec::new();
        for mut want in objects {
            let resource = resource_of(&want);
            let object_name = want["metadata"]["name"].as_str().unwrap().to_string();
            kinds.push(want["kind"].as_str().unwrap().to_string());
            // What only the API server adds or the client sets.
            want.as_object_mut().unwrap().remove("status");
            let live: Value = serde_json::from_str(
                &cluster
                    .kubectl_ok(&["get", "-n", &ns, &resource, &object_name, "-o", "json"])
                    .await,
            )
            .unwrap();
            assert_eq!(live["metadata"]["namespace"], ns.name.as_str());
            let mut diff = Vec::new();
            differences(&want, &live, "", &mut diff);
            assert!(
                diff.is_empty(),
                "{name}: {resource} {object_name} differs from its file:\n{}",
                diff.join("\n")
            );
        }
        // Each overlay's point, as the API server holds it.
        let has = |kind: &str| kinds.iter().any(|k| k == kind);
        // One field of a live object, by a JSONPath template.
        let jsonpath = async |kind: &str, object: &str, path: &str| {
            cluster
                .kubectl_ok(&[
                    "get",
                    "-n",
                    &ns,
                    kind,
                    object,
                    "-o",
                    &format!("jsonpath={path}"),
                ])
                .await
        };
        assert!(has("Role") && has("RoleBinding") && has("ServiceAccount") && has("Service"));
        assert_eq!(has("StatefulSet"), name == "durable", "{name}: {kinds:?}");
        assert_eq!(has("ReplicaSet"), name != "durable", "{name}: {kinds:?}");
        if name == "redis" {
            let replicas = jsonpath("replicaset", "queue", "{.spec.replicas}").await;
            assert_eq!(replicas, "3");
        }
        assert_eq!(has("ScaledJob"), name == "keda", "{name}: {kinds:?}");
        if name == "keda" {
            // KEDA starts the consumers: no fixed Job, and the server's autoscaler is off.
            let jobs = cluster
                .kubectl_ok(&["get", "-n", &ns, "jobs", "-o", "name"])
                .await;
            assert!(!jobs.contains("job.batch/consumers"), "{jobs}");
            let env = jsonpath(
                "replicaset",
                "queue",
                "{.spec.template.spec.containers[0].env[?(@.name==\"MEMQ_AUTOSCALE\")].value}",
            )
            .await;
            assert_eq!(env, "false");
            let trigger: Value = serde_json::from_str(
                &cluster
                    .kubectl_ok(&["get", "-n", &ns, "scaledjob", "consumers", "-o", "json"])
                    .await,
            )
            .unwrap();
            let trigger = &trigger["spec"]["triggers"][0];
            assert_eq!(trigger["type"], "metrics-api");
            assert_eq!(trigger["metadata"]["valueLocation"], "depth");
            // KEDA reads the depth with the reader token, nothing more.
            assert_eq!(trigger["authenticationRef"]["name"], "memq-token-reader");
            let auth = jsonpath(
                "triggerauthentication",
                "memq-token-reader",
                "{.spec.secretTargetRef[0].name}",
            )
            .await;
            assert_eq!(auth, "memq-token-reader");
        }
        assert_eq!(has("Certificate"), name == "tls", "{name}: {kinds:?}");
        if name == "tls" {
            let container = "{.spec.template.spec.containers[0]";
            for (env, want) in [
                ("MEMQ_TLS_CERT", "/etc/memq-tls/tls.crt"),
                ("MEMQ_TLS_KEY", "/etc/memq-tls/tls.key"),
                ("MEMQ_SERVER_URL", "https://queue:8080/memq/server"),
            ] {
                let path = format!("{container}.env[?(@.name==\"{env}\")].value}}");
                assert_eq!(jsonpath("replicaset", "queue", &path).await, want, "{env}");
            }
            for probe in ["livenessProbe", "readinessProbe"] {
                let path = format!("{container}.{probe}.httpGet.scheme}}");
                assert_eq!(jsonpath("replicaset", "queue", &path).await, "HTTPS");
            }
            let secret = jsonpath(
                "replicaset",
                "queue",
                "{.spec.template.spec.volumes[?(@.name==\"tls\")].secret.secretName}",
            )
            .await;
            assert_eq!(secret, "queue-tls");
            // The key is readable by the server's group, not by every user.
            let mode = jsonpath(
                "replicaset",
                "queue",
                "{.spec.template.spec.volumes[?(@.name==\"tls\")].secret.defaultMode}",
            )
            .await;
            assert_eq!(mode, "288", "0440");
            let group = jsonpath(
                "replicaset",
                "queue",
                "{.spec.template.spec.securityContext.fsGroup}",
            )
            .await;
            assert_eq!(group, "65532");
            for job in ["producer", "consumers"] {
                let args = jsonpath("job", job, &format!("{container}.args[0]}}")).await;
                assert_eq!(args, "--server=https://queue:8080/memq/server", "{job}");
                let ca = jsonpath(
                    "job",
                    job,
                    &format!("{container}.env[?(@.name==\"MEMQ_CA_CERT\")].value}}"),
                )
                .await;
                assert_eq!(ca, "/etc/memq-ca/ca.crt", "{job}");
            }
            let init = "{.spec.template.spec.initContainers[?(@.name==\"create-queue\")]";
            let args = jsonpath("job", "producer", &format!("{init}.args[0]}}")).await;
            assert_eq!(args, "--server=https://queue:8080/memq/server");
            let ca = jsonpath(
                "job",
                "producer",
                &format!("{init}.env[?(@.name==\"MEMQ_CA_CERT\")].value}}"),
            )
            .await;
            assert_eq!(ca, "/etc/memq-ca/ca.crt");
            let template = jsonpath(
                "configmap",
                "consumer-job-template",
                "{.data.job-template\\.yaml}",
            )
            .await;
            assert!(
                template.contains("--server=https://queue:8080/memq/server")
                    && template.contains("MEMQ_CA_CERT"),
                "{template}"
            );
            // The launched Jobs' template is a copy of the base's: the same token, required, as
            // a file of the whole Secret's volume (followed through a rotation), not from env.
            let job: Value = serde_saphyr::from_str(&template).expect("the template parses");
            let pod = &job["spec"]["template"]["spec"];
            let worker = &pod["containers"][0];
            let env = worker["env"].as_array().cloned().unwrap_or_default();
            let file = env.iter().find(|e| e["name"] == "MEMQ_TOKEN_FILE");
            assert_eq!(
                file.map(|e| &e["value"]),
                Some(&json!("/var/run/memq/token/token")),
                "{template}"
            );
            assert!(!env.iter().any(|e| e["name"] == "MEMQ_TOKEN"), "{template}");
            let mount = worker["volumeMounts"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["name"] == "memq-token"));
            assert_eq!(
                mount,
                Some(
                    &json!({"name": "memq-token", "mountPath": "/var/run/memq/token", "readOnly": true})
                ),
                "{template}"
            );
            let volume = pod["volumes"]
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == "memq-token"));
            assert_eq!(
                volume.map(|v| (&v["secret"]["secretName"], v["secret"].get("optional"))),
                Some((&json!("memq-token-consumer"), None)),
                "{template}"
            );
            let certificate: Value = serde_json::from_str(
                &cluster
                    .kubectl_ok(&["get", "-n", &ns, "certificate", "queue-tls", "-o", "json"])
                    .await,
            )
            .unwrap();
            assert_eq!(certificate["spec"]["secretName"], "queue-tls");
            assert_eq!(certificate["spec"]["issuerRef"]["name"], "memq-ca");
            assert_eq!(certificate["spec"]["dnsNames"][0], "queue");
        }
    }
    // A field KEDA's schema does not have is refused: the CRDs are really checking.
    let ns = cluster.namespace("manifests-keda-bad").await;
    let bad = r#"{"apiVersion":"keda.sh/v1alpha1","kind":"ScaledJob","metadata":{"name":"x"},
        "spec":{"jobTargetRef":{"template":{"spec":{"containers":[{"name":"c","image":"i"}]}}},
        "triggers":[{"type":"metrics-api","metadata":{}}],"noSuchField":1}}"#;
    let refused = refused_on_dry_run(&cluster, &ns, bad).await;
    assert!(refused.contains("noSuchField"), "{refused}");
    // And cert-manager's: a Certificate without its secretName is refused.
    let bad = r#"{"apiVersion":"cert-manager.io/v1","kind":"Certificate","metadata":{"name":"x"},
        "spec":{"dnsNames":["queue"],"issuerRef":{"name":"memq-ca"}}}"#;
    let refused = refused_on_dry_run(&cluster, &ns, bad).await;
    assert!(refused.contains("secretName"), "{refused}");
}

/// What the API server says when `object` (JSON) is applied to `ns` as a server-side dry run;
/// fails the test if it takes it.
async fn refused_on_dry_run(cluster: &Cluster, ns: &str, object: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("object.json");
    std::fs::write(&file, object).unwrap();
    cluster
        .kubectl(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-n",
            ns,
            "-f",
            &file.display().to_string(),
        ])
        .await
        .expect_err("the API server refuses it")
}

/// Custom resource definitions of a project, from a directory of its Go module.
struct Crds {
    /// `module@version`, fetched through the Go module proxy into Go's module cache (once per
    /// machine).
    module: &'static str,
    /// The directory of plain CRD files in the module.
    dir: &'static str,
    /// (file, CRD name) of each CRD to install.
    crds: &'static [(&'static str, &'static str)],
}

/// KEDA's CRDs of this release (`config/crd/bases`).
const KEDA_CRDS: Crds = Crds {
    module: "github.com/kedacore/keda/v2@v2.21.0",
    dir: "config/crd/bases",
    crds: &[
        ("keda.sh_scaledjobs.yaml", "scaledjobs.keda.sh"),
        (
            "keda.sh_triggerauthentications.yaml",
            "triggerauthentications.keda.sh",
        ),
    ],
};

/// cert-manager's CRDs of this release: `deploy/crds` holds them as plain YAML, the source of
/// the Helm chart's templated copies.
const CERT_MANAGER_CRDS: Crds = Crds {
    module: "github.com/cert-manager/cert-manager@v1.19.1",
    dir: "deploy/crds",
    crds: &[
        (
            "cert-manager.io_certificates.yaml",
            "certificates.cert-manager.io",
        ),
        ("cert-manager.io_issuers.yaml", "issuers.cert-manager.io"),
    ],
};

/// Installs `crds` (server-side apply: idempotent; they stay for the cluster's life).
async fn install_crds(cluster: &Cluster, crds: &Crds) {
    let scratch = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("go")
        .args(["mod", "download", "-json", crds.module])
        // Outside any module: only the download.
        .current_dir(scratch.path())
        .env("GOFLAGS", "-mod=mod")
        .output()
        .await
        .expect("go (installed with the Kubernetes control plane's tools) runs");
    assert!(
        out.status.success(),
        "go mod download {} failed (is the Go module proxy reachable?): {}{}",
        crds.module,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dir = Path::new(info["Dir"].as_str().unwrap()).join(crds.dir);
    for (file, _) in crds.crds {
        let file = dir.join(file).display().to_string();
        cluster
            .kubectl_ok(&[
                "apply",
                "--server-side",
                "--field-manager=memq-test",
                "-f",
                &file,
            ])
            .await;
    }
    // Polled rather than `kubectl wait --for=condition=Established`, which fails at once on a
    // CRD that has no status conditions yet (one created a moment ago).
    for (_, crd) in crds.crds {
        eventually(
            Duration::from_secs(30),
            &format!("CRD {crd} established"),
            || async {
                let status = cluster
                    .kubectl(&[
                        "get",
                        &format!("crd/{crd}"),
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
                    ])
                    .await?;
                match status.trim() {
                    "True" => Ok(()),
                    other => Err(format!("Established is {other:?}")),
                }
            },
        )
        .await;
    }
}

/// `kubectl auth can-i`, as `who` (impersonated) or as the admin: true for yes.
async fn can_i(cluster: &Cluster, who: Option<&str>, args: &[&str]) -> bool {
    let mut full = vec!["auth", "can-i"];
    if let Some(who) = who {
        full.extend(["--as", who]);
    }
    full.extend(args);
    let out = cluster.kubectl_output(&full).await;
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer.starts_with("no"),
        "kubectl {}: {answer} {}",
        full.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    answer == "yes"
}

#[tokio::test]
async fn the_queue_servers_service_account_may_do_exactly_what_the_launcher_calls() {
    let cluster = Cluster::connect().await;
    let ns = cluster.namespace("rbac").await;
    let other = cluster.namespace("rbac-other").await;
    apply_rbac(&cluster, &ns).await;
    let who = format!("system:serviceaccount:{}:queue-server", ns.name);

    // Every call in the code (RBAC_VERBS), in its own namespace: allowed.
    for (group, resource, verb) in RBAC_VERBS {
        let resource = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        assert!(
            can_i(&cluster, Some(&who), &[verb, &resource, "-n", &ns]).await,
            "{who} may not {verb} {resource} in {}: the launcher calls it",
            ns.name
        );
    }
    // Everything a compromised queue server must not get.
    let own: &str = &ns;
    let denied: &[(&str, &[&str])] = &[
        ("read secrets", &["get", "secrets", "-n", own]),
        ("list secrets", &["list", "secrets", "-n", own]),
        (
            "exec into pods",
            &["create", "pods", "--subresource=exec", "-n", own],
        ),
        (
            "attach to pods",
            &["create", "pods", "--subresource=attach", "-n", own],
        ),
        (
            "read pod logs",
            &["get", "pods", "--subresource=log", "-n", own],
        ),
        ("create pods", &["create", "pods", "-n", own]),
        ("delete pods", &["delete", "pods", "-n", own]),
        ("watch jobs", &["watch", "jobs.batch", "-n", own]),
        ("update jobs", &["update", "jobs.batch", "-n", own]),
        ("patch jobs", &["patch", "jobs.batch", "-n", own]),
        (
            "create jobs elsewhere",
            &["create", "jobs.batch", "-n", &other],
        ),
        ("list jobs elsewhere", &["list", "jobs.batch", "-n", &other]),
        (
            "list jobs cluster-wide",
            &["list", "jobs.batch", "--all-namespaces"],
        ),
        (
            "list pods cluster-wide",
            &["list", "pods", "--all-namespaces"],
        ),
        ("list nodes", &["list", "nodes"]),
        (
            "create roles",
            &["create", "roles.rbac.authorization.k8s.io", "-n", own],
        ),
        (
            "create rolebindings",
            &[
                "create",
                "rolebindings.rbac.authorization.k8s.io",
                "-n",
                own,
            ],
        ),
        (
            "bind roles",
            &["bind", "roles.rbac.authorization.k8s.io", "-n", own],
        ),
        (
            "escalate roles",
            &["escalate", "roles.rbac.authorization.k8s.io", "-n", own],
        ),
        (
            "create clusterrolebindings",
            &["create", "clusterrolebindings.rbac.authorization.k8s.io"],
        ),
        (
            "update its Role",
            &[
                "update",
                "roles.rbac.authorization.k8s.io/queue-server-jobs",
                "-n",
                own,
            ],
        ),
        ("read configmaps", &["get", "configmaps", "-n", own]),
        (
            "create serviceaccount tokens",
            &[
                "create",
                "serviceaccounts",
                "--subresource=token",
                "-n",
                own,
            ],
        ),
    ];
    for (what, args) in denied {
        assert!(
            !can_i(&cluster, Some(&who), args).await,
            "{who} may {what} ({})",
            args.join(" ")
        );
    }
    // The check itself can say yes: the admin may do all of that.
    for (what, args) in denied {
        assert!(
            can_i(&cluster, None, args).await,
            "the admin may not {what}"
        );
    }
}

/// A `queue-server` process with `--jobs` in `ns`, authenticating with `kubeconfig` only.
async fn jobs_server(ns: &str, kubeconfig: &Path, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--jobs", "--namespace", ns];
    args.extend(extra);
    ServerProcess::start_with_env(
        BIN,
        &args,
        &[
            ("KUBECONFIG", &kubeconfig.display().to_string()),
            ("RUST_LOG", "warn"),
        ],
    )
    .await
}

/// `POST /jobs` for `parallelism` consumers of `queue`, from the server's template as it is.
fn job_request(queue: &str, parallelism: u32) -> CreateJobRequest {
    CreateJobRequest {
        queue: queue.into(),
        parallelism,
        ..Default::default()
    }
}

fn client_of(server: &ServerProcess) -> memq::Client {
    memq::Client::new(server.base_url()).unwrap()
}

/// `host:port` of a server, for the kubelet's Service `queue:8080`.
fn host_port(server: &ServerProcess) -> String {
    server.url().trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn the_real_server_launches_lists_and_deletes_real_jobs_as_its_service_account() {
    let Setup {
        cluster,
        ns,
        dir: _dir,
        kubeconfig,
    } = setup("launcher", "queue-server").await;
    let server = jobs_server(&ns, &kubeconfig, &[]).await;
    let kubelet = Kubelet::start(&cluster, &ns, &[("queue:8080", host_port(&server))], false).await;
    let client = client_of(&server);
    let empty = client.jobs().await.unwrap();
    assert_eq!(
        (empty.kind.as_str(), empty.namespace.as_str()),
        ("jobList", ns.name.as_str())
    );
    assert!(empty.jobs.is_empty());
    // A consumer Job this server did not launch (as kubectl apply of the base makes): never
    // listed, never deleted through /jobs. Suspended, so it runs nothing.
    let foreign: Job = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "consumers", "labels": {
            "memq.queue": "work", "app.kubernetes.io/managed-by": "kustomize"}},
        "spec": {"suspend": true, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "worker", "image": "memq-rs:0.1.0"}]}}}
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
    jobs.create(&Default::default(), &foreign).await.unwrap();
    client.create_queue("work", None).await.unwrap();
    let items: String = (0..20).map(|i| format!("item-{i}\n")).collect();
    client.enqueue_lines("work", items, None).await.unwrap();

    // POST /jobs: a real Job, whose pods the Job controller makes and the node runs.
    let job = client.create_job(&job_request("work", 2)).await.unwrap();
    assert!(job.name.starts_with("consumer-work-"), "{}", job.name);
    assert_eq!(job.namespace, ns.name);
    let done = eventually(
        LIMIT,
        "the launched Job completes, as GET /jobs shows",
        || async {
            let list = client.jobs().await.map_err(|e| e.to_string())?;
            let found = list.jobs.iter().find(|j| j.name == job.name).cloned();
            match found {
                Some(j) if j.state == "Complete" => Ok(j),
                other => Err(format!("{other:?}\n{}", kubelet.logs())),
            }
        },
    )
    .await;
    assert_eq!(done.queue, "work");
    assert_eq!(done.parallelism, 2);
    assert!(done.creation_timestamp.is_some());
    assert!(done.start_time.as_deref().is_some_and(|t| t.ends_with('Z')));
    assert!(done.succeeded >= 1 && done.failed == 0, "{done:?}");
    assert!(done.completion_time.is_some());
    assert!(done.conditions.iter().any(|c| c.type_ == "Complete"));
    let stats = client.queue("work").await.unwrap();
    assert_eq!((stats.acked, stats.depth, stats.inflight), (20, 0, 0));
    let pods = job_pods(&cluster, &ns, &job.name).await;
    assert_eq!(pods.len(), 2, "one pod per parallelism");
    for pod in &pods {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some(kubelet.node()));
        assert_eq!(
            pod.status.as_ref().unwrap().phase.as_deref(),
            Some("Succeeded")
        );
    }

    // A Job whose pods hold items: DELETE takes the Job and its pods, and the items come back.
    client
        .enqueue("work", "slow", &Default::default())
        .await
        .unwrap();
    let slow = client
        .create_job(&CreateJobRequest {
            queue: "work".into(),
            parallelism: 1,
            args: Some(vec!["--work=sleep=10m".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    eventually(LIMIT, "the slow Job's pod holds the item", || async {
        let stats = client.queue("work").await.map_err(|e| e.to_string())?;
        if stats.inflight == 1 && kubelet.running_pods().len() == 1 {
            Ok(())
        } else {
            Err(format!("{stats:?} running {:?}", kubelet.running_pods()))
        }
    })
    .await;
    let listed = client.jobs().await.unwrap();
    let names: Vec<&str> = listed.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [job.name.as_str(), slow.name.as_str()],
        "oldest first"
    );
    assert_eq!(listed.jobs[1].state, "Running");
    assert_eq!(listed.jobs[1].active, 1);

    let deleted = client.delete_job(&slow.name).await.unwrap();
    assert_eq!(deleted.name, slow.name);
    assert_eq!(deleted.queue, "work");
    eventually(LIMIT, "the deleted Job and its pod are gone", || async {
        let job = jobs.get_opt(&slow.name).await.map_err(|e| e.to_string())?;
        let pods = job_pods(&cluster, &ns, &slow.name).await;
        if job.is_none() && pods.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "job present: {}, pods: {}",
                job.is_some(),
                pods.len()
            ))
        }
    })
    .await;
    // The consumer was stopped with SIGTERM and gave its item back.
    let stats = client.queue("work").await.unwrap();
    assert_eq!((stats.depth, stats.inflight), (1, 0), "{stats:?}");
    let names: Vec<String> = client
        .jobs()
        .await
        .unwrap()
        .jobs
        .into_iter()
        .map(|j| j.name)
        .collect();
    assert_eq!(names, std::slice::from_ref(&job.name));
    // Gone now, never there, or not one of ours: 404, and nothing is deleted.
    for name in [slow.name.as_str(), "consumer-none-abcde", "consumers"] {
        let err = client.delete_job(name).await.unwrap_err();
        assert_eq!(err.status(), Some(404), "{name}");
        assert_eq!(err.code(), Some("job_not_found"), "{name}");
    }
    assert!(jobs.get_opt("consumers").await.unwrap().is_some());
    let err = client.delete_job("Not_A_Name").await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    kubelet.stop().await;
}

#[tokio::test]
async fn refusals_of_the_real_api_server_answer_what_they_are_and_queues_go_on() {
    // 403: the namespace's default ServiceAccount has no Role.
    let Setup {
        cluster,
        ns,
        dir,
        kubeconfig: unprivileged,
    } = setup("refusals", "default").await;
    let server = jobs_server(&ns, &unprivileged, &[]).await;
    let client = client_of(&server);
    client.create_queue("work", None).await.unwrap();
    let err = client
        .create_job(&job_request("work", 1))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert_eq!(err.code(), Some("forbidden"));
    let text = err.to_string();
    assert!(text.contains("denied \"create\" on \"jobs\""), "{text}");
    assert!(
        text.contains("cannot create resource \"jobs\""),
        "the API server's words: {text}"
    );
    assert!(text.contains("queue-server-jobs"), "{text}");
    let err = client.jobs().await.unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    assert!(
        err.to_string().contains("denied \"list\" on \"jobs\""),
        "{err}"
    );
    client
        .enqueue("work", "still served", &Default::default())
        .await
        .unwrap();
    assert_eq!(client.queue("work").await.unwrap().depth, 1);
    drop(server);

    // 422: a template the API server rejects (a request above its limit).
    let template = dir.path().join("job-template.yaml");
    std::fs::write(
        &template,
        "apiVersion: batch/v1\nkind: Job\nspec:\n  template:\n    spec:\n      restartPolicy: OnFailure\n      containers:\n        - name: worker\n          image: memq-rs:0.1.0\n          command: [/usr/local/bin/consumer]\n          resources:\n            requests: {cpu: \"2\"}\n            limits: {cpu: \"1\"}\n",
    )
    .unwrap();
    let privileged = cluster
        .service_account_kubeconfig(&ns, "queue-server", dir.path())
        .await;
    let template_arg = template.display().to_string();
    let server = jobs_server(&ns, &privileged, &["--job-template", &template_arg]).await;
    let client = client_of(&server);
    client.create_queue("work", None).await.unwrap();
    let err = client
        .create_job(&job_request("work", 1))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422), "{err}");
    assert_eq!(err.code(), Some("invalid_job"));
    assert!(
        err.to_string()
            .contains("must be less than or equal to cpu limit"),
        "{err}"
    );
    assert!(client.jobs().await.unwrap().jobs.is_empty());
    drop(server);

    // 503: an API server that cannot be reached (a closed loopback port).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let text = std::fs::read_to_string(&privileged)
        .unwrap()
        .replace(&cluster.api_url, &format!("https://127.0.0.1:{port}"));
    let unreachable = dir.path().join("unreachable.kubeconfig");
    std::fs::write(&unreachable, text).unwrap();
    let server = jobs_server(&ns, &unreachable, &[]).await;
    let client = client_of(&server);
    let err = client.jobs().await.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    assert_eq!(err.code(), Some("kubernetes_unavailable"));
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    client.create_queue("work", None).await.unwrap();
}

const PASSES_OK: &str = "memq_autoscaler_passes_total{result=\"ok\"}";
const PASSES_FAILED: &str = "memq_autoscaler_passes_total{result=\"error\"}";

/// Waits for `n` more successful autoscaler passes than `since`.
async fn passes(server: &ServerProcess, since: f64, n: f64) -> f64 {
    eventually(LIMIT, "autoscaler passes", || async {
        let now = metric(&server.url(), PASSES_OK).await;
        if now >= since + n {
            Ok(now)
        } else {
            Err(format!("{now} passes, waiting for {}", since + n))
        }
    })
    .await
}

async fn queue_jobs(cluster: &Cluster, ns: &str, queue: &str) -> Vec<Job> {
    let mut jobs = Api::<Job>::namespaced(cluster.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("memq.queue={queue}")))
        .await
        .unwrap()
        .items;
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.clone());
    jobs
}

fn parallelisms(jobs: &[Job]) -> Vec<i32> {
    jobs.iter()
        .map(|j| j.spec.as_ref().unwrap().parallelism.unwrap())
        .collect()
}

#[tokio::test]
async fn the_autoscaler_waits_on_pending_pods_and_scales_once_they_run() {
    let Setup {
        cluster,
        ns,
        dir,
        kubeconfig,
    } = setup("autoscale", "queue-server").await;
    // Consumers that take 200 ms an item, so the queue stays deep while they run.
    let template = dir.path().join("job-template.yaml");
    std::fs::write(
        &template,
        "apiVersion: batch/v1\nkind: Job\nspec:\n  backoffLimit: 6\n  template:\n    spec:\n      restartPolicy: OnFailure\n      containers:\n        - name: worker\n          image: memq-rs:0.1.0\n          command: [/usr/local/bin/consumer]\n          env:\n            - {name: MEMQ_WORK, value: sleep=200ms}\n",
    )
    .unwrap();
    let template_arg = template.display().to_string();
    let server = jobs_server(
        &ns,
        &kubeconfig,
        &[
            "--job-template",
            &template_arg,
            "--autoscale",
            "--autoscale-interval=300ms",
        ],
    )
    .await;
    // The node is cordoned: every consumer pod stays Pending.
    let kubelet = Kubelet::start(&cluster, &ns, &[("queue:8080", host_port(&server))], true).await;
    let client = client_of(&server);
    let patch = QueueConfigPatch {
        autoscale: Some(Some(Autoscale {
            max_parallelism: 4,
            items_per_pod: 50,
        })),
        ..Default::default()
    };
    client.create_queue("deep", Some(&patch)).await.unwrap();
    let items: String = (0..100).map(|i| format!("a-{i}\n")).collect();
    client.enqueue_lines("deep", items, None).await.unwrap();

    // 100 items at 50 a pod: one Job of 2, whose pods stay Pending.
    eventually(LIMIT, "one Job with its 2 pods Pending", || async {
        let jobs = queue_jobs(&cluster, &ns, "deep").await;
        let Some(job) = jobs.first() else {
            return Err("no Job yet".into());
        };
        let name = job.metadata.name.clone().unwrap();
        let pods = job_pods(&cluster, &ns, &name).await;
        let pending = pods
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"))
            .count();
        if pending == 2 {
            Ok(())
        } else {
            Err(format!("{} pods, {pending} pending", pods.len()))
        }
    })
    .await;
    let since = metric(&server.url(), PASSES_OK).await;
    passes(&server, since, 5.0).await;
    let jobs = queue_jobs(&cluster, &ns, "deep").await;
    assert_eq!(
        parallelisms(&jobs),
        [2],
        "no second Job while the pods are Pending"
    );
    assert!(kubelet.running_pods().is_empty());
    assert_eq!(client.queue("deep").await.unwrap().depth, 100);

    // Uncordoned: the pods run and drain; with the queue deeper than they cover, the
    // autoscaler adds the difference up to maxParallelism, and no more.
    kubelet.set_unschedulable(false).await;
    eventually(LIMIT, "both pods run", || async {
        let running = kubelet.running_pods();
        if running.len() == 2 {
            Ok(())
        } else {
            Err(format!("{running:?}"))
        }
    })
    .await;
    let items: String = (0..400).map(|i| format!("b-{i}\n")).collect();
    client.enqueue_lines("deep", items, None).await.unwrap();
    eventually(
        LIMIT,
        "a second Job of 2 (4 pods wanted, 2 running)",
        || async {
            let jobs = queue_jobs(&cluster, &ns, "deep").await;
            let p = parallelisms(&jobs);
            if p == [2, 2] {
                Ok(())
            } else {
                Err(format!("{p:?}"))
            }
        },
    )
    .await;
    let since = metric(&server.url(), PASSES_OK).await;
    passes(&server, since, 5.0).await;
    assert_eq!(
        parallelisms(&queue_jobs(&cluster, &ns, "deep").await),
        [2, 2],
        "maxParallelism 4 is reached: no third Job"
    );
    assert_eq!(
        metric(&server.url(), "memq_autoscaler_launched_jobs_total").await,
        2.0
    );
    assert_eq!(metric(&server.url(), PASSES_FAILED).await, 0.0);
    eventually(LIMIT, "four consumers run", || async {
        let running = kubelet.running_pods();
        if running.len() == 4 {
            Ok(())
        } else {
            Err(format!("{running:?}"))
        }
    })
    .await;
    // Done: drained, the consumers finish and leave.
    client.queue_action("deep", "drain").await.unwrap();
    eventually(
        LIMIT,
        "the consumers exit once the queue is finished",
        || async {
            let running = kubelet.running_pods();
            if running.is_empty() {
                Ok(())
            } else {
                Err(format!("{running:?}"))
            }
        },
    )
    .await;
    kubelet.stop().await;
}

#[tokio::test]
async fn the_autoscaler_backs_off_from_a_refusing_api_server() {
    // No Role for the default ServiceAccount: every pass is refused (403).
    let Setup {
        ns,
        kubeconfig,
        dir: _dir,
        ..
    } = setup("backoff", "default").await;
    let server = jobs_server(
        &ns,
        &kubeconfig,
        &["--autoscale", "--autoscale-interval=100ms"],
    )
    .await;
    let client = client_of(&server);
    let patch = QueueConfigPatch {
        autoscale: Some(Some(Autoscale {
            max_parallelism: 2,
            items_per_pod: 1,
        })),
        ..Default::default()
    };
    client.create_queue("refused", Some(&patch)).await.unwrap();
    // From here every pass is refused: after the first, waits of 200, 400, 800 and 1600 ms,
    // so five failures take at least 3 s from the enqueue (a fixed 100 ms interval: 0.4 s).
    let enqueued = tokio::time::Instant::now();
    client
        .enqueue("refused", "x", &Default::default())
        .await
        .unwrap();
    eventually(LIMIT, "five refused passes", || async {
        let failed = metric(&server.url(), PASSES_FAILED).await;
        if failed >= 5.0 {
            Ok(())
        } else {
            Err(format!("{failed} failed passes"))
        }
    })
    .await;
    assert!(
        enqueued.elapsed() >= Duration::from_secs(3),
        "{:?}",
        enqueued.elapsed()
    );
    assert_eq!(
        metric(&server.url(), "memq_autoscaler_launched_jobs_total").await,
        0.0
    );
    assert_eq!(
        client.queue("refused").await.unwrap().depth,
        1,
        "queues are served"
    );
}

/// The token of each role, from the Secrets memq-token-ROLE.
async fn role_tokens(cluster: &Cluster, ns: &str) -> Vec<(&'static str, String)> {
    let mut tokens = Vec::new();
    for role in ["reader", "producer", "consumer", "admin"] {
        let token = secret_value(cluster, ns, &format!("memq-token-{role}"), "token").await;
        tokens.push((role, token));
    }
    tokens
}

#[tokio::test]
async fn make_tokens_scopes_each_role_and_rotates_without_refusing_a_client() {
    let cluster = Cluster::connect().await;
    let ns = cluster.namespace("tokens").await;
    // The Secrets, as the README has them made: one token per role, and the server's file.
    let said = make_tokens(&cluster, &ns, &[]).await;
    assert_eq!(said.matches(": new token").count(), 4, "{said}");
    let tokens = role_tokens(&cluster, &ns).await;
    let token = |role: &str| tokens.iter().find(|(r, _)| *r == role).unwrap().1.clone();
    let file_text = secret_value(&cluster, &ns, "memq-tokens", "tokens").await;
    for (role, secret) in &tokens {
        assert_eq!(secret.len(), 64, "{role}: 32 random bytes in hex");
        assert!(
            !file_text.contains(secret.as_str()),
            "the server's file holds a token"
        );
        assert!(
            !said.contains(secret.as_str()),
            "make-tokens.sh printed a token"
        );
        assert!(
            file_text
                .lines()
                .any(|l| l.starts_with(&format!("{role} {role} * sha256:"))),
            "{file_text}"
        );
    }
    // The queue server on the tokens file as its pod mounts it (rewritten below as the kubelet
    // swaps a changed Secret in), loaded with the walkthrough's items.
    let files = tempfile::tempdir().unwrap();
    let tokens_file = files.path().join("tokens");
    std::fs::write(&tokens_file, &file_text).unwrap();
    let tokens_arg = tokens_file.display().to_string();
    let server = ServerProcess::start(BIN, &["--tokens-file", &tokens_arg]).await;
    let client = client_of(&server).with_token(Some(token("admin")));
    let as_role = |role: &str| client_of(&server).with_token(Some(token(role)));
    client.create_queue("keygen", None).await.unwrap();
    let items: String = (0..100).map(|i| format!("work-item-{i}\n")).collect();
    as_role("producer")
        .enqueue_lines("keygen", items, None)
        .await
        .unwrap();

    // What the consumers' token cannot do: an admin action is refused, naming the role.
    let consumer = as_role("consumer");
    let err = consumer.delete_queue("keygen").await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert_eq!(err.code(), Some("forbidden"));
    assert!(err.to_string().contains("admin"), "{err}");
    let err = as_role("producer")
        .delete_queue("keygen")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert_eq!(consumer.queue("keygen").await.unwrap().depth, 100);

    // Again: every token kept, the same file.
    let said = make_tokens(&cluster, &ns, &[]).await;
    assert_eq!(said.matches(": kept").count(), 4, "{said}");
    assert_eq!(role_tokens(&cluster, &ns).await, tokens);
    assert_eq!(
        secret_value(&cluster, &ns, "memq-tokens", "tokens").await,
        file_text
    );

    // Rotation, step 1, --rotate: four new tokens; memq-tokens holds their digests under the role
    // names and the old ones as ROLE-previous lines (same role and queues), so that the server,
    // taking the new file (as the kubelet swaps the mounted Secret) without a restart, accepts
    // the old tokens and the new alike while the clients restart.
    let said = make_tokens(&cluster, &ns, &["--rotate"]).await;
    assert!(
        said.contains("--retire-previous"),
        "says what comes next: {said}"
    );
    let rotated = role_tokens(&cluster, &ns).await;
    let rotated_text = secret_value(&cluster, &ns, "memq-tokens", "tokens").await;
    for ((role, old), (_, new)) in tokens.iter().zip(&rotated) {
        assert_ne!(old, new, "{role}: not rotated");
        for secret in [old, new] {
            assert!(
                !said.contains(secret.as_str()),
                "make-tokens.sh printed a token"
            );
            assert!(
                !rotated_text.contains(secret.as_str()),
                "the server's file holds a token"
            );
        }
        let old_line = file_text
            .lines()
            .find(|l| l.starts_with(&format!("{role} ")))
            .unwrap();
        let previous = old_line.replacen(role, &format!("{role}-previous"), 1);
        assert!(
            rotated_text.lines().any(|l| l == previous),
            "{rotated_text}"
        );
        assert!(
            rotated_text
                .lines()
                .any(|l| l.starts_with(&format!("{role} {role} * sha256:")) && l != old_line),
            "{rotated_text}"
        );
    }
    assert_eq!(
        rotated_text.lines().filter(|l| !l.starts_with('#')).count(),
        8,
        "{rotated_text}"
    );
    std::fs::write(&tokens_file, &rotated_text).unwrap();
    let clients_of = |set: &[(&'static str, String)]| -> Vec<(&'static str, memq::Client)> {
        set.iter()
            .map(|(role, t)| (*role, client_of(&server).with_token(Some(t.clone()))))
            .collect()
    };
    let old_clients = clients_of(&tokens);
    let new_clients = clients_of(&rotated);
    // The new tokens first: once they answer the server has the new file, and the old ones
    // must answer from that same file.
    eventually(LIMIT, "the old and the new tokens in force", || async {
        for (role, client) in new_clients.iter().chain(&old_clients) {
            client
                .queue("keygen")
                .await
                .map_err(|e| format!("{role}: {e}"))?;
        }
        Ok(())
    })
    .await;
    // The old consumer token keeps its role: refused an admin action (403), not unknown (401).
    let err = consumer.delete_queue("keygen").await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");

    // Between the steps a rerun keeps everything, and a second --rotate is refused: a client may
    // still hold a previous token.
    let said = make_tokens(&cluster, &ns, &[]).await;
    assert_eq!(said.matches(": kept").count(), 4, "{said}");
    assert_eq!(
        secret_value(&cluster, &ns, "memq-tokens", "tokens").await,
        rotated_text
    );
    let (success, said) = run_make_tokens(&cluster, &ns, &["--rotate"]).await;
    assert!(!success, "a second --rotate ran: {said}");
    assert!(said.contains("--retire-previous"), "{said}");
    assert_eq!(role_tokens(&cluster, &ns).await, rotated);
    assert_eq!(
        secret_value(&cluster, &ns, "memq-tokens", "tokens").await,
        rotated_text
    );

    // Step 2, --retire-previous: only the ROLE-previous lines go; from the server's next reload
    // the old tokens answer 401 and the new ones work.
    let said = make_tokens(&cluster, &ns, &["--retire-previous"]).await;
    assert_eq!(role_tokens(&cluster, &ns).await, rotated, "{said}");
    let retired_text = secret_value(&cluster, &ns, "memq-tokens", "tokens").await;
    let expected: String = rotated_text
        .lines()
        .filter(|l| !l.contains("-previous "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(retired_text, expected);
    std::fs::write(&tokens_file, &retired_text).unwrap();
    eventually(LIMIT, "the old tokens retired", || async {
        for (role, client) in &old_clients {
            let answer = client
                .queue("keygen")
                .await
                .map(|_| ())
                .map_err(|e| e.status());
            if answer != Err(Some(401)) {
                return Err(format!("old {role}: {answer:?}"));
            }
        }
        for (role, client) in &new_clients {
            client
                .queue("keygen")
                .await
                .map_err(|e| format!("new {role}: {e}"))?;
        }
        Ok(())
    })
    .await;
    // Again: nothing left to retire, nothing changes.
    make_tokens(&cluster, &ns, &["--retire-previous"]).await;
    assert_eq!(
        secret_value(&cluster, &ns, "memq-tokens", "tokens").await,
        retired_text
    );
}
