//! Invalid configs: each error names the field path, the `line:column` of the offending node
//! and a reason; every error of a file is reported, in document order.

use nodewall::config::{self, ConfigError};

fn errors(text: &str) -> Vec<ConfigError> {
    match config::parse(text, "bad.yaml") {
        Ok(c) => panic!("expected errors, parsed {c:#?}"),
        Err(e) => {
            assert_eq!(e.file, "bad.yaml");
            e.errors
        }
    }
}

/// Asserts that `text` has exactly one error, at `path` and `line:column`, mentioning `needle`.
#[track_caller]
fn one(text: &str, path: &str, line: usize, column: usize, needle: &str) {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    check(&errs[0], path, line, column, needle);
}

#[track_caller]
fn check(e: &ConfigError, path: &str, line: usize, column: usize, needle: &str) {
    assert_eq!(
        (e.path.as_str(), e.line, e.column),
        (path, line, column),
        "{e:?}"
    );
    assert!(
        e.message.contains(needle),
        "{:?} does not contain {needle:?}",
        e.message
    );
}

/// A rule that is valid on its own, for documents that test something else.
const RULES: &str = "rules:\n  - {name: ok, action: allow, protocol: all, from: [10.0.0.0/8]}\n";

#[test]
fn yaml_syntax_error() {
    one(
        "rules: [\n  {name: a\n",
        "(document)",
        3,
        1,
        "YAML syntax error",
    );
}

#[test]
fn more_than_one_document() {
    one(
        &format!("{RULES}---\nmode: audit\n"),
        "(document)",
        3,
        1,
        "only one YAML document",
    );
}

#[test]
fn top_level_not_a_mapping() {
    one(
        "- profile: tke-node\n",
        "(document)",
        1,
        1,
        "expected a mapping, found a list",
    );
    one("", "(document)", 1, 1, "the file is empty");
}

#[test]
fn unknown_top_level_key_with_suggestion() {
    one(
        &format!("{RULES}backedn: nft\n"),
        "backedn",
        3,
        1,
        "unknown key `backedn`; did you mean `backend`?",
    );
}

#[test]
fn unknown_rule_key_with_suggestion() {
    one(
        "rules:\n  - name: web\n    action: allow\n    protocol: tcp\n    prots: [80]\n    from: [0.0.0.0/0]\n",
        "rules[0].prots",
        5,
        5,
        "unknown key `prots`; did you mean `ports`? valid keys: name, action, protocol, ports, from",
    );
}

#[test]
fn misspelt_required_key_reports_both_the_typo_and_the_missing_key() {
    let errs = errors(
        "rules:\n  - name: web\n    action: allow\n    protcol: tcp\n    from: [0.0.0.0/0]\n",
    );
    assert_eq!(errs.len(), 2, "{errs:#?}");
    check(
        &errs[0],
        "rules[0].protocol",
        2,
        5,
        "missing required key `protocol`",
    );
    check(
        &errs[1],
        "rules[0].protcol",
        4,
        5,
        "did you mean `protocol`?",
    );
}

#[test]
fn duplicate_key() {
    one(
        &format!("mode: audit\n{RULES}mode: enforce\n"),
        "mode",
        4,
        1,
        "duplicate key `mode` (first given at line 1)",
    );
}

#[test]
fn string_where_a_list_is_expected() {
    one(
        &format!("{RULES}interfaces: eth0\n"),
        "interfaces",
        3,
        13,
        "expected a list, found string \"eth0\"",
    );
}

#[test]
fn list_where_a_mapping_is_expected() {
    one(
        &format!("{RULES}networks: [10.0.0.0/8]\n"),
        "networks",
        3,
        11,
        "expected a mapping, found a list",
    );
}

#[test]
fn boolean_expected() {
    // YAML 1.2: `yes` is a string, not a boolean.
    one(
        &format!("{RULES}implicit:\n  established: yes\n"),
        "implicit.established",
        4,
        16,
        "expected true or false, found string \"yes\"",
    );
}

