//! The seed's walkthrough in containers on a real node (`scripts/kube-up.sh --node`: the
//! kubelet, containerd with runc, kube-proxy in iptables mode, CoreDNS), in namespaces made as a
//! user makes them, with the manifests applied as the README says:
//! - `scripts/make-tokens.sh`, `kubectl apply --server-side -k manifests/base`: the queue pod
//!   becomes Ready through its probes, the producer Job loads 100 items through the Service name
//!   `queue` (CoreDNS, kube-proxy), the consumers Job (parallelism 5) completes from real exit
//!   codes, every item acked once, while one consumer's process, killed from the host mid-item,
//!   is restarted by the kubelet and its items come back once;
//! - the securityContext holds in the container (uid 65532, no capabilities, seccomp, a
//!   read-only root, the token file readable through fsGroup only), in a Job the server itself
//!   launched through its ServiceAccount;
//! - the queue pod, deleted, exits 0 on SIGTERM within its grace period and its ReplicaSet's new
//!   pod becomes Ready; with `manifests/durable` the items are still there;
//! - `manifests/redis`: the queue replicas share their queues through Redis and the consumers
//!   drain through the Service across them.
//!
//! The test reaches the queue server the way a pod does, through the Service's cluster IP
//! (this host routes the Service range to the node, where kube-proxy forwards it).

mod kube_cluster;

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, WatchEvent, WatchParams};
use kube_cluster::{Cluster, condition, job_pods, make_tokens, rendered, repo_root, secret_value};
use memq::CreateJobRequest;
use queue_server::testing::eventually;
use serde_json::Value;

/// How long a state of the cluster may take to come about on the shared 2-core machine.
const LIMIT: Duration = Duration::from_secs(240);
/// Where containerd keeps each container's task, with its `init.pid`.
const TASKS: &str = "/run/memq-node/containerd/io.containerd.runtime.v2.task/k8s.io";

/// The queue server behind Service `queue` in `ns`, with the token of `role` (Secret
/// memq-token-ROLE).
async fn queue_client(cluster: &Cluster, ns: &str, role: &str) -> memq::Client {
    let service = Api::<Service>::namespaced(cluster.client.clone(), ns)
        .get("queue")
        .await
        .expect("Service queue");
    let ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a cluster IP");
    let token = secret_value(cluster, ns, &format!("memq-token-{role}"), "token").await;
    memq::Client::new(format!("http://{ip}:8080{}", memq::BASE_PATH))
        .unwrap()
        .with_token(Some(token))
}

/// Applies the kustomization in `dir` to `ns` as the README does, but without the objects for
/// which `skip(kind, name)` is true.
async fn apply(cluster: &Cluster, ns: &str, dir: &Path, skip: impl Fn(&str, &str) -> bool) {
    let objects: Vec<Value> = rendered(cluster, dir, ns)
        .await
        .into_iter()
        .filter(|o| {
            !skip(
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("objects.json");
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(&file, list.to_string()).unwrap();
    cluster
        .kubectl_ok(&[
            "apply",
            "--server-side",
            "-n",
            ns,
            "-f",
            &file.display().to_string(),
        ])
        .await;
}

/// Applies the kustomization in `dir` to `ns` whole: `kubectl apply --server-side -n NS -k DIR`.
async fn apply_all(cluster: &Cluster, ns: &str, dir: &Path) {
    let dir = dir.display().to_string();
    cluster
        .kubectl_ok(&["apply", "--server-side", "-n", ns, "-k", &dir])
        .await;
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The Ready pods of `selector` in `ns`, once there are `n`.
async fn ready_pods(cluster: &Cluster, ns: &str, selector: &str, n: usize) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    eventually(LIMIT, &format!("{n} Ready pods {selector}"), || async {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| e.to_string())?;
        let ready: Vec<Pod> = list.items.into_iter().filter(pod_ready).collect();
        if ready.len() == n {
            Ok(ready)
        } else {
            Err(format!("{} Ready", ready.len()))
        }
    })
    .await
}

/// Waits for Job `name` to complete; fails at once if it fails.
async fn complete(cluster: &Cluster, ns: &str, name: &str) -> Job {
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), ns);
    eventually(LIMIT, &format!("Job {name} Complete"), || async {
        let job = jobs.get(name).await.map_err(|e| e.to_string())?;
        assert!(
            !condition(&job, "Failed"),
            "Job {name} failed: {:?}",
            job.status
        );
        if condition(&job, "Complete") {
            Ok(job)
        } else {
            Err(format!("{:?}", job.status))
        }
    })
    .await
}

