use super::*;
use crate::backend::{DropCounter, RuleCounter};
use crate::policy::Action;

fn counters(rule_pkts: u64, drop_pkts: u64) -> Counters {
    Counters {
        rules: vec![RuleCounter {
            rule: "failsafe-ssh".into(),
            direction: crate::backend::Direction::Ingress,
            action: Action::Allow,
            packets: rule_pkts,
            bytes: rule_pkts * 60,
        }],
        drops: vec![DropCounter {
            direction: crate::backend::Direction::Ingress,
            reason: "default-deny",
            rule: String::new(),
            family: "ipv4",
            protocol: "tcp",
            packets: drop_pkts,
            bytes: drop_pkts * 40,
        }],
    }
}

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn counters_stay_monotonic_across_kernel_resets() {
    let m = Metrics::new("nft");
    m.observe_counters(&counters(5, 10));
    m.observe_counters(&counters(7, 12));
    // The table was replaced: the kernel starts again from small values.
    m.observe_counters(&counters(1, 3));
    m.observe_counters(&counters(2, 4));
    let text = m.encode();
    assert_eq!(
        sample(
            &text,
            "nodewall_rule_packets_total{rule=\"failsafe-ssh\",direction=\"ingress\",action=\"allow\"}"
        ),
        5.0 + 2.0 + 1.0 + 1.0
    );
    assert_eq!(
        sample(&text, "nodewall_dropped_packets_total{backend=\"nft\",direction=\"ingress\",reason=\"default-deny\",rule=\"\",family=\"ipv4\",protocol=\"tcp\"}"),
        10.0 + 2.0 + 3.0 + 1.0
    );
    assert_eq!(
        sample(&text, "nodewall_dropped_bytes_total{backend=\"nft\""),
        16.0 * 40.0
    );
}

#[test]
fn a_series_that_vanishes_keeps_its_value() {
    let m = Metrics::new("xdp");
    m.observe_counters(&counters(5, 10));
    m.observe_counters(&Counters::default());
    m.observe_counters(&counters(2, 1));
    let text = m.encode();
    assert_eq!(sample(&text, "nodewall_rule_packets_total{"), 7.0);
    assert_eq!(sample(&text, "nodewall_dropped_packets_total{"), 11.0);
}

#[test]
fn exports_every_required_family() {
    let m = Metrics::new("nft");
    m.observe_counters(&counters(1, 1));
    m.apply_succeeded(3, Duration::from_millis(4));
    m.apply_failed(Duration::from_millis(1));
    m.config_reload_failed();
    m.drift_repaired();
    m.policy_enforced("0123456789abcdef");
    m.policy_enforced("fedcba9876543210");
    let text = m.encode();
    // Only the policy enforced now is exported.
    assert!(!text.contains("0123456789abcdef"), "{text}");
    for name in [
        "nodewall_policy_info{digest=\"fedcba9876543210\"} 1",
        "# TYPE nodewall_dropped_packets counter",
        "# TYPE nodewall_dropped_bytes counter",
        "# TYPE nodewall_rule_packets counter",
        "# TYPE nodewall_rule_bytes counter",
        "# TYPE nodewall_apply_duration_seconds histogram",
        "nodewall_apply_errors_total 1",
        "nodewall_config_reload_errors_total 1",
        "nodewall_drift_repairs_total 1",
        "nodewall_policy_generation 3",
        "nodewall_build_info{version=\"",
    ] {
        assert!(text.contains(name), "missing {name:?} in\n{text}");
    }
    assert_eq!(sample(&text, "nodewall_apply_duration_seconds_count"), 2.0);
    assert!(sample(&text, "nodewall_last_apply_success_timestamp_seconds") > 1.6e9);
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn content_negotiation() {
    let m = Metrics::new("nft");
    m.observe_counters(&counters(1, 1));
    let prometheus_accept =
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (ct, om) = m.encode_for(Some(prometheus_accept));
    assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
    assert!(om.contains("# TYPE nodewall_dropped_packets counter\n"));
    let (ct, text) = m.encode_for(Some("*/*"));
    assert!(ct.starts_with("text/plain; version=0.0.4"));
    assert!(text.contains("# TYPE nodewall_dropped_packets_total counter\n"));
    assert!(text.contains("# HELP nodewall_dropped_packets_total Packets"));
    assert!(text.contains("# TYPE nodewall_apply_duration_seconds histogram\n"));
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    // Samples are identical in both formats.
    let samples = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(String::from)
            .collect()
    };
    assert_eq!(samples(&om), samples(&text));
}

/// `promtool check metrics` (from the Prometheus server package) lints names, types and help.
#[test]
fn promtool_finds_nothing_to_report() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let m = Metrics::new("nft");
    m.observe_counters(&counters(3, 4));
    m.apply_succeeded(1, Duration::from_millis(2));
    m.policy_enforced("0123456789abcdef");
    m.drop_sampled(true);
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping: promtool not runnable ({e}); install the `prometheus` package");
            return;
        }
        Err(e) => panic!("promtool not runnable on CI: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(m.encode_for(None).1.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics reported:\n{report}"
    );
}
