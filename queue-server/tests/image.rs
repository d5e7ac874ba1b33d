//! The container image users build from the Dockerfile, as `scripts/image.sh` builds it: read
//! from its OCI archive (config, files, SBOM) and run with podman, no daemon: as 65532 without a
//! shell, serving a curl enqueue and dequeue from the host through a port published on
//! 127.0.0.1, stopping on SIGTERM with exit 0 while a long poll waits, serving from a read-only
//! root, and keeping a `--data-dir` volume's items across a container restart.
//!
//! The archive is `MEMQ_TEST_IMAGE` (scripts/test.sh builds it first); without it the first
//! test runs scripts/image.sh (minutes on a first build). Needs root and podman (scripts/test.sh
//! installs it): without them these tests fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use queue_server::testing::eventually;
use queue_server::testing::oci::{Kind, OciImage};
use serde_json::Value;

/// How long a container may take to answer `/readyz` on a loaded machine.
const READY: Duration = Duration::from_secs(60);
/// The queue pod's `terminationGracePeriodSeconds` in manifests/.
const GRACE: Duration = Duration::from_secs(30);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The archive: `MEMQ_TEST_IMAGE`, or what scripts/image.sh prints last.
fn archive() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(path) = std::env::var_os("MEMQ_TEST_IMAGE").filter(|p| !p.is_empty()) {
            return PathBuf::from(path);
        }
        let out = std::process::Command::new("bash")
            .arg(repo_root().join("scripts/image.sh"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run scripts/image.sh");
        assert!(
            out.status.success(),
            "scripts/image.sh failed ({}): its output above says why",
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("scripts/image.sh printed the archive's path"),
        )
    })
}

fn image() -> &'static OciImage {
    static IMAGE: OnceLock<OciImage> = OnceLock::new();
    IMAGE.get_or_init(|| OciImage::open(archive()).expect("read the OCI archive"))
}

/// Resource limits for every container. podman's defaults for root (a million open files, four
/// million processes) are above what a root without CAP_SYS_RESOURCE (a container's, as the
/// machines that run these tests are) may set, and runc then refuses to start anything.
const LIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=16384:16384",
    "--ulimit",
    "nproc=4096:4096",
];

/// Runs podman (with runc: crun refuses this kind of host's hybrid cgroups).
fn podman(args: &[&str]) -> Output {
    std::process::Command::new("podman")
        .arg("--runtime")
        .arg("runc")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("run podman ({e}): scripts/test.sh installs it (apt-get install podman)")
        })
}

/// `podman ARGS` that must succeed; its stdout, trimmed.
fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The image ID of the archive in podman's storage, loaded from the archive once: every
/// container below runs exactly the image that the archive holds.
fn image_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let path = archive().to_str().expect("a UTF-8 path");
        podman_ok(&["load", "--quiet", "--input", path]);
        let id = image()
            .config_digest
            .trim_start_matches("sha256:")
            .to_owned();
        podman_ok(&["image", "exists", &id]);
        id
    })
}

/// A container removed when dropped.
struct Container {
    name: String,
}

impl Container {
    /// Starts the image detached with the podman options `options` and the server `args`.
    fn start(options: &[&str], args: &[&str]) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "memq-image-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut all = vec!["run", "--detach", "--name", &name];
        all.extend_from_slice(&LIMITS);
        all.extend_from_slice(options);
        all.push(image_id());
        all.extend_from_slice(args);
        // Dropped (and so removed) also when the start fails: podman may have created it.
        let container = Container { name: name.clone() };
        podman_ok(&all);
        container
    }

    /// Starts the queue server with its port 8080 published on a free port of 127.0.0.1 only
    /// (slirp4netns: no bridge, no iptables), and waits until it answers `/readyz`.
    async fn server(options: &[&str], args: &[&str]) -> (Self, String) {
        let mut all = vec!["--network", "slirp4netns", "--publish", "127.0.0.1::8080"];
        all.extend_from_slice(options);
        let container = Container::start(&all, args);
        let published = podman_ok(&["port", &container.name, "8080/tcp"]);
        assert!(
            published.starts_with("127.0.0.1:"),
            "published on {published}, not on 127.0.0.1 only"
        );
        let url = format!("http://{published}");
        let readyz = format!("{url}/readyz");
        eventually(READY, "the server in the container answers /readyz", || {
            let readyz = readyz.clone();
            let name = container.name.clone();
            async move {
                match reqwest::get(&readyz).await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(format!("{e}; logs: {}", logs(&name))),
                }
            }
        })
        .await;
        (container, url)
    }

    /// The host PID of the container's first process.
    fn pid(&self) -> u32 {
        podman_ok(&["inspect", "--format", "{{.State.Pid}}", &self.name])
            .parse()
            .expect("a PID")
    }

    /// Sends SIGTERM and waits for the exit: (exit code, how long it took).
    fn terminate(&self) -> (i32, Duration) {
        let started = Instant::now();
        podman_ok(&["kill", "--signal", "TERM", &self.name]);
        let code = podman_ok(&["wait", &self.name])
            .parse()
            .expect("an exit code");
        (code, started.elapsed())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "0", &self.name]);
    }
}