#[test]
fn number_where_a_name_is_expected() {
    one(
        "rules:\n  - {name: 123, action: allow, protocol: all, from: [10.0.0.0/8]}\n",
        "rules[0].name",
        2,
        12,
        "quote it",
    );
}

#[test]
fn bad_backend() {
    one(
        &format!("backend: xpd\n{RULES}"),
        "backend",
        1,
        10,
        "unknown backend `xpd`; did you mean `xdp`? expected one of nft, xdp, auto",
    );
}

#[test]
fn bad_mode() {
    one(
        &format!("{RULES}mode: true\n"),
        "mode",
        3,
        7,
        "expected one of enforce, audit, found boolean true",
    );
}

#[test]
fn bad_action() {
    one(
        "rules:\n  - {name: a, action: permit, protocol: all, from: [10.0.0.0/8]}\n",
        "rules[0].action",
        2,
        23,
        "unknown action `permit`; expected one of allow, deny",
    );
}

#[test]
fn bad_protocol() {
    one(
        "rules:\n  - {name: a, action: allow, protocol: sctp, from: [10.0.0.0/8]}\n",
        "rules[0].protocol",
        2,
        40,
        "expected one of tcp, udp, icmp, icmpv6, all",
    );
}

#[test]
fn bad_cidr() {
    one(
        &format!("{RULES}networks:\n  cluster: [10.0.0/8]\n"),
        "networks.cluster[0]",
        4,
        13,
        "`10.0.0` in `10.0.0/8` is not an IP address",
    );
    one(
        &format!("{RULES}networks:\n  cluster: [10.0.0.0/40]\n"),
        "networks.cluster[0]",
        4,
        13,
        "prefix length `40`",
    );
}

#[test]
fn cidr_with_host_bits_suggests_the_network() {
    one(
        "rules:\n  - name: a\n    action: allow\n    protocol: all\n    from: [\"10.0.0.0/8\", \"10.0.0.1/16\"]\n",
        "rules[0].from[1]",
        5,
        26,
        "has host bits set; did you mean `10.0.0.0/16`?",
    );
}

const TCP_RULE: &str =
    "rules:\n  - name: a\n    action: allow\n    protocol: tcp\n    from: [0.0.0.0/0]\n    ports: ";

#[test]
fn port_zero() {
    one(
        &format!("{TCP_RULE}[22, 0]\n"),
        "rules[0].ports[1]",
        6,
        17,
        "port 0",
    );
}

#[test]
fn port_too_large() {
    one(
        &format!("{TCP_RULE}[\"65536\"]\n"),
        "rules[0].ports[0]",
        6,
        13,
        "port 65536 is greater than 65535",
    );
}

#[test]
fn port_range_reversed() {
    one(
        &format!("{TCP_RULE}[\"8080-8000\"]\n"),
        "rules[0].ports[0]",
        6,
        13,
        "starts after it ends; did you mean `8000-8080`?",
    );
}

#[test]
fn malformed_port() {
    one(
        &format!("{TCP_RULE}[\"http\"]\n"),
        "rules[0].ports[0]",
        6,
        13,
        "`http` is not a port; expected \"N\" or \"A-B\"",
    );
    one(
        &format!("{TCP_RULE}[22.5]\n"),
        "rules[0].ports[0]",
        6,
        13,
        "found number 22.5",
    );
}

#[test]
fn empty_ports() {
    one(
        &format!("{TCP_RULE}[]\n"),
        "rules[0].ports",
        6,
        12,
        "omit `ports` to match every port",
    );
}

#[test]
fn ports_for_a_protocol_without_ports() {
    one(
        "rules:\n  - name: a\n    action: allow\n    protocol: icmp\n    ports: [\"22\"]\n    from: [0.0.0.0/0]\n",
        "rules[0].ports",
        5,
        12,
        "ports only apply to tcp and udp; remove `ports` for protocol `icmp`",
    );
}

#[test]
fn empty_from() {
    one(
        "rules:\n  - {name: a, action: allow, protocol: all, from: []}\n",
        "rules[0].from",
        2,
        51,
        "empty list",
    );
}

