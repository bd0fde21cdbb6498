//! The agent's local socket: `<state-dir>/agent.sock`, a Unix stream socket that only the
//! agent's user (root) may open (mode 0600, and the agent checks the peer's uid).
//!
//! A client sends one request line of JSON and reads JSON lines back:
//! - `{"get":"drops"}`: a [`Message::Hello`], the samples the agent holds (the most recent,
//!   oldest first), [`Message::Live`], then every new sample as it is read, until the client
//!   hangs up. A reader that falls behind loses samples, never slows the agent: it is told
//!   how many with [`Message::Lost`].
//! - `{"get":"rules"}`: one [`Message::RuleUsage`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::DropRecord;

/// The socket's file name under the state directory.
pub const SOCKET: &str = "agent.sock";
/// Longest request line the agent reads.
pub const MAX_REQUEST: usize = 4096;

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Get {
    Drops,
    Rules,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub get: Get,
}

/// One line from the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Message {
    Hello {
        node: String,
        backend: String,
        /// The mode of the policy in force (`enforce` or `audit`); each sample says how its
        /// packet was treated.
        mode: String,
        samples_per_second: u32,
        /// Samples that follow before [`Message::Live`].
        recent: usize,
    },
    Sample(DropRecord),
    /// What follows was read after the client connected.
    Live,
    /// Samples this client missed because it read too slowly.
    Lost {
        count: u64,
    },
    RuleUsage {
        rules: Vec<RuleUsage>,
    },
    Error {
        message: String,
    },
}

/// Whether a rule's counter moved since the policy that installed it (as it is now) was
/// applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleUsage {
    pub rule: String,
    pub action: String,
    /// When the rule was installed as it is now (RFC 3339, UTC).
    pub since: String,
    pub matched: bool,
}

impl Message {
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("a message serialises");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"get":"drops"}"#).unwrap(),
            Request { get: Get::Drops }
        );
        assert!(serde_json::from_str::<Request>(r#"{"get":"all"}"#).is_err());
        assert_eq!(
            Message::Lost { count: 3 }.to_line(),
            "{\"type\":\"lost\",\"count\":3}\n"
        );
        let stamp = super::super::Stamp {
            node: "n".into(),
            backend: "nft".into(),
        };
        let r = DropRecord::new(
            &super::super::record::tests::event("udp", false),
            std::time::SystemTime::now(),
            &stamp,
            None,
        );
        let line = Message::Sample(r.clone()).to_line();
        assert!(line.starts_with("{\"type\":\"sample\",\"time\":"), "{line}");
        assert_eq!(
            serde_json::from_str::<Message>(&line).unwrap(),
            Message::Sample(r)
        );
    }
}