fn logs(name: &str) -> String {
    let out = podman(&["logs", name]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// curl as a user types it; the response body, and the status after `-w`.
fn curl(args: &[&str]) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "30",
            "--write-out",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("curl's status line");
    (status.parse().expect("a status"), body.to_owned())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn config_runs_queue_server_as_nonroot_with_its_labels() {
    let image = image();
    assert_eq!(image.config_str("User"), Some("65532:65532"));
    assert_eq!(
        image.config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/queue-server"])
    );
    assert!(
        image.config["config"]["ExposedPorts"]
            .get("8080/tcp")
            .is_some(),
        "port 8080 is exposed: {}",
        image.config["config"]
    );
    assert_eq!(
        image.label("org.opencontainers.image.title"),
        Some("memq-rs")
    );
    assert_eq!(
        image.label("org.opencontainers.image.version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        image.label("org.opencontainers.image.licenses"),
        Some("Apache-2.0")
    );
    let revision = image
        .label("org.opencontainers.image.revision")
        .unwrap_or_default();
    assert!(
        revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()),
        "the revision label is the commit: {revision:?}"
    );
    // The image's time is its commit's (SOURCE_DATE_EPOCH): an unchanged tree builds the same
    // image again.
    let committed = std::process::Command::new("git")
        .args(["show", "--no-patch", "--format=%ct", revision])
        .current_dir(repo_root())
        .output()
        .expect("run git");
    let committed: i64 = String::from_utf8_lossy(&committed.stdout)
        .trim()
        .parse()
        .expect("the commit's time");
    let created = image.config["created"].as_str().expect("a created time");
    let created = humantime::parse_rfc3339(created).expect("an RFC 3339 time");
    let created = created
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    assert_eq!(created, committed, "created is the commit's time");
    // The base the manifest names is the runtime stage's own, whichever steps the build took
    // from its cache (a cached step's image in its place gave the same tree another digest).
    let base = "gcr.io/distroless/cc-debian12:nonroot";
    let inspect = std::process::Command::new("buildah")
        .args([
            "inspect",
            "--type",
            "image",
            "--format",
            "{{.FromImageDigest}}",
            base,
        ])
        .output()
        .expect("run buildah inspect");
    assert!(
        inspect.status.success(),
        "buildah inspect {base}: {inspect:?}"
    );
    let base_digest = String::from_utf8_lossy(&inspect.stdout).trim().to_owned();
    assert_eq!(
        image.annotations["org.opencontainers.image.base.name"].as_str(),
        Some(base)
    );
    assert_eq!(
        image.annotations["org.opencontainers.image.base.digest"].as_str(),
        Some(base_digest.as_str()),
        "{}",
        image.annotations
    );
}

#[test]
fn image_holds_the_binaries_and_no_shell_or_package_manager() {
    let image = image();
    for name in ["queue-server", "producer", "consumer"] {
        let path = format!("usr/local/bin/{name}");
        let entry = &image.files[&path];
        assert_eq!(entry.kind, Kind::File, "{path}");
        assert_eq!(
            (entry.uid, entry.mode & 0o777),
            (0, 0o755),
            "{path}: root's, not writable by 65532"
        );
    }
    const FORBIDDEN: [&str; 16] = [
        "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox",
        "dpkg", "apt", "apt-get", "su", "sudo",
    ];
    let found: Vec<&String> = image
        .files
        .iter()
        .filter(|(path, e)| {
            let base = path.rsplit('/').next().unwrap_or(path);
            FORBIDDEN.contains(&base) && e.kind != Kind::Dir
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        found.is_empty(),
        "no shell or package manager in the image: {found:?}"
    );
    assert_eq!(image.resolve("bin/sh"), None, "/bin/sh resolves to nothing");
    // The runtime libraries the binaries link, and the passwd entry of the user.
    assert!(
        image.resolve("lib64/ld-linux-x86-64.so.2").is_some(),
        "the dynamic loader"
    );
    assert!(
        image.resolve("etc/ssl/certs/ca-certificates.crt").is_some(),
        "CA certificates"
    );
    let passwd =
        String::from_utf8(image.read_file("etc/passwd").expect("/etc/passwd")).expect("UTF-8");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
}

#[test]
fn sbom_beside_the_archive_lists_the_crates_of_cargo_lock_and_the_debian_packages() {
    let path = archive().with_extension("").with_extension("cdx.json");
    let sbom = json(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
    );
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    let lock = std::fs::read_to_string(repo_root().join("Cargo.lock")).expect("Cargo.lock");
    let locked: BTreeSet<(String, String)> = lock
        .split("[[package]]")
        .filter_map(|p| {
            let field = |k: &str| {
                p.lines()
                    .find_map(|l| l.strip_prefix(k)?.strip_prefix(" = \"")?.strip_suffix('"'))
                    .map(str::to_owned)
            };
            Some((field("name")?, field("version")?))
        })
        .collect();
    let components = sbom["components"].as_array().expect("components");
    let mut crates = BTreeSet::new();
    let mut debs = BTreeSet::new();
    let mut binaries = BTreeSet::new();
    for c in components {
        let (name, version) = (c["name"].as_str().unwrap(), c["version"].as_str().unwrap());
        let purl = c["purl"].as_str().unwrap_or_default();
        if purl.starts_with("pkg:cargo/") {
            assert!(
                locked.contains(&(name.to_owned(), version.to_owned())),
                "{name} {version} is in Cargo.lock"
            );
            crates.insert(name.to_owned());
        } else if purl.starts_with("pkg:deb/debian/") {
            debs.insert(name.to_owned());
        } else if c["bom-ref"]
            .as_str()
            .unwrap_or_default()
            .starts_with("binary:")
        {
            binaries.insert(name.to_owned());
        }
    }
    assert_eq!(
        binaries,
        BTreeSet::from(["consumer".into(), "producer".into(), "queue-server".into()])
    );
    for name in [
        "tokio", "axum", "hyper", "kube", "redis", "rustls", "memq", "clap", "reqwest",
    ] {
        assert!(crates.contains(name), "the SBOM lists {name}: {crates:?}");
    }
    for name in ["libc6", "libgcc-s1", "tzdata", "ca-certificates"] {
        assert!(
            debs.contains(name),
            "the SBOM lists the Debian package {name}: {debs:?}"
        );
    }
}

#[test]
fn the_three_binaries_run_inside_the_image() {
    let id = image_id();
    fn run<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [&["run", "--rm", "--network", "none"][..], &LIMITS, args].concat()
    }
    let version = podman_ok(&run(&[id, "--version"]));
    assert!(
        version.contains(env!("CARGO_PKG_VERSION")),
        "queue-server --version: {version}"
    );
    for bin in ["producer", "consumer"] {
        let entrypoint = format!("/usr/local/bin/{bin}");
        let help = podman_ok(&run(&["--entrypoint", &entrypoint, id, "--help"]));
        assert!(help.contains("Usage"), "{bin} --help: {help}");
    }
    // Without a shell in the image, a shell command cannot run at all.
    let out = podman(&run(&["--entrypoint", "/bin/sh", id, "-c", "true"]));
    assert!(!out.status.success(), "/bin/sh ran in the image");
    let refusal = String::from_utf8_lossy(&out.stderr);
    assert!(
        refusal.contains("/bin/sh"),
        "refused for want of /bin/sh: {refusal}"
    );
}

#[tokio::test]
async fn server_serves_curl_from_the_host_and_stops_on_sigterm_with_exit_0() {
    let (server, url) = Container::server(&[], &[]).await;
    // Runs as 65532:65532, as the host sees the process.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .expect("the process's status");
    let ids = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        ids("Uid:").split_whitespace().collect::<Vec<_>>(),
        ["65532"; 4]
    );
    assert_eq!(
        ids("Gid:").split_whitespace().collect::<Vec<_>>(),
        ["65532"; 4]
    );

    let (status, _) = curl(&["-X", "PUT", &format!("{url}/memq/server/queues/keygen")]);
    assert_eq!(status, 201);
    let (status, body) = curl(&[
        "-X",
        "POST",
        &format!("{url}/memq/server/queues/keygen/enqueue"),
        "-d",
        "work-item-0",
    ]);
    assert_eq!(status, 200);
    assert_eq!(json(&body)["body"], "work-item-0");
    let (status, body) = curl(&[
        "-X",
        "POST",
        &format!("{url}/memq/server/queues/keygen/dequeue"),
    ]);
    assert_eq!(status, 200);
    assert_eq!(json(&body)["body"], "work-item-0");

    // A long poll waits while SIGTERM arrives: it is answered, and the server exits 0 well
    // within the pod's grace period.
    let poll = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            curl(&[
                "-X",
                "POST",
                &format!("{url}/memq/server/queues/keygen/dequeue?wait=50"),
            ])
        }
    });
    queue_server::testing::polls_waiting(&url, 1).await;
    let (code, took) = server.terminate();
    assert_eq!(
        code,
        0,
        "exit code after SIGTERM; logs: {}",
        logs(&server.name)
    );
    assert!(
        took < GRACE,
        "stopped in {took:?}, within the grace period {GRACE:?}"
    );
    let (status, _) = poll.await.expect("the long poll");
    assert_eq!(status, 204, "the waiting long poll is answered at shutdown");
}

