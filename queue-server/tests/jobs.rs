//! `GET/POST/DELETE /jobs` against a fake Kubernetes API server: the exact Jobs posted, the
//! list, deletes with their pods, bad requests, API errors and no cluster at all.

mod fake_kube;

use fake_kube::FakeKube;
use memq::{CreateJobRequest, QueueConfigPatch};
use queue_server::Config;
use queue_server::testing::TestServer;
use serde_json::json;

const NS: &str = "memq-test";
const TEMPLATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../manifests/base/job-template.yaml"
);
const TOKEN: &str = "jobs-token";

fn jobs_config(fake: &FakeKube) -> Config {
    Config {
        jobs: true,
        job_template: Some(TEMPLATE.into()),
        kube_config: Some(fake.config(NS)),
        ..Config::default()
    }
}

async fn start(config: Config) -> (TestServer, memq::Client) {
    let server = TestServer::start(config).await;
    let client = server.client();
    client.create_queue("keygen", None).await.unwrap();
    (server, client)
}

fn request(queue: &str, parallelism: u32) -> CreateJobRequest {
    CreateJobRequest {
        queue: queue.into(),
        parallelism,
        ..Default::default()
    }
}

fn labels(queue: &str) -> serde_json::Value {
    // The template's own labels, with ours on top (app.kubernetes.io/name replaced).
    json!({
        "app": "message-queue",
        "component": "consumer",
        "chapter": "jobs",
        "app.kubernetes.io/name": "memq-consumer",
        "app.kubernetes.io/component": "consumer",
        "app.kubernetes.io/part-of": "memq-rs",
        "app.kubernetes.io/managed-by": "memq-queue-server",
        "memq.queue": queue,
    })
}

#[tokio::test]
async fn post_jobs_creates_exactly_the_template_job_for_the_queue() {
    let fake = FakeKube::start().await;
    let (server, client) = start(jobs_config(&fake)).await;
    let job = client.create_job(&request("keygen", 5)).await.unwrap();
    assert_eq!(job.name, "consumer-keygen-00001");
    assert_eq!(job.namespace, NS);
    assert_eq!(job.queue, "keygen");
    assert_eq!(job.parallelism, 5);
    assert_eq!(job.state, "Pending");
    assert_eq!(job.image.as_deref(), Some("memq-rs:0.1.0"));

    let posts = fake.requests_with("POST");
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].path,
        format!("/apis/batch/v1/namespaces/{NS}/jobs")
    );
    let expected = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "generateName": "consumer-keygen-",
            "labels": labels("keygen"),
        },
        "spec": {
            "parallelism": 5,
            "backoffLimit": 6,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": { "labels": labels("keygen") },
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": false,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "worker",
                        "image": "memq-rs:0.1.0",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/usr/local/bin/consumer"],
                        "args": [
                            "--server=http://queue:8080/memq/server",
                            "--queue=keygen",
                        ],
                        "env": [
                            { "name": "MEMQ_TOKEN_FILE", "value": "/var/run/memq/token/token" },
                            { "name": "MEMQ_SERVER", "value": "http://queue:8080/memq/server" },
                            { "name": "MEMQ_QUEUE", "value": "keygen" },
                        ],
                        "volumeMounts": [{
                            "name": "memq-token",
                            "mountPath": "/var/run/memq/token",
                            "readOnly": true,
                        }],
                        "resources": {
                            "requests": { "cpu": "50m", "memory": "32Mi" },
                            "limits": { "cpu": "500m", "memory": "128Mi" },
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                    }],
                    // The whole Secret (0440): the consumer follows a rotated token in it.
                    "volumes": [{
                        "name": "memq-token",
                        "secret": { "secretName": "memq-token-consumer", "defaultMode": 288 },
                    }],
                },
            },
        },
    });
    assert_eq!(posts[0].body.as_ref().unwrap(), &expected);
    server.shutdown().await;
}