/// The host's process id of container `index` of `pod`: containerd's init.pid of its task;
/// None until the kubelet has reported the container.
fn container_pid(pod: &Pod, index: usize) -> Option<u32> {
    let status = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .get(index)?;
    let id = status
        .container_id
        .as_deref()?
        .strip_prefix("containerd://")?;
    let text = std::fs::read_to_string(Path::new(TASKS).join(id).join("init.pid")).ok()?;
    text.trim().parse().ok()
}

/// Line `key:` of /proc/PID/status, its value.
fn proc_status(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where `path` of the container of process `pid` is, seen from this host: through
/// /proc/PID/root, with its symbolic links resolved inside the container (an absolute link such
/// as the image's /var/run -> /run would otherwise lead into this host's own tree).
fn in_container(pid: u32, path: &str) -> std::path::PathBuf {
    let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
    let mut at = root.clone();
    let mut rest: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    rest.reverse();
    let mut links = 0;
    while let Some(part) = rest.pop() {
        let next = at.join(&part);
        match std::fs::read_link(&next) {
            Ok(target) => {
                links += 1;
                assert!(links < 40, "too many links under {path}");
                if target.is_absolute() {
                    at = root.clone();
                }
                let parts: Vec<String> = target
                    .to_string_lossy()
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect();
                rest.extend(parts.into_iter().rev());
            }
            Err(_) if part == ".." => {
                at.pop();
            }
            Err(_) => at = next,
        }
    }
    at
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .restart_count
}

/// Deletes pod `name` as `kubectl delete pod` does and follows it to its end: the exit code of
/// its container and how long it took from the delete.
async fn delete_and_follow(cluster: &Cluster, ns: &str, name: &str) -> (i32, Duration) {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let version = pods
        .get(name)
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(LIMIT.as_secs() as u32);
    let mut events = pods.watch(&params, &version).await.unwrap().boxed();
    let started = Instant::now();
    pods.delete(name, &DeleteParams::default()).await.unwrap();
    let mut exit = None;
    while let Some(event) = events.next().await {
        let (pod, gone) = match event.unwrap() {
            WatchEvent::Modified(pod) => (pod, false),
            WatchEvent::Deleted(pod) => (pod, true),
            _ => continue,
        };
        let terminated = pod
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|cs| cs.into_iter().next())
            .and_then(|c| c.state)
            .and_then(|s| s.terminated);
        if let Some(t) = terminated {
            exit = Some(t.exit_code);
        }
        if gone {
            return (
                exit.expect("the container's end was reported"),
                started.elapsed(),
            );
        }
    }
    panic!("pod {name} was not deleted within {LIMIT:?}");
}

