//! From the Job template and one request to the exact Job the launcher posts.
//!
//! Pure functions only: no client, no I/O besides reading the template file once at start.
//! What a created Job always carries, whatever the template says: generateName
//! `consumer-<queue>-`, the labels below on the Job and its pods, `--server=`/`--queue=` first
//! in the consumer's args and `MEMQ_SERVER`/`MEMQ_QUEUE` in its env, and no ownerReferences —
//! a Job owned by the server's pod would be garbage-collected, pods and all, when that pod is
//! replaced.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EnvVar};
use memq::CreateJobRequest;

use super::{LABEL_MANAGED_BY, LABEL_NAME, LABEL_QUEUE, MANAGED_BY, NAME};
use crate::error::{Error, Result};
use memq::limits::MAX_PARALLELISM;

/// The Job template used without `--job-template`: the consumer of `--consumer-image`, with the
/// same hardening as manifests/base/job-template.yaml. `{image}` is replaced.
const DEFAULT_TEMPLATE: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  generateName: consumer-
spec:
  backoffLimit: 6
  ttlSecondsAfterFinished: 3600
  template:
    spec:
      restartPolicy: OnFailure
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: worker
          image: "{image}"
          command: ["/usr/local/bin/consumer"]
          env:
            # The consumer token (scripts/make-tokens.sh); none for a server without tokens.
            - name: MEMQ_TOKEN
              valueFrom:
                secretKeyRef:
                  name: memq-token-consumer
                  key: token
                  optional: true
          resources:
            requests:
              cpu: 50m
              memory: 32Mi
            limits:
              cpu: 500m
              memory: 128Mi
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
"#;

/// Longest `args` list of `POST /jobs`, and longest single argument.
const MAX_ARGS: usize = 256;
const MAX_ARG_BYTES: usize = 4096;

/// Reads and checks the template at `path` (YAML of one batch/v1 Job).
pub fn load(path: &Path) -> Result<Job, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read job template {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("job template {}: {e}", path.display()))
}

/// The built-in template running `image`.
pub fn default_template(image: &str) -> Result<Job, String> {
    check_image(image).map_err(|e| format!("--consumer-image: {e}"))?;
    parse(&DEFAULT_TEMPLATE.replace("{image}", image))
}

/// Parses and checks a template: a Job with a pod template that has a container and a
/// restart policy the Job controller accepts.
pub fn parse(yaml: &str) -> Result<Job, String> {
    let job: Job = serde_saphyr::from_str(yaml).map_err(|e| format!("not a batch/v1 Job: {e}"))?;
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or("spec.template.spec is missing")?;
    let container = pod
        .containers
        .first()
        .ok_or("spec.template.spec.containers is empty")?;
    match pod.restart_policy.as_deref() {
        Some("OnFailure" | "Never") => {}
        other => {
            return Err(format!(
                "spec.template.spec.restartPolicy is {other:?}; a Job needs OnFailure or Never"
            ));
        }
    }
    if container.image.as_deref().is_none_or(str::is_empty) {
        return Err("the first container has no image".into());
    }
    Ok(job)
}

/// The checked fields of a `POST /jobs` (or an autoscaler decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// Queue the consumers work on.
    pub queue: String,
    /// Pods at once.
    pub parallelism: u32,
    /// Image override.
    pub image: Option<String>,
    /// Args override.
    pub args: Option<Vec<String>>,
    /// backoffLimit override.
    pub backoff_limit: Option<i32>,
    /// ttlSecondsAfterFinished override.
    pub ttl_seconds_after_finished: Option<i32>,
}

impl JobRequest {
    /// A request for `parallelism` pods on `queue` with the template's everything else.
    pub fn new(queue: impl Into<String>, parallelism: u32) -> Self {
        Self {
            queue: queue.into(),
            parallelism,
            image: None,
            args: None,
            backoff_limit: None,
            ttl_seconds_after_finished: None,
        }
    }