#[tokio::test]
async fn post_jobs_applies_the_callers_image_args_backoff_and_ttl() {
    let fake = FakeKube::start().await;
    let config = Config {
        server_url: "http://memq.work.svc:8080/memq/server".into(),
        namespace: Some("batch-work".into()),
        ..jobs_config(&fake)
    };
    let (server, client) = start(config).await;
    client.create_queue("img.resize_v2", None).await.unwrap();
    let req = CreateJobRequest {
        queue: "img.resize_v2".into(),
        parallelism: 1000,
        image: Some("registry.example.com/team/resizer:1.4@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into()),
        args: Some(vec![
            "--work=exec".into(),
            "--queue=ignored".into(),
            "--exec".into(),
            "resize".into(),
            "--queue=belongs-to-resize".into(),
        ]),
        backoff_limit: Some(0),
        ttl_seconds_after_finished: Some(120),
    };
    let job = client.create_job(&req).await.unwrap();
    assert_eq!(job.name, "consumer-img-resize-v2-00001");
    assert_eq!(job.namespace, "batch-work");
    assert_eq!(job.queue, "img.resize_v2");

    let post = &fake.requests_with("POST")[0];
    assert_eq!(post.path, "/apis/batch/v1/namespaces/batch-work/jobs");
    let body = post.body.as_ref().unwrap();
    assert_eq!(body["metadata"]["generateName"], "consumer-img-resize-v2-");
    assert_eq!(body["metadata"]["labels"]["memq.queue"], "img.resize_v2");
    assert!(body["metadata"].get("ownerReferences").is_none());
    assert_eq!(body["spec"]["parallelism"], 1000);
    assert_eq!(body["spec"]["backoffLimit"], 0);
    assert_eq!(body["spec"]["ttlSecondsAfterFinished"], 120);
    let c = &body["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], req.image.clone().unwrap());
    assert_eq!(
        c["args"],
        json!([
            "--server=http://memq.work.svc:8080/memq/server",
            "--queue=img.resize_v2",
            "--work=exec",
            "--exec",
            "resize",
            "--queue=belongs-to-resize",
        ])
    );
    assert_eq!(
        c["env"][2],
        json!({ "name": "MEMQ_QUEUE", "value": "img.resize_v2" })
    );
    server.shutdown().await;
}

#[tokio::test]
async fn built_in_template_runs_the_consumer_image() {
    let fake = FakeKube::start().await;
    let config = Config {
        job_template: None,
        consumer_image: "localhost:5000/memq-rs:dev".into(),
        ..jobs_config(&fake)
    };
    let (server, client) = start(config).await;
    client.create_job(&request("keygen", 2)).await.unwrap();
    let body = fake.requests_with("POST")[0].body.clone().unwrap();
    let pod = &body["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "OnFailure");
    assert_eq!(pod["containers"][0]["image"], "localhost:5000/memq-rs:dev");
    assert_eq!(
        pod["containers"][0]["command"],
        json!(["/usr/local/bin/consumer"])
    );
    assert_eq!(
        pod["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "memq-token-consumer"
    );
    assert_eq!(
        body["metadata"]["labels"],
        json!({
            "app.kubernetes.io/name": "memq-consumer",
            "app.kubernetes.io/managed-by": "memq-queue-server",
            "memq.queue": "keygen",
        })
    );
    assert!(body["metadata"].get("ownerReferences").is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn bad_job_requests_are_400_and_reach_no_api_server() {
    let fake = FakeKube::start().await;
    let (server, client) = start(jobs_config(&fake)).await;
    client.create_queue("ends-with-", None).await.unwrap();
    let bad = [
        (request("nope", 1), "invalid_parameter", "does not exist"),
        (request("keygen", 0), "invalid_parameter", "parallelism"),
        (request("keygen", 1001), "invalid_parameter", "parallelism"),
        (request("bad/name", 1), "invalid_parameter", "queue"),
        (request("ends-with-", 1), "invalid_parameter", "label"),
        (
            CreateJobRequest {
                image: Some("Not An Image".into()),
                ..request("keygen", 1)
            },
            "invalid_parameter",
            "image",
        ),
        (
            CreateJobRequest {
                image: Some("memq-rs:".into()),
                ..request("keygen", 1)
            },
            "invalid_parameter",
            "image",
        ),
        (
            CreateJobRequest {
                backoff_limit: Some(-1),
                ..request("keygen", 1)
            },
            "invalid_parameter",
            "backoffLimit",
        ),
        (
            CreateJobRequest {
                ttl_seconds_after_finished: Some(-5),
                ..request("keygen", 1)
            },
            "invalid_parameter",
            "ttlSecondsAfterFinished",
        ),
    ];
    for (req, code, words) in bad {
        let err = client.create_job(&req).await.unwrap_err();
        assert_eq!(err.status(), Some(400), "{req:?}: {err}");
        assert_eq!(err.code(), Some(code), "{req:?}: {err}");
        assert!(err.to_string().contains(words), "{req:?}: {err}");
    }
    let http = reqwest::Client::new();
    for body in [
        "not json",
        r#"{"queue":"keygen"}"#,
        r#"{"queue":"keygen","parallelism":-1}"#,
        r#"{"queue":"keygen","parallelism":1,"imagee":"x"}"#,
    ] {
        let resp = http
            .post(format!("{}/jobs", server.url()))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err: memq::ApiError = resp.json().await.unwrap();
        assert_eq!(err.code, "invalid_json", "{body}");
    }
    assert!(fake.requests_with("POST").is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn api_server_refusals_answer_what_they_are() {
    let fake = FakeKube::start().await;
    let (server, client) = start(jobs_config(&fake)).await;

    // 403: forbidden, naming the verb and resource it denied, and the Role to grant.
    let forbidden = "jobs.batch is forbidden: User \"system:serviceaccount:memq-test:queue-server\" cannot create resource \"jobs\" in API group \"batch\" in the namespace \"memq-test\"";
    fake.fail_next(403, "Forbidden", forbidden);
    let err = client.create_job(&request("keygen", 1)).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert_eq!(err.code(), Some("forbidden"));
    let text = err.to_string();
    assert!(text.contains("denied \"create\" on \"jobs\""), "{text}");
    assert!(text.contains(forbidden), "{text}");
    assert!(text.contains("queue-server-jobs"), "{text}");
    fake.fail_next(403, "Forbidden", "jobs.batch is forbidden");
    let err = client.jobs().await.unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    assert!(
        err.to_string().contains("denied \"list\" on \"jobs\""),
        "{err}"
    );

    // 422: the API server's own words about the Job.
    let invalid = "Job.batch \"consumer-keygen-x\" is invalid: spec.template.spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1";
    fake.fail_next(422, "Invalid", invalid);
    let err = client.create_job(&request("keygen", 1)).await.unwrap_err();
    assert_eq!(err.status(), Some(422), "{err}");
    assert_eq!(err.code(), Some("invalid_job"));
    assert!(err.to_string().contains(invalid), "{err}");

    // 401: the API server does not take the server's credentials: unavailable, not the caller's fault.
    fake.fail_next(401, "Unauthorized", "Unauthorized");
    let err = client.jobs().await.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    assert_eq!(err.code(), Some("kubernetes_unavailable"));
    assert!(err.to_string().contains("credentials"), "{err}");

    fake.fail_next(500, "InternalError", "etcdserver: request timed out");
    let err = client.jobs().await.unwrap_err();
    assert_eq!(err.status(), Some(502));
    assert_eq!(err.code(), Some("kubernetes_error"));
    assert!(err.to_string().contains("500 InternalError"), "{err}");
    assert!(
        err.to_string().contains("etcdserver: request timed out"),
        "{err}"
    );

    fake.fail_next(500, "InternalError", "boom");
    let err = client
        .delete_job("consumer-keygen-00001")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("kubernetes_error"));

    // And the next calls work again.
    client.create_job(&request("keygen", 1)).await.unwrap();
    assert_eq!(client.jobs().await.unwrap().jobs.len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn jobs_answer_503_kubernetes_unavailable_without_the_jobs_flag() {
    let server = TestServer::start(Config::default()).await;
    let client = server.client();
    client.create_queue("keygen", None).await.unwrap();
    let errs = [
        client.jobs().await.unwrap_err(),
        client.create_job(&request("keygen", 1)).await.unwrap_err(),
        client
            .delete_job("consumer-keygen-abcde")
            .await
            .unwrap_err(),
    ];
    for err in errs {
        assert_eq!(err.status(), Some(503), "{err}");
        assert_eq!(err.code(), Some("kubernetes_unavailable"));
        assert!(err.to_string().contains("--jobs"), "{err}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn jobs_answer_503_while_the_api_server_is_down_and_work_once_it_is_back() {
    let mut fake = FakeKube::start().await;
    fake.stop().await;
    let (server, client) = start(jobs_config(&fake)).await;
    let err = client.jobs().await.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    assert_eq!(err.code(), Some("kubernetes_unavailable"));
    assert!(
        err.to_string()
            .contains("cannot reach the Kubernetes API server"),
        "{err}"
    );
    let err = client.create_job(&request("keygen", 1)).await.unwrap_err();
    assert_eq!(err.code(), Some("kubernetes_unavailable"));

    fake.restart().await;
    client.create_job(&request("keygen", 1)).await.unwrap();
    assert_eq!(client.jobs().await.unwrap().jobs.len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn jobs_routes_need_the_token_even_with_public_reads() {
    let fake = FakeKube::start().await;
    let config = Config {
        token: Some(TOKEN.into()),
        public_reads: true,
        ..jobs_config(&fake)
    };
    let server = TestServer::start(config).await;
    let anon = server.client();
    assert_eq!(anon.jobs().await.unwrap_err().status(), Some(401));
    assert_eq!(
        anon.create_job(&request("keygen", 1))
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );
    assert_eq!(
        anon.delete_job("consumer-keygen-abcde")
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );
    assert!(fake.requests_with("POST").is_empty());
    let authed = server.client().with_token(Some(TOKEN.into()));
    authed.create_queue("keygen", None).await.unwrap();
    let job = authed.create_job(&request("keygen", 1)).await.unwrap();
    assert_eq!(authed.jobs().await.unwrap().jobs.len(), 1);
    authed.delete_job(&job.name).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn autoscale_is_stored_shown_and_checked_per_queue() {
    let server = TestServer::start(Config::default()).await;
    let client = server.client();
    let on = QueueConfigPatch {
        autoscale: Some(Some(memq::Autoscale {
            max_parallelism: 10,
            items_per_pod: 100,
        })),
        ..Default::default()
    };
    let (q, _) = client.create_queue("keygen", Some(&on)).await.unwrap();
    assert_eq!(q.autoscale, on.autoscale.unwrap());
    assert_eq!(client.queue("keygen").await.unwrap().autoscale, q.autoscale);
    assert_eq!(
        client.stats().await.unwrap().queues[0].autoscale,
        q.autoscale
    );

    // Absent leaves it, null turns it off.
    let other = QueueConfigPatch {
        max_depth: Some(5),
        ..Default::default()
    };
    let (q, _) = client.create_queue("keygen", Some(&other)).await.unwrap();
    assert!(q.autoscale.is_some());
    let off = QueueConfigPatch {
        autoscale: Some(None),
        ..Default::default()
    };
    let (q, _) = client.create_queue("keygen", Some(&off)).await.unwrap();
    assert_eq!(q.autoscale, None);

    let http = reqwest::Client::new();
    for (queue, body) in [
        (
            "keygen",
            r#"{"autoscale":{"maxParallelism":0,"itemsPerPod":1}}"#,
        ),
        (
            "keygen",
            r#"{"autoscale":{"maxParallelism":1001,"itemsPerPod":1}}"#,
        ),
        (
            "keygen",
            r#"{"autoscale":{"maxParallelism":1,"itemsPerPod":0}}"#,
        ),
        ("keygen", r#"{"autoscale":{"maxParallelism":1}}"#),
        (
            "ends-with-",
            r#"{"autoscale":{"maxParallelism":1,"itemsPerPod":1}}"#,
        ),
    ] {
        let resp = http
            .put(format!("{}/queues/{queue}", server.base_url()))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{queue} {body}");
    }
    assert_eq!(client.queue("keygen").await.unwrap().autoscale, None);
    server.shutdown().await;
}

#[tokio::test]
async fn a_broken_job_template_stops_the_server_at_start() {
    let dir = std::env::temp_dir().join(format!("memq-jobs-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let always = dir.join("always.yaml");
    std::fs::write(
        &always,
        "apiVersion: batch/v1\nkind: Job\nspec:\n  template:\n    spec:\n      restartPolicy: Always\n      containers: [{name: w, image: x}]\n",
    )
    .unwrap();
    let missing = dir.join("missing.yaml");
    let fake = FakeKube::start().await;
    for (path, words) in [(&always, "restartPolicy"), (&missing, "cannot read")] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = Config {
            job_template: Some(path.clone()),
            ..jobs_config(&fake)
        };
        let err = queue_server::serve(listener, config, std::future::pending())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(words), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn post_jobs_answers_503_when_the_store_cannot_be_reached() {
    // A Redis nobody listens on: the store fails, the queue is not "missing".
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fake = FakeKube::start().await;
    let server = TestServer::start_as_given(Config {
        redis: Some(format!("redis://127.0.0.1:{port}/0")),
        ..jobs_config(&fake)
    })
    .await;
    let err = server
        .client()
        .create_job(&request("keygen", 1))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    assert_eq!(err.code(), Some("backend_unavailable"));
    assert!(fake.requests_with("POST").is_empty());
}

#[tokio::test]
async fn the_dashboard_is_told_that_jobs_are_on() {
    let fake = FakeKube::start().await;
    let server = TestServer::start(jobs_config(&fake)).await;
    let html = reqwest::get(server.url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"<meta name="memq-jobs" content="on">"#));
}