#[test]
fn unknown_network_in_from() {
    one(
        "networks:\n  cluster: [10.0.0.0/16]\nrules:\n  - name: a\n    action: allow\n    protocol: all\n    from: [clustr]\n",
        "rules[0].from[0]",
        7,
        12,
        "unknown network `clustr`; did you mean `cluster`? defined networks: cluster",
    );
}

#[test]
fn invalid_network_name() {
    one(
        &format!("{RULES}networks:\n  Pods: [10.0.0.0/16]\n"),
        "networks.Pods",
        4,
        3,
        "invalid network name `Pods`",
    );
    one(
        &format!("{RULES}networks:\n  10.0.0.0: [10.0.0.0/16]\n"),
        "networks.10.0.0.0",
        4,
        3,
        "looks like an address",
    );
}

#[test]
fn empty_network() {
    one(
        &format!("{RULES}networks:\n  pods: []\n"),
        "networks.pods",
        4,
        9,
        "network `pods` is empty",
    );
}

#[test]
fn missing_required_rule_fields() {
    let errs = errors("rules:\n  - ports: [22]\n");
    let missing: Vec<(&str, usize, usize)> = errs
        .iter()
        .map(|e| (e.path.as_str(), e.line, e.column))
        .collect();
    // All at the rule's mapping, in the order the fields are checked.
    assert_eq!(
        missing,
        [
            ("rules[0].name", 2, 5),
            ("rules[0].action", 2, 5),
            ("rules[0].protocol", 2, 5),
            ("rules[0].from", 2, 5)
        ]
    );
    assert!(errs
        .iter()
        .all(|e| e.message.starts_with("missing required key")));
}

#[test]
fn duplicate_rule_name_across_rules_and_failsafe() {
    one(
        &format!("{RULES}failsafe:\n  - name: ok\n    protocol: tcp\n    ports: [22]\n"),
        "failsafe[0].name",
        4,
        11,
        "duplicate rule name `ok` (first used at line 2)",
    );
}

#[test]
fn duplicate_rule_name_reported_at_the_later_one_in_document_order() {
    // failsafe comes first in the file, so the rule is the duplicate.
    let doc = format!("failsafe:\n  - {{name: ok, protocol: tcp, ports: [22]}}\n{RULES}");
    one(&doc, "rules[0].name", 4, 12, "first used at line 2");
}

#[test]
fn invalid_rule_name() {
    one(
        "rules:\n  - {name: SSH, action: allow, protocol: all, from: [10.0.0.0/8]}\n",
        "rules[0].name",
        2,
        12,
        "invalid rule name `SSH`",
    );
    one(
        "rules:\n  - {name: tke-node/x, action: allow, protocol: all, from: [10.0.0.0/8]}\n",
        "rules[0].name",
        2,
        12,
        "'/' is reserved for profile rules",
    );
}

#[test]
fn unknown_profile_lists_valid_ones() {
    one(
        "profile: tke-nod\nnetworks: {cluster: [10.0.0.0/16], container: [172.16.0.0/16]}\n",
        "profile",
        1,
        10,
        "unknown profile `tke-nod`; did you mean `tke-node`? built-in profiles: tke-node, tke-master, eks-cluster",
    );
}

#[test]
fn profile_needs_networks() {
    let errs = errors("networks:\n  cluster: [10.0.0.0/16]\nprofile: ack-node\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    check(
        &errs[0],
        "profile",
        3,
        10,
        "profile `ack-node` needs network `control-plane`: define it under `networks:`",
    );
    let errs = errors("profile: tke-node\n");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    check(&errs[0], "profile", 1, 10, "needs network `container`");
    check(&errs[1], "profile", 1, 10, "needs network `cluster`");
}

#[test]
fn failsafe_cannot_deny() {
    one(
        &format!("{RULES}failsafe:\n  - action: deny\n    protocol: tcp\n"),
        "failsafe[0].action",
        4,
        13,
        "failsafe entries can only `allow`",
    );
}