    /// Checks a `POST /jobs` body field by field (400s). Whether the queue exists is the
    /// caller's check.
    pub fn from_wire(req: CreateJobRequest) -> Result<Self> {
        memq::name::validate_queue_name(&req.queue).map_err(|e| Error::param("queue", e))?;
        check_queue_label(&req.queue).map_err(|e| Error::param("queue", e))?;
        if req.parallelism == 0 || req.parallelism > MAX_PARALLELISM {
            return Err(Error::param(
                "parallelism",
                format!("must be between 1 and {MAX_PARALLELISM}"),
            ));
        }
        if let Some(image) = &req.image {
            check_image(image).map_err(|e| Error::param("image", e))?;
        }
        if let Some(args) = &req.args {
            if args.len() > MAX_ARGS {
                return Err(Error::param(
                    "args",
                    format!("at most {MAX_ARGS} arguments"),
                ));
            }
            if args
                .iter()
                .any(|a| a.len() > MAX_ARG_BYTES || a.contains('\0'))
            {
                return Err(Error::param(
                    "args",
                    format!("an argument is longer than {MAX_ARG_BYTES} bytes or contains NUL"),
                ));
            }
        }
        if req.backoff_limit.is_some_and(|b| b < 0) {
            return Err(Error::param("backoffLimit", "must be 0 or more"));
        }
        if req.ttl_seconds_after_finished.is_some_and(|t| t < 0) {
            return Err(Error::param("ttlSecondsAfterFinished", "must be 0 or more"));
        }
        Ok(Self {
            queue: req.queue,
            parallelism: req.parallelism,
            image: req.image,
            args: req.args,
            backoff_limit: req.backoff_limit,
            ttl_seconds_after_finished: req.ttl_seconds_after_finished,
        })
    }
}

/// The Job to post: `template` with everything of `req` applied (see the module doc).
pub fn build_job(template: &Job, req: &JobRequest, server_url: &str) -> Job {
    let mut job = template.clone();
    job.status = None;

    let meta = &mut job.metadata;
    meta.name = None;
    meta.generate_name = Some(generate_name(&req.queue));
    meta.namespace = None;
    meta.uid = None;
    meta.resource_version = None;
    meta.creation_timestamp = None;
    meta.deletion_timestamp = None;
    meta.generation = None;
    meta.managed_fields = None;
    meta.owner_references = None;
    set_labels(&mut meta.labels, &req.queue);

    let spec = job.spec.get_or_insert_with(Default::default);
    spec.parallelism = Some(req.parallelism as i32);
    if let Some(b) = req.backoff_limit {
        spec.backoff_limit = Some(b);
    }
    if let Some(t) = req.ttl_seconds_after_finished {
        spec.ttl_seconds_after_finished = Some(t);
    }
    // A template copied from `kubectl get job -o yaml` carries the old Job's selector and
    // controller-uid labels; the API server must pick new ones.
    spec.selector = None;
    spec.manual_selector = None;
    let pod_meta = spec.template.metadata.get_or_insert_with(Default::default);
    if let Some(labels) = pod_meta.labels.as_mut() {
        for stale in [
            "controller-uid",
            "batch.kubernetes.io/controller-uid",
            "job-name",
            "batch.kubernetes.io/job-name",
        ] {
            labels.remove(stale);
        }
    }
    set_labels(&mut pod_meta.labels, &req.queue);

    let pod = spec.template.spec.get_or_insert_with(Default::default);
    if pod.containers.is_empty() {
        pod.containers.push(Container {
            name: "worker".into(),
            ..Default::default()
        });
    }
    let container = &mut pod.containers[0];
    if let Some(image) = &req.image {
        container.image = Some(image.clone());
    }
    let base = req
        .args
        .clone()
        .or_else(|| container.args.clone())
        .unwrap_or_default();
    container.args = Some(consumer_args(&base, server_url, &req.queue));
    let env = container.env.get_or_insert_with(Vec::new);
    set_env(env, "MEMQ_SERVER", server_url);
    set_env(env, "MEMQ_QUEUE", &req.queue);
    job
}

fn set_labels(labels: &mut Option<BTreeMap<String, String>>, queue: &str) {
    let labels = labels.get_or_insert_with(BTreeMap::new);
    labels.insert(LABEL_NAME.into(), NAME.into());
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(LABEL_QUEUE.into(), queue.into());
}

