//! JSON Schema (draft 2020-12) of the config file, for editors and CI linters.
//!
//! The schema checks shape, enums and patterns; the checks that need the whole document
//! (unknown network names, host bits, duplicate rule names, profile networks) are only done
//! by [`super::parse`]. Enum values come from the same tables the parser uses, so the two
//! cannot drift apart.

use serde_json::{json, Value};

use super::api_sources::ADDRESS_TYPES;
use super::document::{BACKENDS, IMPLICIT_KEYS, MODES};
use super::rules::{ACTIONS, PROTOCOLS};
use crate::profiles;

/// Rule and network names: `^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`.
const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$";
/// `"N"` or `"A-B"`; the numeric range is checked by the parser.
const PORT_PATTERN: &str = "^[0-9]{1,5}(-[0-9]{1,5})?$";
/// Address characters with an optional prefix length; the parser checks the value itself.
const CIDR_PATTERN: &str = "^[0-9a-fA-F:.]+(/[0-9]{1,3})?$";
/// Node names (DNS subdomains); the parser also checks each label's ends.
const DNS_SUBDOMAIN_PATTERN: &str = "^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$";
/// Linux interface names: 1-15 characters without '/', ':' or whitespace.
const INTERFACE_PATTERN: &str = "^[^/:\\s]{1,15}$";

fn names<T>(table: &[(&str, T)]) -> Vec<String> {
    table.iter().map(|(n, _)| n.to_string()).collect()
}