#[test]
fn bad_interface_name() {
    one(
        &format!("{RULES}interfaces: [eth0, \"eth 1\"]\n"),
        "interfaces[1]",
        3,
        20,
        "invalid interface name `eth 1`",
    );
    one(
        &format!("{RULES}interfaces: [averyveryverylongname]\n"),
        "interfaces[0]",
        3,
        14,
        "1 to 15 characters",
    );
}

#[test]
fn duplicate_interface() {
    one(
        &format!("{RULES}interfaces:\n  - eth0\n  - eth0\n"),
        "interfaces[1]",
        5,
        5,
        "duplicate interface `eth0` (first listed at line 4)",
    );
}

#[test]
fn neighbour_discovery_alias_given_twice() {
    one(
        &format!("{RULES}implicit:\n  neighbour-discovery: true\n  neighbor-discovery: false\n"),
        "implicit.neighbor-discovery",
        5,
        23,
        "alias",
    );
}

#[test]
fn null_value() {
    one(
        &format!("{RULES}backend:\n"),
        "backend",
        3,
        8,
        "remove the key to use the default",
    );
}

#[test]
fn every_error_is_reported_in_document_order() {
    let doc = "\
backend: ebpf
networks:
  cluster: [10.0.0.0/16, 10.1.0.1/16]
rules:
  - name: web
    action: allow
    protocol: tcp
    ports: [80, 0]
    from: [clustr]
  - name: web
    action: alow
    protocol: icmp
    ports: [8080]
    from: []
failsafe:
  - action: deny
    protocol: tcp
interfaces: [eth0, eth0]
";
    let e = config::parse(doc, "multi.yaml").unwrap_err();
    let got: Vec<(&str, usize, usize)> = e
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.line, e.column))
        .collect();
    assert_eq!(
        got,
        [
            ("backend", 1, 10),
            ("networks.cluster[1]", 3, 26),
            ("rules[0].ports[1]", 8, 17),
            ("rules[0].from[0]", 9, 12),
            ("rules[1].name", 10, 11),
            ("rules[1].action", 11, 13),
            ("rules[1].ports", 13, 12),
            ("rules[1].from", 14, 11),
            ("failsafe[0].action", 16, 13),
            ("interfaces[1]", 18, 20),
        ]
    );
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10);
    assert!(
        lines[0].starts_with("multi.yaml:1:10: backend: unknown backend `ebpf`"),
        "{}",
        lines[0]
    );
    assert!(
        lines[4].starts_with(
            "multi.yaml:10:11: rules[1].name: duplicate rule name `web` (first used at line 5)"
        ),
        "{}",
        lines[4]
    );
}

#[test]
fn load_reports_unreadable_files() {
    let e = config::load(std::path::Path::new("/nonexistent/nodewall.yaml")).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert!(
        e.to_string()
            .starts_with("/nonexistent/nodewall.yaml:1:1: (file): cannot open: "),
        "{e}"
    );
}

mod mangled {
    use proptest::prelude::*;

    const BASE: &str = include_str!("../../deploy/examples/standalone.yaml");

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Damaging a valid file anywhere never panics, and a rejected file always gets at
        /// least one located error, sorted by position, with a path and a message.
        #[test]
        fn damaged_files_are_reported_not_panicked_on(
            at in 0usize..BASE.len(),
            len in 0usize..12,
            insert in "[ a-z0-9:\\[\\]{}\\-/.,\"\n]{0,6}",
        ) {
            let at = (0..=at).rev().find(|i| BASE.is_char_boundary(*i)).unwrap();
            let end = ((at + len).min(BASE.len())..=BASE.len()).find(|i| BASE.is_char_boundary(*i)).unwrap();
            let text = format!("{}{insert}{}", &BASE[..at], &BASE[end..]);
            match nodewall::config::parse(&text, "x.yaml") {
                // Accepted: then it is a config the rest of nodewall takes, and one that means
                // what the original means when only comments or blank space were damaged.
                Ok(config) => {
                    prop_assert!(nodewall::policy::compile(&config).is_ok());
                    if meaning(&text) == meaning(BASE) {
                        prop_assert_eq!(Ok(config), nodewall::config::parse(BASE, "x.yaml"));
                    }
                }
                Err(e) => {
                prop_assert!(!e.errors.is_empty());
                let lines = text.lines().count().max(1);
                for err in &e.errors {
                    prop_assert!(err.line >= 1 && err.line <= lines + 1, "{err:?}");
                    prop_assert!(err.column >= 1 && !err.path.is_empty() && !err.message.is_empty(), "{err:?}");
                }
                let pos: Vec<(usize, usize)> = e.errors.iter().map(|e| (e.line, e.column)).collect();
                let mut sorted = pos.clone();
                sorted.sort();
                prop_assert_eq!(pos, sorted);
                }
            }
        }
    }

    /// The lines of `text` that are not comments or blank, without trailing space.
    fn meaning(text: &str) -> Vec<&str> {
        text.lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty() && !l.trim_start().starts_with('#'))
            .collect()
    }
}

