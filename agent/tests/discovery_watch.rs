//! The watch of one kind of object against a mock API (tower-test) for the error paths the
//! emulator cannot produce: 410 Gone relists, 403 and a list that never answers are reported
//! and retried, and the store keeps what it had through all of them.

use std::time::Duration;

use http::{Request, Response};
use k8s_openapi::api::core::v1::Node;
use kube::client::Body;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use nodewall::discovery::watch::{self, Signal, LIST_TIMEOUT};
use serde_json::json;
use tokio::sync::mpsc;
use tower_test::mock::{Handle, SendResponse};

type Mock = Handle<Request<Body>, Response<Body>>;

fn node(name: &str, rv: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "resourceVersion": rv}})
}

fn respond(send: SendResponse<Response<Body>>, code: u16, body: String) {
    let response = Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.into_bytes()))
        .unwrap();
    send.send_response(response);
}

/// The next request: whether it is a watch, and the way to answer it.
async fn next(mock: &mut Mock) -> (bool, SendResponse<Response<Body>>) {
    let (req, send) = mock.next_request().await.expect("a request");
    assert_eq!(req.uri().path(), "/api/v1/nodes");
    let watch = req.uri().query().unwrap_or_default().contains("watch=true");
    (watch, send)
}

async fn list(mock: &mut Mock, names: &[&str]) {
    let (watch, send) = next(mock).await;
    assert!(!watch, "a list");
    let items: Vec<_> = names.iter().map(|n| node(n, "5")).collect();
    let list = json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "5"}, "items": items});
    respond(send, 200, list.to_string());
}

fn status(code: u16, reason: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "message": reason, "reason": reason, "code": code})
}

/// The next signal; `None` if none comes within five (virtual) minutes, so that a watch that
/// stopped retrying fails the test instead of hanging it.
async fn signal(signals: &mut mpsc::UnboundedReceiver<Signal>) -> Option<Signal> {
    tokio::time::timeout(Duration::from_secs(300), signals.recv())
        .await
        .ok()
        .flatten()
}

fn names(store: &Store<Node>) -> Vec<String> {
    let mut n: Vec<String> = store
        .state()
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    n.sort();
    n
}

#[tokio::test(start_paused = true)]
async fn errors_are_reported_retried_and_keep_the_store() {
    let (service, mut mock) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let api: Api<Node> = Api::all(Client::new(service, "default"));
    let (store, writer) = reflector::store();
    let (tx, mut signals) = mpsc::unbounded_channel();
    tokio::spawn(watch::run(
        api,
        watcher::Config::default(),
        writer,
        "nodes",
        |_| {},
        tx,
    ));

    list(&mut mock, &["a"]).await;
    assert_eq!(signal(&mut signals).await, Some(Signal::Synced("nodes")));
    assert_eq!(names(&store), ["a"]);

    // The watch says 410 Gone (the server's history no longer reaches our resourceVersion).
    let (watch, send) = next(&mut mock).await;
    assert!(watch);
    let gone = json!({"type": "ERROR", "object": status(410, "Expired")});
    respond(send, 200, format!("{gone}\n"));
    let Some(Signal::Failed("nodes", e)) = signal(&mut signals).await else {
        panic!("a failure")
    };
    assert!(e.contains("410") || e.contains("Expired"), "{e}");
    assert_eq!(names(&store), ["a"], "kept while out of sync");

    // After a backoff it lists again, and the store becomes what the API now holds.
    list(&mut mock, &["b", "c"]).await;
    assert_eq!(signal(&mut signals).await, Some(Signal::Synced("nodes")));
    assert_eq!(names(&store), ["b", "c"]);

    // The watch is forbidden (RBAC taken away): reported, store kept.
    let (watch, send) = next(&mut mock).await;
    assert!(watch);
    respond(send, 403, status(403, "Forbidden").to_string());
    let Some(Signal::Failed(_, e)) = signal(&mut signals).await else {
        panic!("a failure")
    };
    assert!(e.contains("403") || e.contains("Forbidden"), "{e}");
    assert_eq!(names(&store), ["b", "c"]);

    // A list that is forbidden, then one that never answers: both reported, store kept.
    let (_, send) = next(&mut mock).await;
    respond(send, 403, status(403, "Forbidden").to_string());
    assert!(matches!(
        signal(&mut signals).await,
        Some(Signal::Failed(..))
    ));
    let (watch, hung) = next(&mut mock).await;
    assert!(!watch);
    let started = tokio::time::Instant::now();
    let Some(Signal::Failed(_, e)) = signal(&mut signals).await else {
        panic!("a failure")
    };
    assert!(e.contains("list not complete"), "{e}");
    assert!(
        started.elapsed() >= LIST_TIMEOUT
            && started.elapsed() < LIST_TIMEOUT + Duration::from_secs(1)
    );
    assert_eq!(names(&store), ["b", "c"]);
    drop(hung);

    // And once the API answers again, in sync again.
    list(&mut mock, &["c"]).await;
    assert_eq!(signal(&mut signals).await, Some(Signal::Synced("nodes")));
    assert_eq!(names(&store), ["c"]);
}