#[tokio::test]
async fn the_walkthrough_runs_in_containers_through_the_service_name() {
    let cluster = Cluster::with_node().await;
    let ns = cluster.plain_namespace("walkthrough").await;
    make_tokens(&cluster, &ns, &[]).await;
    apply_all(&cluster, &ns, &repo_root().join("manifests/base")).await;

    // The queue pod is Ready once its readiness probe (GET /readyz) answered.
    let queue = ready_pods(&cluster, &ns, "app=work-queue,component=queue", 1).await;
    let queue_pod = &queue[0];
    let spec = queue_pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(kube_cluster::REAL_NODE));
    let admin = queue_client(&cluster, &ns, "admin").await;

    // The producer reached the server by the Service's name (its only address for it).
    complete(&cluster, &ns, "producer").await;
    let stats = admin.queue("keygen").await.unwrap();
    assert_eq!(stats.enqueued, 100, "{stats:?}");

    // A consumer holding an item, its process killed from the host (as an OOM kill would).
    let (victim, held) = eventually(LIMIT, "a consumer holding an item", || async {
        let leases = admin
            .leases("keygen", None)
            .await
            .map_err(|e| e.to_string())?;
        let Some(holder) = leases.leases.iter().find_map(|l| l.consumer.clone()) else {
            return Err(format!("no lease held: {:?}", admin.queue("keygen").await));
        };
        let pods = job_pods(&cluster, &ns, "consumers").await;
        let pod = pods
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(holder.as_str()))
            .ok_or_else(|| format!("no pod {holder}"))?;
        let pid = container_pid(&pod, 0).ok_or_else(|| format!("no container of {holder} yet"))?;
        let killed_at = std::time::SystemTime::now();
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(killed, "kill -KILL {pid}");
        // What it held when it died (not what its restarted container takes under the same
        // name): those leases expire and the items come back.
        let leases = admin.leases("keygen", None).await.unwrap();
        let held: Vec<String> = leases
            .leases
            .into_iter()
            .filter(|l| {
                l.consumer.as_deref() == Some(holder.as_str())
                    && humantime::parse_rfc3339_weak(&l.leased_at).unwrap() <= killed_at
            })
            .map(|l| l.item_id)
            .collect();
        Ok((holder, held))
    })
    .await;

    let job = complete(&cluster, &ns, "consumers").await;
    let status = job.status.clone().unwrap();
    assert_eq!(status.failed.unwrap_or(0), 0, "{status:?}");
    assert_eq!(job.spec.as_ref().unwrap().parallelism, Some(5));
    let pods = job_pods(&cluster, &ns, "consumers").await;
    assert_eq!(pods.len(), 5, "the killed container restarted in its pod");
    let killed = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(victim.as_str()))
        .unwrap();
    assert_eq!(restart_count(killed), 1, "{:?}", killed.status);
    for pod in &pods {
        let phase = pod.status.as_ref().unwrap().phase.as_deref();
        assert_eq!(
            phase,
            Some("Succeeded"),
            "{}",
            pod.metadata.name.as_ref().unwrap()
        );
    }
    let stats = admin.queue("keygen").await.unwrap();
    assert_eq!(
        (stats.acked, stats.depth, stats.inflight, stats.dead),
        (100, 0, 0, 0),
        "{stats:?}"
    );
    assert!(!held.is_empty(), "the killed consumer held no item");
    assert_eq!(stats.requeued, held.len() as u64, "{stats:?} held {held:?}");
    for item in &held {
        let err = admin.item("keygen", item).await.unwrap_err();
        assert_eq!(err.status(), Some(404), "item {item} is done: {err}");
    }

    // A consumer Job launched by the server itself (its ServiceAccount, the job template), on a
    // queue that has had no item yet: its consumer waits, and its container is looked at.
    admin.create_queue("idle", None).await.unwrap();
    let launched = admin
        .create_job(&CreateJobRequest {
            queue: "idle".into(),
            parallelism: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let pods = ready_pods(
        &cluster,
        &ns,
        &format!("batch.kubernetes.io/job-name={}", launched.name),
        1,
    )
    .await;
    let pid = container_pid(&pods[0], 0).expect("the Ready pod's container");
    assert_eq!(proc_status(pid, "Uid"), "65532 65532 65532 65532");
    assert_eq!(proc_status(pid, "Gid"), "65532 65532 65532 65532");
    assert!(
        proc_status(pid, "Groups").split(' ').any(|g| g == "65532"),
        "fsGroup"
    );
    assert_eq!(proc_status(pid, "CapEff"), "0000000000000000");
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    assert_eq!(proc_status(pid, "Seccomp"), "2", "RuntimeDefault: a filter");
    let root = format!("/proc/{pid}/root");
    let write = std::fs::write(format!("{root}/memq-write-test"), "x");
    assert_eq!(
        write.map_err(|e| e.raw_os_error()),
        Err(Some(30)),
        "EROFS: the root filesystem is read-only"
    );
    let token = std::fs::metadata(in_container(pid, "/var/run/memq/token/token")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (token.mode() & 0o777, token.uid(), token.gid()),
        (0o440, 0, 65532),
        "readable by the fsGroup, by no other user"
    );
    let deleted = admin.delete_job(&launched.name).await.unwrap();
    assert_eq!(deleted.name, launched.name);

    // The queue pod deleted: SIGTERM, exit 0 well within its grace period; the ReplicaSet's new
    // pod becomes Ready through its probes.
    let name = queue_pod.metadata.name.clone().unwrap();
    let (code, took) = delete_and_follow(&cluster, &ns, &name).await;
    assert_eq!(code, 0, "the server's exit on SIGTERM");
    let grace = spec.termination_grace_period_seconds.unwrap() as u64;
    assert!(took < Duration::from_secs(grace), "took {took:?}");
    let queue = ready_pods(&cluster, &ns, "app=work-queue,component=queue", 1).await;
    assert_ne!(queue[0].metadata.name.as_deref(), Some(name.as_str()));
    // Once kube-proxy routes the Service to the new pod: its memory store starts empty.
    let status = eventually(LIMIT, "the new pod answers through the Service", || async {
        match admin.queue("keygen").await {
            Ok(stats) => Ok(Some(stats.depth)),
            Err(e) => e.status().map(|_| None).ok_or_else(|| e.to_string()),
        }
    })
    .await;
    assert_eq!(status, None, "keygen is not in the new pod's memory store");
    let err = admin.queue("keygen").await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
}

#[tokio::test]
async fn the_durable_overlay_keeps_the_items_of_a_deleted_pod() {
    let cluster = Cluster::with_node().await;
    let ns = cluster.plain_namespace("durable").await;
    make_tokens(&cluster, &ns, &[]).await;
    // The PersistentVolume its claim binds to: a local volume on the node.
    let dir = Path::new("/var/lib/memq-node/volumes").join(&ns.name);
    std::fs::create_dir_all(&dir).unwrap();
    let pv = serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": ns.name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "claimRef": {"namespace": ns.name, "name": "data-queue-0"},
            "local": {"path": dir.display().to_string()},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In",
                 "values": [kube_cluster::REAL_NODE]}
            ]}]}}
        }
    });
    let files = tempfile::tempdir().unwrap();
    let pv_file = files.path().join("pv.json");
    std::fs::write(&pv_file, pv.to_string()).unwrap();
    let pv_arg = pv_file.display().to_string();
    cluster
        .kubectl_ok(&["apply", "--server-side", "-f", &pv_arg])
        .await;
    // The queue loaded, no consumer yet.
    let durable = repo_root().join("manifests/durable");
    apply(&cluster, &ns, &durable, |kind, name| {
        kind == "Job" && name == "consumers"
    })
    .await;
    let queue = ready_pods(&cluster, &ns, "app=work-queue,component=queue", 1).await;
    complete(&cluster, &ns, "producer").await;
    let admin = queue_client(&cluster, &ns, "admin").await;
    assert_eq!(admin.queue("keygen").await.unwrap().depth, 100);

    let name = queue[0].metadata.name.clone().unwrap();
    let (code, _) = delete_and_follow(&cluster, &ns, &name).await;
    assert_eq!(code, 0);
    ready_pods(&cluster, &ns, "app=work-queue,component=queue", 1).await;
    let stats = eventually(LIMIT, "the restarted server answers", || async {
        admin.queue("keygen").await.map_err(|e| e.to_string())
    })
    .await;
    assert_eq!((stats.depth, stats.enqueued), (100, 100), "{stats:?}");

    apply(&cluster, &ns, &durable, |kind, name| {
        kind == "Job" && name == "producer"
    })
    .await;
    complete(&cluster, &ns, "consumers").await;
    let stats = admin.queue("keygen").await.unwrap();
    assert_eq!((stats.acked, stats.depth, stats.inflight), (100, 0, 0));
    let pv_name = ns.name.clone();
    drop(ns);
    cluster
        .kubectl_ok(&["delete", "pv", &pv_name, "--wait=false"])
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Redis image the node has (scripts/node-build.sh: Debian bookworm's redis-server), for
/// the redis overlay's `redis` image: a kustomize images override, never a pull.
const REDIS_IMAGE: (&str, &str) = ("localhost/memq-redis", "bookworm");

/// Dequeues served by the queue server at `ip`: the count of its dequeue route's requests.
async fn dequeues_served(ip: &str) -> f64 {
    let text = reqwest::get(format!("http://{ip}:8080/metrics"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET /metrics of a queue pod")
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("memq_http_request_duration_seconds_count{") && l.contains("/dequeue")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until kube-proxy forwards Service `queue` of `ns` to `n` pods: its rules in the node's
/// network namespace, one per endpoint.
async fn routed_to(ns: &str, n: usize) {
    let comment = format!("\"{ns}/queue:http -> ");
    eventually(
        LIMIT,
        &format!("kube-proxy's rules for {n} endpoints of queue"),
        || async {
            let out = tokio::process::Command::new("ip")
                .args(["netns", "exec", "memq-node", "iptables-save", "-t", "nat"])
                .output()
                .await
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stdout);
            let routes = text
                .lines()
                .filter(|l| l.starts_with("-A KUBE-SVC-") && l.contains(&comment))
                .count();
            if routes == n {
                Ok(())
            } else {
                Err(format!("{routes} endpoints"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn the_redis_overlay_shares_the_queues_of_its_replicas_behind_the_service() {
    let cluster = Cluster::with_node().await;
    let ns = cluster.plain_namespace("redis").await;
    make_tokens(&cluster, &ns, &[]).await;
    // The overlay as it is, with the node's Redis image in place of redis:7.2.7: an overlay of
    // it (kustomize takes only relative paths to other kustomizations, hence one in the tree).
    let dir = repo_root().join("target/memq-test-overlays").join(&ns.name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../../manifests/redis\nimages:\n  - name: redis\n    newName: {}\n    newTag: {}\n",
            REDIS_IMAGE.0, REDIS_IMAGE.1
        ),
    )
    .unwrap();
    // The queue loaded first, the workers after (the README's order), once the Service leads to
    // every replica: each consumer keeps its connections where they first land.
    apply(&cluster, &ns, &dir, |kind, name| {
        kind == "Job" && name == "consumers"
    })
    .await;
    ready_pods(&cluster, &ns, "app.kubernetes.io/name=redis", 1).await;
    let replicas = ready_pods(&cluster, &ns, "app=work-queue,component=queue", 3).await;
    complete(&cluster, &ns, "producer").await;
    routed_to(&ns, 3).await;
    apply(&cluster, &ns, &dir, |kind, name| {
        kind == "Job" && name == "producer"
    })
    .await;
    complete(&cluster, &ns, "consumers").await;
    let admin = queue_client(&cluster, &ns, "admin").await;
    let stats = admin.queue("keygen").await.unwrap();
    assert_eq!(
        (
            stats.enqueued,
            stats.acked,
            stats.depth,
            stats.inflight,
            stats.dead
        ),
        (100, 100, 0, 0, 0),
        "{stats:?}"
    );
    // Every replica holds the same queue, and the consumers' dequeues went to more than one.
    let mut serving = 0;
    for pod in &replicas {
        let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
        let direct = memq::Client::new(format!("http://{ip}:8080{}", memq::BASE_PATH))
            .unwrap()
            .with_token(Some(
                secret_value(&cluster, &ns, "memq-token-admin", "token").await,
            ));
        assert_eq!(direct.queue("keygen").await.unwrap().acked, 100, "{ip}");
        if dequeues_served(&ip).await > 0.0 {
            serving += 1;
        }
    }
    assert!(
        serving >= 2,
        "the Service spread the consumers over {serving} replica(s)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