/// Long one-line lists (the shape of big CIDR lists) are read past the YAML scanner; their
/// mistakes are still reported at the item's own column, among every other error.
#[test]
fn mistakes_in_long_cidr_lists() {
    let mut items: Vec<String> = (0..40).map(|i| format!("\"10.0.{i}.0/24\"")).collect();
    items[17] = "\"10.0.17.1/24\"".into();
    items[30] = "10.0.30.0/33".into();
    let list = items.join(", ");
    let text = format!(
        "rules:\n  - name: a\n    action: allow\n    protocol: udp\n    ports: [\"53\"]\n    from: [{list}]\n"
    );
    let column =
        |i: usize| "    from: [".len() + items[..i].iter().map(|s| s.len() + 2).sum::<usize>() + 1;
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    check(
        &errs[0],
        "rules[0].from[17]",
        6,
        column(17),
        "did you mean `10.0.17.0/24`",
    );
    check(&errs[1], "rules[0].from[30]", 6, column(30), "from 0 to 32");
}

#[test]
fn kubernetes_api_entries_and_section() {
    one(
        "networks:\n  a: [{nodes: {selector: \"a b\"}}]\n",
        "networks.a[0].nodes.selector",
        2,
        26,
        "not a requirement",
    );
    one(
        "networks:\n  a: [{nodez: {}}]\n",
        "networks.a[0].nodez",
        2,
        8,
        "did you mean `nodes`",
    );
    one(
        "networks:\n  a: [{}]\n",
        "networks.a[0]",
        2,
        7,
        "empty mapping",
    );
    one(
        "networks:\n  a: [{nodes: {}, api-server: {}}]\n",
        "networks.a[0].api-server",
        2,
        19,
        "one source per entry",
    );
    one(
        "networks:\n  a: [{nodes: {addresses: [Hostname]}}]\n",
        "networks.a[0].nodes.addresses[0]",
        2,
        28,
        "names, not IP addresses",
    );
    one(
        "networks:\n  a: [{nodes: {addresses: [InternalIP, InternalIP]}}]\n",
        "networks.a[0].nodes.addresses",
        2,
        27,
        "listed twice",
    );
    one(
        "networks:\n  a: [{nodes: {addresses: []}}]\n",
        "networks.a[0].nodes.addresses",
        2,
        27,
        "empty list",
    );
    one(
        "networks:\n  a: [{nodes: {labels: x}}]\n",
        "networks.a[0].nodes.labels",
        2,
        16,
        "valid keys: selector, addresses",
    );
    one(
        "networks:\n  a: [{api-server: {x: 1}}]\n",
        "networks.a[0].api-server",
        2,
        21,
        "takes no options",
    );
    one(
        "networks:\n  a: [{pod-cidrs: []}]\n",
        "networks.a[0].pod-cidrs",
        2,
        19,
        "expected a mapping",
    );
    one(
        "kubernetes: {node-name: Node_1}\n",
        "kubernetes.node-name",
        1,
        25,
        "not a Node name",
    );
    one(
        "kubernetes: {kubeconfig: \"\"}\n",
        "kubernetes.kubeconfig",
        1,
        26,
        "empty path",
    );
    one(
        "kubernetes: {status: yes}\n",
        "kubernetes.status",
        1,
        22,
        "true or false",
    );
    one(
        "kubernetes: {nodename: a}\n",
        "kubernetes.nodename",
        1,
        14,
        "did you mean `node-name`",
    );
    one(
        "networks:\n  a: []\n",
        "networks.a",
        2,
        6,
        "list at least one CIDR or API source",
    );
}