#[tokio::test]
async fn server_serves_from_a_read_only_root_and_keeps_a_data_dir_volume_across_a_restart() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("the volume's directory");
    // The volume belongs to the image's user, as fsGroup makes it in the durable overlay.
    std::os::unix::fs::chown(&data, Some(65532), Some(65532)).expect("chown the volume");
    let volume = format!("{}:/data", data.display());
    // Like readOnlyRootFilesystem: no tmpfs anywhere, nothing writable but the volume.
    let options = [
        "--read-only",
        "--read-only-tmpfs=false",
        "--volume",
        &volume,
    ];
    let args = ["--data-dir", "/data"];

    let (first, url) = Container::server(&options, &args).await;
    curl(&["-X", "PUT", &format!("{url}/memq/server/queues/durable")]);
    for i in 0..3 {
        let (status, _) = curl(&[
            "-X",
            "POST",
            &format!("{url}/memq/server/queues/durable/enqueue"),
            "-d",
            &format!("item-{i}"),
        ]);
        assert_eq!(status, 200);
    }
    let (code, _) = first.terminate();
    assert_eq!(
        code,
        0,
        "exit code after SIGTERM; logs: {}",
        logs(&first.name)
    );
    drop(first);

    let (_second, url) = Container::server(&options, &args).await;
    let (_, body) = curl(&[&format!("{url}/memq/server/queues/durable")]);
    assert_eq!(json(&body)["depth"], 3, "{body}");
    for i in 0..3 {
        let (status, body) = curl(&[
            "-X",
            "POST",
            &format!("{url}/memq/server/queues/durable/dequeue"),
        ]);
        assert_eq!(status, 200);
        assert_eq!(json(&body)["body"], format!("item-{i}"));
    }
}

