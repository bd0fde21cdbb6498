//! Networks discovered from the Kubernetes API, with a real agent in a node namespace and the
//! kmock API emulator on that namespace's loopback: Nodes joining and leaving change what the
//! kernel admits within a second (real connections from the peers that join and leave), without
//! resetting counters; the API going away keeps the sets, its return brings them up to date; a
//! restart with the API down applies the persisted sets; the node's status object is written
//! and updated.
//!
//! Peers of the topology stand for cluster members: the `cluster` peer (198.18.17.2) is Node
//! `n2`'s InternalIP, the `pods` peer (198.18.33.2) is in n2's podCIDR, and the `cp` peer
//! (198.18.48.2) is the API server endpoint.

mod daemon_support;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use daemon_support::{replace_file, wait_until, Agent, TempDir};
use nodewall_netns_tests::kube::{self, Emulator};
use nodewall_netns_tests::netns::Netns;
use nodewall_netns_tests::nodewall::{rule_packets, status};
use nodewall_netns_tests::topology::{lone_node, node_addr, Topology};
use nodewall_netns_tests::traffic::Server;
use nodewall_netns_tests::{backend_tests, can_run, Backend};
use serde_json::{json, Value};

const PORT: u16 = 8080;
const RULE: &str = "web-from-cluster";
/// How long the sets may take to follow a Node joining or leaving.
const FOLLOW: Duration = Duration::from_secs(1);
const SYNCED: &str = "nodewall_discovery_synced{resource=\"nodes\"}";
const STATUS: &str = "/apis/nodewall.io/v1alpha1/nodewallnodestatuses/self";

fn config(backend: Backend, mode: &str, kubeconfig: &Path) -> String {
    format!(
        "backend: {}\nmode: {mode}\ninterfaces: [eth0]\nnetworks:\n  cluster: [{{nodes: {{}}}}]\n  container: [{{pod-cidrs: {{}}}}]\n  control-plane: [{{api-server: {{}}}}]\nfailsafe: []\nrules:\n  - {{name: {RULE}, action: allow, protocol: tcp, ports: [{PORT}], from: [cluster, container, control-plane]}}\nkubernetes:\n  kubeconfig: {}\n  node-name: self\n",
        backend.config_name(),
        kubeconfig.display()
    )
}

/// The cluster as these tests start it: this node, and the API server at the `cp` peer.
fn seed(api: &mut Emulator) -> anyhow::Result<()> {
    api.add_node("self", "198.18.16.2", &["198.18.34.0/24"], json!({}))?;
    api.add_api_server(&["198.18.48.2"])
}

fn join_n2(api: &mut Emulator) -> anyhow::Result<()> {
    api.add_node(
        "n2",
        "198.18.17.2",
        &["198.18.33.0/24"],
        json!({"zone": "a"}),
    )
}

/// A new TCP connection from `peer` to the node's web server, waiting 100 ms at most.
fn reaches(peer: &Netns) -> bool {
    let addr = SocketAddr::new(node_addr(false), PORT);
    peer.enter(|| TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok())
        .unwrap_or(false)
}

/// How long `cond` took to hold, if it did within `limit`.
fn time_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    wait_until(limit, &mut cond).then(|| start.elapsed())
}

struct Cluster {
    topo: Topology,
    api: Emulator,
    dir: TempDir,
    config: PathBuf,
    _web: Server,
}

/// `None` (the test skips, with the reason printed) when the emulator is not installed.
fn cluster(backend: Backend, what: &str) -> anyhow::Result<Option<Cluster>> {
    if !kube::available(what) {
        return Ok(None);
    }
    let topo = Topology::new()?;
    let web = Server::tcp(&topo.node, PORT)?;
    let mut api = Emulator::start(&topo.node)?;
    seed(&mut api)?;
    let dir = TempDir::new(what)?;
    let kubeconfig = Emulator::kubeconfig(&dir.0)?;
    let config = dir.0.join("config.yaml");
    std::fs::write(&config, config_text(backend, &kubeconfig))?;
    Ok(Some(Cluster {
        topo,
        api,
        dir,
        config,
        _web: web,
    }))
}

/// A cluster with n2 in it, and an agent started on it.
fn started_with_n2(backend: Backend, what: &str) -> anyhow::Result<Option<(Cluster, Agent)>> {
    let Some(mut c) = cluster(backend, what)? else {
        return Ok(None);
    };
    join_n2(&mut c.api)?;
    let agent = Agent::start(&c.topo.node, backend, &c.config, &c.dir, &[])?;
    Ok(Some((c, agent)))
}

fn config_text(backend: Backend, kubeconfig: &Path) -> String {
    config(backend, "enforce", kubeconfig)
}