fn set_env(env: &mut Vec<EnvVar>, name: &str, value: &str) {
    env.retain(|e| e.name != name);
    env.push(EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    });
}

/// `consumer-<queue>-`, the queue part made a DNS label (lowercase, `-` for `.` and `_`) and
/// short enough that the API server's 5 random characters keep the name within 63.
pub fn generate_name(queue: &str) -> String {
    const PREFIX: &str = "consumer-";
    let room = 63 - 5 - PREFIX.len() - 1;
    let mut part: String = queue
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(room)
        .collect();
    while part.ends_with('-') {
        part.pop();
    }
    format!("{PREFIX}{part}-")
}

/// The consumer's args: `--server=` and `--queue=` first (before anything like `--exec` that
/// takes the rest of the line), and no other `--server`/`--queue`/`-q` before `--exec`/`--`.
pub fn consumer_args(base: &[String], server_url: &str, queue: &str) -> Vec<String> {
    let mut out = vec![format!("--server={server_url}"), format!("--queue={queue}")];
    let mut rest = base.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--" | "--exec" => {
                out.push(arg.clone());
                out.extend(rest.cloned());
                break;
            }
            "--server" | "--queue" | "-q" => {
                rest.next();
            }
            a if a.starts_with("--server=") || a.starts_with("--queue=") => {}
            a if a.starts_with("-q") => {}
            _ => out.push(arg.clone()),
        }
    }
    out
}

/// A queue name that can be the value of the `memq.queue` label: at most 63 characters,
/// ending in a letter or digit (the queue-name rule covers the rest).
pub fn check_queue_label(queue: &str) -> Result<(), String> {
    if queue.len() > 63 || !queue.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "queue {queue:?} cannot label consumer Jobs: a Kubernetes label value has at most 63 \
             characters and ends in a letter or digit"
        ));
    }
    Ok(())
}