/// A copy of scripts/image.sh's inputs in a directory of its own, with `dockerfile` as its
/// Dockerfile, and the cache of `MEMQ_IMAGE_CACHE` pointed at `cache`.
fn scratch_tree(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = repo_root();
    std::fs::create_dir_all(dir.path().join("scripts/image")).expect("mkdir");
    for file in [
        "scripts/image.sh",
        "scripts/lib.sh",
        "scripts/image/rootfs.py",
        "Cargo.toml",
    ] {
        std::fs::copy(root.join(file), dir.path().join(file)).expect("copy the script");
    }
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write the Dockerfile");
    dir
}

#[test]
fn image_sh_names_a_missing_prerequisite_and_makes_nothing() {
    let tree = scratch_tree("FROM scratch\n");
    // A PATH with every command of this machine but buildah.
    let bin = tree.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir bin");
    for dir in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let link = bin.join(&name);
            if name != "buildah" && !link.exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), link);
            }
        }
    }
    let cache = tree.path().join("cache");
    let out = std::process::Command::new("bash")
        .arg(tree.path().join("scripts/image.sh"))
        .env("PATH", &bin)
        .env("MEMQ_IMAGE_CACHE", &cache)
        .output()
        .expect("run image.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("buildah not found") && stderr.contains("apt-get install buildah"),
        "names what is missing and how to get it: {stderr}"
    );
    assert!(
        !cache.exists(),
        "nothing made before the prerequisites hold"
    );
}

#[test]
fn a_dockerfile_that_does_not_build_fails_image_sh_with_the_builders_error() {
    // The bases are the real Dockerfile's (made or found by the image build of these tests).
    archive();
    let tree = scratch_tree(
        "FROM rust:1.95-bookworm AS builder\nRUN cargo build --manifest-path /nowhere/Cargo.toml\n\
         FROM gcr.io/distroless/cc-debian12:nonroot\nCOPY --from=builder /out/queue-server /\n",
    );
    let out_dir = tree.path().join("out");
    let containers = || {
        let out = std::process::Command::new("buildah")
            .args(["containers", "--quiet", "--notruncate"])
            .output()
            .expect("run buildah containers");
        assert!(out.status.success(), "buildah containers: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let before = containers();
    let out = std::process::Command::new("bash")
        .arg(tree.path().join("scripts/image.sh"))
        .arg("--tag")
        .arg("localhost/memq-rs-broken:test")
        .env("MEMQ_IMAGE_OUT", &out_dir)
        .output()
        .expect("run image.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a build that fails is a failure: {stderr}"
    );
    assert!(
        stderr.contains("/nowhere/Cargo.toml"),
        "cargo's own error is shown: {stderr}"
    );
    assert!(
        std::fs::read_dir(&out_dir).map(|d| d.count()).unwrap_or(0) == 0,
        "no archive is left of a failed build"
    );
    let left: Vec<_> = containers().difference(&before).cloned().collect();
    assert!(
        left.is_empty(),
        "no working container is left of a failed build: {left:?}"
    );
}
