//! Which interfaces are filtered (issue 13, item 4): `eth*` patterns select every interface
//! whose name starts so, names that match no interface are said plainly instead of reported
//! as filtered, and an interface that appears later is filtered as it appears (nft: the kernel
//! matches names; XDP: `nodewall run` attaches to it).

mod daemon_support;

use std::time::Duration;

use daemon_support::{wait_until, Agent, TempDir};
use nodewall_netns_tests::installed::xdp_attached;
use nodewall_netns_tests::nodewall::{apply, status, try_apply, Config, ConfigFile};
use nodewall_netns_tests::topology::{lone_node, node_addr, Topology, UPLINK};
use nodewall_netns_tests::traffic::{tcp_ok, Server};
use nodewall_netns_tests::{backend_tests, Backend};

const PORT: u16 = 8080;

/// The suite's config (default deny, nothing allows tcp/8080) on other interfaces.
fn config_on(backend: Backend, interfaces: &str) -> String {
    Config::new(backend, None).yaml().replace(
        &format!("interfaces: [{UPLINK}]"),
        &format!("interfaces: [{interfaces}]"),
    ) + "rules:\n  - name: ssh\n    action: allow\n    protocol: tcp\n    ports: [\"22\"]\n    from: [\"0.0.0.0/0\"]\n"
}

fn a_pattern_filters_every_matching_interface(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let _web = Server::tcp(&topo.node, PORT)?;
    anyhow::ensure!(
        tcp_ok(&topo.internet.ns, node_addr(false), PORT),
        "open before"
    );
    let mut file = ConfigFile::new(&config_on(backend, "\"eth*\""))?;
    file.backend = Some(backend);
    let report = apply(&topo.node, &file)?;
    let want = if backend == Backend::Nft {
        "eth*"
    } else {
        UPLINK
    };
    anyhow::ensure!(report["interfaces"][0] == want, "{report}");
    anyhow::ensure!(
        report["unmatched"].as_array().is_some_and(Vec::is_empty),
        "{report}"
    );
    anyhow::ensure!(
        !tcp_ok(&topo.internet.ns, node_addr(false), PORT),
        "tcp/{PORT} from the internet is dropped on {UPLINK}, which `eth*` selects"
    );
    let st = status(&topo.node, backend)?;
    anyhow::ensure!(st["interfaces"][0] == want, "{st}");
    Ok(())
}

fn a_name_that_matches_nothing_is_not_reported_as_filtered(backend: Backend) -> anyhow::Result<()> {
    let node = lone_node("node")?;
    let mut file = ConfigFile::new(&config_on(backend, "nosuch0"))?;
    file.backend = Some(backend);
    let out = try_apply(&node, &file, &[], backend.env())?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    if backend == Backend::Nft {
        // nft matches names in the kernel: installed, and said to filter nothing yet.
        anyhow::ensure!(out.status.success(), "{stderr}");
        anyhow::ensure!(
            stdout.starts_with("installed (filtering nothing yet)")
                && stdout.contains("no interface matches nosuch0 yet")
                && !stdout.starts_with("applied"),
            "{stdout}"
        );
    } else {
        // XDP attaches to interfaces that exist: refused, naming the field.
        anyhow::ensure!(out.status.code() == Some(2), "{stdout}{stderr}");
        anyhow::ensure!(
            stderr.contains("interfaces: no interface matches nosuch0 yet"),
            "{stderr}"
        );
        anyhow::ensure!(status(&node, backend)?["installed"] == false);
    }
    Ok(())
}

fn the_agent_attaches_to_an_interface_that_appears_later(backend: Backend) -> anyhow::Result<()> {
    let node = lone_node("node")?;
    let (dir, config) = TempDir::with_config("late", &config_on(backend, "\"late*\""))?;
    let agent = Agent::spawn(&node, backend, &config, &dir, &[])?;
    node.ip(&[
        "link", "add", "late0", "type", "veth", "peer", "name", "late1",
    ])?;
    node.ip(&["link", "set", "late0", "up"])?;
    node.ip(&["link", "set", "late1", "up"])?;
    agent.wait_ready(Duration::from_secs(10))?;
    let covered = |st: &serde_json::Value| {
        st["interfaces"]
            .as_array()
            .is_some_and(|i| i.iter().any(|n| n == "late0" || n == "late*"))
    };
    anyhow::ensure!(
        wait_until(Duration::from_secs(5), || status(&node, backend)
            .is_ok_and(|st| covered(&st))),
        "late0 enforced: {}\n{}",
        status(&node, backend)?,
        agent.log()
    );
    if backend != Backend::Nft {
        anyhow::ensure!(
            xdp_attached(&node, "late0")?.is_some(),
            "XDP attached to late0"
        );
        // And one more, created while the agent runs in sync.
        node.ip(&[
            "link", "add", "late2", "type", "veth", "peer", "name", "late3",
        ])?;
        node.ip(&["link", "set", "late2", "up"])?;
        anyhow::ensure!(
            wait_until(Duration::from_secs(5), || xdp_attached(&node, "late2")
                .is_ok_and(|a| a.is_some())),
            "XDP attached to late2 within 5 s:\n{}",
            agent.log()
        );
    }
    Ok(())
}

backend_tests!(
    a_pattern_filters_every_matching_interface,
    a_name_that_matches_nothing_is_not_reported_as_filtered,
    the_agent_attaches_to_an_interface_that_appears_later
);
