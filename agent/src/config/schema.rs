//! JSON Schema (draft 2020-12) of the config file, for editors and CI linters, derived with
//! `schemars` from the types below, which describe the file as written (the parser reads the
//! YAML tree itself, for located errors, and does not use them).
//!
//! The schema checks shape, enums and patterns; the checks that need the whole document
//! (unknown network names, host bits, duplicate rule names, profile networks) are only done
//! by [`super::parse`]. Enum values come from the same tables the parser uses, so the two
//! cannot drift apart.

use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

use super::api_sources::ADDRESS_TYPES;
use super::document::{BACKENDS, MODES};
use super::rules::{ACTIONS, EGRESS_SOURCES, PROTOCOLS};
use crate::profiles;

/// Rule and network names: `^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`.
const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$";
/// `"N"` or `"A-B"`; the numeric range is checked by the parser.
const PORT_PATTERN: &str = "^[0-9]{1,5}(-[0-9]{1,5})?$";
/// Address characters with an optional prefix length; the parser checks the value itself.
const CIDR_PATTERN: &str = "^[0-9a-fA-F:.]+(/[0-9]{1,3})?$";
/// Node names (DNS subdomains); the parser also checks each label's ends.
const DNS_SUBDOMAIN_PATTERN: &str = "^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$";
/// Linux interface names (1-15 characters without '/', ':' or whitespace), or a `PREFIX*`
/// pattern.
const INTERFACE_PATTERN: &str = "^([^/:\\s*]{1,15}|[^/:\\s*]{1,14}\\*)$";

/// The schema as a JSON value; `nodewall schema` prints it.
pub fn json_schema() -> Value {
    let mut schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<ConfigFile>();
    schema.insert(
        "$id".into(),
        "https://example.invalid/nodewall/config.schema.json".into(),
    );
    schema.to_value()
}

#[derive(JsonSchema)]
#[schemars(
    title = "nodewall configuration",
    description = "Firewall policy for a node: an optional built-in security-group \
        baseline (profile), named networks, user rules and failsafe entries, and the optional \
        `egress` half. Inbound evaluation order: implicit allowances, failsafe, profile rules, \
        user rules (first match wins), then default deny.",
    deny_unknown_fields
)]
#[allow(dead_code)]
struct ConfigFile {
    #[schemars(
        description = "Datapath that enforces the policy: nftables, XDP, or XDP where \
            supported and nft otherwise.",
        schema_with = "backend",
        default = "Defaults::nft"
    )]
    backend: String,
    /// `audit` counts would-be drops but lets the packets through.
    #[schemars(schema_with = "mode", default = "Defaults::enforce")]
    mode: String,
    #[schemars(
        description = "Uplinks to filter: names, or `PREFIX*` for every interface whose name \
            starts with PREFIX (as nft's `iifname \"eth*\"`). Empty: the interfaces that carry \
            default routes, resolved when the policy is applied.",
        default,
        schema_with = "interfaces"
    )]
    interfaces: Vec<String>,
    #[schemars(
        description = "Built-in baseline whose rules come before the user rules. Its named \
            networks must be defined under `networks`.",
        schema_with = "profile",
        default
    )]
    profile: Unset,
    /// Named address lists, referred to by name in `from`: CIDRs, and entries read from the
    /// Kubernetes API.
    #[schemars(default, extend("propertyNames" = { "pattern": NAME_PATTERN }))]
    networks: BTreeMap<String, Network>,
    #[schemars(
        description = "How the agent reaches the Kubernetes API (for networks with API \
            entries) and whether it writes its node's NodewallNodeStatus object.",
        default
    )]
    kubernetes: KubernetesSection,
    /// User rules, evaluated after the profile's; first match wins.
    #[schemars(default)]
    rules: Vec<UserRule>,
    #[schemars(
        description = "Allow entries evaluated before everything else. Absent: tcp/22 from \
            anywhere. `[]` disables the failsafe.",
        default
    )]
    failsafe: Vec<Failsafe>,
    #[schemars(
        description = "Implicit allowances of a stateful security group, each on by default. \
            `neighbor-discovery` is an alias of `neighbour-discovery`.",
        default
    )]
    implicit: Implicit,
    #[schemars(default)]
    drops: Drops,
    #[schemars(
        description = "Outbound: new flows leaving through the uplinks, sent by the node or \
            forwarded from its pods. Absent: nothing outbound is judged. Evaluation order: \
            replies of live flows, neighbour discovery, the metadata switch, egress failsafe, \
            the profile's restricted outbound rows (with `default: deny`), egress rules (first \
            match wins), then `default`.",
        default
    )]
    egress: Egress,
}