fn nodes_join_and_leave(backend: Backend) -> anyhow::Result<()> {
    let Some(mut c) = cluster(backend, "kube-join")? else {
        return Ok(());
    };
    let agent = Agent::start(&c.topo.node, backend, &c.config, &c.dir, &[])?;
    let (cp, member, pod) = (
        &c.topo.control_plane.ns,
        &c.topo.cluster.ns,
        &c.topo.pods.ns,
    );
    ensure!(reaches(cp), "the API server's address (api-server) passes");
    ensure!(!reaches(member) && !reaches(pod), "n2 is not a Node yet");
    for _ in 0..20 {
        ensure!(reaches(cp), "repeated connections from the API server pass");
    }
    let before = rule_packets(&status(&c.topo.node, backend)?, RULE);

    join_n2(&mut c.api)?;
    let joined = time_until(FOLLOW, || reaches(member))
        .context("packets from a Node that joined pass within a second")?;
    ensure!(reaches(pod), "and from its podCIDR");
    eprintln!(
        "Node added -> its InternalIP admitted: {} ms",
        joined.as_millis()
    );
    // The kernel changes during the apply; its log line follows.
    let logged = |needles: &[&str]| {
        wait_until(FOLLOW, || {
            let log = agent.log();
            needles.iter().all(|n| log.contains(n))
        })
    };
    ensure!(
        logged(&["trigger=\"discovery\"", "why=\"node joined: n2\""]),
        "the apply says why:\n{}",
        agent.log()
    );
    ensure!(
        logged(&["+198.18.17.2/32", "+198.18.33.0/24"]),
        "and what changed"
    );
    let after = rule_packets(&status(&c.topo.node, backend)?, RULE);
    ensure!(
        after > before,
        "the rule's kernel counter kept counting through the set change ({before} -> {after})"
    );

    c.api.delete_node("n2")?;
    let left = time_until(FOLLOW, || !reaches(member))
        .context("packets from a Node that left are dropped within a second")?;
    ensure!(!reaches(pod), "and from its podCIDR");
    eprintln!(
        "Node deleted -> its InternalIP dropped: {} ms",
        left.as_millis()
    );
    ensure!(reaches(cp), "the API server still passes");
    ensure!(logged(&["why=\"node left: n2\""]), "logged");
    let last = rule_packets(&status(&c.topo.node, backend)?, RULE);
    ensure!(last >= after, "counter kept again ({after} -> {last})");
    ensure!(
        agent.metric("nodewall_network_addresses{network=\"cluster\",source=\"nodes\"}")
            == Some(1.0),
        "set sizes are exported"
    );
    Ok(())
}

fn api_down_then_back(backend: Backend) -> anyhow::Result<()> {
    let Some((c, agent)) = started_with_n2(backend, "kube-down")? else {
        return Ok(());
    };
    let member = &c.topo.cluster.ns;
    ensure!(reaches(member), "n2 admitted");
    ensure!(agent.metric(SYNCED) == Some(1.0), "in sync");

    drop(c.api);
    ensure!(
        wait_until(Duration::from_secs(5), || agent.metric(SYNCED) == Some(0.0)),
        "the metric says the sets are no longer in sync"
    );
    ensure!(
        agent.metric("nodewall_discovery_errors_total{resource=\"nodes\"}") >= Some(1.0),
        "the failure is counted"
    );
    std::thread::sleep(Duration::from_millis(300));
    ensure!(reaches(member), "the sets are kept while the API is away");
    ensure!(agent.get("/readyz")?.0 == 200, "still ready");

    // The API returns without n2: the sets follow once in sync again.
    let mut api = Emulator::start(&c.topo.node)?;
    seed(&mut api)?;
    let back = time_until(Duration::from_secs(15), || {
        agent.metric(SYNCED) == Some(1.0)
    })
    .context("in sync again after the API returned")?;
    eprintln!("API back -> in sync: {} ms", back.as_millis());
    ensure!(
        wait_until(FOLLOW, || !reaches(member)),
        "n2, deleted while the API was away, is dropped"
    );
    ensure!(
        reaches(&c.topo.control_plane.ns),
        "the API server still passes"
    );
    Ok(())
}

fn restart_with_the_api_down(backend: Backend) -> anyhow::Result<()> {
    let Some((c, mut agent)) = started_with_n2(backend, "kube-restart")? else {
        return Ok(());
    };
    ensure!(reaches(&c.topo.cluster.ns), "n2 admitted");
    agent.stop_with(libc::SIGTERM)?;
    drop(c.api);

    let agent = Agent::start(&c.topo.node, backend, &c.config, &c.dir, &[])
        .context("ready with the API down: the persisted sets are applied")?;
    ensure!(
        reaches(&c.topo.cluster.ns),
        "n2 still admitted, from the persisted sets"
    );
    ensure!(!reaches(&c.topo.internet.ns), "and the rest still dropped");
    ensure!(
        agent.metric(SYNCED) == Some(0.0),
        "not in sync, and says so"
    );
    ensure!(
        agent.log().contains("cannot read the Kubernetes API"),
        "the log says why"
    );
    Ok(())
}