#[test]
fn drops_section() {
    one(
        &format!("{RULES}drops:\n  samples-per-second: 5000\n"),
        "drops.samples-per-second",
        4,
        23,
        "5000 samples per second is out of range; expected 0 to 1000",
    );
    one(
        &format!("{RULES}drops:\n  sample-rate: 5\n"),
        "drops.sample-rate",
        4,
        3,
        "samples-per-second",
    );
    one(
        &format!("{RULES}drops:\n  flow-log:\n    path: drops.jsonl\n"),
        "drops.flow-log.path",
        5,
        11,
        "not an absolute path",
    );
    one(
        &format!("{RULES}drops:\n  flow-log:\n    max-size: 1MiB\n"),
        "drops.flow-log.path",
        5,
        5,
        "missing: the file to write the samples to",
    );
    let errs = errors(&format!(
        "{RULES}drops:\n  flow-log:\n    path: /var/log/nodewall/\n    max-size: 10MB\n    max-files: 0\n"
    ));
    assert_eq!(errs.len(), 3, "{errs:#?}");
    check(&errs[0], "drops.flow-log.path", 5, 11, "names a directory");
    check(
        &errs[1],
        "drops.flow-log.max-size",
        6,
        15,
        "expected a size in bytes",
    );
    check(
        &errs[2],
        "drops.flow-log.max-files",
        7,
        16,
        "0 rotated files is out of range; expected 1 to 1000",
    );
}

#[test]
fn egress_errors_are_located() {
    one(
        &format!("{RULES}egress:\n  default: block\n"),
        "egress.default",
        4,
        12,
        "unknown action `block`",
    );
    one(
        &format!("{RULES}egress:\n  rules:\n    - {{name: x, action: allow, protocol: tcp, to: [nowhere]}}\n"),
        "egress.rules[0].to[0]",
        5,
        52,
        "unknown network `nowhere`",
    );
    one(
        &format!("{RULES}egress:\n  rules:\n    - {{name: x, action: allow, protocol: tcp, to: [10.0.0.0/8], source: pods}}\n"),
        "egress.rules[0].source",
        5,
        73,
        "did you mean `pod`?",
    );
    one(
        &format!("{RULES}egress:\n  failsafe:\n    - {{protocol: udp, action: deny}}\n"),
        "egress.failsafe[0].action",
        5,
        31,
        "put deny rules under `egress.rules`",
    );
    one(
        &format!("{RULES}egress:\n  metadata: {{deny-pods: true, except: [10.0.0.1/8]}}\n"),
        "egress.metadata.except[0]",
        4,
        40,
        "has host bits set",
    );
    // Names are unique across both directions (they are the `rule` label of metrics).
    one(
        &format!("{RULES}egress:\n  rules:\n    - {{name: ok, action: deny, protocol: all, to: [10.0.0.0/8]}}\n"),
        "egress.rules[0].name",
        5,
        14,
        "duplicate rule name `ok`",
    );
    // The default egress failsafe's names are taken once `egress` is written.
    one(
        "rules:\n  - {name: egress-failsafe-dhcp, action: allow, protocol: all, from: [10.0.0.0/8]}\negress: {default: deny}\n",
        "rules[0].name",
        2,
        12,
        "name of a default egress failsafe entry",
    );
    one(
        "backend: xdp\negress: {metadata: {deny-pods: true, except: [10.0.0.0/8]}}\n",
        "backend",
        1,
        10,
        "backend `xdp` cannot enforce `egress.metadata.except`",
    );
}