#[derive(JsonSchema, Default)]
#[schemars(inline, deny_unknown_fields)]
#[allow(dead_code)]
struct Egress {
    /// What a new outbound flow no rule matches gets. `deny` also enforces the profile's
    /// restricted outbound rows.
    #[schemars(schema_with = "action", default = "Defaults::allow")]
    default: String,
    /// Egress rules, after the failsafe and the profile's rows; first match wins.
    #[schemars(default)]
    rules: Vec<EgressRule>,
    /// Allow entries evaluated before the profile's rows and the egress rules. Absent: DNS
    /// (udp and tcp 53) to the `node-resolvers` network (default: the node's resolv.conf
    /// nameservers), DHCP (udp 67, 547) to anywhere, tcp 80 from the node itself to the
    /// `instance-metadata` network (default: the cloud metadata addresses), and tcp 443/6443
    /// to the `control-plane` network when it is defined. `[]` disables it.
    #[schemars(default)]
    failsafe: Vec<EgressFailsafe>,
    #[schemars(default)]
    metadata: Metadata,
}

/// Pods kept away from the cloud instance metadata service (AWS 169.254.169.254 and
/// fd00:ec2::254, Alibaba 100.100.100.200, Tencent 169.254.0.23); the host keeps access.
#[derive(JsonSchema, Default)]
#[schemars(inline, deny_unknown_fields)]
#[allow(dead_code)]
struct Metadata {
    #[schemars(rename = "deny-pods", default)]
    deny_pods: bool,
    /// Pod addresses (CIDRs or network names) that keep access.
    #[schemars(default)]
    except: Vec<Source>,
}

/// The traffic an egress rule judges: `host` (what the node sends) or `pod` (what it
/// forwards, by the pod's own address). Absent: both.
#[derive(JsonSchema, Default)]
#[schemars(inline)]
#[allow(dead_code)]
struct EgressSourceKind(#[schemars(schema_with = "egress_source")] String);

/// Where the traffic goes: CIDRs, bare addresses or `networks` names.
#[derive(JsonSchema, Default)]
#[schemars(inline, extend("minItems" = 1))]
#[allow(dead_code)]
struct Destinations(Vec<Source>);

/// An egress rule.
#[derive(JsonSchema)]
#[schemars(rename = "egress-rule", deny_unknown_fields, transform = ports_only_for_tcp_udp)]
#[allow(dead_code)]
struct EgressRule {
    name: RuleName,
    #[schemars(schema_with = "action")]
    action: String,
    #[schemars(flatten)]
    matching: Matching,
    to: Destinations,
    #[schemars(default)]
    source: EgressSourceKind,
}

/// An egress failsafe entry: `name` defaults to egress-failsafe-PROTO-PORTS, `to` to
/// anywhere, and `action` can only be allow.
#[derive(JsonSchema)]
#[schemars(rename = "egress-failsafe", deny_unknown_fields, transform = ports_only_for_tcp_udp)]
#[allow(dead_code)]
struct EgressFailsafe {
    #[schemars(default)]
    name: RuleName,
    #[schemars(default, extend("const" = "allow"))]
    action: Unset,
    #[schemars(flatten)]
    matching: Matching,
    #[schemars(default)]
    to: Destinations,
    #[schemars(default)]
    source: EgressSourceKind,
}

fn egress_source(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "enum": names(EGRESS_SOURCES) })
}

/// Defaults shown in the schema.
struct Defaults;

impl Defaults {
    fn nft() -> String {
        "nft".into()
    }
    fn enforce() -> String {
        "enforce".into()
    }
    fn allow() -> String {
        "allow".into()
    }
}

/// A key that may be left out and has no default worth showing (its type is not
/// `Serialize`, so schemars writes none).
#[derive(Default)]
struct Unset;

#[derive(JsonSchema)]
#[schemars(inline, extend("minItems" = 1))]
#[allow(dead_code)]
struct Network(Vec<NetworkEntry>);

/// A CIDR (a string) or an API entry (a mapping): never both.
#[derive(JsonSchema)]
#[schemars(inline, untagged)]
#[allow(dead_code)]
enum NetworkEntry {
    Cidr(Cidr),
    Api(ApiSource),
}

/// Addresses read from the Kubernetes API and kept current: `nodes` (Node addresses, by label
/// selector and address type), `pod-cidrs` (Nodes' spec.podCIDRs), `api-server` (the
/// default/kubernetes EndpointSlices).
#[derive(JsonSchema)]
#[schemars(
    rename = "apiSource",
    deny_unknown_fields,
    extend("minProperties" = 1, "maxProperties" = 1)
)]
#[allow(dead_code)]
struct ApiSource {
    #[schemars(default)]
    nodes: Option<NodesOptions>,
    #[schemars(rename = "pod-cidrs", default)]
    pod_cidrs: Option<PodCidrsOptions>,
    /// `api-server` takes no options.
    #[schemars(rename = "api-server", default)]
    api_server: Option<NoOptions>,
}