/// Without persisted sets and with the API down, nothing is applied and the agent is not
/// ready: a policy whose discovered networks are empty would cut the node off its cluster.
fn first_start_with_the_api_down(backend: Backend) -> anyhow::Result<()> {
    let node = lone_node("kfirst")?;
    let dir = TempDir::new("kube-first")?;
    let kubeconfig = Emulator::kubeconfig(&dir.0)?;
    let config = dir.0.join("config.yaml");
    std::fs::write(&config, config_text(backend, &kubeconfig))?;
    let agent = Agent::spawn(&node, backend, &config, &dir, &[])?;
    ensure!(
        wait_until(Duration::from_secs(5), || agent
            .log()
            .contains("waiting for the first sync")),
        "says what it waits for:\n{}",
        agent.log()
    );
    ensure!(agent.get("/readyz")?.0 == 503, "not ready");
    ensure!(
        status(&node, backend)?["installed"] == false,
        "nothing installed"
    );
    Ok(())
}

fn status_object_written_and_updated(backend: Backend) -> anyhow::Result<()> {
    let Some((c, agent)) = started_with_n2(backend, "kube-status")? else {
        return Ok(());
    };
    let read = |api: &Emulator| -> Option<Value> { api.get(STATUS).ok().flatten() };
    let mut obj = Value::Null;
    ensure!(
        wait_until(Duration::from_secs(10), || {
            obj = read(&c.api).unwrap_or_default();
            obj["status"]["result"] == "Applied"
        }),
        "the status object says the policy was applied: {obj}"
    );
    let s = &obj["status"];
    ensure!(
        s["backend"] == backend.config_name() && s["mode"] == "enforce",
        "{s}"
    );
    ensure!(s["generation"].as_u64() >= Some(1), "{s}");
    ensure!(s["digest"].as_str().is_some_and(|d| d.len() == 16), "{s}");
    ensure!(
        s["networks"]
            == json!([
                {"name": "cluster", "addresses": 2},
                {"name": "container", "addresses": 2},
                {"name": "control-plane", "addresses": 1}
            ]),
        "set sizes: {s}"
    );
    ensure!(
        s["lastApplyTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{s}"
    );
    let owner = &obj["metadata"]["ownerReferences"][0];
    ensure!(
        owner["kind"] == "Node" && owner["name"] == "self" && owner["uid"] == "uid-self",
        "owned by its Node: {owner}"
    );

    let kubeconfig = c.dir.0.join("kubeconfig");
    replace_file(&c.config, &config(backend, "audit", &kubeconfig))?;
    ensure!(
        wait_until(Duration::from_secs(12), || {
            obj = read(&c.api).unwrap_or_default();
            obj["status"]["mode"] == "audit"
        }),
        "the status object follows the new mode: {obj}"
    );
    let writes = agent.metric("nodewall_status_writes_total{result=\"ok\"}");
    ensure!(
        matches!(writes, Some(w) if (2.0..=3.0).contains(&w)),
        "written only on change: {writes:?}"
    );
    Ok(())
}

backend_tests!(
    nodes_join_and_leave,
    api_down_then_back,
    restart_with_the_api_down,
    first_start_with_the_api_down,
    status_object_written_and_updated,
);

/// A config whose networks need the API, with no way to reach it and nothing persisted, is
/// refused at start with the entry's location (exit 2), and nothing is applied.
#[test]
fn no_way_to_reach_the_api_is_an_invalid_config() {
    if !can_run("no_way_to_reach_the_api_is_an_invalid_config") {
        return;
    }
    let node = lone_node("knone").unwrap();
    let dir = TempDir::new("kube-none").unwrap();
    let config = dir.0.join("config.yaml");
    std::fs::write(
        &config,
        "backend: nft\ninterfaces: [eth0]\nnetworks:\n  cluster: [198.18.16.0/24, {nodes: {}}]\nrules:\n  - {name: a, action: allow, protocol: tcp, ports: [1], from: [cluster]}\n",
    )
    .unwrap();
    let out = nodewall_netns_tests::nodewall::command(&node, &[])
        .unwrap()
        .args(["run", "-c"])
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.0.join("state"))
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("HOME", &dir.0)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .contains("config.yaml:4:29: networks.cluster[1]: no way to reach the Kubernetes API"),
        "{stderr}"
    );
    assert!(
        node.exec("nft", &["list", "table", "inet", "nodewall"])
            .is_err(),
        "nothing applied"
    );
}
