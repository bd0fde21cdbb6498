//! A Kubernetes API server for tests: the `kmock` emulator (pure Python, objects in memory,
//! list/watch/create/patch/delete over HTTP), run inside a test's namespace on its loopback, so
//! that an agent in that namespace reaches it and nothing outside does. `cargo xtask setup`
//! installs it into `target/test-venv` (pinned in `tests/kube/requirements.txt`).
//!
//! kmock ignores label and field selectors and resourceVersion semantics (every watch starts
//! with every object as ADDED), and needs each object to carry `metadata.resourceVersion`: the
//! helpers here set one.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::netns::Netns;

/// Where the emulator listens, inside the namespace it runs in.
pub const ADDR: &str = "127.0.0.1:16443";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's Python, if `cargo xtask setup` made it.
pub fn python() -> Option<PathBuf> {
    let p = root().join("target/test-venv/bin/python");
    p.exists().then_some(p)
}

/// Whether the emulator can run: skip with a reason when it is not installed, unless
/// `CI=true`, where that is a failure.
pub fn available(test: &str) -> bool {
    if python().is_some() {
        return true;
    }
    let why = "the kmock API emulator is not installed (target/test-venv): run `cargo xtask setup`";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}, and CI=true forbids skipping");
    }
    eprintln!("skipped {test}: {why}");
    false
}

/// A running emulator; killed on drop.
pub struct Emulator {
    child: Child,
    ns: String,
    next_version: u64,
}

impl Emulator {
    /// Starts it in `ns` and waits until it listens.
    pub fn start(ns: &Netns) -> anyhow::Result<Self> {
        let python = python().context("kmock is not installed: run `cargo xtask setup`")?;
        let script = root().join("tests/kube/emulator.py");
        let (host, port) = ADDR.split_once(':').unwrap();
        let mut child = ns
            .command(python.to_str().unwrap())
            .arg(&script)
            .args([host, port])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the kmock emulator")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        if !line.starts_with("listening") {
            let _ = child.kill();
            bail!("the kmock emulator did not start: {line:?}");
        }
        Ok(Self {
            child,
            ns: ns.name().to_string(),
            next_version: 1,
        })
    }

    /// A kubeconfig for it, written into `dir`.
    pub fn kubeconfig(dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: kmock, cluster: {{server: \"http://{ADDR}\"}}}}]\nusers: [{{name: test, user: {{}}}}]\ncontexts: [{{name: kmock, context: {{cluster: kmock, user: test}}}}]\ncurrent-context: kmock\n"
            ),
        )?;
        Ok(path)
    }

    /// `METHOD path` with a JSON body; returns the status code and the JSON answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let head = format!("{method} {path} HTTP/1.0\r\nContent-Type: application/json");
        let body = body.map(Value::to_string).unwrap_or_default();
        let (code, text) = crate::http::request(&self.ns, ADDR, &head, &body)?;
        Ok((code, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Adds a Node with an InternalIP, and podCIDRs if given.
    pub fn add_node(
        &mut self,
        name: &str,
        internal_ip: &str,
        pod_cidrs: &[&str],
        labels: Value,
    ) -> anyhow::Result<()> {
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "uid": format!("uid-{name}"),
                "resourceVersion": self.version(),
                "labels": labels,
            },
            "spec": { "podCIDRs": pod_cidrs },
            "status": { "addresses": [
                { "type": "InternalIP", "address": internal_ip },
                { "type": "Hostname", "address": name },
            ] },
        });
        self.created("/api/v1/nodes", &node)
    }

    pub fn delete_node(&self, name: &str) -> anyhow::Result<()> {
        let (code, answer) = self.request("DELETE", &format!("/api/v1/nodes/{name}"), None)?;
        if code != 200 {
            bail!("deleting Node {name}: {code} {answer}");
        }
        Ok(())
    }

    /// Adds the `default/kubernetes` EndpointSlice with `addresses`.
    pub fn add_api_server(&mut self, addresses: &[&str]) -> anyhow::Result<()> {
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "resourceVersion": self.version(),
                "labels": { "kubernetes.io/service-name": "kubernetes" },
            },
            "addressType": "IPv4",
            "endpoints": [{ "addresses": addresses, "conditions": { "ready": true } }],
            "ports": [{ "name": "https", "port": 6443, "protocol": "TCP" }],
        });
        self.created(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            &slice,
        )
    }

    /// `GET path`: the object, or `None` on 404.
    pub fn get(&self, path: &str) -> anyhow::Result<Option<Value>> {
        match self.request("GET", path, None)? {
            (200, v) => Ok(Some(v)),
            (404, _) => Ok(None),
            (code, v) => bail!("GET {path}: {code} {v}"),
        }
    }

    fn created(&self, path: &str, obj: &Value) -> anyhow::Result<()> {
        let (code, answer) = self.request("POST", path, Some(obj))?;
        if code != 200 && code != 201 {
            bail!("POST {path}: {code} {answer}");
        }
        Ok(())
    }

    fn version(&mut self) -> String {
        self.next_version += 1;
        self.next_version.to_string()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