/// `nodes`: `null` (`- nodes:`) means `{}`.
#[derive(JsonSchema)]
#[schemars(inline, deny_unknown_fields)]
#[allow(dead_code)]
struct NodesOptions {
    #[schemars(default)]
    selector: Selector,
    #[schemars(
        description = "Node address types to take. Default: [InternalIP].",
        schema_with = "address_types",
        default
    )]
    addresses: Unset,
}

/// `pod-cidrs`: `null` means `{}`.
#[derive(JsonSchema)]
#[schemars(inline, deny_unknown_fields)]
#[allow(dead_code)]
struct PodCidrsOptions {
    #[schemars(default)]
    selector: Selector,
}

#[derive(JsonSchema)]
#[schemars(inline, deny_unknown_fields)]
struct NoOptions {}

/// A label selector as `kubectl -l` takes it, e.g. `node-role.kubernetes.io/control-plane` or
/// `zone in (a,b),!spot`. Default: every Node.
#[derive(JsonSchema, Default)]
#[schemars(rename = "selector")]
#[allow(dead_code)]
struct Selector(String);

/// The `kubernetes` section.
#[derive(JsonSchema, Default)]
#[schemars(inline, deny_unknown_fields)]
#[allow(dead_code)]
struct KubernetesSection {
    /// Kubeconfig file. Default: the in-cluster service account, else $KUBECONFIG or
    /// ~/.kube/config.
    #[schemars(default)]
    kubeconfig: Kubeconfig,
    /// This node's Node name. Default: $NODE_NAME, else the host name.
    #[schemars(rename = "node-name", default)]
    node_name: NodeName,
    /// Write this node's NodewallNodeStatus object.
    #[schemars(default = "on")]
    status: bool,
}

