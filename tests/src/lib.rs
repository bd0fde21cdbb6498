//! Network-namespace harness for nodewall's datapath tests.
//!
//! A test builds a [`topology::Topology`] (a node namespace behind one uplink, peers for the
//! internet, the node network, the pod network and the control plane, and a local pod), runs the
//! real `nodewall` binary in the node namespace ([`nodewall`]), and checks what happens to real
//! packets: real connections ([`traffic`]) and batches of hand-built probes whose fate an
//! observer in the node records ([`probe`]). Every suite case runs once per datapath in
//! [`Backend::ALL`] through [`backend_tests!`]: nftables, XDP in native mode and XDP in
//! generic mode.

pub mod capture;
pub mod craft;
pub mod delivery;
pub mod http;
pub mod inject;
pub mod installed;
pub mod kube;
pub mod netns;
pub mod nodewall;
pub mod packet;
pub mod probe;
pub mod rng;
pub mod topology;
pub mod traffic;

/// A datapath the suite runs against; the config's `backend:` selects it, and for XDP the
/// attach mode is forced through `NODEWALL_XDP_MODE`, so that both the driver path (native
/// XDP on veth) and the generic (skb) path are exercised whatever `auto` would pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Nft,
    XdpNative,
    XdpGeneric,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Nft, Backend::XdpNative, Backend::XdpGeneric];

    /// The value of `backend:` in the config file.
    pub fn config_name(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::XdpNative | Backend::XdpGeneric => "xdp",
        }
    }

    /// The value of `--backend` for `status` and `flush`.
    pub fn cli_name(self) -> &'static str {
        self.config_name()
    }

    pub fn is_xdp(self) -> bool {
        self != Backend::Nft
    }

    /// Environment every `nodewall` process of a test of this backend gets.
    pub fn env(self) -> &'static [(&'static str, &'static str)] {
        use ::nodewall::backend::xdp::MODE_ENV;
        match self {
            Backend::Nft => &[],
            Backend::XdpNative => &[(MODE_ENV, "native")],
            Backend::XdpGeneric => &[(MODE_ENV, "generic")],
        }
    }
}

/// Whether the netns tests can run. Not root: skip with a reason, unless `CI=true`, where a
/// test that cannot set up its namespaces must fail.
pub fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: network namespace tests need root, and CI=true forbids skipping");
    }
    eprintln!("skipped {test}: network namespace tests need root");
    false
}

/// Runs one suite case: skips (or fails under CI) without root, fails with the whole error
/// chain otherwise.
pub fn run_case(name: &str, case: fn(Backend) -> anyhow::Result<()>, backend: Backend) {
    if !can_run(name) {
        return;
    }
    if let Err(e) = case(backend) {
        panic!("{name} ({backend:?}): {e:#}");
    }
}

/// Generates, for each `fn NAME(backend: Backend) -> anyhow::Result<()>`, a module `NAME` with
/// one `#[test]` per backend of [`Backend::ALL`]: `NAME::nft`, `NAME::xdp_native`,
/// `NAME::xdp_generic`; `backend_tests!(xdp: NAME, ...)` the two XDP ones only.
#[macro_export]
macro_rules! backend_tests {
    // XDP only (native and generic): what has no nft counterpart (pinned maps, the switch).
    (xdp: $($name:ident),* $(,)?) => {
        $(
            mod $name {
                $crate::backend_case!($name, xdp_native, XdpNative);
                $crate::backend_case!($name, xdp_generic, XdpGeneric);
            }
        )*
    };
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                $crate::backend_case!($name, nft, Nft);
                $crate::backend_case!($name, xdp_native, XdpNative);
                $crate::backend_case!($name, xdp_generic, XdpGeneric);
            }
        )*
    };
}

/// One `#[test]` of [`backend_tests!`]: case `$name` of the enclosing module's parent on
/// `Backend::$backend`.
#[doc(hidden)]
#[macro_export]
macro_rules! backend_case {
    ($name:ident, $test:ident, $backend:ident) => {
        #[test]
        fn $test() {
            $crate::run_case(stringify!($name), super::$name, $crate::Backend::$backend);
        }
    };
}