/// The schema as a JSON value; `nodewall schema` can print it.
pub fn json_schema() -> Value {
    let profiles: Vec<&str> = profiles::all().iter().map(|p| p.name).collect();
    let implicit: serde_json::Map<String, Value> = IMPLICIT_KEYS
        .iter()
        .map(|k| (k.to_string(), json!({ "type": "boolean", "default": true })))
        .collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://example.invalid/nodewall/config.schema.json",
        "title": "nodewall configuration",
        "description": "Inbound firewall policy for a node: an optional built-in security-group baseline (profile), named networks, user rules and failsafe entries. Evaluation order: implicit allowances, failsafe, profile rules, user rules (first match wins), then default deny.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "backend": {
                "description": "Datapath that enforces the policy: nftables, XDP, or XDP where supported and nft otherwise.",
                "enum": names(BACKENDS),
                "default": "nft"
            },
            "mode": {
                "description": "`audit` counts would-be drops but lets the packets through.",
                "enum": names(MODES),
                "default": "enforce"
            },
            "interfaces": {
                "description": "Uplinks to filter. Empty: the interfaces that carry default routes, resolved when the policy is applied.",
                "type": "array",
                "items": { "type": "string", "pattern": INTERFACE_PATTERN, "not": { "enum": [".", ".."] } },
                "uniqueItems": true,
                "default": []
            },
            "profile": {
                "description": "Built-in baseline whose rules come before the user rules. Its named networks must be defined under `networks`.",
                "enum": profiles
            },
            "networks": {
                "description": "Named address lists, referred to by name in `from`: CIDRs, and entries read from the Kubernetes API.",
                "type": "object",
                "propertyNames": { "pattern": NAME_PATTERN },
                "additionalProperties": {
                    "type": "array",
                    "minItems": 1,
                    "items": { "oneOf": [{ "$ref": "#/$defs/cidr" }, { "$ref": "#/$defs/apiSource" }] }
                }
            },
            "kubernetes": {
                "description": "How the agent reaches the Kubernetes API (for networks with API entries) and whether it writes its node's NodewallNodeStatus object.",
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "kubeconfig": { "description": "Kubeconfig file. Default: the in-cluster service account, else $KUBECONFIG or ~/.kube/config.", "type": "string", "minLength": 1 },
                    "node-name": { "description": "This node's Node name. Default: $NODE_NAME, else the host name.", "type": "string", "pattern": DNS_SUBDOMAIN_PATTERN, "maxLength": 253 },
                    "status": { "description": "Write this node's NodewallNodeStatus object.", "type": "boolean", "default": true }
                }
            },
            "rules": {
                "description": "User rules, evaluated after the profile's; first match wins.",
                "type": "array",
                "items": { "$ref": "#/$defs/rule" }
            },
            "failsafe": {
                "description": "Allow entries evaluated before everything else. Absent: tcp/22 from anywhere. `[]` disables the failsafe.",
                "type": "array",
                "items": { "$ref": "#/$defs/failsafe" }
            },
            "implicit": {
                "description": "Implicit allowances of a stateful security group, each on by default. `neighbor-discovery` is an alias of `neighbour-discovery`.",
                "type": "object",
                "additionalProperties": false,
                "properties": implicit
            }
        },
        "$defs": {
            "cidr": {
                "description": "IPv4 or IPv6 prefix with host bits clear, or a bare address (/32 or /128).",
                "type": "string",
                "pattern": CIDR_PATTERN
            },
            "apiSource": {
                "description": "Addresses read from the Kubernetes API and kept current: `nodes` (Node addresses, by label selector and address type), `pod-cidrs` (Nodes' spec.podCIDRs), `api-server` (the default/kubernetes EndpointSlices).",
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": false,
                "properties": {
                    "nodes": {
                        "type": ["object", "null"],
                        "additionalProperties": false,
                        "properties": {
                            "selector": { "$ref": "#/$defs/selector" },
                            "addresses": {
                                "description": "Node address types to take. Default: [InternalIP].",
                                "type": "array",
                                "minItems": 1,
                                "uniqueItems": true,
                                "items": { "enum": names(ADDRESS_TYPES) }
                            }
                        }
                    },
                    "pod-cidrs": {
                        "type": ["object", "null"],
                        "additionalProperties": false,
                        "properties": { "selector": { "$ref": "#/$defs/selector" } }
                    },
                    "api-server": { "type": ["object", "null"], "additionalProperties": false }
                }
            },
            "selector": {
                "description": "A label selector as `kubectl -l` takes it, e.g. `node-role.kubernetes.io/control-plane` or `zone in (a,b),!spot`. Default: every Node.",
                "type": "string"
            },
            "source": {
                "description": "A CIDR, a bare address, or the name of a `networks` entry.",
                "type": "string",
                "minLength": 1
            },
            "ports": {
                "description": "Destination ports, only for tcp and udp. Omitted: every port.",
                "type": "array",
                "minItems": 1,
                "items": {
                    "oneOf": [
                        { "type": "integer", "minimum": 1, "maximum": 65535 },
                        { "type": "string", "pattern": PORT_PATTERN, "description": "\"N\" or \"A-B\" with 1 <= A <= B <= 65535" }
                    ]
                }
            },
            "common": {
                "type": "object",
                "properties": {
                    "name": {
                        "description": "Unique rule name, the `rule` label of metrics. '/' is reserved for profile rules (PROFILE/RULE).",
                        "type": "string",
                        "pattern": NAME_PATTERN
                    },
                    "action": { "enum": names(ACTIONS) },
                    "protocol": { "description": "icmp is ICMP for IPv4, icmpv6 is ICMPv6, all is any protocol.", "enum": names(PROTOCOLS) },
                    "ports": { "$ref": "#/$defs/ports" },
                    "from": {
                        "description": "Where the traffic comes from.",
                        "type": "array",
                        "minItems": 1,
                        "items": { "$ref": "#/$defs/source" }
                    }
                },
                "additionalProperties": false,
                "required": ["protocol"],
                "if": { "properties": { "protocol": { "enum": ["icmp", "icmpv6", "all"] } } },
                "then": { "properties": { "ports": false } }
            },
            "rule": {
                "description": "A user rule.",
                "$ref": "#/$defs/common",
                "required": ["name", "action", "protocol", "from"]
            },
            "failsafe": {
                "description": "A failsafe entry: `name` defaults to failsafe-PROTO-PORTS, `from` to anywhere, and `action` can only be allow.",
                "$ref": "#/$defs/common",
                "properties": { "action": { "const": "allow" } }
            }
        }
    })
}