/// Not `Serialize`, so that schemars shows no default: the default is no file.
#[derive(JsonSchema, Default)]
#[schemars(inline)]
#[allow(dead_code)]
struct Kubeconfig(#[schemars(length(min = 1))] String);

/// Not `Serialize` either: the default is the environment's.
#[derive(JsonSchema, Default)]
#[schemars(inline)]
#[allow(dead_code)]
struct NodeName(#[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(max = 253))] String);

/// IPv4 or IPv6 prefix with host bits clear, or a bare address (/32 or /128).
#[derive(JsonSchema)]
#[schemars(rename = "cidr")]
#[allow(dead_code)]
struct Cidr(#[schemars(regex(pattern = CIDR_PATTERN))] String);

/// A CIDR, a bare address, or the name of a `networks` entry.
#[derive(JsonSchema)]
#[schemars(rename = "source")]
#[allow(dead_code)]
struct Source(#[schemars(length(min = 1))] String);

/// Where the traffic comes from.
#[derive(JsonSchema, Default)]
#[schemars(inline, extend("minItems" = 1))]
#[allow(dead_code)]
struct Sources(Vec<Source>);

/// Destination ports, only for tcp and udp. Omitted: every port.
#[derive(JsonSchema, Default)]
#[schemars(rename = "ports", extend("minItems" = 1))]
#[allow(dead_code)]
struct Ports(Vec<Port>);

#[derive(JsonSchema)]
#[schemars(inline, untagged)]
#[allow(dead_code)]
enum Port {
    Number(#[schemars(range(min = 1, max = 65535))] u16),
    /// "N" or "A-B" with 1 <= A <= B <= 65535
    Range(#[schemars(regex(pattern = PORT_PATTERN))] String),
}

/// Unique rule name, the `rule` label of metrics. '/' is reserved for profile rules (PROFILE/RULE).
#[derive(JsonSchema, Default)]
#[schemars(inline)]
#[allow(dead_code)]
struct RuleName(#[schemars(regex(pattern = NAME_PATTERN))] String);

/// A user rule.
#[derive(JsonSchema)]
#[schemars(rename = "rule", deny_unknown_fields, transform = ports_only_for_tcp_udp)]
#[allow(dead_code)]
struct UserRule {
    name: RuleName,
    #[schemars(schema_with = "action")]
    action: String,
    #[schemars(flatten)]
    matching: Matching,
    from: Sources,
}

/// A failsafe entry: `name` defaults to failsafe-PROTO-PORTS, `from` to anywhere, and `action` can only be allow.
#[derive(JsonSchema)]
#[schemars(rename = "failsafe", deny_unknown_fields, transform = ports_only_for_tcp_udp)]
#[allow(dead_code)]
struct Failsafe {
    #[schemars(default)]
    name: RuleName,
    #[schemars(default, extend("const" = "allow"))]
    action: Unset,
    #[schemars(flatten)]
    matching: Matching,
    #[schemars(default)]
    from: Sources,
}

/// What user rules and failsafe entries both match on besides the source.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct Matching {
    /// icmp is ICMP for IPv4, icmpv6 is ICMPv6, all is any protocol.
    #[schemars(schema_with = "protocol")]
    protocol: String,
    #[schemars(default)]
    ports: Ports,
}

/// `ports` only with a protocol that has ports.
fn ports_only_for_tcp_udp(schema: &mut Schema) {
    schema.insert(
        "if".into(),
        serde_json::json!({ "properties": { "protocol": { "enum": ["icmp", "icmpv6", "all"] } } }),
    );
    schema.insert(
        "then".into(),
        serde_json::json!({ "properties": { "ports": false } }),
    );
}

#[derive(JsonSchema, Default)]
#[schemars(inline, deny_unknown_fields)]
#[allow(dead_code, clippy::struct_excessive_bools)] // one switch per key of the file
struct Implicit {
    #[schemars(default = "on")]
    established: bool,
    #[schemars(rename = "icmp-errors", default = "on")]
    icmp_errors: bool,
    #[schemars(rename = "neighbour-discovery", default = "on")]
    neighbour_discovery: bool,
    #[schemars(rename = "neighbor-discovery", default = "on")]
    neighbor_discovery: bool,
    #[schemars(rename = "dhcp-client", default = "on")]
    dhcp_client: bool,
}

fn on() -> bool {
    true
}

/// Samples of dropped packets: what `nodewall drops` streams, the flow log records and the
/// agent logs (rate-limited). Counters count every drop whatever this says.
#[derive(JsonSchema, Default)]
#[schemars(inline, deny_unknown_fields)]
#[allow(dead_code)]
struct Drops {
    /// Dropped packets sampled per second: per CPU on the XDP backend, per drop reason and
    /// rule on the nft backend. 0 takes no samples.
    #[schemars(
        rename = "samples-per-second",
        default = "samples_per_second",
        range(max = super::drops::MAX_SAMPLES_PER_SECOND)
    )]
    samples_per_second: u32,
    #[schemars(rename = "flow-log", default)]
    flow_log: Option<FlowLog>,
}

fn samples_per_second() -> u32 {
    super::drops::DEFAULT_SAMPLES_PER_SECOND
}

/// Every sample as one JSON line in a file, for log shippers; the file is rotated when it
/// reaches `max-size` (to FILE.1, FILE.1 to FILE.2, ...), keeping `max-files` rotated files.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct FlowLog {
    /// Absolute path of the file; its directory must exist and be writable by the agent.
    #[schemars(regex(pattern = "^/.*[^/]$"))]
    path: String,
    /// Bytes, or a string with a binary unit: "512KiB", "100MiB", "1GiB" (1KiB to 1TiB).
    #[schemars(rename = "max-size", default = "max_size")]
    max_size: Size,
    /// Rotated files kept besides the current one.
    #[schemars(
        rename = "max-files",
        default = "max_files",
        range(min = 1, max = super::drops::MAX_MAX_FILES)
    )]
    max_files: u32,
}

fn max_size() -> u64 {
    super::drops::DEFAULT_MAX_SIZE
}

fn max_files() -> u32 {
    super::drops::DEFAULT_MAX_FILES
}

#[derive(JsonSchema)]
#[schemars(inline, untagged)]
#[allow(dead_code)]
enum Size {
    Bytes(
        #[schemars(range(min = super::drops::MIN_MAX_SIZE, max = super::drops::MAX_MAX_SIZE))] u64,
    ),
    WithUnit(#[schemars(regex(pattern = "^[0-9]+ ?(B|K|KiB|M|MiB|G|GiB)?$"))] String),
}

fn names<T>(table: &[(&str, T)]) -> Vec<String> {
    table.iter().map(|(n, _)| n.to_string()).collect()
}

fn backend(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "enum": names(BACKENDS) })
}

fn mode(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "enum": names(MODES) })
}

fn action(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "enum": names(ACTIONS) })
}

fn protocol(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "enum": names(PROTOCOLS) })
}

/// `Unset` stands for keys whose schema is given whole (`profile`) or by `extend`.
impl JsonSchema for Unset {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Unset".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({})
    }
}

fn address_types(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "uniqueItems": true,
        "items": { "enum": names(ADDRESS_TYPES) }
    })
}

fn profile(_: &mut SchemaGenerator) -> Schema {
    let names: Vec<&str> = profiles::all().iter().map(|p| p.name).collect();
    json_schema!({ "enum": names })
}

fn interfaces(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "string", "pattern": INTERFACE_PATTERN, "not": { "enum": [".", ".."] } },
        "uniqueItems": true
    })
}