/// An image reference as the container runtime takes it:
/// `[host[:port]/]path[:tag][@algorithm:hex]`, path components in lowercase.
pub fn check_image(image: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{image:?} is not an image reference: {why}"));
    if image.is_empty() || image.len() > 512 {
        return bad("it must have 1 to 512 characters");
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("it contains whitespace or control characters");
    }
    let (name_tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let ok = digest.split_once(':').is_some_and(|(algo, hex)| {
            !algo.is_empty()
                && algo
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return bad("the digest must be like sha256:<64 hex digits>");
        }
    }
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return bad("the tag must be 1 to 128 letters, digits, '_', '.' or '-'");
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1
        && (parts[0].contains(['.', ':'])
            || parts[0] == "localhost"
            || parts[0] != parts[0].to_lowercase())
    {
        let host = parts.remove(0);
        let (domain, port) = match host.split_once(':') {
            Some((d, p)) => (d, Some(p)),
            None => (host, None),
        };
        let domain_ok = domain.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
        let port_ok = port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()));
        if !domain_ok || !port_ok {
            return bad("the registry host is malformed");
        }
    }
    for part in parts {
        if !path_component(part) {
            return bad(
                "each path component must be lowercase letters and digits, separated by '.', '_', '__' or '-'",
            );
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component(part: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes: Vec<char> = part.chars().collect();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep: String = bytes[start..i].iter().collect();
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn accepts_image_references_runtimes_take() {
        for ok in [
            "memq-rs:0.1.0",
            "busybox",
            "library/busybox:1.36",
            "registry.example.com/team/memq-rs:0.2.0",
            "localhost:5000/memq-rs",
            "ghcr.io/a/b__c/d.e:v1_2-3",
            "memq-rs@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "memq-rs:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(check_image(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_bad_image_strings() {
        for bad in [
            "",
            "memq rs",
            "Memq-RS",
            "memq-rs:",
            "memq-rs:-x",
            "memq-rs@sha256:xyz",
            "-memq",
            "memq-",
            "a//b",
            "a/b:tag:more",
            "host:port/x",
            "memq-rs;rm -rf /",
            "memq-rs\n",
            "memq..rs",
        ] {
            assert!(check_image(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn generate_name_is_a_dns_label_prefix() {
        assert_eq!(generate_name("keygen"), "consumer-keygen-");
        assert_eq!(generate_name("Work_Q.v2"), "consumer-work-q-v2-");
        let long = generate_name(&"a".repeat(128));
        assert_eq!(long.len(), 58);
        assert!(long.ends_with("a-"));
        assert_eq!(
            generate_name(&format!("{}_x", "b".repeat(47))).len(),
            58 - 1
        );
    }

    #[test]
    fn server_and_queue_come_first_and_replace_the_templates() {
        let base = strings(&[
            "--server=http://old/memq/server",
            "--work=sleep",
            "--queue",
            "old",
            "-qx",
            "--exec",
            "sh",
            "-c",
            "--queue=kept-for-the-command",
        ]);
        assert_eq!(
            consumer_args(&base, "http://queue:8080/memq/server", "keygen"),
            strings(&[
                "--server=http://queue:8080/memq/server",
                "--queue=keygen",
                "--work=sleep",
                "--exec",
                "sh",
                "-c",
                "--queue=kept-for-the-command",
            ])
        );
    }

    #[test]
    fn queue_names_that_cannot_be_label_values_are_refused() {
        assert!(check_queue_label("keygen").is_ok());
        assert!(check_queue_label("a.b_c-1").is_ok());
        assert!(check_queue_label("ends-with-").is_err());
        assert!(check_queue_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn the_built_in_template_parses_and_the_shipped_one_too() {
        let job = default_template("memq-rs:0.1.0").unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.containers[0].image.as_deref(), Some("memq-rs:0.1.0"));
        assert_eq!(pod.restart_policy.as_deref(), Some("OnFailure"));
        let shipped = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../manifests/base/job-template.yaml"
        );
        load(Path::new(shipped)).unwrap();
        assert!(default_template("not an image").is_err());
    }

    #[test]
    fn templates_without_containers_or_with_restart_always_are_refused() {
        assert!(parse("apiVersion: batch/v1\nkind: Job\nspec:\n  template:\n    spec:\n      containers: []\n      restartPolicy: Never\n").is_err());
        let always = DEFAULT_TEMPLATE
            .replace("{image}", "x")
            .replace("OnFailure", "Always");
        assert!(parse(&always).unwrap_err().contains("restartPolicy"));
        assert!(parse("apiVersion: v1\nkind: Pod\n").is_err());
    }

    #[test]
    fn built_job_has_labels_args_env_overrides_and_no_owner() {
        let mut template = default_template("memq-rs:0.1.0").unwrap();
        template.metadata.name = Some("old".into());
        template.metadata.owner_references = Some(vec![Default::default()]);
        let req = JobRequest {
            image: Some("memq-rs:0.2.0".into()),
            args: Some(strings(&["--work=sleep"])),
            backoff_limit: Some(2),
            ttl_seconds_after_finished: Some(60),
            ..JobRequest::new("keygen", 5)
        };
        let job = build_job(&template, &req, "http://queue:8080/memq/server");
        assert_eq!(job.metadata.name, None);
        assert_eq!(
            job.metadata.generate_name.as_deref(),
            Some("consumer-keygen-")
        );
        assert_eq!(job.metadata.owner_references, None);
        let labels = job.metadata.labels.clone().unwrap();
        assert_eq!(labels[LABEL_QUEUE], "keygen");
        assert_eq!(labels[LABEL_NAME], "memq-consumer");
        assert_eq!(labels[LABEL_MANAGED_BY], "memq-queue-server");
        let spec = job.spec.unwrap();
        assert_eq!(spec.parallelism, Some(5));
        assert_eq!(spec.backoff_limit, Some(2));
        assert_eq!(spec.ttl_seconds_after_finished, Some(60));
        assert_eq!(spec.template.metadata.unwrap().labels.unwrap(), labels);
        let c = &spec.template.spec.unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("memq-rs:0.2.0"));
        assert_eq!(
            c.args.clone().unwrap(),
            strings(&[
                "--server=http://queue:8080/memq/server",
                "--queue=keygen",
                "--work=sleep"
            ])
        );
        let env: Vec<_> = c.env.clone().unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(env, ["MEMQ_TOKEN", "MEMQ_SERVER", "MEMQ_QUEUE"]);
    }
}
